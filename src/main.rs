//! The `hark` binary: the CLI, the config, telemetry, and the only reader of the environment.

mod bench;
mod config;
mod process;
mod talk;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hark_server::app::Node;
use hark_server::mcp::{self, RemoteSession};
use hark_server::{Server, ServerConfig};
use hark_store::{NodeIdentity, PostgresStore, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigFile;

/// mimalloc instead of the system allocator: under load, glibc's malloc/free took ~14% of the
/// server's CPU (measured with perf during `hark bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives freed memory back to the system, at most once a second per thread, when a runtime
/// thread goes idle. mimalloc collects a thread's freed pages (also those freed by other
/// threads) and returns them only when that thread allocates again; a server that unloaded its
/// idle conversations and then had nothing to do would otherwise keep its peak memory for ever.
fn collect_freed_memory() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    const EVERY: Duration = Duration::from_secs(1);
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST
        .get()
        .is_some_and(|last| now.duration_since(last) < EVERY)
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect only walks the calling thread's own heap; it takes no pointer.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
const DEFAULT_DB: &str = "hark.db";

#[derive(Parser)]
#[command(
    name = "hark",
    version,
    about = "A conversation runtime where models and people talk asynchronously."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP/SSE server on the embedded SQLite store.
    Serve(ServeArgs),
    /// Measure durable pushes/s and push→SSE latency over loopback HTTP.
    Bench(bench::BenchArgs),
    /// Let two or more configured agents talk with drafts, printed live.
    Talk(talk::TalkArgs),
    /// Serve MCP over stdin/stdout as one participant: of a running server (--url, --token) or
    /// of a conversation in a database file (--db, --conversation, --as).
    Mcp(McpArgs),
    /// Replay chat logs through the turn engine on a virtual clock and compare policies.
    Sim(hark_sim::SimArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:7878; port 0 picks a free port).
    #[arg(long, env = "HARK_LISTEN")]
    listen: Option<String>,
    /// The SQLite database file, created if missing (default ./hark.db), or a PostgreSQL URL
    /// (`postgres://user@host:port/db`) shared by several nodes.
    #[arg(long, env = "HARK_DB")]
    db: Option<PathBuf>,
    /// A TOML config file (see README).
    #[arg(long, env = "HARK_CONFIG")]
    config: Option<PathBuf>,
    /// With PostgreSQL: the URL at which the other nodes reach this one (default: http:// and
    /// the listen address, 127.0.0.1 for 0.0.0.0).
    #[arg(long, env = "HARK_NODE_URL")]
    node_url: Option<String>,
}

/// How long a node that stopped renewing keeps its conversations, unless configured.
const DEFAULT_LEASE_MS: u64 = 3_000;

/// `hark mcp`: stdout carries MCP messages only; logs go to stderr.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["url", "db"]))]
struct McpArgs {
    /// A running `hark serve` to talk to, e.g. http://127.0.0.1:7878 (needs --token).
    #[arg(long, requires = "token", conflicts_with_all = ["db", "conversation", "as_name"])]
    url: Option<String>,
    /// The participant's token, from creating the conversation (or HARK_TOKEN).
    #[arg(long, env = "HARK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A database file to act on directly, without a server (needs --conversation and --as).
    /// Never while a `hark serve` has the same file open: each process would keep its own
    /// copy of the conversation's state.
    #[arg(long, requires_all = ["conversation", "as_name"])]
    db: Option<PathBuf>,
    /// The conversation id (with --db).
    #[arg(long)]
    conversation: Option<String>,
    /// The participant to act as (with --db).
    #[arg(long = "as", id = "as_name", value_name = "NAME")]
    as_name: Option<String>,
    /// A config file whose [limits] apply (with --db).
    #[arg(long, env = "HARK_CONFIG")]
    config: Option<PathBuf>,
}

/// mimalloc's `mi_option_arena_eager_commit` (`mimalloc.h`; the crate names no constant for it).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Commits mimalloc's arena memory as it is used rather than the whole arena at once. In an
/// eagerly committed arena, freed pages are only reset (`MADV_FREE`), and Linux counts them as
/// resident until it runs short: 10,000 parked `check`s over one HTTP/1.1 connection each
/// showed 299 MiB resident with it and 210 MiB without (`hark bench --checks 10000`). The
/// first arena is made by the first allocation, before `main`, so this runs as a constructor
/// with a priority, which the loader runs before the ones without (mimalloc's own, the
/// runtime's).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00101")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

#[cfg(target_os = "linux")]
extern "C" fn allocator_options() {
    // SAFETY: setting an option writes mimalloc's static option table; it takes no pointer
    // and needs no initialised heap.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Sim(args) = &cli.command {
        // The simulator is synchronous and prints its own output: no runtime, no log lines.
        return Ok(hark_sim::run(args)?);
    }
    // Under `hark mcp` the MCP client shows stderr to its user: keep it to what matters.
    let default_filter = match cli.command {
        Command::Mcp(_) => "warn",
        _ => "info",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    // rmcp logs an error whenever it cannot write an answer to an MCP client that went away (a
    // stateless `/mcp` POST dropped mid-call, say). That is an ordinary disconnect, which hark
    // handles itself (the answer counts as lost and its messages come again), so it is kept out
    // of the log unless RUST_LOG asks for rmcp by name.
    let names_rmcp = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rmcp"));
    if !names_rmcp && let Ok(quiet) = "rmcp::service=off".parse() {
        filter = filter.add_directive(quiet);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_freed_memory)
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Talk(args) => runtime.block_on(talk::run(args)),
        Command::Mcp(args) => {
            let served = runtime.block_on(mcp(args));
            // The session is over (its client is gone or closed stdin): exit now, without
            // waiting on a blocking read of stdin that may never return.
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            served
        }
        Command::Sim(_) => Ok(()),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let listen = args
        .listen
        .or(file.server.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let addr: SocketAddr = tokio::net::lookup_host(&listen)
        .await
        .with_context(|| format!("cannot resolve the listen address {listen}"))?
        .next()
        .with_context(|| format!("the listen address {listen} resolves to nothing"))?;
    let admin_token = std::env::var("HARK_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or(file.server.admin_token.clone());
    if admin_token.is_none() && !addr.ip().is_loopback() {
        bail!(
            "refusing to listen on {addr} without an admin token: set HARK_ADMIN_TOKEN or \
             [server] admin_token, or listen on a loopback address"
        );
    }
    let db = args
        .db
        .or(file.server.db.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DB));
    // Held until the process ends: a second `hark serve` on this file stops here (a
    // PostgreSQL database is not locked: see the README).
    let _lock = match postgres_url(&db) {
        Some(_) => None,
        None => Some(process::lock_database(
            &db,
            "stop it first, or serve another --db (one server per database file)",
        )?),
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let (store, node) = match postgres_url(&db) {
        Some(url) => {
            let node_url = args
                .node_url
                .or(file.cluster.node_url.clone())
                .unwrap_or_else(|| default_node_url(local));
            let lease = Duration::from_millis(file.cluster.lease_ms.unwrap_or(DEFAULT_LEASE_MS));
            if lease < Duration::from_millis(300) {
                bail!("[cluster] lease_ms must be at least 300");
            }
            let identity = NodeIdentity {
                id: node_id(),
                url: node_url.trim_end_matches('/').to_owned(),
                lease,
            };
            let store = Arc::new(
                PostgresStore::connect_node(url, identity.clone())
                    .await
                    .with_context(|| format!("cannot open the database {}", describe_db(&db)))?,
            );
            let node = Node::join(store.clone(), lease)
                .await
                .with_context(|| format!("cannot join the nodes of {}", describe_db(&db)))?;
            tracing::info!(node = %identity.id, url = %identity.url, "serving as a node of the database's cluster");
            (store as Arc<dyn Store>, Some(node))
        }
        None => (open_store(&db).await?, None),
    };
    let defaults = ServerConfig::default();
    let mut caps = file.caps();
    caps.max_connections =
        process::connections_allowed(caps.max_connections, process::raise_descriptor_limit());
    let config = ServerConfig {
        allowed_hosts: file.allowed_hosts(addr.ip().is_loopback()),
        caps,
        admin_open: admin_token.is_none(),
        admin_token,
        max_body_bytes: file
            .server
            .max_body_bytes
            .unwrap_or(defaults.max_body_bytes),
        rate_limit_per_s: file
            .server
            .rate_limit_per_s
            .unwrap_or(defaults.rate_limit_per_s),
        rate_limit_burst: file
            .server
            .rate_limit_burst
            .unwrap_or(defaults.rate_limit_burst),
        keepalive_ms: file
            .server
            .sse_keepalive_ms
            .unwrap_or(defaults.keepalive_ms),
        header_read_timeout_ms: file
            .server
            .header_read_timeout_ms
            .unwrap_or(defaults.header_read_timeout_ms),
        body_read_timeout_ms: file
            .server
            .body_read_timeout_ms
            .unwrap_or(defaults.body_read_timeout_ms),
        limits: file.limits(),
        idle_conversation_ms: file
            .limits
            .idle_conversation_ms
            .unwrap_or(defaults.idle_conversation_ms),
        max_attachment_bytes: file
            .limits
            .max_attachment_bytes
            .unwrap_or(defaults.max_attachment_bytes),
    };
    let mut agents = Vec::new();
    for agent in &file.agent {
        agents.push(agent.build()?);
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!(
        "hark listening on http://{local} (database {})",
        describe_db(&db)
    );
    if config.admin_open {
        tracing::warn!("no admin token configured: admin routes are open on this loopback address");
    }
    let agents = hark_server::agents::Supervisor::new(agents, None);
    let server = match node {
        Some(node) => Server::node(store, config, agents, node, shutdown),
        None => Server::with_agents(store, config, agents, shutdown),
    };
    server.serve(listener).await.context("the server failed")?;
    tracing::info!("stopped");
    Ok(())
}

async fn mcp(args: McpArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    if let Some(url) = args.url {
        let token = args.token.unwrap_or_default();
        let session = RemoteSession::new(&url, &token).map_err(|e| anyhow::anyhow!("{e}"))?;
        mcp::serve_stdio(Arc::new(session), shutdown.clone())
            .await
            .context("the MCP stdio session failed")?;
        return Ok(());
    }
    // clap's argument group guarantees --db, --conversation and --as here.
    let (Some(db), Some(conversation), Some(name)) = (args.db, args.conversation, args.as_name)
    else {
        bail!("pass either --url and --token, or --db, --conversation and --as");
    };
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    if postgres_url(&db).is_some() {
        // On PostgreSQL a conversation is run by the node that owns it; a process that acts
        // on the database directly would run a second copy beside it.
        bail!(
            "`hark mcp --db` takes a SQLite file; on PostgreSQL, use `hark mcp --url` with a \
             node's address and the participant's token"
        );
    }
    if !db.exists() {
        bail!(
            "the database {} does not exist: create the conversation with `hark serve` first",
            db.display()
        );
    }
    let _lock = match postgres_url(&db) {
        Some(_) => None,
        None => Some(process::lock_database(
            &db,
            "while `hark serve` runs on it, use `hark mcp --url` with the participant's token",
        )?),
    };
    let store = open_store(&db).await?;
    let config = ServerConfig {
        limits: file.limits(),
        caps: file.caps(),
        ..ServerConfig::default()
    };
    let server = Server::new(store, config, shutdown.clone());
    let session = server
        .participant_session(&conversation, &name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let served = mcp::serve_stdio(session, shutdown.clone()).await;
    // Ends the conversation tasks; every acknowledged action is already committed.
    shutdown.cancel();
    served.context("the MCP stdio session failed")
}

/// Where the other nodes reach a node listening on `local`, unless told.
fn default_node_url(local: SocketAddr) -> String {
    let ip = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, local.port()))
}

/// A node id unique per process start: the host name, the process id and random bits.
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".to_owned());
    let random: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().rotate_left(16);
    format!("{host}-{}-{random:08x}", std::process::id())
}

/// The URL in `db` when it names a PostgreSQL database rather than a SQLite file.
fn postgres_url(db: &std::path::Path) -> Option<&str> {
    db.to_str()
        .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// Opens the store `db` names: a PostgreSQL URL, or else a SQLite file.
async fn open_store(db: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match postgres_url(db) {
        Some(url) => Arc::new(
            PostgresStore::connect(url)
                .await
                .with_context(|| format!("cannot open the database {}", describe_db(db)))?,
        ),
        None => Arc::new(
            SqliteStore::open(db)
                .with_context(|| format!("cannot open the database {}", db.display()))?,
        ),
    })
}

/// `db` for a log line: a PostgreSQL URL without its password.
fn describe_db(db: &std::path::Path) -> String {
    let Some(url) = postgres_url(db) else {
        return db.display().to_string();
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: ending event streams and waiting checks");
    shutdown.cancel();
}
