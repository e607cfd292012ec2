//! A real fedid HTTP server for integration tests (feature `http`): the
//! actix app of `fedid-http` on 127.0.0.1 at a free port, on a thread of
//! its own until dropped, and a plain client for it.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fedid_testkit::http::TestServer;
//!
//! let clock = Arc::new(fedid_testkit::ManualClock::at_vectors_now());
//! let network = fedid_testkit::Network::new(std::time::Duration::from_millis(100));
//! let instance = fedid_testkit::Instance::start(&network, "a.example", clock).ok_or("settings")?;
//! let server = TestServer::start(instance.fedid.clone())?;
//! let reply = server.call("GET", "/healthz", None, None)?;
//! assert_eq!(reply.status, 200);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use fedid_domain::Fedid;
use fedid_http::{AppState, HttpSettings, Metrics, WorkPool};

/// A running server; stopped when dropped.
pub struct TestServer {
    base: String,
    agent: ureq::Agent,
    system: actix_web::rt::System,
}

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Every header, as sent.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The method is not one of GET, POST, PUT, PATCH and DELETE.
    #[error("unsupported method {0}")]
    Method(String),
    /// No HTTP answer (connection, protocol).
    #[error(transparent)]
    Http(#[from] ureq::Error),
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The first header of this name, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The problem `code` of an `application/problem+json` answer.
    pub fn problem_code(&self) -> Option<String> {
        if self.header("content-type") != Some("application/problem+json") {
            return None;
        }
        self.json()["code"].as_str().map(str::to_owned)
    }
}

impl TestServer {
    /// Serves `fedid` with the HTTP defaults of a server (no metrics
    /// token, no inbox rate limit, small pools).
    pub fn start(fedid: Arc<Fedid>) -> std::io::Result<Self> {
        Self::start_with(app_state(
            fedid,
            Arc::new(Metrics::default()),
            HttpSettings::new(65_536, 1_000),
        )?)
    }

    /// Serves `state` (see [`app_state`]), with two workers.
    pub fn start_with(state: AppState) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (started, system) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fedid-test-server".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                // Built inside the system: actix spawns its tasks there.
                let server =
                    system.block_on(async { fedid_http::server(listener, actix_web::web::Data::new(state), 2, 1) });
                // The receiver waits for this; nothing to do if it has gone.
                match server {
                    Ok(server) => {
                        let _ = started.send(Ok(actix_web::rt::System::current()));
                        let _ = system.block_on(server);
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                    }
                }
            })?;
        let system = system
            .recv()
            .map_err(|_| std::io::Error::other("the server thread did not start"))??;
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Ok(Self {
            base: format!("http://127.0.0.1:{port}"),
            agent,
            system,
        })
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Calls `method path` with an optional Bearer `token` and an optional
    /// body with its content type.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, CallError> {
        let url = self.url(path);
        let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        let mut response = match method {
            "GET" => self.agent.get(&url).header("Authorization", &auth).call()?,
            "DELETE" => self.agent.delete(&url).header("Authorization", &auth).call()?,
            "POST" | "PUT" | "PATCH" => {
                let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
                let request = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                request
                    .header("Authorization", &auth)
                    .header("Content-Type", content_type)
                    .send(&bytes[..])?
            }
            other => return Err(CallError::Method(other.to_owned())),
        };
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Ok(Reply { status, headers, body })
    }

    /// Calls with a JSON body.
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<Reply, CallError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.call(method, path, token, Some(("application/json", bytes)))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.system.stop();
    }
}

/// The app state of a test server: `fedid` with `metrics` and `http`, no
/// inbox rate limit, two readers and eight federation threads.
pub fn app_state(fedid: Arc<Fedid>, metrics: Arc<Metrics>, http: HttpSettings) -> std::io::Result<AppState> {
    Ok(AppState {
        fedid,
        metrics,
        http,
        inbox_limiter: None,
        readers: WorkPool::new("reader", 2)?,
        federation: WorkPool::new("federation", 8)?,
        readiness: Default::default(),
    })
}
