//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
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

/// Every error body is a `Problem`, served as `application/problem+json`
/// (RFC 9457): said once here rather than on each response of each handler.
struct ProblemJson;

impl Modify for ProblemJson {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else { continue };
                    let problem = response.content.get("application/json").is_some_and(|content| {
                        matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
                    });
                    if let Some(content) = problem
                        .then(|| response.content.shift_remove("application/json"))
                        .flatten()
                    {
                        response.content.insert("application/problem+json".into(), content);
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "fedid", description = "Federated identity: the user API, federation endpoints and operations (API.md)."),
    paths(
        identity::get_identity, identity::set_alias, identity::set_keys, identity::reset,
        revocations::pending, revocations::flush, revocations::drop_pending,
        federation::inbox, federation::discovery, federation::key_log,
        messages::relationships, messages::outbox, messages::inbox, messages::acknowledge,
        operations::healthz, operations::readyz, operations::metrics, operations::openapi,
    ),
    components(schemas(crate::error::Problem, crate::dto::EnvelopeDocument)),
    modifiers(&BearerAuth, &ProblemJson)
)]
struct ApiDoc;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
