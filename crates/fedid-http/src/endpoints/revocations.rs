//! `GET /users/me/revocations/pending`, `POST /users/me/revocations/flush`,
//! `DELETE /users/me/revocations/pending/{peerHandle}`.

use actix_web::{web, HttpRequest, HttpResponse};
use fedid_domain::services::FlushItem;

use crate::dto::{FlushRequest, FlushResponse, PendingPage};
use crate::error::{ApiError, Problem};
use crate::request::{as_reader, as_user, blocking, handle_page_query, user_and_json, user_handle};
use crate::AppState;

#[utoipa::path(get, path = "/users/me/revocations/pending", operation_id = "listPendingRevocations", tag = "revocations", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
           ("after" = Option<String>, Query, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,30}[A-Za-z0-9]@[A-Za-z0-9.-]{1,253}(:[1-9][0-9]{0,4})?$", description = "a peer handle; the page starts after it")),
    responses((status = 200, body = PendingPage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn pending(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Read now, refused after authentication (401 comes before 400).
    let query = handle_page_query(&req, state.fedid.settings().policy());
    let page = as_reader(&req, &state, move |reads| {
        let (limit, after) = query?;
        Ok(reads.pending_revocations(after.as_ref(), limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(PendingPage::from(page)))
}

#[utoipa::path(post, path = "/users/me/revocations/flush", operation_id = "flushRevocations", tag = "revocations", security(("bearer" = [])),
    request_body = FlushRequest,
    responses((status = 200, body = FlushResponse),
        (status = 400, description = "`invalid_request` (with `member`)", body = Problem),
        (status = 401, body = Problem), (status = 409, description = "`identity_not_set_up`", body = Problem),
        (status = 408, description = "`request_timeout`", body = Problem), (status = 413, body = Problem)))]
pub async fn flush(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user, request): (_, FlushRequest) =
        user_and_json(&req, payload, &state, state.http.body_bytes.saturating_mul(16)).await?;
    let items: Vec<FlushItem> = request.items.into_iter().map(FlushItem::from).collect();
    let fedid = state.fedid.clone();
    // The flush runs to completion on the blocking pool even if the client goes away.
    let report = blocking(move || Ok(fedid.flush(user, &items)?)).await?;
    Ok(HttpResponse::Ok().json(FlushResponse::from(report)))
}

#[utoipa::path(delete, path = "/users/me/revocations/pending/{peerHandle}", operation_id = "dropPendingRevocation", tag = "revocations", security(("bearer" = [])),
    params(("peerHandle" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,30}[A-Za-z0-9]@[A-Za-z0-9.-]{1,253}(:[1-9][0-9]{0,4})?$", description = "the peer's handle, percent-encoded")),
    responses((status = 204, description = "dropped"), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, description = "`not_queued`", body = Problem)))]
pub async fn drop_pending(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let raw = crate::request::percent_decode(req.match_info().get("peerHandle").unwrap_or_default());
    as_user(&req, &state, move |fedid, user| {
        let peer = user_handle(fedid.settings().policy(), &raw, "peerHandle")?;
        Ok(fedid.drop_revocation(user, &peer)?)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
