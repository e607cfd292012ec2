//! `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::dto::Status;
use crate::error::{ApiError, Problem};
use crate::request::blocking;
use crate::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Status)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Status), (status = 503, body = Status)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let fedid = state.fedid.clone();
    match blocking(move || Ok(fedid.store().ping()?)).await {
        Ok(()) => HttpResponse::Ok().json(Status { status: "ok" }),
        Err(_) => HttpResponse::ServiceUnavailable().json(Status { status: "unavailable" }),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = Problem)))]
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.http.metrics_token {
        let given = crate::request::bearer(&req);
        let matches = given.is_some_and(|g| {
            g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !matches {
            return Err(ApiError::unauthenticated());
        }
    }
    let fedid = state.fedid.clone();
    let queued = blocking(move || Ok(fedid.total_queued_revocations()?)).await.ok();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(queued)))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}
