//! The transport against local test servers on 127.0.0.1 only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedid_domain::ports::KeyFetchFailure;
use fedid_domain::{DeliveryFailure, Domain, DomainPolicy, Handle, KeyFetcher, Scheme, Transport};
use fedid_transport::{GuardedResolver, HttpTransport, Lookup, TransportSettings};

/// A one-answer-fits-all HTTP server; records request heads.
struct TestServer {
    port: u16,
    hits: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

fn serve(delay: Duration, answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (h, r) = (hits.clone(), heads.clone());
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(mut stream) = stream else { continue };
            let (h, r, answer) = (h.clone(), r.clone(), answer.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                h.fetch_add(1, Ordering::SeqCst);
                r.lock().unwrap().push(head.clone());
                std::thread::sleep(delay);
                let _ = stream.write_all(&answer(&head));
            });
        }
    });
    TestServer { port, hits, heads }
}

fn response(status: &str, ctype: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn settings(private: bool, timeout: Duration) -> TransportSettings {
    TransportSettings {
        scheme: Scheme::Http,
        allow_private_networks: private,
        allowed_domains: vec![],
        delivery_connect_timeout: timeout,
        delivery_timeout: timeout,
        fetch_connect_timeout: timeout,
        fetch_timeout: timeout,
    }
}

fn local(port: u16) -> Domain {
    Domain::parse(
        &format!("127.0.0.1:{port}"),
        DomainPolicy {
            default_port: 80,
            allow_ip_literals: true,
        },
    )
    .unwrap()
}

fn transport() -> HttpTransport {
    HttpTransport::new(settings(true, Duration::from_secs(2)))
}

#[test]
fn delivery_statuses_and_problem_codes() {
    let ok = serve(Duration::ZERO, |_| {
        response("202 Accepted", "application/json", "{\"status\":\"accepted\"}")
    });
    assert_eq!(transport().deliver(&local(ok.port), "{}"), Ok(()));
    assert!(ok.heads.lock().unwrap()[0].starts_with("POST /federation/inbox HTTP/1.1"));
    assert!(ok.heads.lock().unwrap()[0]
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let refused = serve(Duration::ZERO, |_| {
        response(
            "409 Conflict",
            "application/problem+json",
            "{\"code\":\"nonce_reused\"}",
        )
    });
    assert_eq!(
        transport().deliver(&local(refused.port), "{}"),
        Err(DeliveryFailure::Http {
            status: 409,
            code: Some("nonce_reused".into()),
            retry_after_secs: None,
        })
    );
    let bare = serve(Duration::ZERO, |_| {
        response("503 Service Unavailable", "text/plain", "busy")
    });
    let failure = transport().deliver(&local(bare.port), "{}").unwrap_err();
    assert_eq!(failure.to_string(), "http 503");
    let huge = serve(Duration::ZERO, |_| {
        response(
            "500 Internal Server Error",
            "application/json",
            &format!("{{\"code\":\"x\",\"pad\":\"{}\"}}", "a".repeat(20_000)),
        )
    });
    assert_eq!(
        transport().deliver(&local(huge.port), "{}"),
        Err(DeliveryFailure::Http {
            status: 500,
            code: None,
            retry_after_secs: None,
        }),
        "answers are read up to 16 KiB"
    );
}

#[test]
fn redirects_are_not_followed() {
    let target = serve(Duration::ZERO, |_| response("202 Accepted", "application/json", "{}"));
    let location = format!("http://127.0.0.1:{}/federation/inbox", target.port);
    let redirect = serve(Duration::ZERO, move |_| {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    });
    assert_eq!(
        transport().deliver(&local(redirect.port), "{}"),
        Err(DeliveryFailure::Redirect)
    );
    let doc = serve(Duration::ZERO, move |_| {
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
    });
    let handle = Handle::parse(
        &format!("alice@127.0.0.1:{}", doc.port),
        DomainPolicy {
            default_port: 80,
            allow_ip_literals: true,
        },
    )
    .unwrap();
    assert!(matches!(
        transport().fetch_keys(&handle, false),
        Err(KeyFetchFailure::Failed(_))
    ));
    assert_eq!(target.hits.load(Ordering::SeqCst), 0);
    assert_eq!(doc.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_slow_server_is_cut_at_the_timeout() {
    let slow = serve(Duration::from_secs(3), |_| {
        response("202 Accepted", "application/json", "{}")
    });
    let started = Instant::now();
    let result = HttpTransport::new(settings(true, Duration::from_millis(300))).deliver(&local(slow.port), "{}");
    assert_eq!(result, Err(DeliveryFailure::Timeout));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[test]
fn connection_refused_and_blocked_addresses() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_eq!(
        transport().deliver(&local(closed), "{}"),
        Err(DeliveryFailure::ConnectRefused)
    );
    let server = serve(Duration::ZERO, |_| response("202 Accepted", "application/json", "{}"));
    let public_only = HttpTransport::new(settings(false, Duration::from_secs(2)));
    assert_eq!(
        public_only.deliver(&local(server.port), "{}"),
        Err(DeliveryFailure::BlockedAddress)
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0, "never connected");
    let mut only_a = settings(true, Duration::from_secs(2));
    only_a.allowed_domains = vec![Domain::parse("a.example", DomainPolicy::HTTPS_PUBLIC).unwrap()];
    assert_eq!(
        HttpTransport::new(only_a).deliver(&local(server.port), "{}"),
        Err(DeliveryFailure::BlockedDomain)
    );
}

#[test]
fn key_documents_are_checked() {
    let keys = fedid_domain::SigningSecret::from_seed(&[1; 32])
        .unwrap()
        .public_key()
        .to_base64url();
    let enc = "Z13VdO13iTELPS52gfN5C0ZsdzsVIf7PNld5WDcepS8";
    let doc = move |port: u16, handle: &str| {
        format!("{{\"handle\":\"{}\",\"signingKey\":\"{keys}\",\"encryptionKey\":\"{enc}\",\"keysUpdatedAt\":\"2026-11-27T10:00:00Z\"}}", handle.replace("PORT", &port.to_string()))
    };
    let good = serve(Duration::ZERO, {
        let doc = doc.clone();
        move |head| {
            let port = host_port(head);
            response(
                "200 OK",
                "application/json; charset=utf-8",
                &doc(port, "alice@127.0.0.1:PORT"),
            )
        }
    });
    let fetched = transport().fetch_keys(&alice_at(good.port), true).unwrap();
    assert_eq!(fetched.handle, alice_at(good.port));
    let head = good.heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /federation/users/alice HTTP/1.1"));
    assert!(
        head.to_ascii_lowercase().contains("cache-control: no-cache"),
        "a refetch revalidates: {head}"
    );

    let wrong_type = serve(Duration::ZERO, {
        let doc = doc.clone();
        move |_| response("200 OK", "text/html", &doc(0, "x"))
    });
    assert!(matches!(
        transport().fetch_keys(&alice_at(wrong_type.port), false),
        Err(KeyFetchFailure::Failed(_))
    ));
    let other_handle = serve(Duration::ZERO, {
        let doc = doc.clone();
        move |_| response("200 OK", "application/json", &doc(0, "mallory@127.0.0.1:1"))
    });
    assert!(matches!(
        transport().fetch_keys(&alice_at(other_handle.port), false),
        Err(KeyFetchFailure::Failed(_))
    ));
    let oversized = serve(Duration::ZERO, |_| {
        response(
            "200 OK",
            "application/json",
            &format!("{{\"pad\":\"{}\"}}", "a".repeat(17_000)),
        )
    });
    assert!(matches!(
        transport().fetch_keys(&alice_at(oversized.port), false),
        Err(KeyFetchFailure::Failed(_))
    ));
    let missing = serve(Duration::ZERO, |_| {
        response(
            "404 Not Found",
            "application/problem+json",
            "{\"code\":\"unknown_user\"}",
        )
    });
    assert_eq!(
        transport().fetch_keys(&alice_at(missing.port), false),
        Err(KeyFetchFailure::NotFound)
    );
}

/// Answers one list of addresses per call, in turn.
#[derive(Debug)]
struct Scripted(Mutex<Vec<Vec<SocketAddr>>>);

impl Lookup for Scripted {
    fn lookup(&self, _host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let mut answers = self.0.lock().unwrap();
        Ok(if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers[0].clone()
        })
    }
}

#[test]
fn the_guard_checks_every_resolution_so_rebinding_is_refused() {
    use ureq::unversioned::resolver::Resolver;
    let public: SocketAddr = "8.8.8.8:443".parse().unwrap();
    let private: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let resolver = GuardedResolver::new(
        Arc::new(Scripted(Mutex::new(vec![
            vec![public],
            vec![private],
            vec![public, private],
        ]))),
        false,
    );
    let uri: ureq::http::Uri = "https://rebind.example/federation/inbox".parse().unwrap();
    let config = ureq::config::Config::default();
    let timeout = || ureq::unversioned::transport::NextTimeout {
        after: ureq::unversioned::transport::time::Duration::Exact(Duration::from_secs(1)),
        reason: ureq::Timeout::Global,
        per_read: None,
        per_write: None,
    };
    let first = resolver.resolve(&uri, &config, timeout()).unwrap();
    assert_eq!(
        first.iter().copied().collect::<Vec<_>>(),
        vec![public],
        "public first: allowed"
    );
    assert!(
        resolver.resolve(&uri, &config, timeout()).is_err(),
        "private on the second lookup: refused"
    );
    assert!(
        resolver.resolve(&uri, &config, timeout()).is_err(),
        "one refused address refuses the domain"
    );

    // Through the agent: a name that resolves to loopback is refused before any connection.
    let server = serve(Duration::ZERO, |_| response("202 Accepted", "application/json", "{}"));
    let loopback: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let transport = HttpTransport::with_lookup(
        settings(false, Duration::from_secs(2)),
        Arc::new(Scripted(Mutex::new(vec![vec![loopback]]))),
    );
    let name = Domain::parse(&format!("rebind.example:{}", server.port), DomainPolicy::HTTPS_PUBLIC).unwrap();
    assert_eq!(transport.deliver(&name, "{}"), Err(DeliveryFailure::BlockedAddress));
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[test]
fn a_retry_after_in_seconds_comes_with_the_refusal() {
    let busy = serve(Duration::ZERO, |_| {
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/problem+json\r\nRetry-After: 120\r\nContent-Length: 23\r\nConnection: close\r\n\r\n{\"code\":\"rate_limited\"}"
            .as_bytes()
            .to_vec()
    });
    assert_eq!(
        transport().deliver(&local(busy.port), "{}"),
        Err(DeliveryFailure::Http {
            status: 429,
            code: Some("rate_limited".into()),
            retry_after_secs: Some(120),
        })
    );
}

#[test]
fn a_probe_refuses_a_domain_that_resolves_to_a_private_address() {
    let private: SocketAddr = "10.0.0.7:443".parse().unwrap();
    let transport = HttpTransport::with_lookup(
        settings(false, Duration::from_secs(2)),
        Arc::new(Scripted(Mutex::new(vec![vec![private]]))),
    );
    let domain = fedid_domain::Domain::parse("b.example", fedid_domain::DomainPolicy::HTTPS_PUBLIC).unwrap();
    let report = transport.probe(&domain, "probe-test");
    assert!(!report.ok());
    assert_eq!(report.steps.len(), 1, "{report:?}");
    assert_eq!(report.steps[0].name, "resolve");
    assert!(
        report.steps[0].detail.contains("blocked address: 10.0.0.7"),
        "{report:?}"
    );
}

/// alice's handle on the test server at `port`.
fn alice_at(port: u16) -> Handle {
    Handle::parse(
        &format!("alice@127.0.0.1:{port}"),
        DomainPolicy {
            default_port: 80,
            allow_ip_literals: true,
        },
    )
    .unwrap()
}

/// The port the request head was sent to (its `Host`).
fn host_port(head: &str) -> u16 {
    head.lines()
        .find_map(|l| {
            l.strip_prefix("host: 127.0.0.1:")
                .or_else(|| l.strip_prefix("Host: 127.0.0.1:"))
        })
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0)
}

const HEAD: &str = "QX-SSY2onOQMQ0MAPVTE7yPkP3f5m7L3pOO2ZZj9BhY";

#[test]
fn discovery_names_the_key_log_when_the_peer_publishes_one() {
    let keys = fedid_domain::SigningSecret::from_seed(&[1; 32])
        .unwrap()
        .public_key()
        .to_base64url();
    let server = serve(Duration::ZERO, move |head| {
        let body = format!(
            "{{\"handle\":\"alice@127.0.0.1:{}\",\"signingKey\":\"{keys}\",\"encryptionKey\":\"Z13VdO13iTELPS52gfN5C0ZsdzsVIf7PNld5WDcepS8\",\"keyLogSeq\":3,\"keyLogHead\":\"{HEAD}\"}}",
            host_port(head)
        );
        response("200 OK", "application/json", &body)
    });
    let fetched = transport().fetch_keys(&alice_at(server.port), false).unwrap();
    assert_eq!(fetched.key_log, Some((3, HEAD.to_owned())));
}

#[test]
fn a_key_log_page_is_read_and_checked() {
    let server = serve(Duration::ZERO, move |head| {
        let body = format!(
            "{{\"handle\":\"alice@127.0.0.1:{}\",\"entries\":[{{\"seq\":2}}],\"seq\":2,\"head\":\"{HEAD}\"}}",
            host_port(head)
        );
        response("200 OK", "application/json", &body)
    });
    let page = transport().fetch_key_log(&alice_at(server.port), 1, true).unwrap();
    assert_eq!((page.entries.len(), page.seq, page.head.as_str()), (1, 2, HEAD));
    let request = server.heads.lock().unwrap()[0].clone();
    assert!(
        request.starts_with("GET /federation/users/alice/keylog?after=1 HTTP/1.1"),
        "{request}"
    );
    assert!(
        request.to_ascii_lowercase().contains("cache-control: no-cache"),
        "{request}"
    );
}

#[test]
fn a_key_log_page_for_another_handle_or_over_256_kib_is_refused() {
    let other = serve(Duration::ZERO, |_| {
        response(
            "200 OK",
            "application/json",
            "{\"handle\":\"mallory@m.example\",\"entries\":[],\"seq\":0,\"head\":\"\"}",
        )
    });
    assert!(matches!(
        transport().fetch_key_log(&alice_at(other.port), 0, false),
        Err(KeyFetchFailure::Failed(_))
    ));
    let huge = serve(Duration::ZERO, |head| {
        let body = format!(
            "{{\"handle\":\"alice@127.0.0.1:{}\",\"entries\":[\"{}\"],\"seq\":1,\"head\":\"{HEAD}\"}}",
            host_port(head),
            "x".repeat(300 * 1024)
        );
        response("200 OK", "application/json", &body)
    });
    assert!(matches!(
        transport().fetch_key_log(&alice_at(huge.port), 0, false),
        Err(KeyFetchFailure::Failed(reason)) if reason.contains("256 KiB")
    ));
}
