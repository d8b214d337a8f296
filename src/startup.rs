//! Building and running the server: bind first (so port 0 works and a busy
//! port fails early), open the store, build the limiter, hub and grants, then
//! serve until stopped. Shutdown closes sockets (1001), lets in-flight
//! requests finish, and checkpoints the WAL.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{middleware::from_fn, web, App, HttpServer};

use crate::config::ServeConfig;
use crate::http::{self, AppState};
use crate::ratelimit::RateLimits;
use crate::realtime::{Grants, Hub};
use crate::store::{LogSettings, Store};
use crate::turn::Scheduler;

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    base_url: String,
    server: Server,
    state: web::Data<AppState>,
}

/// Stops a running server gracefully from elsewhere (signal handler, tests).
#[derive(Clone)]
pub struct ShutdownHandle {
    server: ServerHandle,
    state: web::Data<AppState>,
}

impl ShutdownHandle {
    /// Closes every socket with 1001, then stops accepting and waits for the
    /// requests in flight.
    pub async fn shutdown(&self) {
        self.state.hub.shut_down();
        self.server.stop(true).await;
    }
}

impl Application {
    /// Binds the listener, opens the database and builds the server.
    pub async fn build(config: ServeConfig) -> Result<Application, String> {
        config.validate()?;
        let listener = TcpListener::bind(&config.bind)
            .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let base_url = format!("http://{addr}");
        let public = config
            .public_url
            .clone()
            .unwrap_or_else(|| base_url.clone());
        let public = public.trim_end_matches('/');
        let ws_base = if let Some(rest) = public.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", public.trim_start_matches("http://"))
        };

        let hub = Arc::new(Hub::new(config.ws_queue));
        // The hub is the store's one listener: each commit's events reach
        // the sockets through it.
        let log = LogSettings {
            retention: Duration::from_secs(config.event_retention_days.saturating_mul(86_400)),
        };
        let store = Store::open(&config.db.path, log, hub.clone())?;
        let scheduler = Scheduler::start(
            store.clone(),
            hub.clone(),
            Duration::from_secs(config.typing_signal_secs),
        );
        let state = web::Data::new(AppState {
            store,
            hub,
            grants: Grants::new(Duration::from_secs(config.grant_ttl_secs)),
            limits: RateLimits::from_config(&config),
            ws_base,
            scheduler,
            config: config.clone(),
        });

        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(from_fn(http::middleware::envelope))
                .configure(http::routes)
        })
        .disable_signals()
        .shutdown_timeout(10)
        .backlog(4096)
        .max_connections(100_000);
        if let Some(n) = config.workers {
            server = server.workers(n.max(1));
        }
        let server = server
            .listen(listener)
            .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?
            .run();

        // Idle rate-limiter keys are forgotten every minute.
        let limits_state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limits_state.limits.shrink();
            }
        });

        Ok(Application {
            port: addr.port(),
            base_url,
            server,
            state,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://<bound address>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A handle that stops the server gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            state: self.state.clone(),
        }
    }

    /// How many channel actors run (for tests).
    pub fn hub(&self) -> Arc<Hub> {
        self.state.hub.clone()
    }

    /// Serves until stopped, then checkpoints the WAL.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await?;
        if let Err(e) = self.state.store.checkpoint().await {
            log::warn!("final WAL checkpoint failed: {e}");
        }
        Ok(())
    }
}
