//! `fedid`: what a client does, on the command line. It generates keys and
//! signs envelopes, flush items and outbox bodies, so every flow can be
//! tried with curl. Private keys stay with the person running it.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fedid_domain::{
    base64url, DomainPolicy, EncryptionSecret, Handle, MessageType, Nonce, SigningSecret, Timestamp, UnixTime,
    UnsignedEnvelope,
};
use serde_json::{json, Map, Value};

#[derive(Debug, Parser)]
#[command(name = "fedid", version, about = "fedid client tool: keys and signatures")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shape {
    /// The envelope in wire form, for POST /federation/inbox.
    Envelope,
    /// The body of POST /users/me/outbox.
    Outbox,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// New random keys: the two secrets and the body of PUT /users/me/keys.
    Keygen,
    /// The body of PUT /users/me/keys for existing secrets; with --handle,
    /// --log-seq and --log-head (the identity's keyLog), a proven key-log
    /// entry as well (PROTOCOL.md section 12).
    Keys {
        #[arg(long, env = "FEDID_SEED", hide_env_values = true, allow_hyphen_values = true)]
        seed: String,
        #[arg(
            long,
            env = "FEDID_ENCRYPTION_SECRET",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        encryption_secret: String,
        /// Your handle, as the identity object shows it.
        #[arg(long, requires_all = ["log_seq", "log_head"])]
        handle: Option<String>,
        /// The identity's keyLog.seq: the entry gets the next one.
        #[arg(long, requires = "handle")]
        log_seq: Option<u64>,
        /// The identity's keyLog.head ("" while the log is empty).
        #[arg(long, requires = "handle", allow_hyphen_values = true)]
        log_head: Option<String>,
        /// The seed of the keys being replaced: the old key vouches for the
        /// new one (a rotation).
        #[arg(long, requires = "handle", hide_env_values = true, allow_hyphen_values = true)]
        rotate_from_seed: Option<String>,
    },
    /// Sign one envelope.
    Sign {
        #[arg(long, env = "FEDID_SEED", hide_env_values = true, allow_hyphen_values = true)]
        seed: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// RELATIONSHIP_REQUEST, RELATIONSHIP_ACCEPT, RELATIONSHIP_REVOKE or MESSAGE.
        #[arg(long = "type")]
        message_type: String,
        /// A JSON object.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Default: a fresh random nonce.
        #[arg(long)]
        nonce: Option<String>,
        /// Default: now, in UTC.
        #[arg(long)]
        timestamp: Option<String>,
        #[arg(long = "as", value_enum, default_value = "envelope")]
        shape: Shape,
    },
    /// The body of POST /users/me/revocations/flush: one signed REVOKE per peer.
    Flush {
        #[arg(long, env = "FEDID_SEED", hide_env_values = true, allow_hyphen_values = true)]
        seed: String,
        #[arg(long)]
        from: String,
        /// Repeat for every queued peer.
        #[arg(long = "peer", required = true)]
        peers: Vec<String>,
        /// How long the server may keep retrying each REVOKE by itself
        /// (PROTOCOL.md section 11): a number with s, m, h or d, at most
        /// 7d; 0 for REVOKEs that only this flush delivers.
        #[arg(long, default_value = "7d", value_parser = lifetime)]
        expires_in: i64,
    },
}

/// `--expires-in`: seconds, from `90s`, `15m`, `12h`, `7d` or `0`.
fn lifetime(text: &str) -> Result<i64, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a number with s, m, h or d"))?;
    let unit = match unit {
        "" if number == 0 => 0,
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: a number with s, m, h or d")),
    };
    let secs = number.saturating_mul(unit);
    if secs > fedid_domain::envelope::MAX_REVOKE_LIFETIME_SECS {
        return Err(format!("{text:?}: at most 7d"));
    }
    Ok(secs)
}

fn handle(text: &str, what: &str) -> Result<Handle, String> {
    Handle::parse_user_input(text, DomainPolicy::ANY).map_err(|e| format!("{what}: {e}"))
}

fn secret(seed: &str) -> Result<SigningSecret, String> {
    let bytes = base64url::decode_array::<32>(seed).ok_or("--seed is 32 bytes of base64url")?;
    SigningSecret::from_seed(&bytes).map_err(|e| e.to_string())
}

fn random32() -> Result<[u8; 32], String> {
    SigningSecret::generate_seed().ok_or_else(|| "the system random source failed".to_owned())
}

fn now() -> UnixTime {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixTime::from_secs(since.as_secs() as i64)
}

fn nonce(given: Option<String>) -> Result<Nonce, String> {
    match given {
        Some(text) => Nonce::parse(&text).map_err(|e| format!("--nonce: {e}")),
        None => Nonce::parse(&base64url::encode(&random32()?[..16])).map_err(|e| e.to_string()),
    }
}

fn sign_envelope(
    seed: &str,
    from: &Handle,
    to: &Handle,
    message_type: MessageType,
    payload: Map<String, Value>,
    nonce_text: Option<String>,
    timestamp: Option<String>,
) -> Result<fedid_domain::Envelope, String> {
    let timestamp = match timestamp {
        Some(t) => Timestamp::parse(&t).map_err(|e| format!("--timestamp: {e}"))?,
        None => Timestamp::from_instant(now()),
    };
    let unsigned = UnsignedEnvelope {
        message_type,
        message_version: 1,
        nonce: nonce(nonce_text)?,
        from: from.clone(),
        to: to.clone(),
        timestamp,
        payload,
    };
    unsigned.check().map_err(|e| e.to_string())?;
    Ok(unsigned.sign(&secret(seed)?))
}

fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Keygen => {
            let (seed, encryption) = (random32()?, random32()?);
            let public = EncryptionSecret::from_bytes(encryption)
                .public_key()
                .map_err(|e| e.to_string())?;
            let signing = SigningSecret::from_seed(&seed).map_err(|e| e.to_string())?.public_key();
            Ok(json!({
                "seed": base64url::encode(&seed),
                "encryptionSecret": base64url::encode(&encryption),
                "signingKey": signing.to_base64url(),
                "encryptionKey": public.to_base64url(),
            })
            .to_string())
        }
        Command::Keys {
            seed,
            encryption_secret,
            handle: owner,
            log_seq,
            log_head,
            rotate_from_seed,
        } => {
            let encryption = base64url::decode_array::<32>(&encryption_secret)
                .ok_or("--encryption-secret is 32 bytes of base64url")?;
            let public = EncryptionSecret::from_bytes(encryption)
                .public_key()
                .map_err(|e| e.to_string())?;
            let signer = secret(&seed)?;
            let mut body =
                json!({ "signingKey": signer.public_key().to_base64url(), "encryptionKey": public.to_base64url() });
            if let (Some(owner), Some(log_seq), Some(log_head)) = (owner, log_seq, log_head) {
                let owner = handle(&owner, "--handle")?;
                let at = Timestamp::from_instant(now());
                let kind = fedid_domain::keylog::EntryKind::Keys {
                    signing: signer.public_key(),
                    encryption: public,
                };
                let unsigned =
                    fedid_domain::keylog::KeyLogEntry::build(&owner, log_seq + 1, &log_head, &at, &kind, None, None)
                        .map_err(|e| format!("the entry: {e}"))?;
                let proof = signer.sign(unsigned.signed_bytes());
                body["seq"] = json!(log_seq + 1);
                body["at"] = json!(at.as_str());
                body["proof"] = json!(proof.to_base64url());
                if let Some(old) = rotate_from_seed {
                    let rotation = secret(&old)
                        .map_err(|e| format!("--rotate-from-seed: {e}"))?
                        .sign(unsigned.signed_bytes());
                    body["rotationProof"] = json!(rotation.to_base64url());
                }
            }
            Ok(body.to_string())
        }
        Command::Sign {
            seed,
            from,
            to,
            message_type,
            payload,
            nonce,
            timestamp,
            shape,
        } => {
            let (from, to) = (handle(&from, "--from")?, handle(&to, "--to")?);
            let kind = MessageType::parse(&message_type).map_err(|e| format!("--type: {e}"))?;
            let payload = match serde_json::from_str::<Value>(&payload) {
                Ok(Value::Object(map)) => map,
                _ => return Err("--payload is a JSON object".into()),
            };
            let envelope = sign_envelope(&seed, &from, &to, kind, payload.clone(), nonce, timestamp)?;
            Ok(match shape {
                Shape::Envelope => envelope.wire_form(),
                Shape::Outbox => json!({
                    "to": to.as_str(),
                    "messageType": kind.as_str(),
                    "messageVersion": 1,
                    "nonce": envelope.nonce().as_str(),
                    "timestamp": envelope.timestamp().as_str(),
                    "payload": payload,
                    "signature": envelope.signature().to_base64url(),
                })
                .to_string(),
            })
        }
        Command::Flush {
            seed,
            from,
            peers,
            expires_in,
        } => {
            let from = handle(&from, "--from")?;
            let now = Timestamp::from_instant(now());
            // Whole seconds: the expiry is later than the timestamp by
            // exactly --expires-in.
            let expires = (expires_in > 0).then(|| Timestamp::from_instant(now.instant().plus_secs(expires_in)));
            let mut items = Vec::with_capacity(peers.len());
            for peer in &peers {
                let peer = handle(peer, "--peer")?;
                let mut payload = Map::new();
                if let Some(expires) = &expires {
                    payload.insert("expires".into(), Value::String(expires.as_str().into()));
                }
                let e = sign_envelope(
                    &seed,
                    &from,
                    &peer,
                    MessageType::RelationshipRevoke,
                    payload,
                    None,
                    Some(now.as_str().to_owned()),
                )?;
                let mut item = json!({
                    "peerHandle": peer.as_str(),
                    "signature": e.signature().to_base64url(),
                    "nonce": e.nonce().as_str(),
                    "timestamp": e.timestamp().as_str(),
                    "messageVersion": 1,
                });
                if let Some(expires) = &expires {
                    item["expires"] = Value::String(expires.as_str().into());
                }
                items.push(item);
            }
            Ok(json!({ "items": items }).to_string())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("fedid: {message}");
            ExitCode::FAILURE
        }
    }
}
