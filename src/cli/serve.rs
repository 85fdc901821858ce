//! `confab serve`: validate → open state → keys → TLS → bind every port → READY=1 → serve →
//! on SIGTERM/SIGINT drain and exit 0. Nothing binds before everything before it succeeded.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::server::{self, Listeners};
use crate::api::{App, AppInner, Readiness};
use crate::auth::{ApiKeys, KeysOrigin};
use crate::config::Config;
use crate::media::{MediaDriver, MediaPlan};
use crate::state::{SledStore, Store};
use crate::{systemd, tls, version};

/// How often the `STATUS=` line and the state probe refresh.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How long an idle blocking-pool thread waits for work before it exits.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(60);

pub fn run(config: Config) -> ExitCode {
    systemd::init_logging(&config.log_level);
    info!(version = %version::long(), "confab starting");
    info!(config = %config.summary(), "effective configuration");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("confab-io")
        // Longer than STATUS_EVERY: the state probe's blocking thread then lives from one probe to
        // the next. With tokio's default (10 s, the probe's period) an idle confab started and
        // ended a thread (with its own allocator heap) for almost every probe.
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
    {
        Ok(r) => r,
        Err(e) => return startup_failed(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(serve(config))
}

fn startup_failed(message: impl std::fmt::Display) -> ExitCode {
    error!("{message}");
    // Also on stderr when logs go to the journal, so `confab serve` by hand always shows it.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        eprintln!("confab: {message}");
    }
    ExitCode::FAILURE
}

async fn serve(config: Config) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        return startup_failed(format!(
            "cannot create the state directory {}: {e}",
            config.state_dir.display()
        ));
    }
    let store: Arc<SledStore> = match SledStore::open(&config.state_dir) {
        Ok(s) => Arc::new(s),
        Err(e) => return startup_failed(e),
    };
    info!(path = %store.path().display(), schema = store.schema_version(), "state open");
    let keys = match ApiKeys::load(&config, true) {
        Ok((keys, origin)) => {
            announce_keys(&keys, &origin);
            crate::auth::KeyRing::new(keys, &origin)
        }
        Err(e) => return startup_failed(e),
    };
    let tls = match tls::load(&config) {
        Ok(t) => t,
        Err(e) => return startup_failed(e),
    };
    info!(tls = %tls.summary, "TLS ready");

    // Bind everything; the first failure stops start-up with a message naming the port.
    let listeners = match Listeners::bind(&config) {
        Ok(l) => l,
        Err(e) => return startup_failed(e),
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let agents = crate::agent::Dispatcher::start(keys.clone(), config.auth.token_ttl);
    let notifier = match crate::webhook::Notifier::start(&config.webhook, keys.clone()) {
        Ok(n) => n,
        Err(e) => return startup_failed(e),
    };
    metrics.register_collector(Box::new(crate::agent::AgentMetrics(agents.stats().clone())));
    metrics.register_collector(Box::new(crate::webhook::WebhookMetrics(notifier.stats())));
    let events = crate::events::Bus::new(vec![
        metrics.events_sink(),
        notifier.clone(),
        Arc::new(agents.clone()),
    ]);
    // The recorder first: the media threads hand it what they tap; TURN relays to their ports.
    let (mut media, recorder, turn) =
        match start_media(&config, events, store.clone(), &tls.server_config) {
            Ok(m) => m,
            Err(e) => return startup_failed(e),
        };
    metrics.set_media(media.handle.clone());
    if let Some(t) = &turn {
        metrics.register_collector(Box::new(crate::turn::TurnMetrics(t.clone())));
    }

    let readiness = Readiness::new(store.clone() as Arc<dyn Store>, media.heartbeats());
    readiness.tls_loaded.store(true, Ordering::Relaxed);
    let admin = admin_state(store.as_ref(), &config);
    let app = App::new(AppInner {
        readiness,
        keys,
        ca_pem: tls.ca_pem.clone(),
        https_port: config.http.https_port,
        started: Instant::now(),
        update_state: config.update.state_file.clone(),
        has_slots: config.update.bootloader != crate::config::BootloaderKind::None,
        media: Some(media.handle.clone()),
        token_ttl: config.auth.token_ttl,
        admin: Some(admin),
        updates: Some(crate::api::update::UpdateAccess::new(Arc::new(
            config.clone(),
        ))),
        join_failures: Default::default(),
        trusted_proxies: crate::http::peer::TrustedProxies::new(
            config.http.trusted_proxies.clone(),
        ),
        token_failures: crate::api::token_failures(),
        agents: Some(agents),
        metrics: Some(metrics),
        metrics_open: config.metrics.open,
        recorder: Some(recorder.clone()),
        turn: turn.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(
        listeners,
        tls.server_config.clone(),
        app.clone(),
        crate::http::conn::ConnLimits::new(
            config.http.max_connections,
            config.http.max_connections_per_address,
        ),
        stop_rx,
        config.http.shutdown_grace,
        turn.clone(),
    ));
    let watchdog = systemd::spawn_watchdog(media.heartbeats());
    let status_task = tokio::spawn(status_loop(app.clone(), store.clone()));

    let url = format!("https://localhost:{}/", config.http.https_port);
    systemd::ready(&status_line(&app));
    info!(%url, ca = %config.state_dir.join("tls").join(tls::CA_CERT_FILE).display(), "confab is ready");

    let signal_name = wait_for_signal().await;
    info!(signal = signal_name, "shutting down");
    app.readiness().draining.store(true, Ordering::Relaxed);
    systemd::stopping();
    let _ = stop_tx.send(true);
    if let Err(e) = server.await {
        warn!(error = %e, "HTTP server task ended abnormally");
    }
    status_task.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    stop_media(&mut media, &recorder);
    notifier.flush(Duration::from_secs(5)).await;
    flush_state(&store)
}

/// The state database written out at shutdown: the exit code.
fn flush_state(store: &SledStore) -> ExitCode {
    match store.flush() {
        Ok(()) => {
            info!("state flushed; goodbye");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "could not flush state at shutdown");
            ExitCode::FAILURE
        }
    }
}

/// The TURN server (unless `turn.enabled = false`), relaying to the media threads' ports.
fn start_turn(
    config: &Config,
    media: &MediaDriver,
    tls: &Arc<rustls::ServerConfig>,
) -> Result<Option<Arc<crate::turn::Service>>, String> {
    if !config.turn.enabled {
        info!("TURN is off (turn.enabled = false)");
        return Ok(None);
    }
    let mut peers: Vec<std::net::SocketAddr> = Vec::new();
    for shard in &media.shards {
        peers.extend(&shard.udp_addrs);
        // The public address of a host behind 1:1 NAT is a candidate too.
        if let (Some(ip), Some(a)) = (config.rtc.node_ip, shard.udp_addrs.first()) {
            peers.push(std::net::SocketAddr::new(ip, a.port()));
        }
    }
    let service = crate::turn::Service::start(crate::turn::Plan {
        config: &config.turn,
        addresses: crate::media::local_addresses(config.http.bind),
        bind: config.http.bind,
        https_port: config.http.https_port,
        media: peers,
        tls: Some(tls.clone()),
    })
    .map_err(|e| e.to_string())?;
    Ok(Some(Arc::new(service)))
}

/// Stops the media threads, then finishes the recordings they fed (before the webhooks are
/// flushed, so their `egress_ended` go out).
fn stop_media(media: &mut MediaDriver, recorder: &crate::record::Recorder) {
    media.stop();
    recorder.finish(Duration::from_secs(5));
}

/// The recorder, on `<state_dir>/recordings`.
fn start_recorder(
    config: &Config,
    store: Arc<SledStore>,
    events: crate::events::Bus,
) -> Result<crate::record::Recorder, String> {
    let dir = config.state_dir.join("recordings");
    crate::record::Recorder::start(
        &dir,
        config.recording.min_free_bytes,
        store as Arc<dyn Store>,
        events,
    )
    .map_err(|e| {
        format!(
            "cannot open the recordings directory {}: {e}",
            dir.display()
        )
    })
}

/// The recorder, then the media threads and their sockets, then TURN, as configured.
type Media = (
    MediaDriver,
    crate::record::Recorder,
    Option<Arc<crate::turn::Service>>,
);

fn start_media(
    config: &Config,
    events: crate::events::Bus,
    store: Arc<SledStore>,
    tls: &Arc<rustls::ServerConfig>,
) -> Result<Media, String> {
    let recorder = start_recorder(config, store, events.clone())?;
    let media = MediaDriver::start(
        &MediaPlan {
            bind: config.http.bind,
            udp_port: config.rtc.udp_port,
            tcp_port: config.rtc.tcp_port,
            threads: config.rtc.media_threads,
            events,
            record: Some(Arc::new(recorder.clone())),
        },
        crate::sfu::SfuConfig {
            max_participants: config.rtc.max_participants,
            max_rooms: config.rtc.max_rooms,
            empty_timeout: config.rtc.empty_timeout,
            advertised_ip: config.rtc.node_ip,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    recorder.attach_media(media.handle.clone());
    let turn = start_turn(config, &media, tls)?;
    Ok((media, recorder, turn))
}

/// The admin's sessions, with the owner's preset applied and the setup code (if no password is
/// set yet) logged and published.
fn admin_state(store: &SledStore, config: &Config) -> crate::auth::admin::AdminState {
    // The appliance owner's admin settings (boot partition confab.toml), applied once.
    let preset_code =
        crate::auth::admin::apply_preset(store, &config.state_dir).unwrap_or_else(|e| {
            warn!(error = %e, "admin preset not applied");
            None
        });
    let (mut admin, setup_code) = crate::auth::admin::AdminState::with_code(
        crate::auth::admin::password_set(store),
        preset_code,
    );
    if let Some(code) = &setup_code {
        // One-time: valid only until the admin password is set; asked for from every address.
        info!(
            setup_code = %code,
            "no admin password yet: open /admin to set one, or run `confab admin set-password`"
        );
    }
    admin.publish_code(setup_code_files(&config.state_dir));
    admin.set_state_dir(config.state_dir.clone());
    admin
}

/// Tells the user about the API key once: the secret goes to an interactive terminal only, never
/// into logs (under systemd the journal would keep it).
fn announce_keys(keys: &ApiKeys, origin: &KeysOrigin) {
    let Some((key, secret)) = keys.primary() else {
        return;
    };
    match origin {
        KeysOrigin::Generated(path) => {
            info!(api_key = key, path = %path.display(), "generated this device's API key and secret");
            if std::io::stdout().is_terminal() {
                println!(
                    "\nNew API key for this device (stored in {}):\n  LIVEKIT_API_KEY={key}\n  LIVEKIT_API_SECRET={}\n",
                    path.display(),
                    secret.expose()
                );
            }
        }
        KeysOrigin::DeviceFile(path) => {
            info!(api_key = key, path = %path.display(), "using this device's API key")
        }
        KeysOrigin::Config => {
            info!(api_keys = %keys.names().join(","), "using configured API keys")
        }
    }
}

fn status_line(app: &App) -> String {
    let status = app.status_json();
    format!(
        "confab {} · {} rooms · {} participants · update: {}",
        version::VERSION,
        status["rooms"],
        status["participants"],
        status["update"].as_str().unwrap_or("-")
    )
}

/// Refreshes `STATUS=` and probes the state database (a small write + flush), so a full disk
/// shows up in readiness.
async fn status_loop(app: App, store: Arc<SledStore>) {
    let mut tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tick.tick().await;
        let store = store.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let now = crate::clock::unix_secs();
            store.put("meta", b"last_alive", &now.to_be_bytes())?;
            store.flush()
        })
        .await;
        if let Ok(Err(e)) = probe {
            error!(error = %e, "state probe failed");
        }
        systemd::status(&status_line(&app));
    }
}

async fn wait_for_signal() -> &'static str {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops confab");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Where the setup code is kept while no admin password is set: `<state_dir>/setup-code` for
/// `confab admin set-password`, and under systemd (`RuntimeDirectory=confab`) also
/// `$RUNTIME_DIRECTORY/setup-code` for the appliance's console banner.
fn setup_code_files(state_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![state_dir.join(crate::auth::admin::SETUP_CODE_FILE)];
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        // RuntimeDirectory= may list several directories, separated by ':'.
        let dir = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !dir.is_empty() {
            files.push(std::path::PathBuf::from(dir).join("setup-code"));
        }
    }
    files
}
