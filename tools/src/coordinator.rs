//! `tessera coordinator`: a cluster coordinator over a catalog (PostgreSQL with `--catalog
//! postgres://...`, several coordinators on one database; or an embedded catalog in
//! `--catalog-dir`), until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tessera_coordinator::{Coordinator, CoordinatorConfig};
use tessera_rpc::auth::{AuthConfig, KeyKind, KeySpec};

#[derive(clap::Args, Clone, Debug)]
pub struct CoordinatorArgs {
    /// RPC address for nodes and operators.
    #[arg(long, default_value = "0.0.0.0:7080")]
    pub listen: SocketAddr,
    /// PostgreSQL catalog, postgres://USER@HOST:PORT/DB (several coordinators may share it).
    #[arg(long, conflicts_with = "catalog_dir")]
    pub catalog: Option<String>,
    /// Embedded catalog (SQLite) in this directory, for a single machine (the default: ./catalog).
    #[arg(long)]
    pub catalog_dir: Option<PathBuf>,
    /// File holding the HS256 token secret (the nodes' key; tokens of role operator log in).
    #[arg(long)]
    pub jwt_secret_file: PathBuf,
    /// This coordinator's name among the cluster's coordinators (default: host:port it listens on).
    #[arg(long)]
    pub id: Option<String>,
    /// Leader lease time, ms (renewed every third of it; a leader that cannot renew stops
    /// acting within it).
    #[arg(long, default_value_t = 3000)]
    pub lease_ms: u64,
    /// A node without a heartbeat for this long is marked down, ms.
    #[arg(long, default_value_t = 10_000)]
    pub node_timeout_ms: u64,
    /// How often nodes send heartbeats, ms.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// A node down for this long (since its last heartbeat) has each of its replicas moved to
    /// another node, which its table's leader then copies the table to, ms.
    #[arg(long, default_value_t = 300_000)]
    pub rereplicate_after_ms: u64,
    /// Serve Prometheus `/metrics` and `/health` on this address (e.g. 0.0.0.0:9465).
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(args: &CoordinatorArgs) -> Result<(), String> {
    let _logger = crate::logging::init("info", crate::logging::Format::Auto)?;
    let spec = match (&args.catalog, &args.catalog_dir) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => format!("sqlite:{}", dir.display()),
        (None, None) => "sqlite:./catalog".into(),
    };
    let catalog = tessera_coordinator::catalog::open(&spec).map_err(|e| e.to_string())?;
    let secret = crate::serve::read_key(&args.jwt_secret_file)?;
    let auth = AuthConfig::new(vec![KeySpec {
        id: None,
        kind: KeyKind::Hs256,
        material: secret,
    }]);
    let mut config = CoordinatorConfig::new(args.listen, args.id.clone().unwrap_or_default(), auth);
    config.lease = Duration::from_millis(args.lease_ms.max(100));
    config.node_timeout = Duration::from_millis(args.node_timeout_ms.max(100));
    config.heartbeat = Duration::from_millis(args.heartbeat_ms.max(50));
    config.rereplicate_after = Duration::from_millis(args.rereplicate_after_ms);
    config.http = args.http;
    if config.id.is_empty() {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        config.id = format!("{}:{}", host.trim(), args.listen.port());
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    }
    let coordinator = Coordinator::start(catalog, config.clone())?;
    tracing::info!(
        "tessera coordinator {} serving on {} (catalog {spec})",
        config.id,
        coordinator.address()
    );
    if let Some(http) = coordinator.http_address() {
        tracing::info!("metrics and health on http://{http}/metrics and /health");
    }
    let notifier = crate::systemd::Notifier::from_env();
    notifier.notify("READY=1");
    let mut last_ping = std::time::Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(interval) = notifier.watchdog_interval() {
            if last_ping.elapsed() >= interval {
                notifier.notify("WATCHDOG=1");
                last_ping = std::time::Instant::now();
            }
        }
    }
    notifier.notify("STOPPING=1");
    drop(coordinator);
    tracing::info!("tessera coordinator stopped");
    Ok(())
}
