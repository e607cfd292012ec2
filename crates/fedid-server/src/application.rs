//! The serving application: every adapter wired together. `main` calls
//! [`Application::build`] then [`Application::run`]; tests can bind port 0
//! and read [`Application::port`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use fedid_domain::ports::{SystemClock, SystemRandom};
use fedid_domain::services::Ports;
use fedid_domain::{Fedid, KeyDirectory};
use fedid_http::net::Network;
use fedid_http::{AppState, HttpSettings, Metrics, RateLimiter, ReadPool};
use fedid_store::DieselStore;
use fedid_transport::{HttpTransport, TransportSettings};

use crate::configuration::{Config, ConfigError};

/// Expired replay keys are pruned this often, a batch at a time.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_BATCH: usize = 1_000;

pub struct Application {
    listener: TcpListener,
    state: web::Data<AppState>,
    workers: usize,
    grace_secs: u64,
}

impl Application {
    /// Binds, opens and (unless told not to) migrates the database, and
    /// wires the adapters. Every failure is one line naming its cause.
    pub fn build(config: &Config, migrate: bool) -> Result<Self, String> {
        let settings = config.settings().map_err(|e| e.to_string())?;
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .map(|p| {
                Network::parse(p).ok_or_else(|| {
                    ConfigError::Invalid {
                        key: "server.trusted_proxies",
                        reason: format!("{p:?} is not a CIDR"),
                    }
                    .to_string()
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if config.federation.domain == "localhost:8080" {
            tracing::warn!("federation.domain is left at its default, localhost:8080");
        }
        let listener = TcpListener::bind(&config.server.bind)
            .map_err(|e| format!("cannot listen on {}: {e}", config.server.bind))?;
        let store = DieselStore::open(&config.database.url, config.database.pool_size).map_err(|e| e.to_string())?;
        let on_sqlite = matches!(store, DieselStore::Sqlite(_));
        if migrate {
            for version in store.migrate().map_err(|e| e.to_string())? {
                tracing::info!(%version, "migration applied");
            }
        }
        let metrics = Arc::new(Metrics::default());
        let transport = Arc::new(HttpTransport::new(TransportSettings {
            scheme: settings.scheme,
            allow_private_networks: settings.allow_private_networks,
            allowed_domains: settings.allowed_domains.clone(),
            delivery_connect_timeout: Duration::from_millis(config.delivery.connect_timeout_ms),
            delivery_timeout: Duration::from_millis(config.delivery.timeout_ms),
            fetch_connect_timeout: Duration::from_millis(config.federation.fetch_connect_timeout_ms),
            fetch_timeout: Duration::from_millis(config.federation.fetch_timeout_ms),
        }));
        let clock = Arc::new(SystemClock);
        let keys = KeyDirectory::new(
            transport.clone(),
            clock.clone(),
            settings.key_cache_ttl_secs,
            settings.max_key_fetches,
            settings.max_key_fetches_per_domain,
        )
        .with_observer(metrics.clone());
        let ports = Ports {
            store: Arc::new(store),
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
        let state = web::Data::new(AppState {
            fedid,
            metrics,
            http: HttpSettings {
                body_bytes: config.limits.body_bytes,
                metrics_token: config.server.metrics_token.clone().filter(|t| !t.is_empty()),
                trusted_proxies,
            },
            inbox_limiter: (rate > 0).then(|| RateLimiter::new(rate)),
            readers: ReadPool::new(readers).map_err(|e| format!("cannot start the read pool: {e}"))?,
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
        let address = self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%address, workers = self.workers, "serving");
        actix_web::rt::System::new().block_on(async move {
            let server = fedid_http::server(self.listener, self.state, self.workers, self.grace_secs)
                .map_err(|e| format!("cannot serve: {e}"))?;
            server.await.map_err(|e| format!("server stopped: {e}"))
        })?;
        tracing::info!("stopped");
        Ok(())
    }
}
