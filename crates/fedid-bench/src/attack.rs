//! The attacks of docs/security.md against a real `fedid-server`, each
//! measuring what the attack could make the server keep or wait for, and
//! judging it against its bound. `make attack` runs them all against a
//! release build; `crates/fedid-server/tests/attacks.rs` runs each one
//! against the debug build, as a regression test.
//!
//! Every attack talks to 127.0.0.1 only (a second client uses 127.0.0.2,
//! also loopback), bounds its requests in number and time, and stops the
//! servers it starts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedid_domain::keylog::{EntryKind, KeyLogEntry};
use fedid_domain::ports::SystemClock;
use fedid_domain::{Clock, DomainPolicy, Handle, MessageType, Scheme, Timestamp};
use fedid_testkit::ClientKeys;
use serde_json::{json, Map, Value};

use crate::client::{agent, call, user, Failure, User};
use crate::process::{Launch, Server};

/// One measured figure and, when it is judged, whether it kept its bound.
#[derive(Debug, Clone)]
pub struct Finding {
    pub name: &'static str,
    pub value: f64,
    /// `None`: reported, not judged.
    pub kept: Option<bool>,
    pub bound: &'static str,
}

impl Finding {
    fn at_most(name: &'static str, value: f64, max: f64, bound: &'static str) -> Self {
        Self {
            name,
            value,
            kept: Some(value <= max),
            bound,
        }
    }

    fn equal(name: &'static str, value: f64, wanted: f64, bound: &'static str) -> Self {
        Self {
            name,
            value,
            kept: Some(value == wanted),
            bound,
        }
    }

    fn info(name: &'static str, value: f64) -> Self {
        Self {
            name,
            value,
            kept: None,
            bound: "",
        }
    }
}

/// Where an attack runs: the server binary and a scratch folder.
pub struct Target {
    pub binary: PathBuf,
    pub dir: PathBuf,
}

impl Target {
    fn start(&self, name: &str, env: &[(&str, &str)], launch: Launch<'_>) -> Result<Server, Failure> {
        let db = format!("sqlite://{}", self.dir.join(format!("{name}.db")).display());
        Server::launch(&self.binary, &db, env, launch)
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP on loopback, from a chosen source address.

/// A connection from `source` (a loopback address) to the server.
fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(),
        Duration::from_secs(5),
    )?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// Reads one response: its status and body.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, body))
}

/// `GET path` on a new connection from `source`: status, body and time taken.
fn timed_get(source: Ipv4Addr, port: u16, path: &str) -> Result<(u16, Vec<u8>, Duration), Failure> {
    let started = Instant::now();
    let mut stream = connect_from(source, port).map_err(|e| format!("connect from {source}: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let (status, body) = read_response(&mut BufReader::new(stream)).map_err(|e| format!("GET {path}: {e}"))?;
    Ok((status, body, started.elapsed()))
}

/// `POST /federation/inbox` with `wire` on a new connection from `source`.
fn post_inbox_from(source: Ipv4Addr, port: u16, wire: &str) -> Result<u16, Failure> {
    let mut stream = connect_from(source, port).map_err(|e| format!("connect from {source}: {e}"))?;
    let head = format!(
        "POST /federation/inbox HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        wire.len()
    );
    stream
        .write_all([head.as_bytes(), wire.as_bytes()].concat().as_slice())
        .map_err(|e| e.to_string())?;
    let (status, _) = read_response(&mut BufReader::new(stream)).map_err(|e| format!("inbox: {e}"))?;
    Ok(status)
}

// ---------------------------------------------------------------------------
// Peers on loopback: one thread per connection, `Connection: close`.

/// A listener on a free loopback port, and the port.
fn bind_peer() -> Result<(TcpListener, u16), Failure> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((listener, port))
}

/// Answers each connection to `listener` with `answer` on a thread of its
/// own, until `stop` is set.
fn serve_peer(listener: TcpListener, stop: Arc<AtomicBool>, answer: impl Fn(TcpStream) + Send + Sync + 'static) {
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let answer = answer.clone();
            std::thread::spawn(move || answer(stream));
        }
    });
}

/// Reads a request's head: its target, and the stream to answer on.
fn request_target(stream: TcpStream) -> Option<(String, TcpStream)> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let writer = stream.try_clone().ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    Some((target, writer))
}

/// Writes a whole answer and lets the connection close.
fn write_answer(writer: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let _ = writer.write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

// ---------------------------------------------------------------------------
// A peer's key server: answers discovery for the handles it holds, or
// hangs, and counts the lookups it gets.

pub struct KeyServer {
    pub port: u16,
    keys: Arc<Mutex<HashMap<String, (String, String)>>>,
    hang: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    pub lookups: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl KeyServer {
    pub fn start() -> Result<Self, Failure> {
        let (listener, port) = bind_peer()?;
        let server = Self {
            port,
            keys: Arc::default(),
            hang: Arc::default(),
            stop: Arc::default(),
            lookups: Arc::default(),
            held: Arc::default(),
        };
        let (keys, hang, lookups, held) = (
            server.keys.clone(),
            server.hang.clone(),
            server.lookups.clone(),
            server.held.clone(),
        );
        serve_peer(listener, server.stop.clone(), move |stream| {
            answer_lookup(stream, &keys, &hang, &lookups, &held)
        });
        Ok(server)
    }

    pub fn domain(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A handle of this peer whose keys it publishes.
    pub fn publish(&self, alias: &str) -> Result<(Handle, ClientKeys), Failure> {
        let keys = ClientKeys::generate().ok_or("no randomness")?;
        let handle = Handle::parse(
            &format!("{alias}@{}", self.domain()),
            DomainPolicy::for_scheme(Scheme::Http, true),
        )
        .map_err(|e| e.to_string())?;
        let (signing, encryption) = keys.public_keys();
        self.keys
            .lock()
            .map_err(|e| e.to_string())?
            .insert(alias.to_owned(), (signing, encryption));
        Ok((handle, keys))
    }

    /// From now on, every lookup is read and never answered.
    pub fn hang(&self) {
        self.hang.store(true, Ordering::SeqCst);
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
    }
}

fn answer_lookup(
    stream: TcpStream,
    keys: &Mutex<HashMap<String, (String, String)>>,
    hang: &AtomicBool,
    lookups: &AtomicUsize,
    held: &Mutex<Vec<TcpStream>>,
) {
    let Some((path, mut writer)) = request_target(stream) else {
        return;
    };
    lookups.fetch_add(1, Ordering::SeqCst);
    if hang.load(Ordering::SeqCst) {
        if let Ok(mut held) = held.lock() {
            held.push(writer);
        }
        return;
    }
    let alias = path.rsplit('/').next().unwrap_or("");
    let found = keys.lock().ok().and_then(|k| k.get(alias).cloned());
    let port = writer.local_addr().map(|a| a.port()).unwrap_or(0);
    let (status, body) = match found {
        Some((signing, encryption)) => (
            "200 OK",
            json!({"handle": format!("{alias}@127.0.0.1:{port}"), "signingKey": signing,
                   "encryptionKey": encryption, "keysUpdatedAt": null})
            .to_string(),
        ),
        None => (
            "404 Not Found",
            json!({"type": "about:blank", "title": "Not Found", "status": 404, "code": "unknown_user",
                   "detail": "no such user"})
            .to_string(),
        ),
    };
    let content_type = if status.starts_with("200") {
        "application/json"
    } else {
        "application/problem+json"
    };
    write_answer(&mut writer, status, content_type, &body);
}

/// An envelope from `from` to `to`, signed with `keys`, in wire form.
fn envelope(keys: &ClientKeys, from: &Handle, to: &Handle, kind: MessageType) -> String {
    keys.envelope(from, to, kind, Map::new(), SystemClock.now()).wire_form()
}

fn post_inbox(agent: &ureq::Agent, server: &Server, wire: &str) -> Result<u16, Failure> {
    call(agent, "POST", &server.url("/federation/inbox"), None, Some(wire)).map(|(status, _)| status)
}

// ---------------------------------------------------------------------------
// The attacks.

/// Hole 1: every request names a new HTTP method. Labels and log lines
/// must take known values only: memory, `/metrics` and the log stay small.
pub fn method_flood(target: &Target, requests: usize, method_bytes: usize) -> Result<Vec<Finding>, Failure> {
    let log = target.dir.join("method_flood.log");
    let server = target.start(
        "method_flood",
        &[],
        Launch {
            log: Some(&log),
            ..Launch::default()
        },
    )?;
    for _ in 0..200 {
        timed_get(Ipv4Addr::LOCALHOST, server.port, "/healthz")?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let (before, _) = server.rss_mb();
    let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let sent = AtomicUsize::new(0);
    let threads = 4;
    std::thread::scope(|scope| -> Result<(), Failure> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (sent, port) = (&sent, server.port);
                scope.spawn(move || -> Result<(), Failure> {
                    let stream = connect_from(Ipv4Addr::LOCALHOST, port).map_err(|e| e.to_string())?;
                    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
                    let mut reader = BufReader::new(stream);
                    for i in (t..requests).step_by(threads) {
                        let mut method = format!("M{i:09}");
                        method.push_str(&"X".repeat(method_bytes.saturating_sub(method.len())));
                        writer
                            .write_all(format!("{method} /healthz HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                            .map_err(|e| e.to_string())?;
                        read_response(&mut reader).map_err(|e| format!("method flood: {e}"))?;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().map_err(|_| "a flood thread panicked")??;
        }
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let (after, _) = server.rss_mb();
    let (_, metrics, _) = timed_get(Ipv4Addr::LOCALHOST, server.port, "/metrics")?;
    let log_after = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let per_request = (log_after.saturating_sub(log_before)) as f64 / sent.load(Ordering::Relaxed).max(1) as f64;
    Ok(vec![
        Finding::at_most("method_flood_rss_growth_mb", round(after - before), 5.0, "at most 5 MB"),
        Finding::at_most(
            "method_flood_metrics_bytes",
            metrics.len() as f64,
            65_535.0,
            "under 64 KB",
        ),
        Finding::at_most(
            "method_flood_log_bytes_per_request",
            round(per_request),
            512.0,
            "at most 512 bytes",
        ),
    ])
}

/// Hole 2: one address opens many connections that declare a body and
/// stall. Another address is still answered at once; each stalled body
/// gets `408` at the deadline and its connection closes.
pub fn stalled_bodies(target: &Target, connections: usize) -> Result<Vec<Finding>, Failure> {
    let per_ip = 32;
    let server = target.start(
        "stalled_bodies",
        &[
            ("FEDID__SERVER__MAX_CONNECTIONS_PER_IP", "32"),
            ("FEDID__SERVER__BODY_TIMEOUT_SECS", "2"),
        ],
        // 512 descriptors: fewer than the attack's connections, so that
        // without its caps the server runs out of them.
        Launch {
            max_open_files: Some(512),
            ..Launch::default()
        },
    )?;
    let stall = "POST /federation/inbox HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{";
    timed_get(Ipv4Addr::LOCALHOST, server.port, "/healthz")?;
    let (before, _) = server.rss_mb();
    let mut held = Vec::new();
    for _ in 0..connections {
        let Ok(mut stream) = connect_from(Ipv4Addr::LOCALHOST, server.port) else {
            continue;
        };
        if stream.write_all(stall.as_bytes()).is_ok() {
            held.push(stream);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, _, other) = timed_get(Ipv4Addr::new(127, 0, 0, 2), server.port, "/healthz")?;
    // Which of the attacker's connections the server still keeps.
    let mut open = Vec::new();
    for stream in held {
        stream
            .set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        match (&stream).read(&mut byte) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                open.push(stream)
            }
            _ => {}
        }
    }
    let kept = open.len();
    // At the deadline, each stalled body is answered 408 and closed.
    let mut answered_408 = 0;
    for stream in open {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        if let Ok((408, _)) = read_response(&mut reader) {
            let mut rest = Vec::new();
            if reader.read_to_end(&mut rest).is_ok() {
                answered_408 += 1;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let (after, _) = server.rss_mb();
    Ok(vec![
        Finding::at_most(
            "stalled_bodies_rss_growth_mb",
            round(after - before),
            8.0,
            "at most 8 MB once the flood is over (docs/security.md)",
        ),
        Finding::at_most(
            "stalled_bodies_other_client_ms",
            if status == 200 {
                round(other.as_secs_f64() * 1000.0)
            } else {
                f64::INFINITY
            },
            1000.0,
            "under 1 s, answered 200",
        ),
        Finding::at_most(
            "stalled_bodies_connections_kept",
            kept as f64,
            per_ip as f64,
            "at most server.max_connections_per_ip (32)",
        ),
        Finding::equal(
            "stalled_bodies_answered_408_and_closed",
            answered_408 as f64,
            kept as f64,
            "every kept one, at the deadline",
        ),
    ])
}

/// Slowloris: connections that send a request head a little at a time and
/// never finish it. The server closes each when the head is late (actix's
/// request-head timeout, 5 s).
pub fn slow_headers(target: &Target, connections: usize) -> Result<Vec<Finding>, Failure> {
    let server = target.start("slow_headers", &[], Launch::default())?;
    let started = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..connections {
        let mut stream = connect_from(Ipv4Addr::LOCALHOST, server.port).map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .map_err(|e| e.to_string())?;
        streams.push(stream);
    }
    let mut closed_after = Duration::ZERO;
    for stream in streams {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let mut rest = Vec::new();
        // Ends when the server closes (an answer first, or none).
        let _ = (&stream).read_to_end(&mut rest);
        closed_after = closed_after.max(started.elapsed());
    }
    Ok(vec![Finding::at_most(
        "slow_headers_closed_after_s",
        round(closed_after.as_secs_f64()),
        10.0,
        "within 10 s (head timeout 5 s)",
    )])
}

/// A local user with alias and keys, and a plain one for timing writes.
fn local_users(server: &Server) -> Result<(User, String), Failure> {
    let alice = user(server, "alice")?;
    let bystander = server.create_user()?;
    Ok((alice, bystander))
}

/// Hole 3: a sender's key server hangs, and many envelopes with bad
/// signatures from that sender each want a refetch. A user's write is
/// still answered at once.
pub fn refetch_storm(target: &Target, envelopes: usize) -> Result<Vec<Finding>, Failure> {
    let server = target.start("refetch_storm", &[], Launch::default())?;
    let peer = KeyServer::start()?;
    let (mallory, keys) = peer.publish("mallory")?;
    let (alice, bystander) = local_users(&server)?;
    let agent = agent();
    let first = post_inbox(
        &agent,
        &server,
        &envelope(&keys, &mallory, &alice.handle, MessageType::RelationshipRequest),
    )?;
    if first != 202 {
        return Err(format!("refetch storm: the first envelope got {first}"));
    }
    peer.hang();
    let forged = ClientKeys::generate().ok_or("no randomness")?;
    let wires: Vec<String> = (0..envelopes)
        .map(|_| envelope(&forged, &mallory, &alice.handle, MessageType::Message))
        .collect();
    // Every envelope on its own connection at once, from four loopback
    // addresses (each under the per-address connection cap): more than
    // the threads of actix's blocking pool.
    let peak_threads = AtomicUsize::new(0);
    let patch_ms = std::thread::scope(|scope| -> Result<f64, Failure> {
        let port = server.port;
        let senders: Vec<_> = wires
            .iter()
            .enumerate()
            .filter_map(|(i, wire)| {
                let source = Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8);
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn_scoped(scope, move || post_inbox_from(source, port, wire))
                    .ok()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1000));
        peak_threads.fetch_max(server.threads(), Ordering::Relaxed);
        let started = Instant::now();
        let (status, _) = call(
            &agent,
            "PATCH",
            &server.url("/users/me/alias"),
            Some(&bystander),
            Some(r#"{"alias":"bystander"}"#),
        )?;
        let patch_ms = started.elapsed().as_secs_f64() * 1000.0;
        peak_threads.fetch_max(server.threads(), Ordering::Relaxed);
        for sender in senders {
            let _ = sender.join();
        }
        if status != 200 {
            return Err(format!("refetch storm: PATCH /users/me/alias answered {status}"));
        }
        Ok(patch_ms)
    })?;
    Ok(vec![
        Finding::at_most("refetch_storm_alias_patch_ms", round(patch_ms), 1000.0, "under 1 s"),
        Finding::info(
            "refetch_storm_server_threads",
            peak_threads.load(Ordering::Relaxed) as f64,
        ),
    ])
}

/// Hole 4: one stranger alternates REQUEST and REVOKE to fill an inbox.
/// What it stores is bounded; another sender still gets in.
pub fn one_sender_inbox(target: &Target, cycles: usize) -> Result<Vec<Finding>, Failure> {
    let server = target.start("one_sender_inbox", &[], Launch::default())?;
    let peer = KeyServer::start()?;
    let (mallory, keys) = peer.publish("mallory")?;
    let (trent, trent_keys) = peer.publish("trent")?;
    let (alice, _) = local_users(&server)?;
    let agent = agent();
    for _ in 0..cycles {
        for kind in [MessageType::RelationshipRequest, MessageType::RelationshipRevoke] {
            post_inbox(&agent, &server, &envelope(&keys, &mallory, &alice.handle, kind))?;
        }
    }
    let (_, inbox) = call(
        &agent,
        "GET",
        &server.url("/users/me/inbox?limit=1000"),
        Some(&alice.token),
        None,
    )?;
    let stored = serde_json::from_str::<Value>(&inbox)
        .ok()
        .and_then(|v| v["items"].as_array().map(Vec::len))
        .ok_or_else(|| format!("not an inbox page: {inbox}"))?;
    let other = post_inbox(
        &agent,
        &server,
        &envelope(&trent_keys, &trent, &alice.handle, MessageType::RelationshipRequest),
    )?;
    Ok(vec![
        Finding::at_most(
            "one_sender_inbox_rows",
            stored as f64,
            16.0,
            "at most limits.unsolicited_per_sender (16)",
        ),
        Finding::equal(
            "one_sender_other_sender_status",
            f64::from(other),
            202.0,
            "202: others still get in",
        ),
    ])
}

/// Hole 5: one user claims alias after alias. Changes are bounded.
pub fn alias_squatting(target: &Target, attempts: usize) -> Result<Vec<Finding>, Failure> {
    let server = target.start("alias_squatting", &[], Launch::default())?;
    let token = server.create_user()?;
    let agent = agent();
    let mut taken = 0;
    let mut last = 0;
    for i in 0..attempts {
        let body = json!({ "alias": format!("squat{i:05}") }).to_string();
        let (status, _) = call(
            &agent,
            "PATCH",
            &server.url("/users/me/alias"),
            Some(&token),
            Some(&body),
        )?;
        if status == 200 {
            taken += 1;
        }
        last = status;
    }
    Ok(vec![
        Finding::at_most(
            "alias_squatting_aliases_taken",
            taken as f64,
            5.0,
            "at most limits.alias_changes_per_day (5)",
        ),
        Finding::equal(
            "alias_squatting_last_status",
            f64::from(last),
            429.0,
            "429 rate_limited",
        ),
    ])
}

/// Hole 6: envelopes from ever new aliases of one domain, each wanting a
/// key lookup there. Lookups per domain are bounded per second.
pub fn key_lookup_amplifier(target: &Target, envelopes: usize) -> Result<Vec<Finding>, Failure> {
    let server = target.start("key_lookup_amplifier", &[], Launch::default())?;
    let peer = KeyServer::start()?;
    let (alice, _) = local_users(&server)?;
    let keys = ClientKeys::generate().ok_or("no randomness")?;
    let policy = DomainPolicy::for_scheme(Scheme::Http, true);
    let agent = agent();
    let started = Instant::now();
    for i in 0..envelopes {
        let from = Handle::parse(&format!("rotating{i}@{}", peer.domain()), policy).map_err(|e| e.to_string())?;
        post_inbox(
            &agent,
            &server,
            &envelope(&keys, &from, &alice.handle, MessageType::RelationshipRequest),
        )?;
    }
    // The limit counts whole seconds of the server's own clock, which the
    // run does not start on: a run of e seconds can touch ceil(e) + 1 of
    // them, and each may spend its 8 lookups.
    let windows = started.elapsed().as_secs_f64().ceil() + 1.0;
    let lookups = peer.lookups.load(Ordering::SeqCst) as f64;
    Ok(vec![Finding::at_most(
        "key_lookups_per_domain_per_second",
        round(lookups / windows),
        8.0,
        "at most 8 new lookups a second per domain",
    )])
}

// ---------------------------------------------------------------------------
// A peer that gives every alias a long key log of proven rotations: the
// costliest first contact a stranger can ask for (PROTOCOL.md section 12).

pub struct LogServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Entries served in key-log pages.
    pub entries_served: Arc<AtomicUsize>,
    /// The keys every alias publishes (those of the log's last entries).
    pub keys: ClientKeys,
}

struct LongLog {
    /// Entries 1 to n - 1, shared by every alias, as served.
    shared: Vec<String>,
    last_shared: KeyLogEntry,
    kind: EntryKind,
    /// Entry n of each alias (its handle), made on first request.
    last: Mutex<HashMap<String, KeyLogEntry>>,
}

impl LongLog {
    fn last_of(&self, handle: &str) -> Option<KeyLogEntry> {
        let mut last = self.last.lock().ok()?;
        if let Some(entry) = last.get(handle) {
            return Some(entry.clone());
        }
        let parsed = Handle::parse(handle, DomainPolicy::for_scheme(Scheme::Http, true)).ok()?;
        let at = Timestamp::from_instant(self.last_shared.at().instant().plus_secs(1));
        let seq = self.last_shared.seq() + 1;
        let entry = KeyLogEntry::build(&parsed, seq, &self.last_shared.hash(), &at, &self.kind, None, None).ok()?;
        last.insert(handle.to_owned(), entry.clone());
        Some(entry)
    }
}

impl LogServer {
    /// A peer whose aliases each publish a log of `entries` entries.
    pub fn start(entries: u64) -> Result<Self, Failure> {
        let (listener, port) = bind_peer()?;
        let shared_handle = Handle::parse(
            &format!("shared@127.0.0.1:{port}"),
            DomainPolicy::for_scheme(Scheme::Http, true),
        )
        .map_err(|e| e.to_string())?;
        let start = SystemClock.now().plus_secs(-(entries as i64) - 3_600);
        let (log, keys) = crate::keylog::proven_rotations(&shared_handle, entries - 1, start)?;
        let log = Arc::new(LongLog {
            shared: log.iter().map(KeyLogEntry::entry_text).collect(),
            last_shared: log.last().ok_or("no entry")?.clone(),
            kind: crate::keylog::keys_entry(&keys)?,
            last: Mutex::default(),
        });
        let (stop, entries_served) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let served = entries_served.clone();
        let published = keys.public_keys();
        serve_peer(listener, stop.clone(), move |stream| {
            answer_log_request(stream, port, &log, &served, &published)
        });
        Ok(Self {
            port,
            stop,
            entries_served,
            keys,
        })
    }

    pub fn domain(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for LogServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer_log_request(stream: TcpStream, port: u16, log: &LongLog, served: &AtomicUsize, keys: &(String, String)) {
    let Some((target, mut writer)) = request_target(stream) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let rest = path.strip_prefix("/federation/users/").unwrap_or("");
    let (alias, keylog) = match rest.strip_suffix("/keylog") {
        Some(alias) => (alias, true),
        None => (rest, false),
    };
    let handle = format!("{alias}@127.0.0.1:{port}");
    let Some(last) = log.last_of(&handle) else { return };
    let seq = last.seq();
    let body = if keylog {
        let after: usize = query.strip_prefix("after=").and_then(|n| n.parse().ok()).unwrap_or(0);
        let mut entries: Vec<&str> = log.shared.iter().skip(after).take(100).map(String::as_str).collect();
        let last_text = last.entry_text();
        if entries.len() < 100 && after < seq as usize {
            entries.push(&last_text);
        }
        served.fetch_add(entries.len(), Ordering::SeqCst);
        format!(
            "{{\"handle\":\"{handle}\",\"entries\":[{}],\"seq\":{seq},\"head\":\"{}\"}}",
            entries.join(","),
            last.hash()
        )
    } else {
        json!({"handle": handle, "signingKey": keys.0, "encryptionKey": keys.1, "keysUpdatedAt": null,
               "keyLogSeq": seq, "keyLogHead": last.hash()})
        .to_string()
    };
    write_answer(&mut writer, "200 OK", "application/json", &body);
}

/// Hole 8: first contacts with ever new aliases of peers whose every alias
/// publishes a log of `entries` proven rotations (10,000: about 0.9 s of
/// CPU to check each). Log checks share a budget of entries, so the server
/// keeps serving its users.
pub fn key_log_flood(target: &Target, entries: u64, seconds: u64) -> Result<Vec<Finding>, Failure> {
    let server = target.start("key_log_flood", &[], Launch::default())?;
    let peers = [LogServer::start(entries)?, LogServer::start(entries)?];
    let (alice, bystander) = local_users(&server)?;
    let policy = DomainPolicy::for_scheme(Scheme::Http, true);
    let stop = Arc::new(AtomicBool::new(false));
    let identity_url = server.url("/users/me/identity");
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let agent = agent();
            let mut latencies = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                if call(&agent, "GET", &identity_url, Some(&bystander), None).is_ok_and(|(s, _)| s == 200) {
                    latencies.push(started.elapsed());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            latencies
        })
    };
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let next_alias = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let agent = agent();
                while Instant::now() < deadline {
                    let i = next_alias.fetch_add(1, Ordering::SeqCst);
                    let peer = &peers[i % peers.len()];
                    let Ok(from) = Handle::parse(&format!("stranger{i}@{}", peer.domain()), policy) else {
                        continue;
                    };
                    let wire = envelope(&peer.keys, &from, &alice.handle, MessageType::RelationshipRequest);
                    if post_inbox(&agent, &server, &wire).is_ok_and(|status| status == 202) {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cores = (server.cpu_seconds() - cpu_before) / elapsed;
    stop.store(true, Ordering::SeqCst);
    let mut latencies = watcher.join().map_err(|_| "watcher failed")?;
    latencies.sort();
    let p99 = latencies
        .get(latencies.len().saturating_sub(1) * 99 / 100)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    let served: usize = peers.iter().map(|p| p.entries_served.load(Ordering::SeqCst)).sum();
    // The budget: one whole log at once, then 2,000 entries a second.
    let budget_per_s = (10_000.0 + 2_000.0 * elapsed) / elapsed;
    Ok(vec![
        Finding::info(
            "key_log_flood_first_contacts_accepted",
            accepted.load(Ordering::SeqCst) as f64,
        ),
        Finding::info("key_log_flood_server_cores", round(cores)),
        Finding::at_most(
            "key_log_flood_entries_fetched_per_s",
            round(served as f64 / elapsed),
            round(budget_per_s),
            "log entries fetched and checked share 10,000 at once and 2,000 a second",
        ),
        Finding::at_most(
            "key_log_flood_other_user_p99_ms",
            round(p99),
            100.0,
            "another user's identity GET stays fast",
        ),
    ])
}

/// Hole 7: a database URL with a password in it is refused. No message
/// shows the password.
pub fn database_password(target: &Target) -> Result<Vec<Finding>, Failure> {
    let secret = "hunter2-do-not-print";
    let mut shown = 0;
    for url in [
        format!("postgres://fedid:{secret}@127.0.0.1:1/fedid"),
        format!("mysql://fedid:{secret}@127.0.0.1/fedid"),
    ] {
        let output = std::process::Command::new(&target.binary)
            .arg("migrate")
            .env("FEDID__DATABASE__URL", &url)
            .env("FEDID__FEDERATION__DOMAIN", "a.example")
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            return Err(format!("migrate accepted {url}"));
        }
        let printed = [output.stdout, output.stderr].concat();
        if String::from_utf8_lossy(&printed).contains(secret) {
            shown += 1;
        }
    }
    Ok(vec![Finding::equal(
        "database_password_shown",
        f64::from(shown),
        0.0,
        "never",
    )])
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Runs every attack (or those whose name contains `only`) at the sizes of
/// docs/security.md; prints `name: value` lines as they come, then `N
/// passed, M failed` (judged findings). Returns whether all passed.
pub fn run_all(binary: &Path, only: Option<&str>) -> Result<bool, Failure> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let target = Target {
        binary: binary.to_owned(),
        dir: dir.path().to_owned(),
    };
    type Attack<'a> = Box<dyn Fn(&Target) -> Result<Vec<Finding>, Failure> + 'a>;
    let attacks: Vec<(&str, Attack)> = vec![
        ("method_flood", Box::new(|t| method_flood(t, 10_000, 100_000))),
        ("stalled_bodies", Box::new(|t| stalled_bodies(t, 600))),
        ("slow_headers", Box::new(|t| slow_headers(t, 100))),
        ("refetch_storm", Box::new(|t| refetch_storm(t, 1_000))),
        ("one_sender_inbox", Box::new(|t| one_sender_inbox(t, 100))),
        ("alias_squatting", Box::new(|t| alias_squatting(t, 1_000))),
        ("key_lookup_amplifier", Box::new(|t| key_lookup_amplifier(t, 300))),
        ("key_log_flood", Box::new(|t| key_log_flood(t, 10_000, 10))),
        ("database_password", Box::new(database_password)),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, attack) in attacks {
        if only.is_some_and(|only| !name.contains(only)) {
            continue;
        }
        match attack(&target) {
            Ok(findings) => {
                for finding in findings {
                    println!("{}: {}", finding.name, finding.value);
                    match finding.kept {
                        Some(true) => passed += 1,
                        Some(false) => {
                            failed += 1;
                            eprintln!("{} broke its bound: {}", finding.name, finding.bound);
                        }
                        None => {}
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{name} could not run: {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}
