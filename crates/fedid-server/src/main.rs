//! `fedid-server`: the operator's binary (OPERATIONS.md). `main` is the only
//! place that wires adapters together.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use fedid_domain::keylog::PinTarget;
use fedid_domain::ports::{SystemClock, SystemRandom};
use fedid_domain::{Domain, Fedid, Handle, UnixTime, UserId};
use fedid_store::DieselStore;

use fedid_server::configuration::Config;

#[derive(Debug, Parser)]
#[command(
    name = "fedid-server",
    version,
    about = "fedid: a federated identity server",
    after_help = "Configuration: built-in defaults, then --config FILE (TOML), then environment variables \
                  FEDID__SECTION__KEY (for example FEDID__DATABASE__URL=postgres://... or \
                  FEDID__SERVER__BIND=0.0.0.0:8080). Every key, its default and its meaning: OPERATIONS.md \
                  and fedid.example.toml."
)]
struct Cli {
    /// A TOML configuration file (later sources: FEDID__SECTION__KEY variables).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending migrations, then serve HTTP (the default command).
    Serve {
        /// Do not apply pending migrations first.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage session tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// What this server knows of its peers.
    #[command(subcommand)]
    Federation(FederationCommand),
}

#[derive(Debug, Subcommand)]
enum FederationCommand {
    /// Per peer domain delivered to: state, failures in a row, last success,
    /// last failure and reason, rows queued for it; one JSON object a line.
    Status {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Checks a peer as deliveries would: resolution and the address
    /// guard, connect, TLS, then key discovery; each step timed, one JSON
    /// object; exits non-zero when a step fails.
    Probe {
        /// The peer domain, such as b.example or b.example:8443.
        domain: String,
        /// The alias to look up (default: a random one; `404 unknown_user`
        /// still proves a fedid server).
        #[arg(long)]
        alias: Option<String>,
    },
    /// Key-log conflicts (PROTOCOL.md section 12): handle, when, pinned and
    /// offered seq and head, why; one JSON object a line.
    Conflicts,
    /// Forgets the pin of a remote handle (or of every handle of a domain)
    /// and its conflict, with an audit record for each local user related
    /// to it; prints {"unpinned":N}. Find out why first.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["handle", "domain"])))]
    Unpin {
        /// The remote handle, such as alice@a.example.
        handle: Option<String>,
        /// Every handle of this domain (after it restored a backup, say).
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user with a first session token.
    Create,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a new session token for a user.
    Issue {
        /// The user's id, as `user create` printed it.
        #[arg(long)]
        user: i64,
        /// Lifetime in days, 1 to 3650 (default: auth.token_ttl_days).
        #[arg(long)]
        ttl_days: Option<u32>,
    },
    /// Revoke all of a user's tokens.
    Revoke {
        /// The user's id, as `user create` printed it.
        #[arg(long)]
        user: i64,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// A user's audit records, oldest first, one JSON object a line.
    List {
        /// The user's id, as `user create` printed it.
        #[arg(long)]
        user: i64,
    },
}

fn open_store(config: &Config) -> Result<DieselStore, String> {
    DieselStore::open(&config.database.url, config.database.pool_size).map_err(|e| e.to_string())
}

/// The store of an administrative command that does not migrate: one whose
/// schema is behind says so, rather than `no such table`.
fn open_migrated_store(config: &Config) -> Result<DieselStore, String> {
    let store = open_store(config)?;
    match store.pending_migrations().map_err(|e| e.to_string())? {
        0 => Ok(store),
        n => Err(format!(
            "the database has {n} migration(s) to apply: run `fedid-server migrate` first"
        )),
    }
}

/// Administrative commands never talk to other servers.
fn offline_fedid(config: &Config, store: DieselStore) -> Result<Fedid, String> {
    let settings = config.settings().map_err(|e| e.to_string())?;
    Ok(Fedid::offline(
        settings,
        Arc::new(store),
        Arc::new(SystemClock),
        Arc::new(SystemRandom::default()),
    ))
}

/// A made-up alias for `federation probe`: `probe-` and 12 random hex digits.
fn random_alias() -> Result<String, String> {
    use fedid_domain::Random;
    let mut bytes = [0u8; 6];
    SystemRandom::default().fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(format!(
        "probe-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn run(cli: Cli) -> Result<(), String> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    fedid_server::telemetry::init(&config.log.format, &config.log.level);
    match cli.command.unwrap_or(Command::Serve { no_migrate: false }) {
        Command::Serve { no_migrate } => fedid_server::application::Application::build(&config, !no_migrate)?.run(),
        Command::Migrate => {
            let store = open_store(&config)?;
            for migration in store.migrate().map_err(|e| e.to_string())? {
                println!("applied {migration}");
            }
            Ok(())
        }
        Command::User(UserCommand::Create) => {
            let store = open_store(&config)?;
            store.migrate().map_err(|e| e.to_string())?;
            let fedid = offline_fedid(&config, store)?;
            let (user, token) = fedid.create_user().map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::json!({ "userId": user.to_string(), "token": token.expose() })
            );
            Ok(())
        }
        Command::Token(TokenCommand::Issue { user, ttl_days }) => {
            let fedid = offline_fedid(&config, open_migrated_store(&config)?)?;
            let token = fedid
                .issue_token(UserId(user), ttl_days)
                .map_err(|e| format!("token issue: {e}"))?;
            println!("{}", serde_json::json!({ "token": token.expose() }));
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { user }) => {
            let fedid = offline_fedid(&config, open_migrated_store(&config)?)?;
            let revoked = fedid
                .revoke_tokens(UserId(user))
                .map_err(|e| format!("token revoke: {e}"))?;
            println!("{}", serde_json::json!({ "revoked": revoked }));
            Ok(())
        }
        Command::Federation(FederationCommand::Status { domain }) => {
            let settings = config.settings().map_err(|e| e.to_string())?;
            let only = domain
                .map(|d| {
                    Domain::parse(&d.to_ascii_lowercase(), settings.policy()).map_err(|e| format!("--domain: {e}"))
                })
                .transpose()?;
            let fedid = offline_fedid(&config, open_migrated_store(&config)?)?;
            let time = |at: Option<UnixTime>| at.map(UnixTime::to_rfc3339);
            for report in fedid
                .peer_domain_report(only.as_ref())
                .map_err(|e| format!("federation status: {e}"))?
            {
                let health = &report.health;
                let line = serde_json::json!({
                    "domain": health.domain.as_str(),
                    "state": report.state.as_str(),
                    "consecutiveFailures": health.consecutive_failures,
                    "lastSuccessAt": time(health.last_success_at),
                    "lastFailureAt": time(health.last_failure_at),
                    "lastFailure": health.last_failure,
                    "queued": report.queued,
                });
                println!("{line}");
            }
            Ok(())
        }
        Command::Federation(FederationCommand::Conflicts) => {
            let fedid = offline_fedid(&config, open_migrated_store(&config)?)?;
            for conflict in fedid
                .key_conflicts()
                .map_err(|e| format!("federation conflicts: {e}"))?
            {
                let line = serde_json::json!({
                    "handle": conflict.handle.as_str(),
                    "at": conflict.at.to_rfc3339(),
                    "pinnedSeq": conflict.pinned_seq,
                    "pinnedHead": conflict.pinned_head,
                    "offeredSeq": conflict.offered_seq,
                    "offeredHead": conflict.offered_head,
                    "reason": conflict.reason,
                });
                println!("{line}");
            }
            Ok(())
        }
        Command::Federation(FederationCommand::Unpin { handle, domain }) => {
            let settings = config.settings().map_err(|e| e.to_string())?;
            let target = match (handle, domain) {
                (Some(handle), _) => PinTarget::Handle(
                    Handle::parse(&handle.to_ascii_lowercase(), settings.policy())
                        .map_err(|e| format!("{handle:?}: {e}"))?,
                ),
                (None, Some(domain)) => PinTarget::Domain(
                    Domain::parse(&domain.to_ascii_lowercase(), settings.policy())
                        .map_err(|e| format!("--domain: {e}"))?,
                ),
                (None, None) => return Err("name a HANDLE or --domain".into()),
            };
            let fedid = offline_fedid(&config, open_migrated_store(&config)?)?;
            let unpinned = fedid.unpin(target).map_err(|e| format!("federation unpin: {e}"))?;
            tracing::info!(unpinned, "key-log pins forgotten by the operator");
            println!("{}", serde_json::json!({ "unpinned": unpinned }));
            Ok(())
        }
        Command::Federation(FederationCommand::Probe { domain, alias }) => {
            let settings = config.settings().map_err(|e| e.to_string())?;
            let domain = Domain::parse(&domain.to_ascii_lowercase(), settings.policy())
                .map_err(|e| format!("{domain:?}: {e}"))?;
            let alias = match alias {
                Some(alias) => alias,
                None => random_alias()?,
            };
            let transport = fedid_transport::HttpTransport::new(config.transport_settings(&settings));
            let report = transport.probe(&domain, &alias);
            let steps: Vec<serde_json::Value> = report
                .steps
                .iter()
                .map(|s| serde_json::json!({"step": s.name, "ok": s.ok, "detail": s.detail, "ms": (s.millis * 1000.0).round() / 1000.0}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"domain": domain.as_str(), "ok": report.ok(), "steps": steps})
            );
            if report.ok() {
                Ok(())
            } else {
                Err(format!(
                    "federation probe: {} failed",
                    report.steps.last().map_or("a step", |s| s.name)
                ))
            }
        }
        Command::Audit(AuditCommand::List { user }) => {
            let fedid = offline_fedid(&config, open_migrated_store(&config)?)?;
            for record in fedid
                .audit_records(UserId(user))
                .map_err(|e| format!("audit list: {e}"))?
            {
                let line = serde_json::json!({
                    "userId": record.user.to_string(),
                    "at": record.at.to_rfc3339(),
                    "action": record.action,
                    "details": record.details,
                });
                println!("{line}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fedid-server: {}", message.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
