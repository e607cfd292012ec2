//! The user API as a client calls it: users with alias and keys, requests
//! that must answer a status, the outbox.

use std::time::Duration;

use fedid_domain::ports::SystemClock;
use fedid_domain::{Clock, DomainPolicy, Handle, MessageType, UserId};
use fedid_testkit::ClientKeys;
use serde_json::{json, Map, Value};

use crate::process::Server;

pub type Failure = String;

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .max_idle_connections_per_host(4)
        .build()
        .into()
}

pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), Failure> {
    let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
    let result = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        (m, body) => {
            let request = match m {
                "POST" => agent.post(url),
                "PUT" => agent.put(url),
                _ => agent.patch(url),
            };
            request
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(""))
        }
    };
    let mut response = result.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string().unwrap_or_default()))
}

/// One request that must answer `wanted`; returns the body.
pub fn request(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
    wanted: u16,
) -> Result<String, Failure> {
    let (status, answer) = call(&agent(), method, &server.url(path), Some(token), Some(body))?;
    if status == wanted {
        Ok(answer)
    } else {
        Err(format!("{method} {path}: HTTP {status} {answer}"))
    }
}

/// A user with alias and keys on `server`.
pub struct User {
    pub id: UserId,
    pub token: String,
    pub handle: Handle,
    pub keys: ClientKeys,
}

pub fn user(server: &Server, alias: &str) -> Result<User, Failure> {
    let token = server.create_user()?;
    let body = json!({ "alias": alias }).to_string();
    request(server, "PATCH", "/users/me/alias", &token, &body, 200)?;
    let keys = ClientKeys::generate().ok_or("no randomness")?;
    let identity = set_keys(server, &token, &keys)?;
    let id = identity["userId"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .map(UserId)
        .ok_or("no userId")?;
    let handle =
        Handle::parse(&format!("{alias}@{}", server.domain()), DomainPolicy::ANY).map_err(|e| e.to_string())?;
    Ok(User {
        id,
        token,
        handle,
        keys,
    })
}

/// Registers keys; returns the identity object.
pub fn set_keys(server: &Server, token: &str, keys: &ClientKeys) -> Result<Value, Failure> {
    let (sk, ek) = keys.public_keys();
    let body = json!({ "signingKey": sk, "encryptionKey": ek }).to_string();
    let answer = request(server, "PUT", "/users/me/keys", token, &body, 200)?;
    serde_json::from_str(&answer).map_err(|e| e.to_string())
}

/// Sends an envelope `from` signs through its server's outbox.
///
/// A peer that answers `sender_keys_unavailable` is asked again a second
/// later, a few times: it may be pacing its key lookups of a new domain
/// (8 a second, docs/security.md), as it does when a setup introduces many
/// users at once.
pub fn outbox(server: &Server, from: &User, to: &Handle, kind: MessageType) -> Result<(), Failure> {
    let mut tries = 0;
    loop {
        let r = from
            .keys
            .outbox_request(&from.handle, to, kind, Map::new(), SystemClock.now());
        let body = json!({"to": r.to.as_str(), "messageType": r.message_type, "nonce": r.nonce,
                          "timestamp": r.timestamp, "signature": r.signature})
        .to_string();
        match request(server, "POST", "/users/me/outbox", &from.token, &body, 200) {
            Err(e) if tries < 5 && e.contains("sender_keys_unavailable") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            other => return other.map(|_| ()),
        }
    }
}
