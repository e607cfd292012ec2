//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::endpoints::{federation, identity, messages, operations, revocations};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "fedid", description = "Federated identity: the user API, federation endpoints and operations (API.md)."),
    paths(
        identity::get_identity, identity::set_alias, identity::set_keys, identity::reset,
        revocations::pending, revocations::flush, revocations::drop_pending,
        federation::inbox, federation::discovery,
        messages::relationships, messages::outbox, messages::inbox, messages::acknowledge,
        operations::healthz, operations::readyz, operations::metrics, operations::openapi,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
