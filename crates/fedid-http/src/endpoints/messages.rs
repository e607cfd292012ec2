//! `GET /users/me/relationships`, `POST /users/me/outbox`,
//! `GET /users/me/inbox`, `DELETE /users/me/inbox/{id}`.

use actix_web::{web, HttpRequest, HttpResponse};
use fedid_domain::services::OutboxRequest;

use crate::dto::{InboxPage, OutboxRequestBody, OutboxResponse, RelationshipPage};
use crate::error::{ApiError, Problem};
use crate::request::{as_reader, as_user, blocking, handle_page_query, page_query, user_and_json, user_handle};
use crate::AppState;

#[utoipa::path(get, path = "/users/me/relationships", operation_id = "listRelationships", tag = "relationships", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
           ("after" = Option<String>, Query, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,30}[A-Za-z0-9]@[A-Za-z0-9.-]{1,253}(:[1-9][0-9]{0,4})?$", description = "a peer handle; the page starts after it")),
    responses((status = 200, body = RelationshipPage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn relationships(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Read now, refused after authentication (401 comes before 400).
    let query = handle_page_query(&req, state.fedid.settings().policy());
    let page = as_reader(&req, &state, move |reads| {
        let (limit, after) = query?;
        Ok(reads.relationships(after.as_ref(), limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(RelationshipPage::from(page)))
}

#[utoipa::path(post, path = "/users/me/outbox", operation_id = "sendEnvelope", tag = "relationships", security(("bearer" = [])),
    request_body = OutboxRequestBody,
    responses((status = 200, body = OutboxResponse),
        (status = 400, description = "`invalid_request`, `invalid_envelope`, `unsupported_message_type`, `timestamp_out_of_window`, `invalid_signature`", body = Problem),
        (status = 401, body = Problem), (status = 404, description = "`unknown_recipient`", body = Problem),
        (status = 409, description = "`identity_not_set_up`, `revocations_pending`, `no_pending_request`, `no_relationship`", body = Problem),
        (status = 408, description = "`request_timeout`", body = Problem), (status = 413, body = Problem),
        (status = 502, description = "`delivery_failed`, with `remoteStatus` and `remoteCode` when the peer answered", body = Problem)))]
pub async fn outbox(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user, request): (_, OutboxRequestBody) = user_and_json(&req, payload, &state, state.http.body_bytes).await?;
    let to = user_handle(state.fedid.settings().policy(), &request.to, "to")?;
    let request = OutboxRequest {
        to,
        message_type: request.message_type,
        message_version: request.message_version,
        nonce: request.nonce,
        timestamp: request.timestamp,
        payload: request.payload,
        signature: request.signature,
    };
    let fedid = state.fedid.clone();
    let outcome = blocking(move || Ok(fedid.send(user, request)?)).await?;
    Ok(HttpResponse::Ok().json(OutboxResponse::from(outcome)))
}

#[utoipa::path(get, path = "/users/me/inbox", operation_id = "listInbox", tag = "inbox", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
           ("after" = Option<String>, Query, pattern = "^[0-9]{1,18}$", description = "a message id, decimal")),
    responses((status = 200, body = InboxPage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn inbox(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let after = page_query(&req);
    let page = as_reader(&req, &state, move |reads| {
        let (limit, after) = after?;
        let after = after
            .map(|a| {
                a.parse::<i64>()
                    .map_err(|_| ApiError::invalid_request("after", "after is a message id"))
            })
            .transpose()?;
        Ok(reads.inbox(after, limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(InboxPage::from(page)))
}

#[utoipa::path(delete, path = "/users/me/inbox/{id}", operation_id = "acknowledgeMessage", tag = "inbox", security(("bearer" = [])),
    params(("id" = String, Path, pattern = "^[0-9]{1,18}$", description = "a message id, decimal")),
    responses((status = 204, description = "acknowledged"), (status = 401, body = Problem),
        (status = 404, description = "`not_found`", body = Problem)))]
pub async fn acknowledge(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let id = req.match_info().get("id").and_then(|id| id.parse::<i64>().ok());
    as_user(&req, &state, move |fedid, user| {
        Ok(fedid.acknowledge(user, id.ok_or_else(ApiError::not_found)?)?)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
