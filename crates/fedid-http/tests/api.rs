//! API tests: the real actix app on 127.0.0.1:0 over a fresh SQLite file,
//! with a second, in-memory instance (`b.example`) as federation peer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fedid_domain::{Clock, Domain, DomainPolicy, Fedid, Handle, MessageType, Settings};
use fedid_http::{HttpSettings, Metrics};
use fedid_store::DieselStore;
use fedid_testkit::http::{Reply, TestServer};
use fedid_testkit::{ClientKeys, Instance, ManualClock, Network};
use serde_json::{json, Map, Value};

struct TestApp {
    server: TestServer,
    fedid: Arc<Fedid>,
    peer: Instance,
    clock: Arc<ManualClock>,
    network: Arc<Network>,
    _dir: tempfile::TempDir,
}

/// The problem code of an answer that must be a problem.
trait ProblemCode {
    fn code(&self) -> String;
}

impl ProblemCode for Reply {
    fn code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        self.problem_code().unwrap()
    }
}

fn spawn_app_with(metrics_token: Option<&str>, rate: u32) -> TestApp {
    spawn_app_tweaked(metrics_token, rate, |_| {})
}

fn spawn_app_tweaked(metrics_token: Option<&str>, rate: u32, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = DieselStore::open(&format!("sqlite://{}", dir.path().join("api.db").display()), 4).unwrap();
    store.migrate().unwrap();
    spawn_on(Arc::new(store), dir, metrics_token, rate, tweak)
}

fn spawn_on(
    store: Arc<dyn fedid_domain::Store>,
    dir: tempfile::TempDir,
    metrics_token: Option<&str>,
    rate: u32,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let clock = Arc::new(ManualClock::at(fedid_domain::ports::SystemClock.now()));
    let network = Network::new(Duration::from_millis(500));
    let mut settings = fedid_testkit::settings("a.example").unwrap();
    tweak(&mut settings);
    let metrics = Arc::new(Metrics::default());
    let fedid = Arc::new(
        fedid_testkit::build(settings, store, &network, clock.clone()).with_delivery_observer(metrics.clone()),
    );
    network.join(&fedid.settings().domain.clone(), &fedid);
    let peer = Instance::start(&network, "b.example", clock.clone()).unwrap();
    let mut state = fedid_testkit::http::app_state(
        fedid.clone(),
        metrics,
        HttpSettings {
            metrics_token: metrics_token.map(str::to_owned),
            ..HttpSettings::new(65_536, 1_000)
        },
    )
    .unwrap();
    state.inbox_limiter = (rate > 0).then(|| fedid_http::RateLimiter::new(rate));
    TestApp {
        server: TestServer::start_with(state).unwrap(),
        fedid,
        peer,
        clock,
        network,
        _dir: dir,
    }
}

fn spawn_app() -> TestApp {
    spawn_app_with(None, 0)
}

impl TestApp {
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Reply {
        self.server.call(method, path, token, body).unwrap()
    }

    /// `PATCH /users/me/alias`, which must succeed.
    fn set_alias(&self, token: &str, alias: &str) {
        let reply = self.send("PATCH", "/users/me/alias", token, json!({ "alias": alias }));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    /// Asserts that `/metrics` shows `series`.
    fn assert_metrics_show(&self, series: &str) {
        let metrics = self.call("GET", "/metrics", None, None).body;
        assert!(metrics.contains(series), "{series} in {metrics}");
    }

    /// `POST /federation/inbox` with a JSON body.
    fn inbox(&self, body: String) -> Reply {
        self.call(
            "POST",
            "/federation/inbox",
            None,
            Some(("application/json", body.into_bytes())),
        )
    }

    fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None)
    }

    fn send(&self, method: &str, path: &str, token: &str, body: Value) -> Reply {
        self.server.send_json(method, path, Some(token), &body).unwrap()
    }

    /// A user with alias and keys, through the API.
    fn user(&self, alias: &str) -> (String, Handle, ClientKeys) {
        let (_, token) = self.fedid.create_user().unwrap();
        let token = token.expose().to_owned();
        assert_eq!(
            self.send("PATCH", "/users/me/alias", &token, json!({"alias": alias}))
                .status,
            200
        );
        let keys = ClientKeys::generate().unwrap();
        let (sk, ek) = keys.public_keys();
        let reply = self.send(
            "PUT",
            "/users/me/keys",
            &token,
            json!({"signingKey": sk, "encryptionKey": ek}),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["state"], "active");
        let handle = Handle::parse(reply.json()["handle"].as_str().unwrap(), DomainPolicy::HTTPS_PUBLIC).unwrap();
        (token, handle, keys)
    }

    /// POST /users/me/outbox with a freshly signed body.
    fn outbox(&self, token: &str, keys: &ClientKeys, from: &Handle, to: &Handle, kind: MessageType) -> Reply {
        self.send(
            "POST",
            "/users/me/outbox",
            token,
            self.outbox_body(keys, from, to, kind),
        )
    }

    /// A signed RELATIONSHIP_REQUEST to `to` with `member` then set to `value`.
    fn outbox_edited(
        &self,
        token: &str,
        keys: &ClientKeys,
        from: &Handle,
        to: &Handle,
        member: &str,
        value: Value,
    ) -> Reply {
        let mut body = self.outbox_body(keys, from, to, MessageType::RelationshipRequest);
        body[member] = value;
        self.send("POST", "/users/me/outbox", token, body)
    }

    fn outbox_body(&self, keys: &ClientKeys, from: &Handle, to: &Handle, kind: MessageType) -> Value {
        let r = keys.outbox_request(from, to, kind, Map::new(), self.clock.now());
        json!({"to": r.to.as_str(), "messageType": r.message_type, "nonce": r.nonce, "timestamp": r.timestamp,
               "payload": r.payload, "signature": r.signature})
    }
}

#[test]
fn health_and_readiness_answer_ok() {
    let app = spawn_app();
    let health = app.call("GET", "/healthz", None, None);
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    assert_eq!(app.call("GET", "/readyz", None, None).json(), json!({"status": "ok"}));
}

#[test]
fn every_answer_carries_its_own_request_id() {
    let app = spawn_app();
    let ids: Vec<String> = ["/healthz", "/healthz", "/nope"]
        .iter()
        .map(|path| {
            let reply = app.call("GET", path, None, None);
            reply.header("x-request-id").unwrap().to_owned()
        })
        .collect();
    for id in &ids {
        assert_eq!(id.len(), 36, "a UUID: {id}");
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let app = spawn_app();
    let missing = app.call("GET", "/nope", None, None);
    assert_eq!((missing.status, missing.code()), (404, "not_found".into()));
    let wrong = app.call("DELETE", "/healthz", None, None);
    assert_eq!((wrong.status, wrong.code()), (405, "method_not_allowed".into()));
    assert_eq!(wrong.header("allow"), Some("GET"));
}

#[test]
fn metrics_count_requests_by_route_method_and_status() {
    let app = spawn_app();
    app.call("GET", "/healthz", None, None);
    let metrics = app.call("GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    for series in [
        "fedid_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"}",
        "fedid_revocations_queued 0",
        "fedid_http_request_duration_seconds_bucket",
    ] {
        assert!(metrics.body.contains(series), "{series} in {}", metrics.body);
    }
}

#[test]
fn the_openapi_document_lists_every_route() {
    let app = spawn_app();
    let doc = app.call("GET", "/openapi.json", None, None).json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, operation) in ops.as_object().unwrap() {
            documented.push((method.to_owned(), path.to_owned()));
            // Problem bodies are application/problem+json, and every client
            // error is one (API.md conventions; /readyz's 503 is a status).
            for (status, response) in operation["responses"].as_object().unwrap() {
                let contents = response["content"].as_object();
                if status.starts_with('4') {
                    assert!(
                        contents.is_some_and(|c| c.contains_key("application/problem+json")),
                        "{method} {path} {status}"
                    );
                }
                for (media, content) in contents.into_iter().flatten() {
                    let problem = content["schema"]["$ref"]
                        .as_str()
                        .is_some_and(|r| r.ends_with("/Problem"));
                    assert_eq!(problem, media == "application/problem+json", "{method} {path} {status}");
                }
            }
        }
    }
    documented.sort();
    let mut registered: Vec<(String, String)> = fedid_http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    registered.sort();
    assert_eq!(documented, registered);
    // And the app really answers each registered route (not the 404 fallback).
    for (method, path) in fedid_http::ROUTES {
        let concrete = path
            .replace("{peerHandle}", "bob@b.example")
            .replace("{alias}", "alice")
            .replace("{id}", "1");
        let reply = app.call(
            &method.to_uppercase(),
            &concrete,
            Some("x"),
            Some(("application/json", b"{}".to_vec())),
        );
        assert!(
            !(reply.status == 404 && reply.body.contains("\"not_found\"") && !concrete.contains("inbox/1")),
            "{method} {path}"
        );
        assert_ne!(reply.status, 405, "{method} {path}");
    }
}

#[test]
fn every_operation_has_its_own_operation_id() {
    let doc = fedid_http::openapi::document();
    let doc = serde_json::to_value(&doc).unwrap();
    let mut ids = Vec::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for operation in ops.as_object().unwrap().values() {
            ids.push(operation["operationId"].as_str().unwrap().to_owned());
        }
    }
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

#[test]
fn the_inbox_envelope_is_described_member_by_member() {
    let doc = serde_json::to_value(fedid_http::openapi::document()).unwrap();
    let body = &doc["paths"]["/federation/inbox"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["$ref"], "#/components/schemas/Envelope");
    let envelope = &doc["components"]["schemas"]["Envelope"];
    assert_eq!(envelope["required"], json!(["from", "to", "timestamp", "signature"]));
    for member in [
        "protocol_version",
        "message_type",
        "type",
        "message_version",
        "nonce",
        "payload",
    ] {
        assert!(envelope["properties"][member].is_object(), "{member}");
        assert_ne!(
            envelope["properties"][member]["type"],
            json!(["string", "null"]),
            "{member}: null is invalid"
        );
    }
    assert!(envelope["properties"]["from"]["pattern"]
        .as_str()
        .unwrap()
        .contains('@'));
}

#[test]
fn every_kind_of_bad_token_gets_the_same_401() {
    let app = spawn_app();
    let (user, good) = app.fedid.create_user().unwrap();
    let expiring = app.fedid.issue_token(user, Some(1)).unwrap();
    let revoked_user = app.fedid.create_user().unwrap();
    app.fedid.revoke_tokens(revoked_user.0).unwrap();
    app.clock.advance_secs(2 * 86_400);
    assert_eq!(app.get("/users/me/identity", good.expose()).status, 200);
    let mut bodies = Vec::new();
    for token in [
        None,
        Some(""),
        Some("not-a-token"),
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some(expiring.expose()),
        Some(revoked_user.1.expose()),
    ] {
        let reply = app.call("GET", "/users/me/identity", token, None);
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer realm=\"fedid\""));
        assert_eq!(reply.code(), "unauthenticated");
        bodies.push(reply.body);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "byte-identical bodies");
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app();
    let (_, token) = app.fedid.create_user().unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let reply = agent
            .get(&app.server.url("/users/me/identity"))
            .header("Authorization", &format!("{scheme} {}", token.expose()))
            .call()
            .unwrap();
        assert_eq!(reply.status().as_u16(), 200, "{scheme}");
    }
}

/// A user without alias or keys, and their token.
fn new_user(app: &TestApp) -> String {
    app.fedid.create_user().unwrap().1.expose().to_owned()
}

#[test]
fn a_new_user_has_an_identity_to_set_up() {
    let app = spawn_app();
    let token = new_user(&app);
    let identity = app.get("/users/me/identity", &token).json();
    assert_eq!(identity["state"], "setup_required");
    assert_eq!(identity["alias"], Value::Null);
    assert_eq!(identity["pendingRevocations"], 0);
}

#[test]
fn an_alias_is_folded_to_lower_case_and_setting_it_again_changes_nothing() {
    let app = spawn_app();
    let token = new_user(&app);
    let reply = app.send("PATCH", "/users/me/alias", &token, json!({"alias": "Alice"}));
    assert_eq!(
        (reply.status, reply.json()["handle"].clone()),
        (200, json!("alice@a.example"))
    );
    let again = app.send("PATCH", "/users/me/alias", &token, json!({"alias": "alice"}));
    assert_eq!(again.status, 200, "no-op");
}

#[test]
fn bad_alias_bodies_are_refused_naming_the_fault() {
    let app = spawn_app();
    let token = new_user(&app);
    let patch =
        |ctype: &str, body: &[u8]| app.call("PATCH", "/users/me/alias", Some(&token), Some((ctype, body.to_vec())));
    assert_eq!(patch("application/json", br#"{"alias":"a!"}"#).code(), "invalid_alias");
    for body in [&br#"{"alias":5}"#[..], b"{}"] {
        let reply = patch("application/json", body);
        assert_eq!(
            (reply.status, reply.code(), reply.json()["member"].clone()),
            (400, "invalid_request".into(), json!("alias"))
        );
    }
    let reply = patch("application/json", br#"{"alias":"#);
    assert_eq!((reply.status, reply.code()), (400, "invalid_request".into()));
    assert_eq!(patch("text/json", br#"{"alias":"x"}"#).code(), "invalid_request");
    let big = json!({"alias": "x".repeat(70_000)}).to_string();
    assert_eq!(patch("application/json", big.as_bytes()).code(), "payload_too_large");
}

#[test]
fn the_media_type_is_compared_without_case_or_parameters() {
    let app = spawn_app();
    let token = new_user(&app);
    let reply = app.call(
        "PATCH",
        "/users/me/alias",
        Some(&token),
        Some(("Application/JSON; charset=utf-8", br#"{"alias":"alice"}"#.to_vec())),
    );
    assert_eq!(reply.status, 200);
}

#[test]
fn an_alias_once_held_is_taken_for_everyone_else() {
    let app = spawn_app();
    let token = new_user(&app);
    app.set_alias(&token, "alice");
    let other = new_user(&app);
    let reply = app.send("PATCH", "/users/me/alias", &other, json!({"alias": "ALICE"}));
    assert_eq!((reply.status, reply.code()), (409, "alias_taken".into()));
}

#[test]
fn alias_changes_past_the_day_answer_429_with_retry_after() {
    let app = spawn_app_tweaked(None, 0, |s| s.alias_changes_per_day = 2);
    let token = new_user(&app);
    for alias in ["first", "second"] {
        app.set_alias(&token, alias);
    }
    let reply = app.send("PATCH", "/users/me/alias", &token, json!({"alias": "third"}));
    assert_eq!((reply.status, reply.code()), (429, "rate_limited".into()));
    assert_eq!(reply.header("retry-after"), Some("86400"));
}

#[test]
fn keys_are_checked_one_by_one_then_make_the_identity_active() {
    let app = spawn_app();
    let token = new_user(&app);
    app.set_alias(&token, "alice");
    let keys = ClientKeys::generate().unwrap();
    let (sk, ek) = keys.public_keys();
    let put = |body: Value| app.send("PUT", "/users/me/keys", &token, body);
    let reply = put(json!({"signingKey": sk, "encryptionKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}));
    assert_eq!(
        (reply.status, reply.code(), reply.json()["member"].clone()),
        (400, "invalid_key".into(), json!("encryptionKey"))
    );
    let reply = put(json!({"signingKey": "7P_______________________________________38", "encryptionKey": ek}));
    assert_eq!(reply.json()["member"], "signingKey");
    let reply = put(json!({"signingKey": sk, "encryptionKey": ek}));
    assert_eq!(reply.json()["state"], "active");
    assert_eq!(reply.json()["signingKey"], json!(sk));
}

/// Alice, with an active relationship to bob of the peer instance: what a
/// reset erases and queues a revocation for.
fn alice_with_a_peer(app: &TestApp) -> String {
    let (alice, alice_handle, alice_keys) = app.user("alice");
    let bob = app.peer.user("bob").unwrap();
    let body = app.outbox_body(
        &alice_keys,
        &alice_handle,
        &bob.handle,
        MessageType::RelationshipRequest,
    );
    let r = app.send("POST", "/users/me/outbox", &alice, body);
    assert_eq!((r.status, r.json()), (200, json!({"outcome": "delivered"})));
    alice
}

fn reset(app: &TestApp, token: &str, ctype: &str, body: &str) -> Reply {
    app.call(
        "POST",
        "/users/me/identity/reset",
        Some(token),
        Some((ctype, body.as_bytes().to_vec())),
    )
}

#[test]
fn a_reset_without_the_confirmation_changes_nothing() {
    let app = spawn_app();
    let alice = alice_with_a_peer(&app);
    for body in ["{}", "null", "{\"confirm\":5}", "", "{\"confirm\":\"yes\"}"] {
        let reply = reset(&app, &alice, "application/json", body);
        assert_eq!(
            (reply.status, reply.code()),
            (400, "confirmation_required".into()),
            "{body}"
        );
    }
    for (ctype, body) in [
        ("text/plain", "{\"confirm\":\"erase-all-my-data\"}"),
        ("application/json", "{\"confirm\":"),
    ] {
        let reply = reset(&app, &alice, ctype, body);
        assert_eq!((reply.status, reply.code()), (400, "invalid_request".into()), "{body}");
    }
    let relationships = app.get("/users/me/relationships", &alice).json();
    assert_eq!(relationships["items"].as_array().unwrap().len(), 1, "nothing changed");
}

#[test]
fn a_confirmed_reset_erases_queues_and_keeps_the_alias() {
    let app = spawn_app();
    let alice = alice_with_a_peer(&app);
    let reply = reset(&app, &alice, "application/json", r#"{"confirm":"erase-all-my-data"}"#);
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["revocationsQueued"], 1);
    assert_eq!(body["erased"], json!({"relationships": 1, "inboxMessages": 0}));
    assert_eq!(body["identity"]["state"], "setup_required");
    assert_eq!(body["identity"]["alias"], "alice");
    assert!(body["identity"]["lastResetAt"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_second_reset_finds_nothing_to_erase() {
    let app = spawn_app();
    let alice = alice_with_a_peer(&app);
    reset(&app, &alice, "application/json", r#"{"confirm":"erase-all-my-data"}"#);
    let again = reset(&app, &alice, "application/json", r#"{"confirm":"erase-all-my-data"}"#).json();
    assert_eq!(
        (
            again["revocationsQueued"].clone(),
            again["erased"]["relationships"].clone()
        ),
        (json!(0), json!(0))
    );
}

#[test]
fn after_a_reset_discovery_knows_no_keys() {
    let app = spawn_app();
    let alice = alice_with_a_peer(&app);
    reset(&app, &alice, "application/json", r#"{"confirm":"erase-all-my-data"}"#);
    let discovery = app.call("GET", "/federation/users/alice", None, None);
    assert_eq!((discovery.status, discovery.code()), (404, "unknown_user".into()));
    assert_eq!(discovery.header("cache-control"), Some("no-store"));
}

/// Alice after a reset that queued revocations to bob, carol and dave.
struct ResetAlice {
    token: String,
    handle: Handle,
    old_keys: ClientKeys,
    peers: Vec<fedid_testkit::TestUser>,
}

fn alice_reset_with_three_peers(app: &TestApp) -> ResetAlice {
    let (token, handle, old_keys) = app.user("alice");
    let mut peers = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let peer = app.peer.user(name).unwrap();
        app.outbox(
            &token,
            &old_keys,
            &handle,
            &peer.handle,
            MessageType::RelationshipRequest,
        );
        peers.push(peer);
    }
    let reply = app.send(
        "POST",
        "/users/me/identity/reset",
        &token,
        json!({"confirm": "erase-all-my-data"}),
    );
    assert_eq!(reply.status, 200);
    ResetAlice {
        token,
        handle,
        old_keys,
        peers,
    }
}

impl ResetAlice {
    /// New keys registered, as the client does after a reset.
    fn new_keys(&self, app: &TestApp) -> ClientKeys {
        let keys = ClientKeys::generate().unwrap();
        let (sk, ek) = keys.public_keys();
        let reply = app.send(
            "PUT",
            "/users/me/keys",
            &self.token,
            json!({"signingKey": sk, "encryptionKey": ek}),
        );
        assert_eq!(reply.status, 200);
        keys
    }

    /// One flush item for `peer`, signed with `keys`.
    fn item(&self, app: &TestApp, keys: &ClientKeys, peer: &Handle) -> Value {
        let i = keys.flush_item(&self.handle, peer, app.clock.now());
        json!({"peerHandle": i.peer_handle, "signature": i.signature, "nonce": i.nonce, "timestamp": i.timestamp})
    }

    fn flush(&self, app: &TestApp, items: Vec<Value>) -> Reply {
        app.send(
            "POST",
            "/users/me/revocations/flush",
            &self.token,
            json!({ "items": items }),
        )
    }
}

#[test]
fn pending_revocations_are_paged_by_handle() {
    let app = spawn_app();
    let alice = alice_reset_with_three_peers(&app);
    let page = app.get("/users/me/revocations/pending?limit=2", &alice.token).json();
    assert_eq!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["peerHandle"].clone())
            .collect::<Vec<_>>(),
        vec![json!("bob@b.example"), json!("carol@b.example")]
    );
    assert_eq!(page["nextAfter"], "carol@b.example");
    let rest = app
        .get("/users/me/revocations/pending?after=CAROL%40b.example", &alice.token)
        .json();
    assert_eq!(rest["items"][0]["peerHandle"], "dave@b.example");
    assert_eq!(rest["nextAfter"], Value::Null);
    assert_eq!(rest["items"][0]["attempts"], 0);
}

#[test]
fn bad_list_queries_are_400_but_a_missing_token_answers_401_first() {
    let app = spawn_app();
    let alice = alice_reset_with_three_peers(&app);
    for bad in ["limit=0", "limit=1001", "limit=x", "after=nope"] {
        let reply = app.get(&format!("/users/me/revocations/pending?{bad}"), &alice.token);
        assert_eq!((reply.status, reply.code()), (400, "invalid_request".into()), "{bad}");
        for list in [
            "/users/me/revocations/pending",
            "/users/me/relationships",
            "/users/me/inbox",
        ] {
            let reply = app.call("GET", &format!("{list}?{bad}"), Some("not-a-token"), None);
            assert_eq!(
                (reply.status, reply.code()),
                (401, "unauthenticated".into()),
                "{list}?{bad}"
            );
        }
    }
}

#[test]
fn a_flush_before_new_keys_answers_identity_not_set_up() {
    let app = spawn_app();
    let alice = alice_reset_with_three_peers(&app);
    let item = alice.item(&app, &alice.old_keys, &alice.peers[0].handle);
    let reply = alice.flush(&app, vec![item]);
    assert_eq!((reply.status, reply.code()), (409, "identity_not_set_up".into()));
}

#[test]
fn flush_bodies_name_the_member_at_fault() {
    let app = spawn_app();
    let alice = alice_reset_with_three_peers(&app);
    let reply = alice.flush(&app, vec![]);
    assert_eq!(
        (reply.code(), reply.json()["member"].clone()),
        ("invalid_request".into(), json!("items"))
    );
    let reply = alice.flush(&app, vec![json!({"peerHandle": "bob@b.example"})]);
    assert_eq!(reply.json()["member"], "items[0].signature");
    let reply = alice.flush(&app, vec![json!({"peerHandle": 7, "signature": "x", "timestamp": "y"})]);
    assert_eq!(reply.json()["member"], "items[0].peerHandle");
}

#[test]
fn a_flush_reports_each_item_and_keeps_failed_rows_for_the_next() {
    let app = spawn_app();
    let alice = alice_reset_with_three_peers(&app);
    let keys = alice.new_keys(&app);
    let bob = alice.peers[0].handle.clone();
    let erin = Handle::parse("erin@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    app.network.set_unreachable("b.example", true);
    let reply = alice.flush(
        &app,
        vec![alice.item(&app, &keys, &bob), alice.item(&app, &keys, &erin)],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"results": [
        {"peerHandle": "bob@b.example", "outcome": "failed", "error": "connect refused"},
        {"peerHandle": "erin@b.example", "outcome": "not_queued", "error": null}],
        "delivered": 0, "failed": 1, "remaining": 3})
    );
    app.network.set_unreachable("b.example", false);
    let reply = alice.flush(&app, vec![alice.item(&app, &keys, &bob)]);
    assert_eq!(reply.json()["results"][0]["outcome"], "delivered");
    assert_eq!(reply.json()["remaining"], 2);
    app.assert_metrics_show("fedid_deliveries_total{outcome=\"delivered\"}");
    app.assert_metrics_show("fedid_revocations_queued 2");
}

#[test]
fn a_pending_revocation_can_be_dropped_once() {
    let app = spawn_app();
    let alice = alice_reset_with_three_peers(&app);
    let drop = || {
        app.call(
            "DELETE",
            "/users/me/revocations/pending/carol%40b.example",
            Some(&alice.token),
            None,
        )
    };
    assert_eq!(drop().status, 204);
    let again = drop();
    assert_eq!((again.status, again.code()), (404, "not_queued".into()));
    assert_eq!(
        app.get("/users/me/identity", &alice.token).json()["pendingRevocations"],
        2
    );
}

/// An app with alice (alias and keys: token, handle, keys) and bob on the
/// peer instance.
fn alice_and_bob() -> (TestApp, String, Handle, ClientKeys, fedid_testkit::TestUser) {
    let app = spawn_app();
    let (alice, ah, ak) = app.user("alice");
    let bob = app.peer.user("bob").unwrap();
    (app, alice, ah, ak, bob)
}

/// Bob (of the peer instance) asks alice through his server and alice
/// accepts through hers: an active relationship.
fn befriend(app: &TestApp, alice: &str, ah: &Handle, ak: &ClientKeys, bob: &fedid_testkit::TestUser) {
    let ask = bob.keys.outbox_request(
        &bob.handle,
        ah,
        MessageType::RelationshipRequest,
        Map::new(),
        app.clock.now(),
    );
    assert_eq!(bob.node.send(bob.user, ask), Ok(fedid_domain::OutboxOutcome::Delivered));
    let reply = app.outbox(alice, ak, ah, &bob.handle, MessageType::RelationshipAccept);
    assert_eq!(reply.json(), json!({"outcome": "delivered"}));
}

fn request_from(app: &TestApp, bob: &fedid_testkit::TestUser, to: &Handle) -> String {
    bob.keys
        .envelope(
            &bob.handle,
            to,
            MessageType::RelationshipRequest,
            Map::new(),
            app.clock.now(),
        )
        .wire_form()
}

#[test]
fn the_outbox_applies_the_senders_side_rules() {
    let (app, alice, ah, ak, bob) = alice_and_bob();
    let reply = app.outbox(&alice, &ak, &ah, &bob.handle, MessageType::Message);
    assert_eq!((reply.status, reply.code()), (409, "no_relationship".into()));
    let reply = app.outbox(&alice, &ak, &ah, &bob.handle, MessageType::RelationshipAccept);
    assert_eq!(reply.code(), "no_pending_request");
    let edited = |member: &str, value: Value| app.outbox_edited(&alice, &ak, &ah, &bob.handle, member, value);
    assert_eq!(edited("payload", json!({"x": 1})).code(), "invalid_signature");
    assert_eq!(edited("messageType", json!("POKE")).code(), "unsupported_message_type");
    assert_eq!(edited("to", json!("not a handle")).json()["member"], "to");
}

#[test]
fn a_peer_refusal_is_502_with_the_peers_status_and_code() {
    let app = spawn_app();
    let (alice, ah, ak) = app.user("alice");
    let stranger = Handle::parse("nobody@b.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let reply = app.outbox(&alice, &ak, &ah, &stranger, MessageType::RelationshipRequest);
    assert_eq!((reply.status, reply.code()), (502, "delivery_failed".into()));
    assert_eq!(
        (reply.json()["remoteStatus"].clone(), reply.json()["remoteCode"].clone()),
        (json!(404), json!("unknown_recipient"))
    );
}

#[test]
fn the_inbox_accepts_an_envelope_once_then_answers_duplicate() {
    let app = spawn_app();
    let (alice, ah, _) = app.user("alice");
    let bob = app.peer.user("bob").unwrap();
    let request = request_from(&app, &bob, &ah);
    let reply = app.inbox(request.clone());
    assert_eq!((reply.status, reply.json()), (202, json!({"status": "accepted"})));
    let reply = app.inbox(request);
    assert_eq!((reply.status, reply.json()), (200, json!({"status": "duplicate"})));
    let rels = app.get("/users/me/relationships", &alice).json();
    assert_eq!(
        (
            rels["items"][0]["peerHandle"].clone(),
            rels["items"][0]["state"].clone()
        ),
        (json!("bob@b.example"), json!("incoming"))
    );
    app.assert_metrics_show("fedid_inbox_envelopes_total{code=\"duplicate\"} 1");
}

#[test]
fn the_inbox_refuses_other_media_types_forged_signatures_and_oversize_bodies() {
    let app = spawn_app();
    let (_, ah, ak) = app.user("alice");
    let bob = app.peer.user("bob").unwrap();
    let reply = app.call(
        "POST",
        "/federation/inbox",
        None,
        Some(("text/plain", request_from(&app, &bob, &ah).into_bytes())),
    );
    assert_eq!((reply.status, reply.code()), (400, "invalid_envelope".into()));
    let forged = ak
        .envelope(&bob.handle, &ah, MessageType::Message, Map::new(), app.clock.now())
        .wire_form();
    let reply = app.inbox(forged);
    assert_eq!((reply.status, reply.code()), (401, "invalid_signature".into()));
    assert_eq!(reply.header("www-authenticate"), Some("Signature realm=\"federation\""));
    let reply = app.call(
        "POST",
        "/federation/inbox",
        None,
        Some(("application/json", vec![b' '; 70_000])),
    );
    assert_eq!((reply.status, reply.code()), (413, "payload_too_large".into()));
}

#[test]
fn a_request_then_an_accept_makes_the_relationship_active() {
    let (app, alice, ah, ak, bob) = alice_and_bob();
    befriend(&app, &alice, &ah, &ak, &bob);
    assert_eq!(
        app.get("/users/me/relationships", &alice).json()["items"][0]["state"],
        "active"
    );
    app.assert_metrics_show("fedid_deliveries_total{outcome=\"delivered\"}");
}

#[test]
fn inbox_pages_return_each_envelope_exactly_as_signed() {
    let (app, alice, ah, ak, bob) = alice_and_bob();
    befriend(&app, &alice, &ah, &ak, &bob);
    let message = bob.keys.envelope(
        &bob.handle,
        &ah,
        MessageType::Message,
        json!({"ciphertext": "3q2-7w", "n": 1e21}).as_object().cloned().unwrap(),
        app.clock.now(),
    );
    assert_eq!(app.inbox(message.wire_form()).status, 202);
    let page = app.get("/users/me/inbox?limit=1", &alice).json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();
    let second = app.get(&format!("/users/me/inbox?after={id}"), &alice);
    assert!(
        second.body.contains(&message.wire_form()),
        "the envelope exactly as signed: {}",
        second.body
    );
}

#[test]
fn a_message_is_acknowledged_once_and_only_by_its_recipient() {
    let (app, alice, ah, ak, bob) = alice_and_bob();
    befriend(&app, &alice, &ah, &ak, &bob);
    let page = app.get("/users/me/inbox", &alice).json();
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();
    let (eve, _, _) = app.user("eve");
    assert_eq!(app.get("/users/me/inbox", &eve).json()["items"], json!([]));
    assert_eq!(app.get("/users/me/relationships", &eve).json()["items"], json!([]));
    let delete = |token: &str, id: &str| app.call("DELETE", &format!("/users/me/inbox/{id}"), Some(token), None);
    assert_eq!(delete(&eve, &id).code(), "not_found");
    assert_eq!(delete(&alice, "abc").code(), "not_found");
    assert_eq!(delete(&alice, &id).status, 204);
    assert_eq!(delete(&alice, &id).status, 404);
}

#[test]
fn discovery_publishes_keys_with_the_cache_lifetime() {
    let app = spawn_app();
    app.user("alice");
    let discovery = app.call("GET", "/federation/users/alice", None, None);
    assert_eq!(discovery.header("cache-control"), Some("max-age=300, must-revalidate"));
    assert_eq!(discovery.json()["handle"], "alice@a.example");
}

#[test]
fn discovery_names_the_key_log_the_keylog_endpoint_serves() {
    let app = spawn_app();
    let (token, _, _) = app.user("alice");
    let discovery = app.call("GET", "/federation/users/alice", None, None).json();
    let page = app.call("GET", "/federation/users/alice/keylog", None, None);
    assert_eq!(page.status, 200, "{}", page.body);
    let page = page.json();
    assert_eq!(
        (page["seq"].clone(), page["head"].clone()),
        (discovery["keyLogSeq"].clone(), discovery["keyLogHead"].clone())
    );
    assert_eq!(page["handle"], "alice@a.example");
    assert_eq!(page["entries"][0]["signingKey"], discovery["signingKey"]);
    let identity = app.get("/users/me/identity", &token).json();
    assert_eq!(identity["keyLog"], serde_json::json!({"seq": 1, "head": page["head"]}));
    let rest = app
        .call("GET", "/federation/users/alice/keylog?after=1", None, None)
        .json();
    assert_eq!(rest["entries"], serde_json::json!([]));
}

#[test]
fn a_client_built_entry_is_appended_and_a_partial_one_refused() {
    let app = spawn_app();
    let (token, handle, old) = app.user("alice");
    let log = app.get("/users/me/identity", &token).json()["keyLog"].clone();
    let new = ClientKeys::generate().unwrap();
    let partial = app.send("PUT", "/users/me/keys", &token, {
        let (sk, ek) = new.public_keys();
        json!({"signingKey": sk, "encryptionKey": ek, "seq": 2})
    });
    assert_eq!((partial.status, partial.code()), (400, "invalid_request".into()));
    assert_eq!(partial.json()["member"], "at");
    let body = new.with_proven_keys(
        &handle,
        (log["seq"].as_u64().unwrap(), log["head"].as_str().unwrap()),
        app.clock.now(),
        Some(&old),
        |k| {
            let entry = k.entry.unwrap();
            json!({"signingKey": k.signing_key, "encryptionKey": k.encryption_key, "seq": entry.seq,
                   "at": entry.at, "proof": entry.proof, "rotationProof": entry.rotation_proof})
        },
    );
    let reply = app.send("PUT", "/users/me/keys", &token, body.clone());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["keyLog"]["seq"], 2);
    let again = app.send("PUT", "/users/me/keys", &token, body);
    assert_eq!((again.status, again.code()), (409, "key_log_conflict".into()));
}

#[test]
fn the_keylog_of_an_unknown_alias_is_404_and_a_bad_after_400() {
    let app = spawn_app();
    app.user("alice");
    let missing = app.call("GET", "/federation/users/nobody/keylog", None, None);
    assert_eq!((missing.status, missing.code()), (404, "unknown_user".into()));
    let bad = app.call("GET", "/federation/users/alice/keylog?after=-1", None, None);
    assert_eq!((bad.status, bad.code()), (400, "invalid_request".into()));
}

#[test]
fn metrics_needs_its_token_when_one_is_set() {
    let app = spawn_app_with(Some("s3cret"), 0);
    assert_eq!(app.call("GET", "/metrics", None, None).status, 401);
    assert_eq!(app.call("GET", "/metrics", Some("wrong"), None).status, 401);
    assert_eq!(app.call("GET", "/metrics", Some("s3cret"), None).status, 200);
}

#[test]
fn the_inbox_rate_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(None, 2);
    let replies: Vec<Reply> = (0..8).map(|_| app.inbox("{}".into())).collect();
    let limited = replies
        .iter()
        .find(|r| r.status == 429)
        .unwrap_or_else(|| panic!("{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>()));
    assert_eq!(
        (limited.code(), limited.header("retry-after")),
        ("rate_limited".into(), Some("1"))
    );
}

#[test]
fn the_outbox_refuses_what_it_cannot_send() {
    let (app, alice, ah, ak, bob) = alice_and_bob();
    // Outbox before the identity is set up, then with a stale timestamp and a bad envelope.
    let (_, fresh) = app.fedid.create_user().unwrap();
    let reply = app.send(
        "POST",
        "/users/me/outbox",
        fresh.expose(),
        app.outbox_body(&ak, &ah, &bob.handle, MessageType::RelationshipRequest),
    );
    assert_eq!((reply.status, reply.code()), (409, "identity_not_set_up".into()));
    let edited = |member: &str, value: Value| app.outbox_edited(&alice, &ak, &ah, &bob.handle, member, value);
    assert_eq!(
        edited("timestamp", json!("2020-01-01T00:00:00Z")).code(),
        "timestamp_out_of_window"
    );
    assert_eq!(edited("nonce", json!("short")).code(), "invalid_envelope");
    let nobody = Handle::parse("nobody@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let reply = app.outbox(&alice, &ak, &ah, &nobody, MessageType::RelationshipRequest);
    assert_eq!((reply.status, reply.code()), (404, "unknown_recipient".into()));
}

#[test]
fn an_alias_cannot_change_while_peers_know_it() {
    let (app, alice, ah, ak, bob) = alice_and_bob();
    // relationships_exist, then revocations_pending (alias and outbox).
    app.outbox(&alice, &ak, &ah, &bob.handle, MessageType::RelationshipRequest);
    let reply = app.send("PATCH", "/users/me/alias", &alice, json!({"alias": "alicia"}));
    assert_eq!((reply.status, reply.code()), (409, "relationships_exist".into()));
    app.network.set_unreachable("b.example", true);
    let reply = app.outbox(&alice, &ak, &ah, &bob.handle, MessageType::RelationshipRevoke);
    assert_eq!(reply.json(), json!({"outcome": "queued"}));
    app.network.set_unreachable("b.example", false);
    let reply = app.send("PATCH", "/users/me/alias", &alice, json!({"alias": "alicia"}));
    assert_eq!((reply.status, reply.code()), (409, "revocations_pending".into()));
    let reply = app.outbox(&alice, &ak, &ah, &bob.handle, MessageType::RelationshipRequest);
    assert_eq!((reply.status, reply.code()), (409, "revocations_pending".into()));
}

#[test]
fn a_long_lived_revoke_queued_by_the_outbox_shows_when_it_is_retried() {
    let (app, alice, ah, ak, bob) = alice_and_bob();
    befriend(&app, &alice, &ah, &ak, &bob);
    app.network.set_unreachable("b.example", true);
    let expires = fedid_domain::Timestamp::from_instant(app.clock.now().plus_secs(86_400));
    let mut payload = Map::new();
    payload.insert("expires".into(), json!(expires.as_str()));
    let r = ak.outbox_request(
        &ah,
        &bob.handle,
        MessageType::RelationshipRevoke,
        payload,
        app.clock.now(),
    );
    let reply = app.send(
        "POST",
        "/users/me/outbox",
        &alice,
        json!({"to": r.to.as_str(), "messageType": r.message_type, "nonce": r.nonce, "timestamp": r.timestamp,
               "payload": r.payload, "signature": r.signature}),
    );
    assert_eq!(
        (reply.status, reply.json()["outcome"].clone()),
        (200, json!("queued")),
        "{}",
        reply.body
    );
    let next = reply.json()["nextAttemptAt"].clone();
    assert!(next.is_string(), "{}", reply.body);
    let row = app.get("/users/me/revocations/pending", &alice).json()["items"][0].clone();
    assert_eq!(
        (row["expiresAt"].clone(), row["nextAttemptAt"].clone()),
        (json!(expires.as_str()), next)
    );
}

#[test]
fn the_flush_body_limit_is_16_times_the_user_apis() {
    let app = spawn_app();
    let (alice, _, _) = app.user("alice");
    // The flush body limit is 16 times the user API's.
    let big = json!({"items": [{"peerHandle": "bob@b.example", "signature": "x".repeat(1_100_000), "timestamp": "t"}]});
    assert_eq!(
        app.send("POST", "/users/me/revocations/flush", &alice, big).code(),
        "payload_too_large"
    );
}

#[test]
fn the_inbox_answers_each_refusal_of_section_8() {
    let app = spawn_app();
    let (_, ah, _) = app.user("alice");
    let bob = app.peer.user("bob").unwrap();
    let nobody = Handle::parse("nobody@a.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    // Inbox refusals of section 8.
    let inbox = |body: String| app.inbox(body);
    let now = app.clock.now();
    let wire = bob
        .keys
        .envelope(&bob.handle, &ah, MessageType::Message, Map::new(), now)
        .wire_form();
    let reply = inbox(wire.clone());
    assert_eq!((reply.status, reply.code()), (403, "no_relationship".into()));
    let v2 = wire.replace("\"protocol_version\":1", "\"protocol_version\":2");
    assert_eq!(inbox(v2).code(), "unsupported_protocol_version");
    let poke = wire.replace("\"MESSAGE\"", "\"POKE\"");
    assert_eq!(inbox(poke).code(), "unsupported_message_type");
    let stranger = bob
        .keys
        .envelope(&bob.handle, &nobody, MessageType::RelationshipRequest, Map::new(), now)
        .wire_form();
    assert_eq!(inbox(stranger).code(), "unknown_recipient");
    let ghost = Handle::parse("ghost@c.example", DomainPolicy::HTTPS_PUBLIC).unwrap();
    let unknown_sender = bob
        .keys
        .envelope(&ghost, &ah, MessageType::RelationshipRequest, Map::new(), now)
        .wire_form();
    let reply = inbox(unknown_sender);
    assert_eq!((reply.status, reply.code()), (502, "sender_keys_unavailable".into()));
    let stale = bob
        .keys
        .envelope(
            &bob.handle,
            &ah,
            MessageType::RelationshipRequest,
            Map::new(),
            now.plus_secs(-900),
        )
        .wire_form();
    assert_eq!(inbox(stale).code(), "timestamp_out_of_window");
    let accept = bob
        .keys
        .envelope(&bob.handle, &ah, MessageType::RelationshipAccept, Map::new(), now)
        .wire_form();
    let reply = inbox(accept);
    assert_eq!((reply.status, reply.code()), (409, "no_pending_request".into()));
    let first = bob
        .keys
        .envelope(&bob.handle, &ah, MessageType::RelationshipRequest, Map::new(), now);
    assert_eq!(inbox(first.wire_form()).status, 202);
    let reused = fedid_domain::UnsignedEnvelope {
        message_type: MessageType::RelationshipRequest,
        message_version: 2,
        nonce: first.nonce().clone(),
        from: bob.handle.clone(),
        to: ah.clone(),
        timestamp: first.timestamp().clone(),
        payload: Map::new(),
    }
    .sign(bob.keys.secret());
    let reply = inbox(reused.wire_form());
    assert_eq!((reply.status, reply.code()), (409, "nonce_reused".into()));
}

#[test]
fn envelopes_over_4_kib_get_the_same_answers() {
    let app = spawn_app();
    let (_, ah, _) = app.user("alice");
    let bob = app.peer.user("bob").unwrap();
    let inbox = |body: String| app.inbox(body);
    let now = app.clock.now();
    // Envelopes over 4 KiB take the federation pool instead of the worker:
    // the same answers.
    let mut payload = Map::new();
    payload.insert("ciphertext".into(), json!("A".repeat(6_000)));
    let large = bob
        .keys
        .envelope(&bob.handle, &ah, MessageType::RelationshipRequest, payload.clone(), now)
        .wire_form();
    assert!(large.len() > 6_000);
    assert_eq!(inbox(large.clone()).status, 202);
    assert_eq!(inbox(large).json(), json!({"status": "duplicate"}));
    let forged = ClientKeys::generate()
        .unwrap()
        .envelope(&bob.handle, &ah, MessageType::RelationshipRequest, payload, now)
        .wire_form();
    assert_eq!(inbox(forged).code(), "invalid_signature");
}

#[test]
fn a_full_inbox_answers_inbox_full() {
    let app = spawn_app_tweaked(None, 0, |s| s.inbox_messages_per_user = 1);
    let (_, alice, _) = app.user("alice");
    let request = |from: &fedid_testkit::TestUser| {
        from.keys
            .envelope(
                &from.handle,
                &alice,
                MessageType::RelationshipRequest,
                Map::new(),
                app.clock.now(),
            )
            .wire_form()
    };
    let bob = app.peer.user("bob").unwrap();
    assert_eq!(app.inbox(request(&bob)).status, 202, "the first stored envelope fits");
    let carol = app.peer.user("carol").unwrap();
    let reply = app.inbox(request(&carol));
    assert_eq!((reply.status, reply.code()), (429, "inbox_full".into()));
}

#[test]
fn a_sender_off_the_allow_list_answers_domain_not_allowed() {
    let app = spawn_app_tweaked(None, 0, |s| {
        s.allowed_domains = vec![Domain::parse("c.example", DomainPolicy::HTTPS_PUBLIC).unwrap()];
    });
    let (_, alice, _) = app.user("alice");
    let bob = app.peer.user("bob").unwrap();
    let wire = bob
        .keys
        .envelope(
            &bob.handle,
            &alice,
            MessageType::RelationshipRequest,
            Map::new(),
            app.clock.now(),
        )
        .wire_form();
    let reply = app.inbox(wire);
    assert_eq!((reply.status, reply.code()), (403, "domain_not_allowed".into()));
}

/// A database that no longer answers.
struct DownStore;

fn refused() -> fedid_domain::StoreError {
    fedid_domain::StoreError::Unavailable("connection refused at db.internal:5432".into())
}

impl fedid_domain::Store for DownStore {
    fn write(&self, unit: Box<dyn fedid_domain::ports::WriteUnit>) {
        unit.finish(Err(refused()))
    }

    fn read(&self, _work: &mut fedid_domain::ports::Work<'_>) -> Result<(), fedid_domain::StoreError> {
        Err(refused())
    }
}

/// A database that answers reads but refuses writes, as a full disk does.
struct FullDiskStore(fedid_testkit::MemoryStore);

impl fedid_domain::Store for FullDiskStore {
    fn write(&self, unit: Box<dyn fedid_domain::ports::WriteUnit>) {
        unit.finish(Err(fedid_domain::StoreError::Unavailable(
            "database or disk is full".into(),
        )))
    }

    fn read(&self, work: &mut fedid_domain::ports::Work<'_>) -> Result<(), fedid_domain::StoreError> {
        self.0.read(work)
    }
}

#[test]
fn a_database_that_refuses_writes_is_a_503_on_readyz() {
    let store = Arc::new(FullDiskStore(fedid_testkit::MemoryStore::default()));
    let app = spawn_on(store, tempfile::tempdir().unwrap(), None, 0, |_| {});
    assert_eq!(app.call("GET", "/readyz", None, None).status, 503);
}

#[test]
fn a_broken_database_is_a_503_on_readyz_and_a_bare_500_elsewhere() {
    let app = spawn_on(Arc::new(DownStore), tempfile::tempdir().unwrap(), None, 0, |_| {});
    assert_eq!(app.call("GET", "/healthz", None, None).status, 200, "the process runs");
    let ready = app.call("GET", "/readyz", None, None);
    assert_eq!(ready.status, 503);
    let reply = app.call(
        "GET",
        "/users/me/identity",
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        None,
    );
    assert_eq!((reply.status, reply.code()), (500, "internal_error".into()));
    assert_eq!(
        reply.json()["detail"],
        "internal_error",
        "no cause, no SQL, no host: {}",
        reply.body
    );
    assert!(!reply.body.contains("db.internal"));
}
