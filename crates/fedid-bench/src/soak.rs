//! `make soak`: 64 concurrent clients, mixed inbox and user-API traffic
//! against one server for a while; then every accepted envelope must be in
//! its recipient's inbox exactly once, and no answer may be a 5xx.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fedid_domain::ports::SystemClock;
use fedid_domain::{Clock, MessageType};
use serde_json::{Map, Value};

use crate::load;
use fedid_bench::client::{agent, call, outbox, user, Failure, User};
use fedid_bench::process::Server;

const CLIENTS: usize = 64;

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    /// Nonces of accepted envelopes, per recipient index.
    accepted: BTreeMap<usize, Vec<String>>,
}

/// A small xorshift generator: the traffic mix needs variety, not secrecy.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

pub fn run(bin: &Path, dir: &Path, seconds: u64) -> Result<(), Failure> {
    let home = Server::start(bin, &format!("sqlite://{}", dir.join("soak-senders.db").display()), &[])?;
    let server = Server::start(bin, &format!("sqlite://{}", dir.join("soak.db").display()), &[])?;
    let recipients: Vec<User> = (0..8)
        .map(|i| user(&server, &format!("recipient{i}")))
        .collect::<Result<_, _>>()?;
    let senders: Vec<User> = (0..8)
        .map(|i| user(&home, &format!("sender{i}")))
        .collect::<Result<_, _>>()?;
    for s in &senders {
        for r in &recipients {
            outbox(&home, s, &r.handle, MessageType::RelationshipRequest)?;
            outbox(&server, r, &s.handle, MessageType::RelationshipAccept)?;
        }
    }
    let tally = Mutex::new(Tally::default());
    let requests = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (tally, requests, recipients, senders, server) = (&tally, &requests, &recipients, &senders, &server);
            scope.spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (client as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
                let mut connection = load::Connection::new(server.port);
                let mut mine = Tally::default();
                while Instant::now() < deadline {
                    let r = (next(&mut rng) % recipients.len() as u64) as usize;
                    let recipient = &recipients[r];
                    let roll = next(&mut rng) % 100;
                    let status = if roll < 60 {
                        let s = &senders[(next(&mut rng) % senders.len() as u64) as usize];
                        let envelope = s.keys.envelope(
                            &s.handle,
                            &recipient.handle,
                            MessageType::Message,
                            Map::new(),
                            SystemClock.now(),
                        );
                        let wire = envelope.wire_form();
                        let status = connection.send("POST", "/federation/inbox", None, Some(&wire));
                        if status.as_ref().is_ok_and(|s| *s == 202) {
                            mine.accepted
                                .entry(r)
                                .or_default()
                                .push(envelope.nonce().as_str().to_owned());
                            // Redelivery of an accepted envelope must be a harmless duplicate.
                            if roll < 10 {
                                let again = connection.send("POST", "/federation/inbox", None, Some(&wire));
                                *mine.statuses.entry(again.unwrap_or(0)).or_default() += 1;
                                requests.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        status
                    } else if roll < 80 {
                        connection.send("GET", "/users/me/identity", Some(&recipient.token), None)
                    } else if roll < 90 {
                        connection.send("GET", "/users/me/inbox?limit=10", Some(&recipient.token), None)
                    } else {
                        connection.send("GET", "/users/me/relationships?limit=5", Some(&recipient.token), None)
                    };
                    *mine.statuses.entry(status.unwrap_or(0)).or_default() += 1;
                    requests.fetch_add(1, Ordering::Relaxed);
                }
                let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                for (status, n) in mine.statuses {
                    *tally.statuses.entry(status).or_default() += n;
                }
                for (r, nonces) in mine.accepted {
                    tally.accepted.entry(r).or_default().extend(nonces);
                }
            });
        }
    });
    let tally = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    let total = requests.load(Ordering::Relaxed);
    let server_errors: usize = tally
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500 || **s == 0)
        .map(|(_, n)| n)
        .sum();

    // Every accepted envelope is in its recipient's inbox exactly once.
    let mut lost = 0usize;
    let mut duplicated = 0usize;
    let mut accepted_total = 0usize;
    for (r, recipient) in recipients.iter().enumerate() {
        let mut stored: BTreeMap<String, usize> = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let query = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
            let (status, body) = call(
                &agent(),
                "GET",
                &server.url(&format!("/users/me/inbox?limit=1000{query}")),
                Some(&recipient.token),
                None,
            )?;
            if status != 200 {
                return Err(format!("inbox page: HTTP {status}"));
            }
            let page: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            for item in page["items"].as_array().into_iter().flatten() {
                if item["envelope"]["message_type"] == "MESSAGE" {
                    *stored
                        .entry(item["envelope"]["nonce"].as_str().unwrap_or_default().to_owned())
                        .or_default() += 1;
                }
            }
            match page["nextAfter"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        let accepted = tally.accepted.get(&r).cloned().unwrap_or_default();
        accepted_total += accepted.len();
        for nonce in &accepted {
            if !stored.contains_key(nonce) {
                lost += 1;
            }
        }
        let accepted_set: std::collections::BTreeSet<&String> = accepted.iter().collect();
        // Stored twice, or stored without having been answered 202.
        duplicated += stored
            .iter()
            .filter(|(nonce, n)| **n > 1 || !accepted_set.contains(nonce))
            .count();
    }
    eprintln!("soak: statuses {:?}", tally.statuses);
    println!("soak_requests: {total}");
    println!("soak_requests_per_s: {:.1}", total as f64 / seconds as f64);
    println!("soak_accepted_envelopes: {accepted_total}");
    println!("soak_server_errors: {server_errors}");
    println!("soak_lost_envelopes: {lost}");
    println!("soak_duplicated_envelopes: {duplicated}");
    if server_errors > 0 || lost > 0 || duplicated > 0 {
        return Err("soak failed".into());
    }
    Ok(())
}
