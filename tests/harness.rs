//! Real `fedid-server` processes on 127.0.0.1 for the cross-server tests:
//! each with its own SQLite file, started on a free port and stopped when
//! dropped, and the HTTP calls the tests make.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedid_domain::{Clock, DomainPolicy, Handle, MessageType};
use fedid_testkit::ClientKeys;
use serde_json::{json, Value};

pub const ANY: DomainPolicy = DomainPolicy {
    default_port: 80,
    allow_ip_literals: true,
};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub db: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Server {
    pub fn start(dir: &Path, name: &str, env: &[(&str, &str)]) -> Self {
        let mut server = Server {
            child: None,
            port: free_port(),
            db: dir.join(format!("{name}.db")),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        server.launch();
        server
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fedid-server"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FEDID__") || k == "RUST_LOG") {
            command.env_remove(key);
        }
        command
            .env("FEDID__SERVER__BIND", format!("127.0.0.1:{}", self.port))
            .env("FEDID__FEDERATION__DOMAIN", self.domain())
            .env("FEDID__FEDERATION__SCHEME", "http")
            .env("FEDID__FEDERATION__ALLOW_PRIVATE_NETWORKS", "true")
            .env("FEDID__DATABASE__URL", format!("sqlite://{}", self.db.display()))
            .env("FEDID__SERVER__WORKERS", "2")
            .env("FEDID__LOG__LEVEL", "warn");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    pub fn launch(&mut self) {
        let child = self
            .command()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&format!("{}/healthz", self.base()), None).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "server on port {} did not come up",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let exit = child.wait().unwrap();
            assert_eq!(exit.code(), Some(0));
        }
    }

    pub fn domain(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A user with alias and keys; returns (token, handle, keys).
    pub fn user(&self, alias: &str) -> (String, Handle, ClientKeys) {
        let out = self.command().args(["user", "create"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = serde_json::from_slice::<Value>(&out.stdout).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, body) = send(
            &self.url("/users/me/alias"),
            "PATCH",
            Some(&token),
            json!({ "alias": alias }),
        );
        assert_eq!(status, 200, "{body}");
        let keys = ClientKeys::generate().unwrap();
        self.register_keys(&token, &keys);
        (
            token,
            Handle::parse(&format!("{alias}@{}", self.domain()), ANY).unwrap(),
            keys,
        )
    }

    pub fn register_keys(&self, token: &str, keys: &ClientKeys) {
        let (sk, ek) = keys.public_keys();
        let (status, body) = send(
            &self.url("/users/me/keys"),
            "PUT",
            Some(token),
            json!({ "signingKey": sk, "encryptionKey": ek }),
        );
        assert_eq!(status, 200, "{body}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// `GET /metrics`, as text.
    pub fn metrics(&self) -> String {
        agent()
            .get(&self.url("/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

pub fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent().get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null),
            )
        }
        Err(_) => (0, Value::Null),
    }
}

pub fn send(url: &str, method: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    send_raw(url, method, token, body.to_string())
}

pub fn send_raw(url: &str, method: &str, token: Option<&str>, body: String) -> (u16, Value) {
    let agent = agent();
    let mut request = match method {
        "POST" => agent.post(url),
        "PUT" => agent.put(url),
        _ => agent.patch(url),
    }
    .header("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut r = request.send(&body).unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null),
    )
}

pub fn delete(url: &str, token: &str) -> u16 {
    agent()
        .delete(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .status()
        .as_u16()
}

pub fn now() -> fedid_domain::UnixTime {
    fedid_domain::ports::SystemClock.now()
}

pub fn outbox(
    server: &Server,
    token: &str,
    keys: &ClientKeys,
    from: &Handle,
    to: &Handle,
    kind: MessageType,
) -> (u16, Value) {
    let payload = if kind == MessageType::Message {
        json!({"ciphertext": "3q2-7w"})
    } else {
        json!({})
    };
    let r = keys.outbox_request(from, to, kind, payload.as_object().cloned().unwrap(), now());
    send(
        &server.url("/users/me/outbox"),
        "POST",
        Some(token),
        json!({"to": r.to.as_str(), "messageType": r.message_type, "nonce": r.nonce, "timestamp": r.timestamp,
               "payload": r.payload, "signature": r.signature}),
    )
}

pub fn flush_body(keys: &ClientKeys, from: &Handle, peers: &[&Handle]) -> Value {
    let items: Vec<Value> = peers
        .iter()
        .map(|p| {
            let i = keys.flush_item(from, p, now());
            json!({"peerHandle": i.peer_handle, "signature": i.signature, "nonce": i.nonce, "timestamp": i.timestamp})
        })
        .collect();
    json!({ "items": items })
}

/// The item of `peer` in `token`'s relationship list, if listed.
pub fn relationship_item(server: &Server, token: &str, peer: &Handle) -> Option<Value> {
    let (_, page) = get(&server.url("/users/me/relationships"), Some(token));
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["peerHandle"] == peer.as_str())
        .cloned()
}

pub fn relationship_state(server: &Server, token: &str, peer: &Handle) -> Option<String> {
    relationship_item(server, token, peer).map(|i| i["state"].as_str().unwrap().to_owned())
}
