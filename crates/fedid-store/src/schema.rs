//! The tables of `migrations/`; `tests/schema.rs` checks they match.

diesel::table! {
    users (id) {
        id -> BigInt,
        created_at -> BigInt,
        alias -> Nullable<Text>,
        signing_key -> Nullable<Binary>,
        encryption_key -> Nullable<Binary>,
        keys_updated_at -> Nullable<BigInt>,
        last_reset_at -> Nullable<BigInt>,
        inbox_count -> BigInt,
    }
}

diesel::table! {
    alias_history (alias) {
        alias -> Text,
        user_id -> BigInt,
    }
}

diesel::table! {
    sessions (token_hash) {
        token_hash -> Binary,
        user_id -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    relationships (user_id, peer) {
        user_id -> BigInt,
        peer -> Text,
        state -> Text,
        since -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    inbox_messages (id) {
        id -> BigInt,
        user_id -> BigInt,
        received_at -> BigInt,
        envelope -> Text,
        sender -> Text,
    }
}

diesel::table! {
    alias_changes (id) {
        id -> BigInt,
        user_id -> BigInt,
        at -> BigInt,
    }
}

diesel::table! {
    revocations (user_id, peer) {
        user_id -> BigInt,
        peer -> Text,
        queued_at -> BigInt,
        attempts -> Integer,
        last_attempt_at -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        claimed_until -> Nullable<BigInt>,
        envelope -> Nullable<Text>,
        expires_at -> Nullable<BigInt>,
        next_attempt_at -> Nullable<BigInt>,
        retries -> Integer,
        unauthorized -> Integer,
    }
}

diesel::table! {
    key_log (user_id, seq) {
        user_id -> BigInt,
        seq -> BigInt,
        entry -> Text,
        hash -> Text,
        appended_at -> BigInt,
    }
}

diesel::table! {
    peer_domains (domain) {
        domain -> Text,
        consecutive_failures -> Integer,
        last_success_at -> Nullable<BigInt>,
        last_failure_at -> Nullable<BigInt>,
        last_failure -> Nullable<Text>,
        failing_since -> Nullable<BigInt>,
        lease_until -> Nullable<BigInt>,
    }
}

diesel::table! {
    replay_keys (id) {
        id -> BigInt,
        replay_key -> Binary,
        sender -> Text,
        nonce -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        user_id -> BigInt,
        at -> BigInt,
        action -> Text,
        details -> Text,
    }
}

diesel::table! {
    readiness (id) {
        id -> BigInt,
        checked_at -> BigInt,
    }
}

diesel::table! {
    key_pins (handle) {
        handle -> Text,
        domain -> Text,
        seq -> BigInt,
        head -> Text,
        entry -> Text,
        class -> Nullable<Text>,
        previous_signing_key -> Nullable<Text>,
        change -> Text,
        changed_at -> BigInt,
        break_seq -> Nullable<BigInt>,
        break_change -> Nullable<Text>,
        break_at -> Nullable<Text>,
        break_seen_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    key_log_conflicts (handle) {
        handle -> Text,
        domain -> Text,
        at -> BigInt,
        pinned_seq -> BigInt,
        pinned_head -> Text,
        offered_seq -> Nullable<BigInt>,
        offered_head -> Nullable<Text>,
        reason -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    users,
    alias_history,
    alias_changes,
    sessions,
    relationships,
    inbox_messages,
    revocations,
    replay_keys,
    audit_log,
    readiness,
    peer_domains,
    key_log,
    key_pins,
    key_log_conflicts,
);
