//! `POST /federation/inbox` and `GET /federation/users/{alias}`: the
//! public, server-to-server side.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use fedid_domain::envelope::MAX_ENVELOPE_BYTES;
use fedid_domain::Received;

use crate::dto::{EnvelopeDocument as Envelope, KeyLogPageDocument, PublishedKeys, Status};
use crate::error::{ApiError, Problem};
use crate::request::{is_json, read_body, seq_query};
use crate::AppState;

#[utoipa::path(post, path = "/federation/inbox", operation_id = "receiveEnvelope", tag = "federation",
    request_body(content = Envelope, description = "a signed envelope (PROTOCOL.md section 3)"),
    responses((status = 202, description = "accepted", body = Status), (status = 200, description = "duplicate", body = Status),
        (status = 400, description = "`invalid_envelope`, `unsupported_protocol_version`, `unsupported_message_type`, `timestamp_out_of_window`", body = Problem),
        (status = 401, description = "`invalid_signature`", body = Problem),
        (status = 403, description = "`domain_not_allowed`, `no_relationship`", body = Problem),
        (status = 404, description = "`unknown_recipient`", body = Problem),
        (status = 409, description = "`nonce_reused`, `no_pending_request`", body = Problem),
        (status = 408, description = "`request_timeout`", body = Problem), (status = 413, body = Problem), (status = 429, description = "`rate_limited`, `inbox_full`", body = Problem),
        (status = 502, description = "`sender_keys_unavailable`, `key_log_conflict` (both retryable)", body = Problem)))]
pub async fn inbox(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = receive(&req, payload, &state).await;
    let code = match &result {
        Ok(Received::Accepted) => "accepted",
        Ok(Received::Duplicate) => "duplicate",
        Err(e) => e.code,
    };
    state.metrics.inbox(code);
    Ok(match result? {
        Received::Accepted => HttpResponse::Accepted().json(Status { status: "accepted" }),
        Received::Duplicate => HttpResponse::Ok().json(Status { status: "duplicate" }),
    })
}

async fn receive(req: &HttpRequest, payload: web::Payload, state: &web::Data<AppState>) -> Result<Received, ApiError> {
    if let Some(limiter) = &state.inbox_limiter {
        limiter.check(crate::net::client_ip(req, &state.http.trusted_proxies))?;
    }
    let body = read_body(req, payload, MAX_ENVELOPE_BYTES).await?;
    if !is_json(req) {
        return Err(ApiError::envelope_not_json());
    }
    let fedid = state.fedid.clone();
    // Step 1 and a verify with a cached key are CPU only, and cheaper here
    // than a hand-off; a large envelope goes to the federation pool so that
    // none holds a worker long.
    let checked = if body.len() > INLINE_ENVELOPE_BYTES {
        let fedid = fedid.clone();
        state.federation.run(move || Ok(fedid.check_envelope(&body)?)).await?
    } else {
        fedid.check_envelope(&body)?
    };
    // What is left may read the store or wait on a peer: never on a worker.
    // The write itself is awaited without holding any thread.
    let written = if checked.is_verified() {
        fedid.receive_checked(checked)?
    } else {
        state
            .federation
            .run(move || Ok(fedid.receive_checked(checked)?))
            .await?
    };
    Ok(written.await?)
}

/// Envelopes up to this size are parsed and verified on the worker. Parsing
/// grows with the payload's members (about 0.65 µs each here, so 2.6 ms for
/// a 64 KiB payload of 4,000 members: `examples/inbox_probe.rs`); larger
/// envelopes go to the federation pool so that none holds a worker long.
const INLINE_ENVELOPE_BYTES: usize = 4096;

#[utoipa::path(get, path = "/federation/users/{alias}", operation_id = "discoverKeys", tag = "federation",
    params(("alias" = String, Path, description = "a local alias")),
    responses((status = 200, body = PublishedKeys, headers(("Cache-Control" = String))),
        (status = 404, description = "`unknown_user`", body = Problem)))]
pub async fn discovery(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let alias = req.match_info().get("alias").unwrap_or_default().to_owned();
    let fedid = state.fedid.clone();
    let found = state.readers.run(move || Ok(fedid.published_identity(&alias)?)).await?;
    match found {
        Some(identity) => Ok(HttpResponse::Ok()
            .insert_header((
                header::CACHE_CONTROL,
                format!("max-age={}, must-revalidate", state.fedid.settings().key_cache_ttl_secs),
            ))
            .json(PublishedKeys::from(identity))),
        None => Err(ApiError::unknown_user()),
    }
}

#[utoipa::path(get, path = "/federation/users/{alias}/keylog", operation_id = "keyLog", tag = "federation",
    params(("alias" = String, Path, description = "a local alias"),
           ("after" = Option<i64>, Query, minimum = 0, description = "the entries after this seq (default 0)")),
    responses((status = 200, body = KeyLogPageDocument),
        (status = 400, description = "`invalid_request`", body = Problem),
        (status = 404, description = "`unknown_user`", body = Problem)))]
pub async fn key_log(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let after = seq_query(&req)?;
    let alias = req.match_info().get("alias").unwrap_or_default().to_owned();
    let Ok(alias) = fedid_domain::Alias::parse(&alias) else {
        return Err(ApiError::unknown_user());
    };
    let fedid = state.fedid.clone();
    match state
        .readers
        .run(move || Ok(fedid.key_log_page(&alias, after)?))
        .await?
    {
        Some(page) => Ok(HttpResponse::Ok().json(KeyLogPageDocument::from(page))),
        None => Err(ApiError::unknown_user()),
    }
}
