//! fedid's HTTP adapter on actix-web: every endpoint of API.md over the
//! domain's use cases. Handlers parse, authenticate, run the domain call off
//! the async workers (store-only reads on the read pool, the rest on the
//! blocking pool) and render; statuses live in `error.rs`.

#![forbid(unsafe_code)]

mod connections;
pub mod dto;
pub mod endpoints;
pub mod error;
pub mod metrics;
pub mod net;
pub mod openapi;
mod rate_limit;
pub mod request;
mod work_pool;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{web, HttpResponse};
use fedid_domain::Fedid;

use crate::connections::ConnectionLimits;
use crate::endpoints::{federation, identity, messages, operations, revocations};
use crate::error::ApiError;
pub use crate::metrics::Metrics;
pub use crate::rate_limit::RateLimiter;
pub use crate::work_pool::WorkPool;

/// HTTP-only settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// User API body limit (flush: 16 times this).
    pub body_bytes: usize,
    pub metrics_token: Option<String>,
    /// Networks whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<net::Network>,
    /// Deadline for reading a whole request body (then `408`, and close).
    pub body_timeout: std::time::Duration,
    /// Open connections for the whole server.
    pub max_connections: usize,
    /// Open connections from one address (IPv6: one /64).
    pub max_connections_per_ip: usize,
}

impl HttpSettings {
    /// OPERATIONS.md's defaults, with `max_connections` left to the caller.
    pub fn new(body_bytes: usize, max_connections: usize) -> Self {
        Self {
            body_bytes,
            metrics_token: None,
            trusted_proxies: Vec::new(),
            body_timeout: request::DEFAULT_BODY_TIMEOUT,
            max_connections,
            max_connections_per_ip: 256,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    pub fedid: Arc<Fedid>,
    pub metrics: Arc<Metrics>,
    pub http: HttpSettings,
    pub inbox_limiter: Option<RateLimiter>,
    /// Where store-only reads run (`work_pool.rs`).
    pub readers: WorkPool,
    /// Where inbox envelopes that need a read or a key lookup run, apart
    /// from users' requests. Everything else runs on actix's blocking pool.
    pub federation: WorkPool,
    /// `/readyz`'s last probe.
    pub readiness: endpoints::operations::Readiness,
}

macro_rules! routes {
    ($( $path:literal => [ $( $method:ident : $handler:path ),+ ] ),+ $(,)?) => {
        /// Every (method, path) the app registers; the OpenAPI test checks them all.
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path) ),+ ),+ ];

        fn register(cfg: &mut web::ServiceConfig) {
            $(
                cfg.service(
                    web::resource($path)
                        $( .route(web::$method().to($handler)) )+
                        .default_service(web::to(|| async {
                            let allow = concat!($( stringify!($method), ", " ),+).trim_end_matches(", ");
                            Err::<HttpResponse, _>(ApiError::method_not_allowed(allow))
                        })),
                );
            )+
        }
    };
}

routes! {
    "/users/me/identity" => [get: identity::get_identity],
    "/users/me/alias" => [patch: identity::set_alias],
    "/users/me/keys" => [put: identity::set_keys],
    "/users/me/identity/reset" => [post: identity::reset],
    "/users/me/revocations/pending" => [get: revocations::pending],
    "/users/me/revocations/flush" => [post: revocations::flush],
    "/users/me/revocations/pending/{peerHandle}" => [delete: revocations::drop_pending],
    "/federation/inbox" => [post: federation::inbox],
    "/federation/users/{alias}" => [get: federation::discovery],
    "/federation/users/{alias}/keylog" => [get: federation::key_log],
    "/users/me/relationships" => [get: messages::relationships],
    "/users/me/outbox" => [post: messages::outbox],
    "/users/me/inbox" => [get: messages::inbox],
    "/users/me/inbox/{id}" => [delete: messages::acknowledge],
    "/healthz" => [get: operations::healthz],
    "/readyz" => [get: operations::readyz],
    "/metrics" => [get: operations::metrics],
    "/openapi.json" => [get: operations::openapi],
}

/// Registers every route, the 404 answer and the request log.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state);
        register(cfg);
        cfg.default_service(web::to(not_found));
    }
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

/// Logs each request once and counts it, by route pattern.
pub async fn observe(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    // Labels and log fields take known values only: a client chooses the
    // method and path, and each distinct label would be kept for ever.
    let method = method_label(req.method());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    // Random (UUID v4), so that ids from several instances never collide;
    // the client gets it back to quote in a report.
    let request_id = uuid::Uuid::new_v4();
    let span = tracing::info_span!("request", %method, %route, %request_id);
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.metrics.clone());
    let mut response = tracing::Instrument::instrument(next.call(req), span.clone()).await?;
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&request_id.to_string()) {
        response
            .headers_mut()
            .insert(actix_web::http::header::HeaderName::from_static("x-request-id"), value);
    }
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(metrics) = metrics {
        metrics.request(&route, method, status, seconds);
    }
    // Microsecond precision: enough for people, and short in the log.
    let latency_ms = (seconds * 1_000_000.0).round() / 1000.0;
    span.in_scope(|| tracing::info!(status, latency_ms, "request"));
    Ok(response)
}

/// The methods the routes use keep their name; any other is `other`.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// Builds the HTTP server on an already bound listener. It stops accepting
/// on SIGINT/SIGTERM and drains in-flight requests for up to `grace_secs`.
pub fn server(
    listener: std::net::TcpListener,
    state: web::Data<AppState>,
    workers: usize,
    grace_secs: u64,
) -> std::io::Result<actix_web::dev::Server> {
    let workers = workers.max(1);
    // actix counts connections per worker.
    let per_worker = state.http.max_connections.div_ceil(workers).max(1);
    let limits = ConnectionLimits::new(
        state.http.max_connections_per_ip,
        state.http.trusted_proxies.clone(),
        state.metrics.clone(),
    );
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(actix_web::middleware::from_fn(observe))
            .configure(configure(state.clone()))
    })
    .on_connect(move |connection, data| limits.on_connect(connection, data))
    .workers(workers)
    .max_connections(per_worker)
    .shutdown_timeout(grace_secs)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        stop_signal().await;
        // Stop accepting first, then drain: actix's own signal handling
        // stops the workers while the accept loop may still hand them a
        // connection, and logs `ERROR No workers` for it under load.
        handle.pause().await;
        handle.stop(true).await;
    });
    Ok(server)
}

/// SIGTERM or SIGINT (where signals cannot be watched: never).
async fn stop_signal() {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
