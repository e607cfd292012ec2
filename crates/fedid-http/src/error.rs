//! Every HTTP status the API answers with, in one place: each domain error
//! becomes an [`ApiError`], rendered as `application/problem+json`
//! (RFC 9457) with a stable `code`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use fedid_domain::services::{FlushError, IdentityError, InboxError, OutboxError, ReadError, ResetError, SessionError};
use fedid_domain::{DeliveryFailure, EnvelopeError, StoreError};
use serde::Serialize;

/// A problem answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub member: Option<String>,
    pub remote: Option<Box<(u16, Option<String>)>>,
    pub retry_after_secs: Option<u64>,
    /// With `method_not_allowed`: the methods the resource supports.
    pub allow: Option<String>,
}

/// The problem body (RFC 9457) with fedid's members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable.
    pub code: &'static str,
    /// For people; never secrets.
    pub detail: String,
    /// With `invalid_request` and `invalid_key`: the member at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// With `delivery_failed`, when the peer answered.
    #[serde(rename = "remoteStatus", skip_serializing_if = "Option::is_none")]
    pub remote_status: Option<u16>,
    #[serde(rename = "remoteCode", skip_serializing_if = "Option::is_none")]
    pub remote_code: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            detail: detail.into(),
            member: None,
            remote: None,
            retry_after_secs: None,
            allow: None,
        }
    }

    pub fn invalid_request(member: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            member: Some(member.into()),
            ..Self::new(400, "invalid_request", detail)
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(401, "unauthenticated", "a valid session token is required")
    }

    pub fn not_found() -> Self {
        Self::new(404, "not_found", "no such resource")
    }

    pub fn method_not_allowed(allow: &str) -> Self {
        Self {
            allow: Some(allow.to_ascii_uppercase()),
            ..Self::new(405, "method_not_allowed", "this method is not allowed on this resource")
        }
    }

    pub fn too_large() -> Self {
        Self::new(413, "payload_too_large", "the request body is too large")
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(429, "rate_limited", "too many requests")
        }
    }

    /// The inbox's answer to a body that is not `application/json`
    /// (PROTOCOL.md section 8: every failure of the body is `invalid_envelope`).
    pub fn envelope_not_json() -> Self {
        Self::new(400, "invalid_envelope", "the body must be application/json")
    }

    /// Key discovery of an alias that no user holds with keys.
    pub fn unknown_user() -> Self {
        Self::new(404, "unknown_user", "no such user, or no keys")
    }

    /// The body did not arrive in time; the connection is closed after it.
    pub fn request_timeout() -> Self {
        Self::new(408, "request_timeout", "the request body did not arrive in time")
    }

    pub fn internal() -> Self {
        Self::new(500, "internal_error", "internal_error")
    }

    fn problem(&self) -> Problem {
        Problem {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail.clone(),
            member: self.member.clone(),
            remote_status: self.remote.as_ref().map(|r| r.0),
            remote_code: self.remote.as_ref().and_then(|r| r.1.clone()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.code)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        match self.code {
            "unauthenticated" => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"fedid\""),
                ));
            }
            "invalid_signature" if self.status == StatusCode::UNAUTHORIZED => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Signature realm=\"federation\""),
                ));
            }
            "unknown_user" => {
                response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
            }
            "request_timeout" => {
                // The rest of the body may still come: never read it as a request.
                response.force_close();
            }
            _ => {}
        }
        if let Some(allow) = self.allow.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
            response.insert_header((header::ALLOW, allow));
        }
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        let body = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            Self::internal().problem()
        } else {
            self.problem()
        };
        response.body(serde_json::to_vec(&body).unwrap_or_default())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        Self::internal()
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let status = match &e {
            IdentityError::UnknownUser => return Self::unauthenticated(),
            IdentityError::Store(s) => return s.clone().into(),
            IdentityError::InvalidAlias(_)
            | IdentityError::InvalidKey { .. }
            | IdentityError::TimestampOutOfWindow
            | IdentityError::InvalidProof { .. } => 400,
            IdentityError::AliasTaken
            | IdentityError::RelationshipsExist
            | IdentityError::RevocationsPending
            | IdentityError::KeyLogFull
            | IdentityError::IdentityNotSetUp
            | IdentityError::KeyLogConflict => 409,
            // No `Retry-After` once the total is spent: waiting cannot help.
            IdentityError::RateLimited { retry_after_secs } => {
                return Self {
                    retry_after_secs: *retry_after_secs,
                    ..Self::new(429, e.code(), e.to_string())
                }
            }
        };
        let member = match &e {
            IdentityError::InvalidKey { member, .. } | IdentityError::InvalidProof { member } => {
                Some((*member).to_owned())
            }
            _ => None,
        };
        Self {
            member,
            ..Self::new(status, e.code(), e.to_string())
        }
    }
}

impl From<ResetError> for ApiError {
    fn from(e: ResetError) -> Self {
        match e {
            ResetError::ConfirmationRequired => Self::new(400, e.code(), e.to_string()),
            ResetError::UnknownUser => Self::unauthenticated(),
            ResetError::Store(s) => s.into(),
        }
    }
}

impl From<FlushError> for ApiError {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::InvalidRequest { member, reason } => Self::invalid_request(member, reason),
            FlushError::IdentityNotSetUp => Self::new(409, e.code(), e.to_string()),
            FlushError::NotQueued => Self::new(404, e.code(), e.to_string()),
            FlushError::UnknownUser => Self::unauthenticated(),
            FlushError::Store(s) => s.into(),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotFound => Self::not_found(),
            ReadError::UnknownUser => Self::unauthenticated(),
            ReadError::Store(s) => s.into(),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Store(s) => s.into(),
            SessionError::Random(_) => Self::internal(),
            other => Self::new(400, other.code(), other.to_string()),
        }
    }
}

/// The inbox answers with the statuses of PROTOCOL.md section 8.
impl From<InboxError> for ApiError {
    fn from(e: InboxError) -> Self {
        match e {
            InboxError::Store(s) => s.into(),
            other => Self::new(other.protocol_status(), other.code(), other.to_string()),
        }
    }
}

fn envelope_status(e: &EnvelopeError) -> u16 {
    match e {
        EnvelopeError::TooLarge => 413,
        _ => 400,
    }
}

impl From<OutboxError> for ApiError {
    fn from(e: OutboxError) -> Self {
        let status = match &e {
            OutboxError::Envelope(inner) => envelope_status(inner),
            OutboxError::TimestampOutOfWindow | OutboxError::InvalidSignature => 400,
            OutboxError::UnknownRecipient => 404,
            OutboxError::IdentityNotSetUp
            | OutboxError::RevocationsPending
            | OutboxError::NoPendingRequest
            | OutboxError::NoRelationship => 409,
            OutboxError::DeliveryFailed(failure) => {
                let remote = match failure {
                    DeliveryFailure::Http { status, code, .. } => Some(Box::new((*status, code.clone()))),
                    _ => None,
                };
                return Self {
                    remote,
                    ..Self::new(502, e.code(), failure.to_string())
                };
            }
            OutboxError::UnknownUser => return Self::unauthenticated(),
            OutboxError::Store(s) => return s.clone().into(),
        };
        Self::new(status, e.code(), e.to_string())
    }
}
