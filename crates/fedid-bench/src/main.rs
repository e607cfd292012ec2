//! `make bench`: fedid's figures, each ratio against its reference measured
//! in the same run on the same machine. Prints one `name: value` line per
//! figure, last. Real `fedid-server` processes (release build, next to this
//! binary) on 127.0.0.1; PostgreSQL from FEDID_BENCH_POSTGRES_URL (default
//! the local one) in a fresh schema.

#![forbid(unsafe_code)]

mod load;
mod soak;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedid_domain::ports::{write, SystemClock};
use fedid_domain::{Clock, DomainPolicy, Handle, MessageType, Relationship, RelationshipState};
use fedid_testkit::ClientKeys;
use serde_json::{json, Map, Value};

use fedid_bench::client::{agent, call, outbox, request, set_keys, user, Failure, User};
use fedid_bench::process::{cpu_seconds_of, Server};

/// Concurrent connections of the load generator (FEDID_BENCH_CONNECTIONS).
fn connections() -> usize {
    std::env::var("FEDID_BENCH_CONNECTIONS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32)
}

/// Sends one request per entry of `bodies` to `url` (POST with the body, GET
/// without) over `connections()` concurrent keep-alive connections; returns
/// how many answered `wanted`, and the time taken.
fn hammer(url: &str, bodies: &[Option<String>], token: Option<&str>, wanted: u16) -> (usize, Duration) {
    let Some((port, path)) = load::split_url(url) else {
        return (0, Duration::ZERO);
    };
    let next = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..connections() {
            let (path, next, ok) = (&path, &next, &ok);
            scope.spawn(move || {
                let mut connection = load::Connection::new(port);
                while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let method = if body.is_some() { "POST" } else { "GET" };
                    if connection
                        .send(method, path, token, body.as_deref())
                        .is_ok_and(|status| status == wanted)
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    (ok.load(Ordering::Relaxed), started.elapsed())
}

/// Rounds of each rate and its reference, alternated; each figure is the
/// median of its rounds, so that a burst of noise on this shared machine
/// moves one round, not the figure.
const ROUNDS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn verify_raw_per_s() -> f64 {
    let keys = fedid_domain::SigningSecret::from_seed(&[7; 32]);
    let Ok(keys) = keys else { return 0.0 };
    let message = vec![b'x'; 220];
    let signature = keys.sign(&message);
    let public = keys.public_key();
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            if signature.verify(&public, &message) {
                count += 1;
            }
        }
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// Envelopes per second accepted by the inbox of a server on `db_url`, and
/// `verify_raw_per_s`, in `rounds` alternated rounds of `count` envelopes
/// spread over `recipients` users: (inbox, verify) medians.
fn inbox_vs_verify(
    bin: &Path,
    dir: &std::path::Path,
    db_url: &str,
    (rounds, count, recipients): (usize, usize, usize),
    rss: &mut (f64, f64),
) -> Result<(f64, f64), Failure> {
    let label = if db_url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let senders_home = Server::start(
        bin,
        &format!(
            "sqlite://{}",
            dir.join(format!("senders-{label}-{recipients}.db")).display()
        ),
        &[],
    )?;
    let server = Server::start(bin, db_url, &[])?;
    let idle = server.rss_mb().0;
    let recipients: Vec<User> = (0..recipients)
        .map(|i| user(&server, &format!("recipient{i}")))
        .collect::<Result<_, _>>()?;
    let senders: Vec<User> = (0..8)
        .map(|i| user(&senders_home, &format!("sender{i}")))
        .collect::<Result<_, _>>()?;
    for recipient in &recipients {
        for sender in &senders {
            outbox(
                &senders_home,
                sender,
                &recipient.handle,
                MessageType::RelationshipRequest,
            )?;
            outbox(&server, recipient, &sender.handle, MessageType::RelationshipAccept)?;
        }
    }
    // Section 12: the server pins each sender with its first stored
    // envelope, so the figure includes whatever pins cost.
    let (_, page) = call(
        &agent(),
        "GET",
        &server.url("/users/me/relationships"),
        Some(&recipients[0].token),
        None,
    )?;
    let pinned = serde_json::from_str::<Value>(&page).map_err(|e| e.to_string())?["items"]
        .as_array()
        .map_or(0, |items| items.iter().filter(|i| !i["peerKeys"].is_null()).count());
    if pinned != senders.len() {
        return Err(format!("{pinned} of {} senders pinned", senders.len()));
    }
    let mut payload = Map::new();
    payload.insert("ciphertext".into(), Value::String("3q2-7w-".repeat(20)));
    let url = server.url("/federation/inbox");
    let (mut inbox, mut verify) = (Vec::new(), Vec::new());
    let (mut server_cpu, mut client_cpu) = (0.0, 0.0);
    let mut accepted_in_all = 0usize;
    for _ in 0..rounds {
        verify.push(verify_raw_per_s());
        // Fresh envelopes every round: a repeated one would be a duplicate.
        let now = SystemClock.now();
        let envelopes: Vec<Option<String>> = (0..count)
            .map(|i| {
                let s = &senders[i % senders.len()];
                let recipient = &recipients[(i / senders.len()) % recipients.len()];
                let envelope =
                    s.keys
                        .envelope(&s.handle, &recipient.handle, MessageType::Message, payload.clone(), now);
                Some(envelope.wire_form())
            })
            .collect();
        let (server_before, client_before) = (server.cpu_seconds(), cpu_seconds_of(std::process::id()));
        let (accepted, elapsed) = hammer(&url, &envelopes, None, 202);
        server_cpu += server.cpu_seconds() - server_before;
        client_cpu += cpu_seconds_of(std::process::id()) - client_before;
        if accepted != count {
            return Err(format!("inbox accepted {accepted} of {count}"));
        }
        inbox.push(accepted as f64 / elapsed.as_secs_f64());
        accepted_in_all += accepted;
    }
    eprintln!(
        "CPU per accepted envelope ({label}): server {:.1} µs, load generator {:.1} µs",
        server_cpu * 1e6 / accepted_in_all as f64,
        client_cpu * 1e6 / accepted_in_all as f64
    );
    *rss = (idle, server.rss_mb().1);
    Ok((median(inbox), median(verify)))
}

/// A peer inbox that answers 202 after `delay`.
fn slow_peer(delay: Duration) -> Result<u16, Failure> {
    peer_on(0, delay)
}

/// A peer inbox on `port` (0: any free one) that answers 202 after `delay`.
fn peer_on(port: u16, delay: Duration) -> Result<u16, Failure> {
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let Ok(clone) = stream.try_clone() else { return };
                let mut reader = BufReader::new(clone);
                loop {
                    let mut length = 0usize;
                    let mut saw_head = false;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        saw_head = true;
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    if !saw_head {
                        return;
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    std::thread::sleep(delay);
                    let answer =
                        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                    if stream.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn open_store(db_url: &str) -> Result<fedid_store::DieselStore, Failure> {
    fedid_store::DieselStore::open(db_url, 2).map_err(|e| e.to_string())
}

/// alice on `server` (its database `db`) with 1000 active peers on the
/// peer servers at `ports`, reset (1000 revocations queued) and with new
/// keys: (alice, her former peers, her new keys).
fn reset_with_1000_peers(server: &Server, db: &str, ports: &[u16]) -> Result<(User, Vec<Handle>, ClientKeys), Failure> {
    let alice = user(server, "alice")?;
    let peers: Vec<Handle> = (0..1000)
        .map(|i| {
            Handle::parse(
                &format!("peer{:03}@127.0.0.1:{}", i / 10, ports[i % ports.len()]),
                DomainPolicy::ANY,
            )
            .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let store = open_store(db)?;
    let now = SystemClock.now();
    let relationships: Vec<Relationship> = peers
        .iter()
        .map(|peer| Relationship {
            peer: peer.clone(),
            state: RelationshipState::Active,
            since: now,
            created_at: now,
        })
        .collect();
    let alice_id = alice.id;
    write(&store, None, move |tx| {
        for relationship in &relationships {
            tx.put_relationship(alice_id, relationship)?;
        }
        Ok::<_, fedid_domain::StoreError>(())
    })
    .wait()
    .map_err(|e| e.to_string())?;
    let reset = json!({"confirm": "erase-all-my-data"}).to_string();
    let body = request(server, "POST", "/users/me/identity/reset", &alice.token, &reset, 200)?;
    if !body.contains("\"revocationsQueued\":1000") {
        return Err(format!("reset queued: {body}"));
    }
    let keys = ClientKeys::generate().ok_or("no randomness")?;
    set_keys(server, &alice.token, &keys)?;
    Ok((alice, peers, keys))
}

/// Seconds for one flush of 1000 queued revocations to 10 peers answering after 100 ms.
fn flush_1000_seconds(bin: &Path, dir: &std::path::Path) -> Result<f64, Failure> {
    let db = format!("sqlite://{}", dir.join("flush.db").display());
    let server = Server::start(bin, &db, &[("FEDID__DELIVERY__CONCURRENCY", "16")])?;
    let ports: Vec<u16> = (0..10)
        .map(|_| slow_peer(Duration::from_millis(100)))
        .collect::<Result<_, _>>()?;
    let (alice, peers, keys) = reset_with_1000_peers(&server, &db, &ports)?;
    let now = SystemClock.now();
    let items: Vec<Value> = peers
        .iter()
        .map(|p| {
            let i = keys.flush_item(&alice.handle, p, now);
            json!({"peerHandle": i.peer_handle, "signature": i.signature, "nonce": i.nonce, "timestamp": i.timestamp})
        })
        .collect();
    let body = json!({ "items": items }).to_string();
    let started = Instant::now();
    let report = request(&server, "POST", "/users/me/revocations/flush", &alice.token, &body, 200)?;
    let seconds = started.elapsed().as_secs_f64();
    if !report.contains("\"delivered\":1000") {
        return Err(format!("flush: {}", report.chars().take(300).collect::<String>()));
    }
    Ok(seconds)
}

/// Milliseconds for a peer's first contact with a 1,000-entry key log
/// (PROTOCOL.md section 12): every entry a proven rotation, so each check
/// verifies two signatures; the median of 5 checks.
fn keylog_check_1000_entries_ms() -> Result<f64, Failure> {
    use fedid_domain::keylog::{check_pin, LogAnswer, PinVerdict};
    let handle = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).map_err(|e| e.to_string())?;
    let (log, keys) = fedid_bench::keylog::proven_rotations(&handle, 1000, SystemClock.now().plus_secs(-86_400))?;
    let values: Vec<Value> = log
        .iter()
        .map(|e| serde_json::from_slice(e.entry_bytes()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let (_, encryption) = keys.public_keys();
    let answer = LogAnswer {
        signing: keys.signing_key(),
        encryption: fedid_domain::EncryptionKey::parse(&encryption).map_err(|e| e.to_string())?,
        log: Some((1000, log.last().ok_or("no entry")?.hash())),
    };
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let verdict = check_pin(&handle, None, &values, &answer, SystemClock.now(), 300);
        runs.push(started.elapsed().as_secs_f64() * 1000.0);
        if !matches!(verdict, PinVerdict::Ok { .. }) {
            return Err(format!("the generated log did not check: {verdict:?}"));
        }
    }
    Ok(median(runs))
}

/// Another user's identity GET latencies, measured until `stop`.
fn watch_latencies(
    url: String,
    token: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let agent = agent();
        let mut latencies = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let _ = call(&agent, "GET", &url, Some(&token), None);
            latencies.push(t.elapsed());
        }
        latencies
    })
}

/// The 99th percentile of `latencies`, in milliseconds.
fn p99_ms(mut latencies: Vec<Duration>) -> f64 {
    latencies.sort();
    latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// PROTOCOL.md section 11: 1000 long-lived REVOKEs flushed to 10 peers
/// that are down, which then all come back. (Seconds from their return
/// until the last REVOKE is delivered, with `delivery.retry_max_secs` 2;
/// another user's slowest identity GET in ms meanwhile.)
fn background_redelivery(bin: &Path, dir: &std::path::Path) -> Result<(f64, f64), Failure> {
    let db = format!("sqlite://{}", dir.join("redelivery.db").display());
    let server = Server::start(
        bin,
        &db,
        &[
            ("FEDID__DELIVERY__RETRY_BASE_SECS", "1"),
            ("FEDID__DELIVERY__RETRY_MAX_SECS", "2"),
        ],
    )?;
    let other = user(&server, "other")?;
    // Ports for the peers, free now and left closed until they come back.
    let ports: Vec<u16> = (0..10)
        .map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
        })
        .collect::<Result<_, Failure>>()?;
    let (alice, peers, keys) = reset_with_1000_peers(&server, &db, &ports)?;
    let now = SystemClock.now();
    let expires = now.plus_secs(7 * 86_400);
    let items: Vec<Value> = peers
        .iter()
        .map(|p| {
            let i = keys.flush_item_expiring(&alice.handle, p, now, Some(expires));
            json!({"peerHandle": i.peer_handle, "signature": i.signature, "nonce": i.nonce,
                   "timestamp": i.timestamp, "expires": i.expires})
        })
        .collect();
    let body = json!({ "items": items }).to_string();
    let report = request(&server, "POST", "/users/me/revocations/flush", &alice.token, &body, 200)?;
    if !report.contains("\"failed\":1000") {
        return Err(format!(
            "flush while the peers are down: {}",
            report.chars().take(300).collect::<String>()
        ));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_latencies(server.url("/users/me/identity"), other.token.clone(), stop.clone());
    let started = Instant::now();
    for port in &ports {
        peer_on(*port, Duration::ZERO)?;
    }
    let identity = server.url("/users/me/identity");
    let agent = agent();
    let seconds = loop {
        let (_, answer) = call(&agent, "GET", &identity, Some(&alice.token), None).map_err(|e| e.to_string())?;
        if answer.contains("\"pendingRevocations\":0") {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the REVOKEs were not all delivered within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::Relaxed);
    let latencies = watcher.join().map_err(|_| "watcher failed")?;
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    Ok((seconds, slowest.as_secs_f64() * 1000.0))
}

/// (reset seconds, another user's p99 ms during it, identity GETs per s,
/// hello GETs per s).
fn reset_and_reads(bin: &Path, dir: &std::path::Path) -> Result<(f64, f64, f64, f64), Failure> {
    let db = format!("sqlite://{}", dir.join("reset.db").display());
    let server = Server::start(bin, &db, &[])?;
    let big = user(&server, "big")?;
    let other = user(&server, "other")?;
    let store = open_store(&db)?;
    let now = SystemClock.now();
    let big_id = big.id;
    write(&store, None, move |tx| {
        for i in 0..10_000 {
            let peer = Handle::parse(&format!("peer{i}@b.example"), DomainPolicy::ANY)
                .map_err(|e| fedid_domain::StoreError::Unavailable(e.to_string()))?;
            tx.put_relationship(
                big_id,
                &Relationship {
                    peer,
                    state: RelationshipState::Active,
                    since: now,
                    created_at: now,
                },
            )?;
        }
        let envelope = json!({"from": "peer1@b.example", "payload": {"ciphertext": "x".repeat(200)}}).to_string();
        for _ in 0..100_000 {
            tx.insert_message(big_id, now, None, &envelope)?;
        }
        Ok::<_, fedid_domain::StoreError>(())
    })
    .wait()
    .map_err(|e| e.to_string())?;
    drop(store);

    // Reads by another user, measured while the reset runs.
    let identity_url = server.url("/users/me/identity");
    let (reads, _) = hammer(&identity_url, &vec![None; 2_000], Some(&other.token), 200);
    if reads != 2_000 {
        return Err("identity reads failed".into());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_latencies(identity_url.clone(), other.token.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(100));
    let reset = json!({"confirm": "erase-all-my-data"}).to_string();
    let started = Instant::now();
    let body = request(&server, "POST", "/users/me/identity/reset", &big.token, &reset, 200)?;
    let reset_seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let latencies = watcher.join().map_err(|_| "watcher failed")?;
    if !body.contains("\"inboxMessages\":100000") || !body.contains("\"relationships\":10000") {
        return Err(format!("reset erased: {body}"));
    }
    let p99 = p99_ms(latencies);

    let (identity, hello) = identity_vs_hello(&server, &other.token)?;
    Ok((reset_seconds, p99, identity, hello))
}

/// Authenticated identity GETs per second against `url`, and the bare
/// actix handler's, in alternated rounds: (identity, hello) medians.
fn identity_vs_hello(server: &Server, token: &str) -> Result<(f64, f64), Failure> {
    let url = &server.url("/users/me/identity");
    let hello = HelloServer::start()?;
    let rate = |url: &str, token: Option<&str>| -> Result<f64, Failure> {
        let requests = 40_000;
        let (server_before, here_before) = (server.cpu_seconds(), cpu_seconds_of(std::process::id()));
        let (count, elapsed) = hammer(url, &vec![None; requests], token, 200);
        if count != requests {
            return Err(format!("{url}: {count} of {requests} answered 200"));
        }
        let per_request = |seconds: f64| seconds * 1e6 / count as f64;
        let here = per_request(cpu_seconds_of(std::process::id()) - here_before);
        let rate = count as f64 / elapsed.as_secs_f64();
        if token.is_some() {
            let server = per_request(server.cpu_seconds() - server_before);
            eprintln!("identity {rate:.0}/s; CPU per GET: server {server:.1} µs, load generator {here:.1} µs");
        } else {
            eprintln!("hello {rate:.0}/s; CPU per GET: the handler and the load generator {here:.1} µs");
        }
        Ok(rate)
    };
    // Warm both up (connections, caches, the blocking and read pools).
    rate(url, Some(token))?;
    rate(&hello.url, None)?;
    let (mut identity, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        identity.push(rate(url, Some(token))?);
        bare.push(rate(&hello.url, None)?);
    }
    Ok((median(identity), median(bare)))
}

/// A bare actix handler returning a constant body, same worker count, in
/// this process; stopped when dropped.
struct HelloServer {
    url: String,
    system: actix_web::rt::System,
}

impl HelloServer {
    fn start() -> Result<Self, Failure> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            let _ = tx.send(actix_web::rt::System::current());
            system.block_on(async move {
                let server = actix_web::HttpServer::new(|| {
                    actix_web::App::new().route(
                        "/hello",
                        actix_web::web::get().to(|| async {
                            actix_web::HttpResponse::Ok()
                                .content_type("application/json")
                                .body("{\"hello\":\"world\"}")
                        }),
                    )
                })
                .workers(workers)
                .listen(listener);
                if let Ok(server) = server {
                    let _ = server.run().await;
                }
            });
        });
        let system = rx.recv().map_err(|e| e.to_string())?;
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/hello"),
            system,
        })
    }
}

impl Drop for HelloServer {
    fn drop(&mut self) {
        self.system.stop();
    }
}

fn postgres_url(name: &str) -> Result<String, Failure> {
    let base =
        std::env::var("FEDID_BENCH_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    fedid_bench::process::fresh_postgres_schema(&base, "fedid_bench", name)
}

fn run() -> Result<BTreeMap<&'static str, f64>, Failure> {
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("fedid-server");
    if !bin.exists() {
        return Err(format!("{} is missing: run `make bench`", bin.display()));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut figures = BTreeMap::new();
    if std::env::args().nth(1).as_deref() == Some("identity") {
        // A quick look at the authenticated read path against hello.
        let server = Server::start(
            &bin,
            &format!("sqlite://{}", dir.path().join("identity.db").display()),
            &[],
        )?;
        let reader = user(&server, "reader")?;
        let (identity, hello) = identity_vs_hello(&server, &reader.token)?;
        figures.insert("identity_get_per_s", identity);
        figures.insert("hello_per_s", hello);
        figures.insert("identity_vs_hello_ratio", identity / hello);
        return Ok(figures);
    }
    if std::env::args().nth(1).as_deref() == Some("keylog") {
        figures.insert("keylog_check_1000_entries_ms", keylog_check_1000_entries_ms()?);
        return Ok(figures);
    }
    if std::env::args().nth(1).as_deref() == Some("redelivery") {
        let (seconds, p99) = background_redelivery(&bin, dir.path())?;
        figures.insert("background_redelivery_seconds", seconds);
        figures.insert("other_user_max_ms_during_redelivery", p99);
        return Ok(figures);
    }
    if std::env::args().nth(1).as_deref() == Some("attack") {
        // `make attack`: docs/security.md's attacks; a broken bound fails.
        // `fedid-bench attack NAME` runs only the attacks named so.
        let only = std::env::args().nth(2);
        return match fedid_bench::attack::run_all(&bin, only.as_deref())? {
            true => Ok(figures),
            false => Err("an attack broke its bound".into()),
        };
    }
    if std::env::args().nth(1).as_deref() == Some("soak") {
        let seconds = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(60);
        soak::run(&bin, dir.path(), seconds)?;
        return Ok(figures);
    }
    eprintln!("measuring inbox on SQLite against verify_raw_per_s ...");
    let mut rss = (0.0, 0.0);
    let (inbox, verify) = inbox_vs_verify(
        &bin,
        dir.path(),
        &format!("sqlite://{}", dir.path().join("inbox.db").display()),
        (ROUNDS, 20_000, 1),
        &mut rss,
    )?;
    figures.insert("verify_raw_per_s", verify);
    figures.insert("inbox_accepted_per_s", inbox);
    figures.insert("inbox_vs_verify_ratio", inbox / verify);
    if std::env::args().nth(1).as_deref() == Some("inbox-sqlite") {
        // The SQLite inbox alone, for comparing builds.
        return Ok(figures);
    }
    eprintln!("measuring inbox on PostgreSQL, one recipient, then 64 ...");
    let mut rss_pg = (0.0, 0.0);
    let (inbox_pg, _) = inbox_vs_verify(&bin, dir.path(), &postgres_url("inbox")?, (1, 10_000, 1), &mut rss_pg)?;
    let (inbox_pg_64, _) = inbox_vs_verify(
        &bin,
        dir.path(),
        &postgres_url("inbox64")?,
        (1, 10_000, 64),
        &mut rss_pg,
    )?;
    figures.insert("inbox_accepted_per_s_postgres", inbox_pg);
    figures.insert("inbox_postgres_vs_verify_ratio", inbox_pg / verify);
    figures.insert("inbox_accepted_per_s_postgres_64_recipients", inbox_pg_64);
    if std::env::args().nth(1).as_deref() == Some("inbox") {
        // A quick look at the inbox alone, for profiling.
        return Ok(figures);
    }
    eprintln!("measuring flush ...");
    let flush = flush_1000_seconds(&bin, dir.path())?;
    eprintln!("measuring background redelivery ...");
    let (redelivery, redelivery_p99) = background_redelivery(&bin, dir.path())?;
    eprintln!("measuring reset, then reads against hello ...");
    let (reset, p99, identity, hello) = reset_and_reads(&bin, dir.path())?;
    figures.insert("flush_1000_seconds", flush);
    figures.insert("flush_vs_ideal_ratio", flush / ((1000f64 / 16.0).ceil() * 0.1));
    figures.insert("keylog_check_1000_entries_ms", keylog_check_1000_entries_ms()?);
    figures.insert("background_redelivery_seconds", redelivery);
    figures.insert("other_user_max_ms_during_redelivery", redelivery_p99);
    figures.insert("reset_seconds", reset);
    figures.insert("other_user_p99_ms_during_reset", p99);
    figures.insert("identity_get_per_s", identity);
    figures.insert("hello_per_s", hello);
    figures.insert("identity_vs_hello_ratio", identity / hello);
    figures.insert("rss_idle_mb", rss.0);
    figures.insert("rss_peak_mb", rss.1.max(rss_pg.1));
    Ok(figures)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(figures) if figures.is_empty() => std::process::ExitCode::SUCCESS,
        Ok(figures) => {
            let order = [
                "verify_raw_per_s",
                "inbox_accepted_per_s",
                "inbox_vs_verify_ratio",
                "inbox_accepted_per_s_postgres",
                "inbox_postgres_vs_verify_ratio",
                "inbox_accepted_per_s_postgres_64_recipients",
                "flush_1000_seconds",
                "flush_vs_ideal_ratio",
                "background_redelivery_seconds",
                "keylog_check_1000_entries_ms",
                "other_user_max_ms_during_redelivery",
                "reset_seconds",
                "other_user_p99_ms_during_reset",
                "identity_get_per_s",
                "hello_per_s",
                "identity_vs_hello_ratio",
                "rss_idle_mb",
                "rss_peak_mb",
            ];
            // A partial mode (`inbox`, `identity`, ...) prints what it measured.
            for name in order.into_iter().filter(|name| figures.contains_key(name)) {
                println!("{name}: {:.3}", figures[name]);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fedid-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
