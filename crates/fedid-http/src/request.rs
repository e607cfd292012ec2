//! Reading requests: the bearer token, the body (size first, then media
//! type, then JSON with the member at fault), query parameters, and running
//! domain calls with the request's span: store-only reads on the read pool,
//! everything else on the blocking pool.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use fedid_domain::{DomainPolicy, Fedid, Handle, PageLimit, UserId, UserReads};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// Runs a domain call on actix's blocking pool, never on an async worker,
/// inside the current tracing span.
pub async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    let span = tracing::Span::current();
    web::block(move || span.in_scope(work))
        .await
        .map_err(|_| ApiError::internal())?
}

/// The credentials of `Authorization: Bearer ...`; the scheme is
/// case-insensitive (RFC 9110 section 11.1).
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' ').to_owned())
}

/// The user of the request's bearer token; every failure looks the same.
/// For requests with a body, which must be authenticated before it is read.
pub async fn authenticate(req: &HttpRequest, state: &web::Data<AppState>) -> Result<UserId, ApiError> {
    as_reader(req, state, |reads| Ok(reads.user())).await
}

/// Authenticates and runs the read `work` for that user on the read pool,
/// in the read transaction that checked the token: the user's GET requests
/// need no more.
pub async fn as_reader<T, F>(req: &HttpRequest, state: &web::Data<AppState>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut UserReads<'_>) -> Result<T, ApiError> + Send + 'static,
{
    let token = bearer(req).ok_or_else(ApiError::unauthenticated)?;
    let fedid = state.fedid.clone();
    state
        .readers
        .run(move || fedid.read_as(&token, work)?.ok_or_else(ApiError::unauthenticated))
        .await
}

/// Authenticates and runs `work`, which may write, for that user in one
/// trip to the blocking pool.
pub async fn as_user<T, F>(req: &HttpRequest, state: &web::Data<AppState>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Fedid, UserId) -> Result<T, ApiError> + Send + 'static,
{
    let token = bearer(req).ok_or_else(ApiError::unauthenticated)?;
    let fedid = state.fedid.clone();
    blocking(move || {
        let user = fedid.authenticate(&token)?.ok_or_else(ApiError::unauthenticated)?;
        work(&fedid, user)
    })
    .await
}

/// Authenticates, then reads and parses the JSON body: `401`, then `413`,
/// then `400`, as API.md orders them.
pub async fn user_and_json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    limit: usize,
) -> Result<(UserId, T), ApiError> {
    let user = authenticate(req, state).await?;
    let body = read_body(req, payload, limit).await?;
    Ok((user, parse_json(req, &body)?))
}

/// Reads at most `limit` bytes of body; more is `413 payload_too_large`.
/// The whole body must arrive within `server.body_timeout_secs`, else
/// `408 request_timeout` and the connection closes: a client that
/// declares a length and then stalls holds nothing for long.
pub async fn read_body(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let deadline = req
        .app_data::<web::Data<AppState>>()
        .map_or(DEFAULT_BODY_TIMEOUT, |state| state.http.body_timeout);
    actix_web::rt::time::timeout(deadline, read_body_within(req, payload, limit))
        .await
        .unwrap_or_else(|_| Err(ApiError::request_timeout()))
}

/// `server.body_timeout_secs` by default (OPERATIONS.md).
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_body_within(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::invalid_request("body", "the body could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `application/json`, compared case-insensitively, parameters ignored.
pub fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses a JSON body into `T`; a failure names the member at fault.
pub fn parse_json<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> Result<T, ApiError> {
    if !is_json(req) {
        return Err(ApiError::invalid_request("body", "the body must be application/json"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let member = match (path.as_str(), missing) {
            (".", Some(field)) => field.to_owned(),
            (parent, Some(field)) => format!("{parent}.{field}"),
            (".", None) => "body".to_owned(),
            (path, None) => path.to_owned(),
        };
        ApiError::invalid_request(member, message)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::invalid_request("body", e.to_string()))?;
    Ok(value)
}

/// `limit` (1 to 1000, default 100) and `after` from the query string.
pub fn page_query(req: &HttpRequest) -> Result<(PageLimit, Option<String>), ApiError> {
    let mut limit = PageLimit::DEFAULT;
    let mut after = None;
    for (key, value) in form_pairs(req.query_string()) {
        match key.as_str() {
            "limit" => {
                limit = value
                    .parse::<i64>()
                    .ok()
                    .and_then(PageLimit::new)
                    .ok_or_else(|| ApiError::invalid_request("limit", "limit is an integer from 1 to 1000"))?;
            }
            "after" => after = Some(value),
            _ => {}
        }
    }
    Ok((limit, after))
}

/// `limit` and `after` as a peer handle: the lists ordered by handle.
pub fn handle_page_query(req: &HttpRequest, policy: DomainPolicy) -> Result<(PageLimit, Option<Handle>), ApiError> {
    let (limit, after) = page_query(req)?;
    Ok((limit, after.map(|a| user_handle(policy, &a, "after")).transpose()?))
}

/// A handle from the user API: lower-cased, then valid (API.md conventions).
pub fn user_handle(policy: DomainPolicy, text: &str, member: &str) -> Result<Handle, ApiError> {
    Handle::parse_user_input(text, policy).map_err(|e| ApiError::invalid_request(member, e.to_string()))
}

/// The `after` of a key-log page: an integer from 0 (default 0).
pub fn seq_query(req: &HttpRequest) -> Result<u64, ApiError> {
    match form_pairs(req.query_string()).into_iter().find(|(k, _)| k == "after") {
        None => Ok(0),
        Some((_, value)) if !value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit()) => {
            value
                .parse()
                .map_err(|_| ApiError::invalid_request("after", "after is an integer from 0"))
        }
        Some(_) => Err(ApiError::invalid_request("after", "after is an integer from 0")),
    }
}

/// Percent-decodes a query string into pairs (`+` is a space).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Percent-decoding; invalid escapes are kept as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = text
                .get(i + 1..i + 3)
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
