//! The key directory's bounds (PROTOCOL.md section 6, docs/security.md):
//! no remote party can make it wait without bound or look up without bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fedid_domain::key_directory::KeyCheckError;
use fedid_domain::keylog::{EntryKind, KeyLogEntry};
use fedid_domain::ports::{KeyFetchFailure, KeyFetcher, KeyLogFetch, PublishedKeys, SystemClock};
use fedid_domain::{
    Clock, DomainPolicy, EncryptionKey, Handle, KeyDirectory, MessageType, Settings, SigningKey, Timestamp,
};
use fedid_testkit::{ClientKeys, MemoryStore};
use serde_json::Map;

/// A key server: answers with `keys`, fails, or hangs until released.
#[derive(Default)]
struct FakeKeyServer {
    keys: Mutex<Option<(SigningKey, EncryptionKey)>>,
    hang: Mutex<bool>,
    released: Condvar,
    fail: Mutex<bool>,
    calls: AtomicUsize,
}

impl FakeKeyServer {
    fn release(&self) {
        *self.hang.lock().unwrap() = false;
        self.released.notify_all();
    }
}

impl KeyFetcher for FakeKeyServer {
    fn fetch_keys(&self, handle: &Handle, _refetch: bool) -> Result<PublishedKeys, KeyFetchFailure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut hang = self.hang.lock().unwrap();
        while *hang {
            hang = self.released.wait(hang).unwrap();
        }
        drop(hang);
        if *self.fail.lock().unwrap() {
            return Err(KeyFetchFailure::Unreachable("connect refused".into()));
        }
        match *self.keys.lock().unwrap() {
            Some((signing_key, encryption_key)) => Ok(PublishedKeys {
                handle: handle.clone(),
                signing_key,
                encryption_key,
                keys_updated_at: None,
                key_log: None,
            }),
            None => Err(KeyFetchFailure::NotFound),
        }
    }
}

fn handle(text: &str) -> Handle {
    Handle::parse(text, DomainPolicy::HTTPS_PUBLIC).unwrap()
}

fn directory(server: &Arc<FakeKeyServer>, refetch_wait_ms: u64) -> Arc<KeyDirectory> {
    let mut settings = a_example();
    settings.key_refetch_wait_ms = refetch_wait_ms;
    Arc::new(directory_over(server.clone(), &settings))
}

fn a_example() -> Settings {
    fedid_testkit::settings("a.example").unwrap()
}

/// A key directory asking `fetcher`, with an empty store.
fn directory_over(fetcher: Arc<dyn KeyFetcher>, settings: &Settings) -> KeyDirectory {
    KeyDirectory::new(fetcher, Arc::new(MemoryStore::new()), Arc::new(SystemClock), settings)
}

fn envelope(keys: &ClientKeys, from: &Handle) -> fedid_domain::Envelope {
    keys.envelope(
        from,
        &handle("alice@a.example"),
        MessageType::Message,
        Map::new(),
        SystemClock.now(),
    )
}

#[test]
fn requests_waiting_for_a_hanging_refetch_are_bounded_in_number_and_time() {
    let server = Arc::new(FakeKeyServer::default());
    let sender = handle("mallory@m.example");
    let real = ClientKeys::generate().unwrap();
    let published = real.with_keys(|k| EncryptionKey::parse(k.encryption_key).unwrap());
    *server.keys.lock().unwrap() = Some((real.signing_key(), published));
    let keys = directory(&server, 300);
    keys.verify(envelope(&real, &sender)).unwrap();
    // The key server now hangs; envelopes signed with another key each
    // want a refetch of the same handle.
    *server.hang.lock().unwrap() = true;
    let forged = ClientKeys::generate().unwrap();
    let refetching = {
        let (keys, envelope) = (keys.clone(), envelope(&forged, &sender));
        std::thread::spawn(move || keys.verify(envelope).map(|v| v.envelope))
    };
    while server.calls.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let waiters: Vec<_> = (0..40)
        .map(|_| {
            let (keys, envelope) = (keys.clone(), envelope(&forged, &sender));
            std::thread::spawn(move || (keys.verify(envelope).map(|v| v.envelope), started.elapsed()))
        })
        .collect();
    let answers: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    server.release();
    assert!(answers.iter().all(|(r, _)| *r == Err(KeyCheckError::Unavailable)));
    let waited = answers.iter().filter(|(_, t)| *t >= Duration::from_millis(250)).count();
    assert_eq!(waited, 16, "at most 16 requests wait for one handle's refetch");
    assert!(
        answers.iter().all(|(_, t)| *t < Duration::from_secs(5)),
        "no wait outlives its deadline"
    );
    assert_eq!(refetching.join().unwrap(), Err(KeyCheckError::InvalidSignature));
}

#[test]
fn a_domain_that_failed_is_not_asked_again_for_other_handles() {
    let server = Arc::new(FakeKeyServer::default());
    *server.fail.lock().unwrap() = true;
    let keys = directory(&server, 1_000);
    let forged = ClientKeys::generate().unwrap();
    for i in 0..50 {
        let sender = handle(&format!("user{i}@m.example"));
        assert_eq!(
            keys.verify(envelope(&forged, &sender)).map(|v| v.envelope),
            Err(KeyCheckError::Unavailable)
        );
    }
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn an_answer_that_is_not_keys_does_not_mark_the_domain_as_failing() {
    // A stranger can make a peer answer 500 or 429 for a handle of its own
    // choosing: that must not shut out the domain's other users.
    struct Refusing(AtomicUsize);
    impl KeyFetcher for Refusing {
        fn fetch_keys(&self, _handle: &Handle, _refetch: bool) -> Result<PublishedKeys, KeyFetchFailure> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(KeyFetchFailure::Failed("http 500".into()))
        }
    }
    let fetcher = Arc::new(Refusing(AtomicUsize::new(0)));
    let keys = directory_over(fetcher.clone(), &a_example());
    let forged = ClientKeys::generate().unwrap();
    for i in 0..3 {
        let sender = handle(&format!("user{i}@m.example"));
        assert_eq!(
            keys.verify(envelope(&forged, &sender)).map(|v| v.envelope),
            Err(KeyCheckError::Unavailable)
        );
    }
    assert_eq!(fetcher.0.load(Ordering::SeqCst), 3, "each handle was asked");
}

#[test]
fn new_lookups_per_domain_are_bounded_per_second() {
    let server = Arc::new(FakeKeyServer::default());
    let keys = directory(&server, 1_000);
    let forged = ClientKeys::generate().unwrap();
    let started = Instant::now();
    for i in 0..300 {
        let sender = handle(&format!("user{i}@m.example"));
        assert_eq!(
            keys.verify(envelope(&forged, &sender)).map(|v| v.envelope),
            Err(KeyCheckError::Unavailable)
        );
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    let calls = server.calls.load(Ordering::SeqCst);
    assert!(calls <= 8 * seconds, "{calls} lookups in {seconds} windows");
    // Another domain has its own budget.
    assert_eq!(
        keys.verify(envelope(&forged, &handle("bob@b.example")))
            .map(|v| v.envelope),
        Err(KeyCheckError::Unavailable)
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), calls + 1);
}

/// A peer whose users each publish a long log of unproven entries (cheap
/// to make), served 100 entries a page.
struct LongLogs {
    keys: ClientKeys,
    entries: usize,
    pages_served: AtomicUsize,
    logs: Mutex<std::collections::HashMap<Handle, Vec<KeyLogEntry>>>,
}

impl LongLogs {
    fn log(&self, handle: &Handle) -> Vec<KeyLogEntry> {
        let mut logs = self.logs.lock().unwrap();
        logs.entry(handle.clone()).or_insert_with(|| self.build(handle)).clone()
    }

    fn build(&self, handle: &Handle) -> Vec<KeyLogEntry> {
        let kind = EntryKind::Keys {
            signing: self.keys.signing_key(),
            encryption: EncryptionKey::parse(&self.keys.public_keys().1).unwrap(),
        };
        let at = Timestamp::parse("2026-11-27T10:00:00Z").unwrap();
        let mut log: Vec<KeyLogEntry> = Vec::with_capacity(self.entries);
        for seq in 1..=self.entries as u64 {
            let prev = log.last().map(KeyLogEntry::hash).unwrap_or_default();
            log.push(KeyLogEntry::build(handle, seq, &prev, &at, &kind, None, None).unwrap());
        }
        log
    }
}

impl KeyFetcher for LongLogs {
    fn fetch_keys(&self, handle: &Handle, _refetch: bool) -> Result<PublishedKeys, KeyFetchFailure> {
        let last = self.log(handle).pop().unwrap();
        Ok(PublishedKeys {
            handle: handle.clone(),
            signing_key: self.keys.signing_key(),
            encryption_key: EncryptionKey::parse(&self.keys.public_keys().1).unwrap(),
            keys_updated_at: None,
            key_log: Some((self.entries as u64, last.hash())),
        })
    }

    fn fetch_key_log(&self, handle: &Handle, after: u64, _refetch: bool) -> Result<KeyLogFetch, KeyFetchFailure> {
        self.pages_served.fetch_add(1, Ordering::SeqCst);
        let log = self.log(handle);
        let page = log.iter().skip(after as usize).take(100);
        Ok(KeyLogFetch {
            entries: page.map(|e| serde_json::from_str(&e.entry_text()).unwrap()).collect(),
            seq: self.entries as u64,
            head: log.last().unwrap().hash(),
        })
    }
}

#[test]
fn first_contacts_share_a_budget_of_log_entries_to_check() {
    let peer = Arc::new(LongLogs {
        keys: ClientKeys::generate().unwrap(),
        entries: 600,
        pages_served: AtomicUsize::new(0),
        logs: Mutex::default(),
    });
    // No refill, so that the test does not depend on time.
    let keys = directory_over(peer.clone(), &a_example()).with_log_entry_budget(0, 1_000);
    let (first, second) = (handle("first@m.example"), handle("second@n.example"));
    assert!(keys.verify(envelope(&peer.keys, &first)).is_ok(), "one whole log fits");
    assert_eq!(peer.pages_served.load(Ordering::SeqCst), 6);
    assert_eq!(
        keys.verify(envelope(&peer.keys, &second)).map(|v| v.envelope),
        Err(KeyCheckError::Unavailable),
        "a second one at once is over the budget"
    );
    assert_eq!(
        peer.pages_served.load(Ordering::SeqCst),
        6,
        "refused before any page: a check is paid in full or not started"
    );
}

#[test]
fn a_log_that_claims_more_than_10000_entries_is_refused_without_a_fetch() {
    struct Boastful {
        keys: ClientKeys,
        pages: AtomicUsize,
    }
    impl KeyFetcher for Boastful {
        fn fetch_keys(&self, handle: &Handle, _refetch: bool) -> Result<PublishedKeys, KeyFetchFailure> {
            Ok(PublishedKeys {
                handle: handle.clone(),
                signing_key: self.keys.signing_key(),
                encryption_key: EncryptionKey::parse(&self.keys.public_keys().1).unwrap(),
                keys_updated_at: None,
                key_log: Some((10_001, "A".repeat(43))),
            })
        }

        fn fetch_key_log(&self, _handle: &Handle, _after: u64, _refetch: bool) -> Result<KeyLogFetch, KeyFetchFailure> {
            self.pages.fetch_add(1, Ordering::SeqCst);
            Err(KeyFetchFailure::NotFound)
        }
    }
    let peer = Arc::new(Boastful {
        keys: ClientKeys::generate().unwrap(),
        pages: AtomicUsize::new(0),
    });
    let keys = directory_over(peer.clone(), &a_example());
    let sender = handle("boast@m.example");
    assert_eq!(
        keys.verify(envelope(&peer.keys, &sender)).map(|v| v.envelope),
        Err(KeyCheckError::Conflict)
    );
    assert_eq!(peer.pages.load(Ordering::SeqCst), 0);
}
