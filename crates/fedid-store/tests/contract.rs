//! The store contract (fedid-testkit's suite) against SQLite and
//! PostgreSQL, plus what only a real database can show: atomic reset under
//! an injected failure, concurrent writers, hashed tokens, schema match.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use fedid_domain::PageLimit;
use fedid_store::DieselStore;
use fedid_testkit::contract;

use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
/// How many migrations each backend has.
const MIGRATIONS: usize = 9;

/// Runs `work` as one write unit and waits for its outcome.
fn write<T, E>(
    store: &DieselStore,
    work: impl FnMut(&mut dyn fedid_domain::Tx) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<fedid_domain::StoreError> + Send + 'static,
{
    fedid_domain::ports::write(store, None, work).wait()
}

fn sqlite() -> (tempfile::TempDir, DieselStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fedid.db").display());
    let store = DieselStore::open(&url, 4).unwrap();
    assert_eq!(store.migrate().unwrap().len(), MIGRATIONS);
    assert!(store.migrate().unwrap().is_empty(), "migrations apply once");
    (dir, store)
}

/// A fresh schema per call on the PostgreSQL of FEDID_TEST_POSTGRES_URL.
/// PostgreSQL tests are `#[ignore]`d, so that a run without a database
/// counts them as ignored; `make test` runs them (`--include-ignored`) when
/// FEDID_TEST_POSTGRES_URL is set, and CI always sets it.
fn postgres(name: &str) -> DieselStore {
    let store = DieselStore::open(&postgres_url(name), 4).unwrap();
    assert_eq!(store.migrate().unwrap().len(), MIGRATIONS);
    store
}

/// The URL of a fresh, empty schema (see [`postgres`]).
fn postgres_url(name: &str) -> String {
    let base = std::env::var("FEDID_TEST_POSTGRES_URL")
        .expect("a PostgreSQL test needs FEDID_TEST_POSTGRES_URL (make test-postgres)");
    let pid = std::process::id();
    let schema = format!("fedid_test_{name}_{pid}");
    let mut admin = diesel::PgConnection::establish(&base).expect("PostgreSQL at FEDID_TEST_POSTGRES_URL");
    // Schemas of earlier runs go, once per test process.
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let _ = admin.batch_execute(&format!(
            "DO $$ DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace \
             WHERE (nspname LIKE 'fedid_test_%' OR nspname LIKE 'fedid_bench_%') AND nspname NOT LIKE '%\\_{pid}' \
             LOOP EXECUTE 'DROP SCHEMA ' || quote_ident(s) || ' CASCADE'; END LOOP; END $$;"
        ));
    });
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ))
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{schema}")
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_instances_starting_together_migrate_once() {
    let url = postgres_url("race");
    let applied: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| DieselStore::open(&url, 2).unwrap().migrate().unwrap().len()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        applied.iter().sum::<usize>(),
        MIGRATIONS,
        "each migration applied once: {applied:?}"
    );
}

#[test]
fn sqlite_keeps_the_tx_contract() {
    let (_dir, store) = sqlite();
    contract::tx_semantics(&store);
}

#[test]
fn sqlite_runs_the_service_story() {
    let (_dir, store) = sqlite();
    contract::service_story(Arc::new(store));
}

#[test]
fn sqlite_keeps_pins_by_compare_and_set() {
    let (_dir, store) = sqlite();
    contract::key_pins(&store);
}

#[test]
fn sqlite_finds_users_related_to_a_peer() {
    let (_dir, store) = sqlite();
    contract::users_related_to(&store);
}

#[test]
fn sqlite_lets_one_of_concurrent_pin_moves_win() {
    let (_dir, store) = sqlite();
    contract::concurrent_pin_moves(Arc::new(store));
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_lets_one_of_concurrent_pin_moves_win() {
    contract::concurrent_pin_moves(Arc::new(postgres("pin_race")));
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_keeps_pins_by_compare_and_set() {
    contract::key_pins(&postgres("pins"));
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_finds_users_related_to_a_peer() {
    contract::users_related_to(&postgres("related"));
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_keeps_the_tx_contract() {
    contract::tx_semantics(&postgres("tx"));
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_runs_the_service_story() {
    contract::service_story(Arc::new(postgres("story")));
}

#[test]
fn sqlite_stores_messages_by_batch() {
    let (_dir, store) = sqlite();
    contract::batched_messages(&store);
}

#[test]
fn sqlite_reads_relationships_with_several_peers_at_once() {
    let (_dir, store) = sqlite();
    contract::batched_relationships(&store);
}

#[test]
fn sqlite_records_replays_by_batch() {
    let (_dir, store) = sqlite();
    contract::batched_replays(&store);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_stores_messages_by_batch() {
    contract::batched_messages(&postgres("messages"));
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_reads_relationships_with_several_peers_at_once() {
    contract::batched_relationships(&postgres("relationships"));
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_records_replays_by_batch() {
    contract::batched_replays(&postgres("replays"));
}

#[test]
fn sqlite_reads_and_writes_inbox_batches() {
    let (_dir, store) = sqlite();
    contract::inbox_batch_reads_and_writes(&store);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_reads_and_writes_inbox_batches() {
    contract::inbox_batch_reads_and_writes(&postgres("inbox_batch"));
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_pooled_connections_do_not_plan_sequential_scans() {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        enable_seqscan: String,
    }
    let DieselStore::Postgres(pool) = postgres("plans") else {
        panic!("a PostgreSQL store");
    };
    let setting: Setting = diesel::sql_query("SHOW enable_seqscan")
        .get_result(&mut *pool.get().unwrap())
        .unwrap();
    assert_eq!(setting.enable_seqscan, "off");
}

/// Makes every insert into the revocation queue fail, as a full disk or a
/// lost connection would, in the middle of a reset.
fn break_queue_inserts(store: &DieselStore) {
    match store {
        DieselStore::Sqlite(pool) => pool
            .get()
            .unwrap()
            .batch_execute("CREATE TRIGGER fail_queue BEFORE INSERT ON revocations BEGIN SELECT RAISE(ABORT, 'injected'); END;")
            .unwrap(),
        DieselStore::Postgres(pool) => pool
            .get()
            .unwrap()
            .batch_execute(
                "CREATE FUNCTION fail_queue() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$ LANGUAGE plpgsql;
                 CREATE TRIGGER fail_queue BEFORE INSERT ON revocations FOR EACH ROW EXECUTE FUNCTION fail_queue();",
            )
            .unwrap(),
    }
}

fn reset_is_all_or_nothing(store: DieselStore) {
    let store = Arc::new(store);
    let clock = Arc::new(fedid_testkit::ManualClock::at_vectors_now());
    let network = fedid_testkit::Network::new(std::time::Duration::from_millis(100));
    let settings = fedid_domain::Settings::for_domain(
        fedid_domain::Domain::parse("b.example", fedid_domain::DomainPolicy::HTTPS_PUBLIC).unwrap(),
        fedid_domain::Scheme::Https,
        false,
    );
    let node = fedid_testkit::build(settings, store.clone(), &network, clock.clone());
    let (user, _) = node.create_user().unwrap();
    node.set_alias(user, "bob").unwrap();
    let keys = fedid_testkit::ClientKeys::generate().unwrap();
    keys.with_keys(|k| node.set_keys(user, k)).unwrap();
    let peer = fedid_domain::Handle::parse("alice@a.example", fedid_domain::DomainPolicy::HTTPS_PUBLIC).unwrap();
    let now = clock_now(&clock);
    let relationship_peer = peer.clone();
    write(&store, move |tx| {
        tx.put_relationship(
            user,
            &fedid_domain::Relationship {
                peer: relationship_peer.clone(),
                state: fedid_domain::RelationshipState::Active,
                since: now,
                created_at: now,
            },
        )?;
        tx.insert_message(user, now, None, "{}")?;
        Ok::<_, fedid_domain::StoreError>(())
    })
    .unwrap();
    let before = node.identity(user).unwrap();
    break_queue_inserts(&store);
    assert!(node.reset_identity(user, Some("erase-all-my-data")).is_err());
    assert_eq!(node.identity(user).unwrap(), before, "keys and alias as before");
    assert_eq!(
        node.relationships(user, None, PageLimit::DEFAULT).unwrap().items.len(),
        1
    );
    assert_eq!(node.inbox(user, None, PageLimit::DEFAULT).unwrap().items.len(), 1);
    assert_eq!(
        node.pending_revocations(user, None, PageLimit::DEFAULT)
            .unwrap()
            .items
            .len(),
        0
    );
    assert!(node
        .audit_records(user)
        .unwrap()
        .iter()
        .all(|r| r.action != "identity_reset"));
}

fn clock_now(clock: &fedid_testkit::ManualClock) -> fedid_domain::UnixTime {
    fedid_domain::Clock::now(clock)
}

#[test]
fn sqlite_reset_is_all_or_nothing() {
    reset_is_all_or_nothing(sqlite().1);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_reset_is_all_or_nothing() {
    reset_is_all_or_nothing(postgres("fault"));
}

#[test]
fn the_database_holds_only_token_hashes() {
    let (dir, store) = sqlite();
    let node = fedid_testkit::build(
        fedid_domain::Settings::for_domain(
            fedid_domain::Domain::parse("b.example", fedid_domain::DomainPolicy::HTTPS_PUBLIC).unwrap(),
            fedid_domain::Scheme::Https,
            false,
        ),
        Arc::new(store.clone()),
        &fedid_testkit::Network::new(std::time::Duration::from_millis(10)),
        Arc::new(fedid_testkit::ManualClock::at_vectors_now()),
    );
    let (user, token) = node.create_user().unwrap();
    assert_eq!(node.authenticate(token.expose()).unwrap(), Some(user));
    drop(node);
    drop(store);
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        raw.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let token_bytes = token.expose().as_bytes();
    assert!(
        !raw.windows(token_bytes.len()).any(|w| w == token_bytes),
        "the token is nowhere in the database files"
    );
    let decoded = fedid_domain::base64url::decode(token.expose()).unwrap();
    assert!(
        !raw.windows(decoded.len()).any(|w| w == decoded.as_slice()),
        "nor its raw bytes"
    );
}

/// Runs a typed query over every column of every table of `schema.rs`: a
/// column that the migrations do not create fails it.
macro_rules! probe_schema {
    ($conn:expr) => {{
        use fedid_store::schema::*;
        let conn = $conn;
        users::table.select(users::all_columns).limit(0).execute(conn).unwrap();
        alias_history::table
            .select(alias_history::all_columns)
            .limit(0)
            .execute(conn)
            .unwrap();
        sessions::table
            .select(sessions::all_columns)
            .limit(0)
            .execute(conn)
            .unwrap();
        relationships::table
            .select(relationships::all_columns)
            .limit(0)
            .execute(conn)
            .unwrap();
        inbox_messages::table
            .select(inbox_messages::all_columns)
            .limit(0)
            .execute(conn)
            .unwrap();
        revocations::table
            .select(revocations::all_columns)
            .limit(0)
            .execute(conn)
            .unwrap();
        replay_keys::table
            .select(replay_keys::all_columns)
            .limit(0)
            .execute(conn)
            .unwrap();
        audit_log::table
            .select(audit_log::all_columns)
            .limit(0)
            .execute(conn)
            .unwrap();
    }};
}

fn schema_module_matches_the_migrations_of(store: &DieselStore) {
    match store {
        DieselStore::Sqlite(pool) => probe_schema!(&mut *pool.get().unwrap()),
        DieselStore::Postgres(pool) => probe_schema!(&mut *pool.get().unwrap()),
    }
}

#[test]
fn sqlite_schema_module_matches_the_migrations() {
    schema_module_matches_the_migrations_of(&sqlite().1);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_schema_module_matches_the_migrations() {
    schema_module_matches_the_migrations_of(&postgres("schema"));
}

/// Several threads receive envelopes, reset and flush different users of
/// one SQLite file at once: no busy or locked error reaches a caller, and
/// no row is lost or duplicated.
#[test]
fn sqlite_concurrent_writers_wait_instead_of_failing() {
    use fedid_domain::{Clock, Handle, MessageType};
    use serde_json::Map;
    let (_dir, store) = sqlite();
    let clock = Arc::new(fedid_testkit::ManualClock::at_vectors_now());
    let network = fedid_testkit::Network::new(std::time::Duration::from_millis(500));
    let a = fedid_testkit::Instance::start(&network, "a.example", clock.clone()).unwrap();
    let settings = fedid_testkit::settings("b.example").unwrap();
    let b = fedid_testkit::start_on(&network, settings, Arc::new(store), clock.clone());

    const USERS: usize = 4;
    const MESSAGES: usize = 25;
    let (sender, _) = a.fedid.create_user().unwrap();
    a.fedid.set_alias(sender, "sender").unwrap();
    let sender_keys = fedid_testkit::ClientKeys::generate().unwrap();
    sender_keys.with_keys(|k| a.fedid.set_keys(sender, k)).unwrap();
    let sender_handle = Handle::parse("sender@a.example", fedid_domain::DomainPolicy::HTTPS_PUBLIC).unwrap();
    let users: Vec<_> = (0..USERS)
        .map(|i| {
            let (user, _) = b.create_user().unwrap();
            b.set_alias(user, &format!("user{i}")).unwrap();
            let keys = fedid_testkit::ClientKeys::generate().unwrap();
            keys.with_keys(|k| b.set_keys(user, k)).unwrap();
            let handle = b.identity(user).unwrap().handle.unwrap();
            let request = keys.outbox_request(
                &handle,
                &sender_handle,
                MessageType::RelationshipRequest,
                Map::new(),
                clock.now(),
            );
            b.send(user, request).unwrap();
            let accept = sender_keys.outbox_request(
                &sender_handle,
                &handle,
                MessageType::RelationshipAccept,
                Map::new(),
                clock.now(),
            );
            a.fedid.send(sender, accept).unwrap();
            (user, handle)
        })
        .collect();

    std::thread::scope(|scope| {
        for (user, handle) in &users {
            let (b, clock, sender_keys, sender_handle) = (&b, &clock, &sender_keys, &sender_handle);
            scope.spawn(move || {
                for _ in 0..MESSAGES {
                    let wire = sender_keys
                        .envelope(sender_handle, handle, MessageType::Message, Map::new(), clock.now())
                        .wire_form();
                    assert_eq!(b.receive(wire.as_bytes()), Ok(fedid_domain::Received::Accepted));
                }
                let report = b.reset_identity(*user, Some("erase-all-my-data")).unwrap();
                assert_eq!(report.inbox_messages_erased as usize, MESSAGES + 1);
                assert_eq!(report.revocations_queued, 1);
                let keys = fedid_testkit::ClientKeys::generate().unwrap();
                keys.with_keys(|k| b.set_keys(*user, k)).unwrap();
                let report = b
                    .flush(*user, &[keys.flush_item(handle, sender_handle, clock.now())])
                    .unwrap();
                assert_eq!(report.results[0].outcome.as_str(), "delivered", "{report:?}");
            });
        }
    });
    for (user, _) in &users {
        assert_eq!(b.identity(*user).unwrap().pending_revocations, 0);
        assert_eq!(b.inbox(*user, None, PageLimit::DEFAULT).unwrap().items.len(), 0);
    }
    assert!(a
        .fedid
        .relationships(sender, None, PageLimit::DEFAULT)
        .unwrap()
        .items
        .is_empty());
}

/// Inserts the message `{"n": n}` for `user`.
fn insert_numbered(
    tx: &mut dyn fedid_domain::Tx,
    user: fedid_domain::UserId,
    n: usize,
) -> Result<(), fedid_domain::StoreError> {
    tx.insert_message(
        user,
        fedid_domain::UnixTime::from_secs(1),
        None,
        &format!("{{\"n\":{n}}}"),
    )
    .map(|_| ())
}

/// The `n` of every message stored for `user`, checked against its count.
fn stored_numbers(store: &DieselStore, user: fedid_domain::UserId) -> std::collections::BTreeSet<usize> {
    use fedid_domain::ports::read;
    let stored: std::collections::BTreeSet<usize> = read(store, |tx| tx.messages_after(user, None, 1000))
        .unwrap()
        .iter()
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.envelope).unwrap()["n"]
                .as_u64()
                .unwrap() as usize
        })
        .collect();
    assert_eq!(
        read(store, |tx| tx.identity(user)).unwrap().unwrap().inbox_messages,
        stored.len() as u64
    );
    stored
}

/// Runs `write_one(n)` for n in 0..threads * each, from `threads` threads;
/// returns the n whose write said `Ok`.
fn told_ok_from_threads(
    threads: usize,
    each: usize,
    write_one: impl Fn(usize) -> bool + Sync,
) -> std::collections::BTreeSet<usize> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let write_one = &write_one;
                scope.spawn(move || (t * each..(t + 1) * each).filter(|&n| write_one(n)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// A fresh user to number messages for.
fn numbering_user(store: &DieselStore) -> fedid_domain::UserId {
    write(store, |tx| tx.create_user(fedid_domain::UnixTime::from_secs(0))).unwrap()
}

/// Units of work from many threads share commits; a unit that fails
/// leaves nothing behind and takes none of its batch-mates with it.
fn failing_units_fail_alone_on(store: &DieselStore) {
    use fedid_domain::StoreError;
    let user = numbering_user(store);
    let kept = told_ok_from_threads(8, 50, |n| {
        write(store, move |tx| {
            insert_numbered(tx, user, n)?;
            if n % 3 == 0 {
                return Err(StoreError::Unavailable("refused".into()));
            }
            Ok(())
        })
        .is_ok()
    });
    assert_eq!(kept.len(), 400 - 134, "every unit but the refused ones");
    assert!(kept.iter().all(|n| n % 3 != 0));
    assert_eq!(stored_numbers(store, user), kept);
}

#[test]
fn sqlite_failing_units_fail_alone() {
    failing_units_fail_alone_on(&sqlite().1);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_failing_units_fail_alone() {
    failing_units_fail_alone_on(&postgres("fail_alone"));
}

/// A unit of work that panics on a writer thread fails its caller, takes
/// its own changes with it, and leaves the writer working for the next one.
fn writer_survives_a_panicking_unit_on(store: &DieselStore) {
    use fedid_domain::ports::read;
    use fedid_domain::StoreError;
    let user = numbering_user(store);
    let at = fedid_domain::UnixTime::from_secs(1);
    let outcome: Result<(), StoreError> = write(store, move |tx| {
        tx.insert_message(user, at, None, "{\"n\":1}")?;
        panic!("a bug in a unit of work");
    });
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{outcome:?}");
    assert_eq!(read(store, |tx| tx.identity(user)).unwrap().unwrap().inbox_messages, 0);
    write(store, move |tx| {
        tx.insert_message(user, at, None, "{\"n\":2}").map(|_| ())
    })
    .unwrap();
    assert_eq!(read(store, |tx| tx.identity(user)).unwrap().unwrap().inbox_messages, 1);
}

#[test]
fn sqlite_writer_survives_a_panicking_unit() {
    writer_survives_a_panicking_unit_on(&sqlite().1);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_writer_survives_a_panicking_unit() {
    writer_survives_a_panicking_unit_on(&postgres("panicking_unit"));
}

/// Units that panic amid concurrent ones fail alone: every other unit is
/// stored, and each caller is told exactly what was stored.
fn panicking_units_fail_alone_on(store: &DieselStore) {
    use fedid_domain::StoreError;
    let user = numbering_user(store);
    let told_ok = told_ok_from_threads(8, 40, |n| {
        let outcome: Result<(), StoreError> = write(store, move |tx| {
            insert_numbered(tx, user, n)?;
            assert!(n % 11 != 0, "a bug in unit {n}");
            Ok(())
        });
        outcome.is_ok()
    });
    let expected: std::collections::BTreeSet<usize> = (0..320).filter(|n| n % 11 != 0).collect();
    assert_eq!(told_ok, expected);
    assert_eq!(stored_numbers(store, user), told_ok);
}

#[test]
fn sqlite_panicking_units_fail_alone() {
    panicking_units_fail_alone_on(&sqlite().1);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_panicking_units_fail_alone() {
    panicking_units_fail_alone_on(&postgres("panicking_units"));
}

/// Units handed over without waiting (as the inbox does from an async
/// handler) queue behind each other and share batches; each completion,
/// read later, tells what was stored.
fn queued_completions_tell_what_was_stored_on(store: &DieselStore) {
    use fedid_domain::StoreError;
    let user = numbering_user(store);
    let completions: Vec<_> = (0..300)
        .map(|n| {
            let completion = fedid_domain::ports::write(store, Some(fedid_domain::ports::Lane(n as u64)), move |tx| {
                insert_numbered(tx, user, n)?;
                if n % 4 == 0 {
                    return Err(StoreError::Unavailable("refused".into()));
                }
                Ok(())
            });
            (n, completion)
        })
        .collect();
    let told_ok: std::collections::BTreeSet<usize> = completions
        .into_iter()
        .filter_map(|(n, completion)| completion.wait().is_ok().then_some(n))
        .collect();
    assert_eq!(told_ok.len(), 225);
    assert_eq!(stored_numbers(store, user), told_ok);
}

#[test]
fn sqlite_queued_completions_tell_what_was_stored() {
    queued_completions_tell_what_was_stored_on(&sqlite().1);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_queued_completions_tell_what_was_stored() {
    queued_completions_tell_what_was_stored_on(&postgres("queued_completions"));
}

/// Hands the store a unit that waits for a word before it numbers `0`,
/// then units numbering `1..=4` queued behind it on the same writer, then
/// gives the word: all five share one batch. The unit numbering `failing`
/// fails; the store keeps exactly the others and tells each caller so.
fn batch_mates_of_a_failing_unit_are_stored_on(store: &DieselStore, failing: usize) {
    use fedid_domain::ports::{write, Lane};
    use fedid_domain::StoreError;
    let user = numbering_user(store);
    let (go, word) = std::sync::mpsc::channel::<()>();
    let word = std::sync::Mutex::new(word);
    let number = move |tx: &mut dyn fedid_domain::Tx, n: usize| {
        insert_numbered(tx, user, n)?;
        if n == failing {
            return Err(StoreError::Unavailable("refused".into()));
        }
        Ok(())
    };
    let mut completions = vec![write(store, Some(Lane(7)), move |tx| {
        word.lock().unwrap().recv().unwrap();
        number(tx, 0)
    })];
    completions.extend((1..=4).map(|n| write(store, Some(Lane(7)), move |tx| number(tx, n))));
    go.send(()).unwrap();
    let told_ok: std::collections::BTreeSet<usize> = completions
        .into_iter()
        .enumerate()
        .filter_map(|(n, completion)| completion.wait().is_ok().then_some(n))
        .collect();
    let expected: std::collections::BTreeSet<usize> = (0..=4).filter(|&n| n != failing).collect();
    assert_eq!(told_ok, expected);
    assert_eq!(stored_numbers(store, user), expected);
}

#[test]
fn sqlite_a_failing_first_unit_of_a_batch_leaves_the_others_stored() {
    batch_mates_of_a_failing_unit_are_stored_on(&sqlite().1, 0);
}

#[test]
fn sqlite_a_failing_later_unit_of_a_batch_leaves_the_others_stored() {
    batch_mates_of_a_failing_unit_are_stored_on(&sqlite().1, 2);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_a_failing_first_unit_of_a_batch_leaves_the_others_stored() {
    batch_mates_of_a_failing_unit_are_stored_on(&postgres("failing_first_unit"), 0);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_a_failing_later_unit_of_a_batch_leaves_the_others_stored() {
    batch_mates_of_a_failing_unit_are_stored_on(&postgres("failing_later_unit"), 2);
}

macro_rules! at_the_second_migration_with_replays {
    ($conn:expr, $migrations:expr) => {{
        let conn = $conn;
        conn.run_next_migration($migrations).unwrap();
        conn.run_next_migration($migrations).unwrap();
        use fedid_store::schema::replay_keys;
        for (key, nonce) in [(1u8, "AAAAAAAAAAAAAAAAAAAAAA"), (2, "")] {
            diesel::insert_into(replay_keys::table)
                .values((
                    replay_keys::replay_key.eq(vec![key; 32]),
                    replay_keys::sender.eq("alice@a.example"),
                    replay_keys::nonce.eq(nonce),
                    replay_keys::expires_at.eq(10_000_000_000i64),
                ))
                .execute(conn)
                .unwrap();
        }
    }};
}

/// Replay records written before the migration that left envelopes with a
/// nonce one index (2026-11-27-000003) still count after it, on both
/// backends: their duplicates and nonce reuses are still refused.
fn replay_records_outlive_the_replay_index_migration_on(store: &DieselStore) {
    use fedid_domain::{DomainPolicy, Handle, Nonce, ReplayKey, ReplayOutcome, ReplayRecord, UnixTime};
    assert_eq!(store.migrate().unwrap().len(), MIGRATIONS - 2);
    let record = |key: u8, nonce: &str| ReplayRecord {
        key: ReplayKey::from_bytes([key; 32]),
        sender: Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap(),
        nonce: Nonce::parse(nonce).unwrap(),
        expires_at: UnixTime::from_secs(10),
    };
    let now = UnixTime::from_secs(1);
    for (key, nonce, outcome) in [
        (1, "AAAAAAAAAAAAAAAAAAAAAA", ReplayOutcome::Duplicate),
        (3, "AAAAAAAAAAAAAAAAAAAAAA", ReplayOutcome::NonceReused),
        (2, "", ReplayOutcome::Duplicate),
        (4, "", ReplayOutcome::Recorded),
    ] {
        assert_eq!(
            write(store, {
                let record = record(key, nonce);
                move |tx| tx.record_replay(&record, now)
            })
            .unwrap(),
            outcome,
            "{store:?} key {key}"
        );
    }
}

#[test]
fn sqlite_replay_records_outlive_the_replay_index_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedid.db");
    at_the_second_migration_with_replays!(
        &mut diesel::SqliteConnection::establish(&path.display().to_string()).unwrap(),
        SQLITE
    );
    let store = DieselStore::open(&format!("sqlite://{}", path.display()), 2).unwrap();
    replay_records_outlive_the_replay_index_migration_on(&store);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_replay_records_outlive_the_replay_index_migration() {
    let url = postgres_url("upgrade");
    at_the_second_migration_with_replays!(&mut diesel::PgConnection::establish(&url).unwrap(), POSTGRES);
    replay_records_outlive_the_replay_index_migration_on(&DieselStore::open(&url, 2).unwrap());
}

macro_rules! at_the_third_migration_with_a_message {
    ($conn:expr, $migrations:expr) => {{
        let conn = $conn;
        for _ in 0..3 {
            conn.run_next_migration($migrations).unwrap();
        }
        conn.batch_execute(
            "INSERT INTO users (id, created_at, alias, inbox_count) VALUES (1, 0, 'bob', 1); \
             INSERT INTO alias_history (alias, user_id) VALUES ('bob', 1); \
             INSERT INTO inbox_messages (user_id, received_at, envelope) \
               VALUES (1, 0, '{\"from\":\"mallory@m.example\",\"to\":\"bob@a.example\"}');",
        )
        .unwrap();
    }};
}

/// Messages and aliases stored before the migration that records senders
/// and alias changes (2026-12-01-000004) count after it, on both backends:
/// a stored message still counts for the inbox, a held alias towards the
/// total.
fn messages_and_aliases_outlive_the_sender_migration_on(store: &DieselStore) {
    use fedid_domain::ports::read;
    use fedid_domain::{UnixTime, UserId};
    assert_eq!(store.migrate().unwrap().len(), MIGRATIONS - 3);
    let user = UserId(1);
    // Whether an older message was consented is not known: it counts for
    // the inbox, not against its sender.
    let counts = read(store, |tx| {
        Ok::<_, fedid_domain::StoreError>((
            tx.identity(user)?.map_or(0, |record| record.inbox_messages),
            tx.count_unsolicited(user, "mallory@m.example")?,
        ))
    })
    .unwrap();
    assert_eq!(counts, (1, 0), "{store:?}");
    let changes = read(store, |tx| tx.alias_changes(user, UnixTime::from_secs(1))).unwrap();
    assert_eq!((changes.ever, changes.recent), (1, 0), "{store:?}");
}

#[test]
fn sqlite_messages_and_aliases_outlive_the_sender_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedid.db");
    at_the_third_migration_with_a_message!(
        &mut diesel::SqliteConnection::establish(&path.display().to_string()).unwrap(),
        SQLITE
    );
    let store = DieselStore::open(&format!("sqlite://{}", path.display()), 2).unwrap();
    messages_and_aliases_outlive_the_sender_migration_on(&store);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_messages_and_aliases_outlive_the_sender_migration() {
    let url = postgres_url("upgrade_senders");
    at_the_third_migration_with_a_message!(&mut diesel::PgConnection::establish(&url).unwrap(), POSTGRES);
    messages_and_aliases_outlive_the_sender_migration_on(&DieselStore::open(&url, 2).unwrap());
}

macro_rules! at_the_fourth_migration_with_a_relationship {
    ($conn:expr, $migrations:expr) => {{
        let conn = $conn;
        for _ in 0..4 {
            conn.run_next_migration($migrations).unwrap();
        }
        conn.batch_execute(
            "INSERT INTO users (id, created_at, alias, inbox_count) VALUES (1, 0, 'bob', 0); \
             INSERT INTO relationships (user_id, peer, state, since) \
               VALUES (1, 'alice@a.example', 'active', 5000000000);",
        )
        .unwrap();
    }};
}

/// A relationship made before relationships kept their creation time
/// (2026-12-01-000005) counts as created at the epoch, on both backends:
/// any REVOKE removes it, as in version 1.
fn relationships_outlive_the_created_at_migration_on(store: &DieselStore) {
    use fedid_domain::ports::read;
    use fedid_domain::{DomainPolicy, Handle, UnixTime, UserId};
    assert_eq!(store.migrate().unwrap().len(), MIGRATIONS - 4);
    let alice = Handle::parse("alice@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let relationship = read(store, |tx| tx.relationship(UserId(1), &alice)).unwrap().unwrap();
    assert_eq!(
        (relationship.since, relationship.created_at),
        (UnixTime::from_secs(5), UnixTime::from_secs(0)),
        "{store:?}"
    );
}

#[test]
fn sqlite_relationships_outlive_the_created_at_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedid.db");
    at_the_fourth_migration_with_a_relationship!(
        &mut diesel::SqliteConnection::establish(&path.display().to_string()).unwrap(),
        SQLITE
    );
    let store = DieselStore::open(&format!("sqlite://{}", path.display()), 2).unwrap();
    relationships_outlive_the_created_at_migration_on(&store);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_relationships_outlive_the_created_at_migration() {
    let url = postgres_url("upgrade_created_at");
    at_the_fourth_migration_with_a_relationship!(&mut diesel::PgConnection::establish(&url).unwrap(), POSTGRES);
    relationships_outlive_the_created_at_migration_on(&DieselStore::open(&url, 2).unwrap());
}

macro_rules! at_the_fifth_migration_with_a_queued_revocation {
    ($conn:expr, $migrations:expr) => {{
        let conn = $conn;
        for _ in 0..5 {
            conn.run_next_migration($migrations).unwrap();
        }
        conn.batch_execute(
            "INSERT INTO users (id, created_at, alias, inbox_count) VALUES (1, 0, 'alice', 0); \
             INSERT INTO revocations (user_id, peer, queued_at, attempts, last_error) \
               VALUES (1, 'bob@b.example', 1000000000, 2, 'http 503');",
        )
        .unwrap();
    }};
}

/// A revocation queued before queued rows could hold a long-lived REVOKE
/// (2026-12-01-000006) stays queued as it was, for a flush to deliver, and
/// is not scheduled, on both backends.
fn queued_revocations_outlive_the_scheduling_migration_on(store: &DieselStore) {
    use fedid_domain::ports::read;
    use fedid_domain::{DomainPolicy, Handle, UnixTime, UserId};
    assert_eq!(store.migrate().unwrap().len(), MIGRATIONS - 5);
    let bob = Handle::parse("bob@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let row = read(store, |tx| tx.queued(UserId(1), &bob)).unwrap().unwrap();
    assert_eq!(
        (row.queued_at, row.attempts, row.last_error.as_deref()),
        (UnixTime::from_secs(1), 2, Some("http 503")),
        "{store:?}"
    );
    assert!(
        !row.is_scheduled() && row.envelope.is_none() && row.retries == 0,
        "{store:?}"
    );
    assert_eq!(read(store, |tx| tx.total_scheduled()).unwrap(), 0);
}

#[test]
fn sqlite_queued_revocations_outlive_the_scheduling_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedid.db");
    at_the_fifth_migration_with_a_queued_revocation!(
        &mut diesel::SqliteConnection::establish(&path.display().to_string()).unwrap(),
        SQLITE
    );
    let store = DieselStore::open(&format!("sqlite://{}", path.display()), 2).unwrap();
    queued_revocations_outlive_the_scheduling_migration_on(&store);
}

#[test]
#[ignore = "needs PostgreSQL: FEDID_TEST_POSTGRES_URL, make test-postgres"]
fn postgres_queued_revocations_outlive_the_scheduling_migration() {
    let url = postgres_url("upgrade_scheduling");
    at_the_fifth_migration_with_a_queued_revocation!(&mut diesel::PgConnection::establish(&url).unwrap(), POSTGRES);
    queued_revocations_outlive_the_scheduling_migration_on(&DieselStore::open(&url, 2).unwrap());
}
