//! `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

use crate::dto::Status;
use crate::error::{ApiError, Problem};
use crate::request::blocking;
use crate::AppState;

#[utoipa::path(get, path = "/healthz", operation_id = "checkHealth", tag = "operations", responses((status = 200, body = Status)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", operation_id = "checkReadiness", tag = "operations",
    responses((status = 200, body = Status), (status = 503, body = Status)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = match state.readiness.recent() {
        Some(ready) => ready,
        None => {
            let fedid = state.fedid.clone();
            let ready = blocking(move || Ok(fedid.ready()?)).await.is_ok();
            state.readiness.record(ready);
            ready
        }
    };
    if ready {
        HttpResponse::Ok().json(Status { status: "ok" })
    } else {
        HttpResponse::ServiceUnavailable().json(Status { status: "unavailable" })
    }
}

/// The last readiness probe, answered again for a second: `/readyz` is
/// public and each probe is a write, so no client can make more than one
/// write a second through it.
#[derive(Debug, Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, bool)>>,
}

const READINESS_REUSED_FOR: Duration = Duration::from_secs(1);

impl Readiness {
    fn recent(&self) -> Option<bool> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.filter(|(at, _)| at.elapsed() < READINESS_REUSED_FOR)
            .map(|(_, ready)| ready)
    }

    fn record(&self, ready: bool) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ready));
    }
}

#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "operations",
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
    let gauges = blocking(move || Ok(fedid.federation_gauges()?)).await.ok();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(gauges)))
}

#[utoipa::path(get, path = "/openapi.json", operation_id = "getOpenApiDocument", tag = "operations",
    responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}
