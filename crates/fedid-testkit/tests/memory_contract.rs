//! The store contract against the in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use fedid_testkit::{contract, MemoryStore};

#[test]
fn memory_store_keeps_the_tx_contract() {
    contract::tx_semantics(&MemoryStore::new());
}

#[test]
fn memory_store_runs_the_service_story() {
    contract::service_story(Arc::new(MemoryStore::new()));
}

#[test]
fn memory_store_keeps_pins_by_compare_and_set() {
    contract::key_pins(&MemoryStore::new());
}

#[test]
fn memory_store_finds_users_related_to_a_peer() {
    contract::users_related_to(&MemoryStore::new());
}

#[test]
fn memory_store_lets_one_of_concurrent_pin_moves_win() {
    contract::concurrent_pin_moves(Arc::new(MemoryStore::new()));
}

#[test]
fn memory_store_stores_messages_by_batch() {
    contract::batched_messages(&MemoryStore::new());
}

#[test]
fn memory_store_reads_relationships_with_several_peers_at_once() {
    contract::batched_relationships(&MemoryStore::new());
}

#[test]
fn memory_store_records_replays_by_batch() {
    contract::batched_replays(&MemoryStore::new());
}

#[test]
fn memory_store_reads_and_writes_inbox_batches() {
    contract::inbox_batch_reads_and_writes(&MemoryStore::new());
}
