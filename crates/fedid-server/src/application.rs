//! The serving application: every adapter wired together. `main` calls
//! [`Application::build`] then [`Application::run`]; tests can bind port 0
//! and read [`Application::port`].

use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use actix_web::web;
use fedid_domain::ports::{SystemClock, SystemRandom};
use fedid_domain::services::Ports;
use fedid_domain::{key_directory, Fedid, KeyDirectory, Store};
use fedid_http::{AppState, HttpSettings, Metrics, RateLimiter, WorkPool};
use fedid_store::DieselStore;
use fedid_transport::HttpTransport;

use crate::configuration::{Config, ConfigError};

/// Expired replay keys are pruned this often, a batch at a time.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_BATCH: usize = 1_000;
/// How often the deliverer looks for due long-lived REVOKEs (PROTOCOL.md
/// section 11), and how many rows one round claims at most.
const DELIVER_EVERY: Duration = Duration::from_secs(1);
const DELIVER_BATCH: usize = 64;

pub struct Application {
    listener: TcpListener,
    state: web::Data<AppState>,
    workers: usize,
    grace_secs: u64,
}

/// File descriptors kept back from connections: database files and pool
/// connections, outbound deliveries and key lookups, logs.
const RESERVED_FDS: u64 = 256;
/// The most connections served when the file-descriptor limit would allow
/// more: each open connection also costs memory (buffers, a stalled body).
const DEFAULT_MAX_CONNECTIONS: u64 = 50_000;

/// Raises the soft file-descriptor limit to the hard one, then checks
/// `server.max_connections` against it (or derives it when unset).
fn connection_budget(configured: Option<usize>) -> Result<usize, String> {
    let limit =
        rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("cannot read the file-descriptor limit: {e}"))?;
    let fits = limit.saturating_sub(RESERVED_FDS).max(1);
    match configured {
        None => Ok(fits.min(DEFAULT_MAX_CONNECTIONS) as usize),
        Some(n) if n as u64 <= fits => Ok(n),
        Some(n) => Err(ConfigError::Invalid {
            key: "server.max_connections",
            reason: format!(
                "{n} does not fit the file-descriptor limit of {limit} (at most {fits}); raise the limit or lower the key"
            ),
        }
        .to_string()),
    }
}

impl Application {
    /// Binds, opens and (unless told not to) migrates the database, and
    /// wires the adapters. Every failure is one line naming its cause.
    pub fn build(config: &Config, migrate: bool) -> Result<Self, String> {
        let settings = config.settings().map_err(|e| e.to_string())?;
        let trusted_proxies = config.trusted_proxies().map_err(|e| e.to_string())?;
        let max_connections = connection_budget(config.server.max_connections)?;
        if config.server.max_connections_per_ip * 2 > max_connections {
            tracing::warn!(
                max_connections,
                max_connections_per_ip = config.server.max_connections_per_ip,
                "one address may hold half of all connections or more: raise the file-descriptor limit or lower server.max_connections_per_ip"
            );
        }
        if config.federation.domain == "localhost:8080" {
            tracing::warn!("federation.domain is left at its default, localhost:8080");
        }
        let listener = TcpListener::bind(&config.server.bind)
            .map_err(|e| format!("cannot listen on {}: {e}", config.server.bind))?;
        let store = DieselStore::open(&config.database.url, config.database.pool_size).map_err(|e| e.to_string())?;
        let on_sqlite = matches!(store, DieselStore::Sqlite(_));
        if migrate {
            for migration in store.migrate().map_err(|e| e.to_string())? {
                tracing::info!(%migration, "migration applied");
            }
        }
        let metrics = Arc::new(Metrics::default());
        let transport = Arc::new(HttpTransport::new(config.transport_settings(&settings)));
        let clock = Arc::new(SystemClock);
        let store: Arc<dyn Store> = Arc::new(store);
        let keys = KeyDirectory::new(transport.clone(), Arc::clone(&store), clock.clone(), &settings)
            .with_observer(metrics.clone());
        let ports = Ports {
            store,
            clock,
            random: Arc::new(SystemRandom::default()),
            transport,
            keys: Arc::new(keys),
        };
        let fedid = Arc::new(Fedid::new(settings, ports).with_delivery_observer(metrics.clone()));
        let rate = config.limits.inbox_requests_per_ip_per_s;
        let workers = config
            .server
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        // SQLite reads cost CPU only: one reader per worker. PostgreSQL reads
        // wait on the network: as many readers as connections.
        let readers = if on_sqlite {
            workers
        } else {
            config.database.pool_size as usize
        };
        // Every key lookup in flight and every request that waits for a
        // refetch holds a thread (both bounded by the key directory); the
        // rest keep verifying.
        let federation_threads = fedid.settings().max_key_fetches + key_directory::MAX_REFETCH_WAITERS + workers;
        let state = web::Data::new(AppState {
            fedid,
            metrics,
            http: HttpSettings {
                metrics_token: config.server.metrics_token.clone().filter(|t| !t.is_empty()),
                trusted_proxies,
                body_timeout: Duration::from_secs(config.server.body_timeout_secs),
                max_connections_per_ip: config.server.max_connections_per_ip,
                ..HttpSettings::new(config.limits.body_bytes, max_connections)
            },
            inbox_limiter: (rate > 0).then(|| RateLimiter::new(rate)),
            readers: WorkPool::new("reader", readers).map_err(|e| format!("cannot start the read pool: {e}"))?,
            federation: WorkPool::new("federation", federation_threads)
                .map_err(|e| format!("cannot start the federation pool: {e}"))?,
            readiness: Default::default(),
        });
        Ok(Self {
            listener,
            state,
            workers,
            grace_secs: config.server.shutdown_grace_secs,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until SIGINT/SIGTERM, then drains for the grace period.
    pub fn run(self) -> Result<(), String> {
        let fedid = self.state.fedid.clone();
        // Users whose keys predate the key log get their first entry
        // before peers ask (PROTOCOL.md section 12).
        match fedid.backfill_key_logs() {
            Ok(0) => {}
            Ok(n) => tracing::info!(users = n, "key logs started for existing keys"),
            Err(e) => return Err(format!("cannot start key logs: {e}")),
        }
        std::thread::Builder::new()
            .name("prune-replay-keys".into())
            .spawn(move || loop {
                std::thread::sleep(PRUNE_EVERY);
                loop {
                    match fedid.prune_replay_keys(PRUNE_BATCH) {
                        Ok(n) if n as usize == PRUNE_BATCH => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "pruning replay keys failed");
                            break;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the pruning thread: {e}"))?;
        let deliverer = Deliverer::start(self.state.fedid.clone())?;
        let address = self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%address, workers = self.workers, "serving");
        let served = actix_web::rt::System::new().block_on(async move {
            let server = fedid_http::server(self.listener, self.state, self.workers, self.grace_secs)
                .map_err(|e| format!("cannot serve: {e}"))?;
            server.await.map_err(|e| format!("server stopped: {e}"))
        });
        // Its round in flight ends (each delivery has its timeout); rows it
        // could not record keep their claim until it lapses.
        deliverer.stop();
        served?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The thread that delivers due long-lived REVOKEs (PROTOCOL.md section 11)
/// off the request path, one round a second, until stopped.
struct Deliverer {
    stopping: Arc<(Mutex<bool>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

impl Deliverer {
    fn start(fedid: Arc<Fedid>) -> Result<Self, String> {
        let stopping = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("fedid-deliverer".into())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                loop {
                    let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
                    let (guard, _) = wake
                        .wait_timeout_while(guard, DELIVER_EVERY, |stopped| !*stopped)
                        .unwrap_or_else(|p| p.into_inner());
                    if *guard {
                        return;
                    }
                    drop(guard);
                    // Full rounds follow each other: a backlog drains at once.
                    loop {
                        match fedid.deliver_due(DELIVER_BATCH) {
                            Ok(round) if round.claimed == DELIVER_BATCH => continue,
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "delivering scheduled revocations failed");
                                break;
                            }
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the deliverer: {e}"))?;
        Ok(Self { stopping, thread })
    }

    fn stop(self) {
        let (stopped, wake) = &*self.stopping;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        let _ = self.thread.join();
    }
}
