//! `GET /users/me/identity`, `PATCH /users/me/alias`, `PUT /users/me/keys`,
//! `POST /users/me/identity/reset`.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::dto::{AliasRequest, Identity, KeysRequest, ResetResponse};
use crate::error::{ApiError, Problem};
use crate::request::{as_reader, authenticate, blocking, is_json, read_body, user_and_json};
use crate::AppState;

#[utoipa::path(get, path = "/users/me/identity", operation_id = "getIdentity", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Identity), (status = 401, body = Problem)))]
pub async fn get_identity(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let view = as_reader(&req, &state, |reads| Ok(reads.identity()?)).await?;
    Ok(HttpResponse::Ok().json(Identity::from(view)))
}

#[utoipa::path(patch, path = "/users/me/alias", operation_id = "setAlias", tag = "identity", security(("bearer" = [])), request_body = AliasRequest,
    responses((status = 200, body = Identity),
        (status = 400, description = "`invalid_request`, `invalid_alias`", body = Problem),
        (status = 401, body = Problem), (status = 408, description = "`request_timeout`", body = Problem), (status = 413, body = Problem),
        (status = 409, description = "`alias_taken`, `relationships_exist`, `revocations_pending`", body = Problem),
        (status = 429, description = "`rate_limited`: past `limits.alias_changes_per_day` (with `Retry-After`) or `limits.alias_changes_total`", body = Problem,
            headers(("Retry-After" = u64, description = "seconds until the day's window frees a change")))))]
pub async fn set_alias(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user, request): (_, AliasRequest) = user_and_json(&req, payload, &state, state.http.body_bytes).await?;
    let fedid = state.fedid.clone();
    let view = blocking(move || Ok(fedid.set_alias(user, &request.alias)?)).await?;
    Ok(HttpResponse::Ok().json(Identity::from(view)))
}

#[utoipa::path(put, path = "/users/me/keys", operation_id = "setKeys", tag = "identity", security(("bearer" = [])), request_body = KeysRequest,
    responses((status = 200, body = Identity),
        (status = 400, description = "`invalid_request`, `invalid_key` (with `member`), `timestamp_out_of_window`, `invalid_proof` (with `member`)", body = Problem),
        (status = 401, body = Problem), (status = 408, description = "`request_timeout`", body = Problem),
        (status = 409, description = "`identity_not_set_up`, `key_log_full`, `key_log_conflict`", body = Problem),
        (status = 413, body = Problem),
        (status = 429, description = "`rate_limited`: 10 key-log entries a day", body = Problem, headers(("Retry-After" = u64)))))]
pub async fn set_keys(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user, request): (_, KeysRequest) = user_and_json(&req, payload, &state, state.http.body_bytes).await?;
    let fedid = state.fedid.clone();
    let view = blocking(move || Ok(fedid.set_keys(user, request.input()?)?)).await?;
    Ok(HttpResponse::Ok().json(Identity::from(view)))
}

#[utoipa::path(post, path = "/users/me/identity/reset", operation_id = "resetIdentity", tag = "identity", security(("bearer" = [])),
    request_body = crate::dto::ResetRequest,
    responses((status = 200, body = ResetResponse),
        (status = 400, description = "`invalid_request`, `confirmation_required`", body = Problem),
        (status = 401, body = Problem), (status = 408, description = "`request_timeout`", body = Problem), (status = 413, body = Problem)))]
pub async fn reset(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = authenticate(&req, &state).await?;
    let body = read_body(&req, payload, state.http.body_bytes).await?;
    // Anything that parses but is not {"confirm":"erase-all-my-data"} (an
    // empty body included) is confirmation_required; only malformed JSON
    // or a wrong media type is invalid_request.
    let confirmation = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        if !is_json(&req) {
            return Err(ApiError::invalid_request("body", "the body must be application/json"));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::invalid_request("body", e.to_string()))?;
        value.get("confirm").and_then(|c| c.as_str()).map(str::to_owned)
    };
    let fedid = state.fedid.clone();
    let report = blocking(move || Ok(fedid.reset_identity(user, confirmation.as_deref())?)).await?;
    tracing::warn!(
        user = %user,
        relationships = report.relationships_erased,
        inbox_messages = report.inbox_messages_erased,
        revocations_queued = report.revocations_queued,
        "identity reset"
    );
    Ok(HttpResponse::Ok().json(ResetResponse::from(report)))
}
