//! `hark bench`: load over loopback HTTP, against servers it starts as child processes (one, or
//! `--nodes N` on one PostgreSQL `--db`) or ones given with `--url`.
//!
//! Each conversation has a sender and a listener. Senders loop on `send` (a durable push: the
//! answer comes after the fsync); each listener holds the conversation's SSE stream. A message's
//! text carries the microsecond the sender issued it, so the listener measures push → SSE
//! delivery on the same clock.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A running server to load; without it, bench starts `hark serve` on a temporary database.
    /// Repeated (nodes of one cluster): conversation i is created on and sent to through the
    /// i-th node (round robin), and listened to on the next one, so every push crosses nodes.
    #[arg(long)]
    url: Vec<String>,
    /// Without --url: the database the started server uses (a SQLite file, or a PostgreSQL URL;
    /// default a temporary SQLite file).
    #[arg(long)]
    db: Option<String>,
    /// Without --url: how many nodes to start on --db (a PostgreSQL URL for more than one).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The admin token of the server given with --url.
    #[arg(long, env = "HARK_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Conversations, each with one sender and one SSE listener.
    #[arg(long, default_value_t = 64)]
    conversations: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
    /// Instead of pushes: park this many blocked `check` calls and report the server's memory.
    #[arg(long)]
    checks: Option<usize>,
    /// With --checks: carry the calls over one HTTP/2 connection (h2c) instead of one HTTP/1.1
    /// connection each.
    #[arg(long)]
    http2: bool,
    /// Instead of pushes: touch this many conversations (create each, send one message), then
    /// idle, and report the server's resident memory at the peak and after idling.
    #[arg(long)]
    soak: Option<usize>,
    /// With --soak: how long to idle afterwards, in seconds (past the server's
    /// `idle_conversation_ms`, 60 s by default, so idle conversations are unloaded).
    #[arg(long, default_value_t = 70.0)]
    idle_s: f64,
    /// Instead of pushes: hold this many idle connections (or MCP sessions) open, then measure
    /// how fast a new client is answered.
    #[arg(long)]
    flood: Option<usize>,
    /// With --flood: `h1` (a request answered, then idle keep-alive), `h2c` (the HTTP/2 preface,
    /// then nothing), `byte` (one byte, then nothing) or `mcp` (initialized MCP sessions).
    #[arg(long, value_enum, default_value_t = FloodKind::H1)]
    flood_kind: FloodKind,
    /// Instead of pushes: write one conversation of about this many MiB of text straight into
    /// the database, start the server on it, and report how long loading it takes and the
    /// server's memory afterwards.
    #[arg(long)]
    big_mib: Option<usize>,
    /// With --big-mib: characters per message.
    #[arg(long, default_value_t = 4_000)]
    message_chars: usize,
    /// The `hark` binary that serves (default: this one), to compare builds on one load.
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// What `--flood` holds open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodKind {
    H1,
    H2c,
    Byte,
    Mcp,
}

struct ChildServer {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let binary = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    if let Some(mib) = args.big_mib {
        return big_conversation(&binary, mib, args.message_chars, args.json).await;
    }
    let (nodes, servers) = match args.url.is_empty() {
        false => (
            args.url
                .iter()
                .map(|url| url.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>(),
            Vec::new(),
        ),
        true => {
            if args.nodes > 1 && !args.db.as_deref().is_some_and(is_postgres) {
                bail!("--nodes {} needs a PostgreSQL --db", args.nodes);
            }
            // Parked checks hold one connection each over HTTP/1.1: more than the default cap.
            let limits = if args.checks.is_some() {
                "[limits]\nmax_connections = 16384\n"
            } else {
                ""
            };
            let mut nodes = Vec::new();
            let mut servers = Vec::new();
            for _ in 0..args.nodes.max(1) {
                let dir = tempfile::tempdir()?;
                let (url, server) = start_server(&binary, dir, limits, args.db.as_deref()).await?;
                nodes.push(url);
                servers.push(server);
            }
            (nodes, servers)
        }
    };
    let server = servers.first();
    // The (first) started server, whose memory the soak, flood and checks modes read.
    let pid = server.and_then(|s| s.child.id());
    let base = nodes[0].clone();
    if let Some(conversations) = args.soak {
        return soak(
            &base,
            args.admin_token.as_deref(),
            conversations,
            pid,
            args.idle_s,
            args.json,
        )
        .await;
    }
    if let Some(flood) = args.flood {
        return run_flood(
            &base,
            args.admin_token.as_deref(),
            flood,
            args.flood_kind,
            pid,
            args.json,
        )
        .await;
    }
    if let Some(checks) = args.checks {
        return park_checks(
            &base,
            args.admin_token.as_deref(),
            checks,
            pid,
            args.http2,
            args.json,
        )
        .await;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.conversations * 3)
        .build()?;
    let clock = Instant::now();
    let mut senders = Vec::new();
    let mut listeners = Vec::new();
    for index in 0..args.conversations {
        let (here, next) = (
            &nodes[index % nodes.len()],
            &nodes[(index + 1) % nodes.len()],
        );
        let mut request = client.post(format!("{here}/v1/conversations")).json(&json!({
            "title": format!("bench {index}"),
            "participants": [{"name": "alice", "kind": "agent"}, {"name": "bob", "kind": "agent"}]
        }));
        if let Some(token) = &args.admin_token {
            request = request.bearer_auth(token);
        }
        let created: Value = checked(request.send().await?).await?.json().await?;
        let id = created["id"].as_str().context("no id")?.to_owned();
        let token = |i: usize| {
            created["participants"][i]["token"]
                .as_str()
                .map(str::to_owned)
        };
        senders.push((here.clone(), id.clone(), token(0).context("no token")?));
        listeners.push((next.clone(), id, token(1).context("no token")?));
    }

    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let received = Arc::new(AtomicU64::new(0));
    let mut listening = Vec::new();
    for (node, id, token) in listeners {
        let response = checked(
            client
                .get(format!("{node}/v1/conversations/{id}/events"))
                .bearer_auth(&token)
                .send()
                .await?,
        )
        .await?;
        let latencies = Arc::clone(&latencies);
        let received = Arc::clone(&received);
        listening.push(tokio::spawn(async move {
            let mut stream = response.bytes_stream();
            let mut buffer = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buffer.extend_from_slice(&chunk);
                while let Some(end) = find(&buffer, b"\n\n") {
                    let event: Vec<u8> = buffer.drain(..end + 2).collect();
                    if let Some(sent_us) = message_stamp(&event) {
                        let now_us = clock.elapsed().as_micros() as u64;
                        let mut all = latencies.lock().unwrap_or_else(|e| e.into_inner());
                        all.push(now_us.saturating_sub(sent_us));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut sending = Vec::new();
    for (base, id, token) in senders {
        let client = client.clone();
        let (stop, acknowledged, failed) = (
            Arc::clone(&stop),
            Arc::clone(&acknowledged),
            Arc::clone(&failed),
        );
        sending.push(tokio::spawn(async move {
            let url = format!("{base}/v1/conversations/{id}/send");
            while !stop.load(Ordering::Relaxed) {
                let stamp = clock.elapsed().as_micros() as u64;
                let sent = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "text": stamp.to_string() }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.duration_s)).await;
    stop.store(true, Ordering::Relaxed);
    for task in sending {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    // Give the streams a moment to deliver the last messages, then stop listening.
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < acknowledged && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in &listening {
        task.abort();
    }
    for task in listening {
        let _ = task.await;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    let server_cpu_s = servers
        .iter()
        .map(|s| s.child.id().and_then(cpu_seconds))
        .sum::<Option<f64>>()
        .filter(|_| !servers.is_empty());
    let client_cpu_s = cpu_seconds(std::process::id());
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[index] as f64 / 1000.0
    };
    let figures = json!({
        "nodes": nodes.len(),
        "conversations": args.conversations,
        "duration_s": elapsed,
        "acknowledged_pushes": acknowledged,
        "failed_pushes": failed.load(Ordering::Relaxed),
        "durable_pushes_per_s": acknowledged as f64 / elapsed,
        "delivered": latencies.len(),
        "push_to_sse_ms": { "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0) },
        "server_cpu_s": server_cpu_s,
        "client_cpu_s": client_cpu_s,
    });
    if args.json {
        println!("{figures}");
    } else {
        println!(
            "hark bench: {} conversations, {:.1} s, loopback HTTP, durable (fsync) pushes{}",
            args.conversations,
            elapsed,
            match nodes.len() {
                1 => String::new(),
                n => format!(", {n} nodes (each push sent to one node, heard on another)"),
            }
        );
        println!(
            "  durable pushes/s   {:>10.0}   ({} acknowledged, {} failed)",
            acknowledged as f64 / elapsed,
            acknowledged,
            figures["failed_pushes"]
        );
        println!(
            "  push→SSE delivery  p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({} delivered)",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0),
            latencies.len()
        );
        if let (Some(server), Some(client)) = (server_cpu_s, client_cpu_s) {
            println!(
                "  CPU used           server {server:.1} s, bench client {client:.1} s (both on this machine)"
            );
        }
    }
    Ok(())
}

/// Parks `checks` blocked `check` calls (50 participants per conversation, one call each),
/// measures the server's resident memory, then wakes them all with one message per conversation.
async fn park_checks(
    base: &str,
    admin_token: Option<&str>,
    checks: usize,
    server_pid: Option<u32>,
    http2: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    const PER_CONVERSATION: usize = 50;
    // Every parked call is a descriptor of this process too.
    crate::process::raise_descriptor_limit();
    let client = if http2 {
        reqwest::Client::builder().http2_prior_knowledge().build()?
    } else {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?
    };
    let before_kib = server_pid.and_then(resident_kib);
    let mut conversations = Vec::new();
    let mut remaining = checks;
    while remaining > 0 {
        let size = remaining.min(PER_CONVERSATION);
        remaining -= size;
        let participants: Vec<Value> = (0..=size)
            .map(|i| json!({"name": format!("p{i}"), "kind": "agent"}))
            .collect();
        let mut request = client
            .post(format!("{base}/v1/conversations"))
            .json(&json!({"participants": participants}));
        if let Some(token) = admin_token {
            request = request.bearer_auth(token);
        }
        let created: Value = checked(request.send().await?).await?.json().await?;
        let id = created["id"].as_str().context("no id")?.to_owned();
        let tokens: Vec<String> = created["participants"]
            .as_array()
            .context("no participants")?
            .iter()
            .filter_map(|p| p["token"].as_str().map(str::to_owned))
            .collect();
        conversations.push((id, tokens));
    }
    let returned = Arc::new(AtomicU64::new(0));
    let woken = Arc::new(AtomicU64::new(0));
    let mut waiting = Vec::with_capacity(checks);
    for (id, tokens) in &conversations {
        // Participant 0 is the one who will speak; the others wait.
        for token in &tokens[1..] {
            let (client, url, token) = (
                client.clone(),
                format!("{base}/v1/conversations/{id}/check"),
                token.clone(),
            );
            let (returned, woken) = (Arc::clone(&returned), Arc::clone(&woken));
            waiting.push(tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"timeout_ms": 60_000}))
                    .send()
                    .await;
                returned.fetch_add(1, Ordering::Relaxed);
                if let Ok(response) = response
                    && let Ok(body) = response.json::<Value>().await
                    && body["result"]["timed_out"] == false
                {
                    woken.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    // Let every call reach the server and park, then read the server's memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let parked = checks as u64 - returned.load(Ordering::Relaxed);
    let during_kib = server_pid.and_then(resident_kib);
    let wake_started = Instant::now();
    for (id, tokens) in &conversations {
        checked(
            client
                .post(format!("{base}/v1/conversations/{id}/send"))
                .bearer_auth(&tokens[0])
                .json(&json!({"text": "wake up"}))
                .send()
                .await?,
        )
        .await?;
    }
    for task in waiting {
        task.await?;
    }
    let wake_ms = wake_started.elapsed().as_secs_f64() * 1000.0;
    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    let figures = json!({
        "checks": checks,
        "transport": if http2 { "http2" } else { "http1.1" },
        "parked": parked,
        "woken": woken.load(Ordering::Relaxed),
        "server_rss_mib_before": mib(before_kib),
        "server_rss_mib_parked": mib(during_kib),
        "wake_all_ms": wake_ms,
    });
    if json_out {
        println!("{figures}");
    } else {
        let transport = if http2 {
            "over one HTTP/2 connection"
        } else {
            "one HTTP/1.1 connection each"
        };
        println!("hark bench --checks {checks}: {parked} calls parked at once, {transport}");
        if let (Some(before), Some(during)) = (mib(before_kib), mib(during_kib)) {
            println!(
                "  server resident memory  {before:.1} MiB idle, {during:.1} MiB with the calls parked"
            );
        }
        println!(
            "  woke {} of them with {} messages in {wake_ms:.0} ms",
            figures["woken"],
            conversations.len()
        );
    }
    Ok(())
}

/// Requests a new client makes to measure its latency, each on a connection of its own.
const PROBES: usize = 200;

/// `--flood`: holds `count` connections or MCP sessions of `kind` open, then measures what a
/// new client waits (a fresh connection and `GET /v1/agents`, which touches no store), before
/// and during the flood.
async fn run_flood(
    base: &str,
    admin_token: Option<&str>,
    count: usize,
    kind: FloodKind,
    server_pid: Option<u32>,
    json_out: bool,
) -> anyhow::Result<()> {
    // The flood's connections are this process's descriptors too.
    crate::process::raise_descriptor_limit();
    let before = probe_latency(base).await?;
    let before_kib = server_pid.and_then(resident_kib);
    let addr = base
        .strip_prefix("http://")
        .context("--flood needs an http:// server")?
        .to_owned();
    let mut held = Vec::new();
    let mut sessions = 0usize;
    let mut refused = 0usize;
    match kind {
        FloodKind::Mcp => {
            (sessions, refused) = open_mcp_sessions(base, admin_token, count).await?;
        }
        _ => {
            for _ in 0..count {
                match hold_connection(&addr, kind).await {
                    Ok(stream) => held.push(stream),
                    Err(_) => refused += 1,
                }
            }
        }
    }
    let during_kib = server_pid.and_then(resident_kib);
    let during = probe_latency(base).await?;
    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    let kind_name = format!("{kind:?}").to_lowercase();
    let figures = json!({
        "flood": count,
        "kind": kind_name,
        "held_connections": held.len(),
        "mcp_sessions": sessions,
        "refused": refused,
        "server_rss_mib_before": mib(before_kib),
        "server_rss_mib_flooded": mib(during_kib),
        "new_client_p50_ms_before": before.0,
        "new_client_p99_ms_before": before.1,
        "new_client_p50_ms_flooded": during.0,
        "new_client_p99_ms_flooded": during.1,
        "new_client_errors_flooded": during.2,
    });
    if json_out {
        println!("{figures}");
    } else {
        println!(
            "hark bench --flood {count} --flood-kind {kind_name}: {} connections and {sessions} \
             MCP sessions held, {refused} refused",
            held.len()
        );
        if let (Some(b), Some(d)) = (mib(before_kib), mib(during_kib)) {
            println!("  server resident memory  {b:.1} MiB before, {d:.1} MiB flooded");
        }
        println!(
            "  a new client ({PROBES} requests, a connection each)  p50 {:.2} ms, p99 {:.2} ms \
             before; p50 {:.2} ms, p99 {:.2} ms flooded ({} errors)",
            before.0, before.1, during.0, during.1, during.2
        );
    }
    drop(held);
    Ok(())
}

/// One idle connection of `kind`.
async fn hold_connection(addr: &str, kind: FloodKind) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    match kind {
        FloodKind::H1 => {
            stream
                .write_all(b"GET /v1/agents HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await?;
            let mut answer = [0u8; 1024];
            let n = stream.read(&mut answer).await?;
            if !answer[..n].starts_with(b"HTTP/1.1 200") {
                bail!("refused");
            }
        }
        FloodKind::H2c => {
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .await?;
        }
        FloodKind::Byte => stream.write_all(b"G").await?,
        FloodKind::Mcp => unreachable!("MCP sessions are opened over HTTP"),
    }
    Ok(stream)
}

/// Opens `count` MCP sessions, eight per participant (the default per-participant cap):
/// (opened, refused).
async fn open_mcp_sessions(
    base: &str,
    admin_token: Option<&str>,
    count: usize,
) -> anyhow::Result<(usize, usize)> {
    const PER_PARTICIPANT: usize = 8;
    const PARTICIPANTS: usize = 64;
    let client = reqwest::Client::new();
    let mut tokens = Vec::new();
    while tokens.len() * PER_PARTICIPANT < count {
        let participants: Vec<Value> = (0..PARTICIPANTS)
            .map(|i| json!({"name": format!("p{i}"), "kind": "agent"}))
            .collect();
        let mut request = client
            .post(format!("{base}/v1/conversations"))
            .json(&json!({"participants": participants}));
        if let Some(token) = admin_token {
            request = request.bearer_auth(token);
        }
        let created: Value = checked(request.send().await?).await?.json().await?;
        for p in created["participants"]
            .as_array()
            .context("no participants")?
        {
            tokens.push(p["token"].as_str().context("no token")?.to_owned());
        }
    }
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "hark-bench", "version": "1"}},
    });
    let (mut opened, mut refused) = (0, 0);
    for i in 0..count {
        let response = client
            .post(format!("{base}/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .bearer_auth(&tokens[i / PER_PARTICIPANT])
            .json(&initialize)
            .send()
            .await?;
        if response.status().is_success() && response.headers().contains_key("mcp-session-id") {
            opened += 1;
        } else {
            refused += 1;
        }
        let _ = response.bytes().await;
    }
    Ok((opened, refused))
}

/// p50 and p99 in milliseconds of [`PROBES`] requests, each on a new connection, and how many
/// failed.
async fn probe_latency(base: &str) -> anyhow::Result<(f64, f64, usize)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut samples = Vec::with_capacity(PROBES);
    let mut errors = 0;
    for _ in 0..PROBES {
        let started = Instant::now();
        let answered = client.get(format!("{base}/v1/agents")).send().await;
        match answered {
            Ok(response) if response.status().is_success() => {
                let _ = response.bytes().await;
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            _ => errors += 1,
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok((at(0.5), at(0.99), errors))
}

/// Touches `conversations` conversations (each created and given one message, so the server
/// loads it), then idles for `idle_s`, sampling the server's resident memory throughout.
async fn soak(
    base: &str,
    admin_token: Option<&str>,
    conversations: usize,
    server_pid: Option<u32>,
    idle_s: f64,
    json_out: bool,
) -> anyhow::Result<()> {
    const WORKERS: usize = 32;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(WORKERS)
        .build()?;
    let before_kib = server_pid.and_then(resident_kib);
    // The highest reading so far, sampled every 100 ms.
    let peak_kib = Arc::new(AtomicU64::new(before_kib.unwrap_or(0)));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak_kib, sampling) = (Arc::clone(&peak_kib), Arc::clone(&sampling));
        async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = server_pid.and_then(resident_kib) {
                    peak_kib.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, base) = (client.clone(), base.to_owned());
        let admin_token = admin_token.map(str::to_owned);
        let (next, failed) = (Arc::clone(&next), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < conversations as u64 {
                if touch(&client, &base, admin_token.as_deref()).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let touch_s = started.elapsed().as_secs_f64();
    let touched_kib = server_pid.and_then(resident_kib);
    tokio::time::sleep(Duration::from_secs_f64(idle_s)).await;
    let idle_kib = server_pid.and_then(resident_kib);
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    let peak = server_pid.map(|_| peak_kib.load(Ordering::Relaxed));
    let failed = failed.load(Ordering::Relaxed);
    let figures = json!({
        "conversations": conversations,
        "failed": failed,
        "touch_s": touch_s,
        "conversations_per_s": conversations as f64 / touch_s,
        "idle_s": idle_s,
        "server_rss_mib_before": mib(before_kib),
        "server_rss_mib_peak": mib(peak),
        "server_rss_mib_touched": mib(touched_kib),
        "server_rss_mib_after_idle": mib(idle_kib),
    });
    if json_out {
        println!("{figures}");
    } else {
        println!(
            "hark bench --soak {conversations}: touched in {touch_s:.1} s ({:.0}/s, {failed} failed), then idled {idle_s:.0} s",
            conversations as f64 / touch_s
        );
        if let (Some(before), Some(peak), Some(touched), Some(idle)) =
            (mib(before_kib), mib(peak), mib(touched_kib), mib(idle_kib))
        {
            println!(
                "  server resident memory  {before:.1} MiB before, {peak:.1} MiB at the peak, {touched:.1} MiB when all were touched, {idle:.1} MiB after idling"
            );
        }
    }
    if failed > 0 {
        bail!("{failed} conversations could not be touched");
    }
    Ok(())
}

/// Creates a conversation of two and sends one message in it.
async fn touch(
    client: &reqwest::Client,
    base: &str,
    admin_token: Option<&str>,
) -> anyhow::Result<()> {
    let mut request = client
        .post(format!("{base}/v1/conversations"))
        .json(&json!({
            "participants": [{"name": "alice", "kind": "human"}, {"name": "bob", "kind": "agent"}]
        }));
    if let Some(token) = admin_token {
        request = request.bearer_auth(token);
    }
    let created: Value = checked(request.send().await?).await?.json().await?;
    let id = created["id"].as_str().context("no id")?;
    let token = created["participants"][0]["token"]
        .as_str()
        .context("no token")?;
    checked(
        client
            .post(format!("{base}/v1/conversations/{id}/send"))
            .bearer_auth(token)
            .json(&json!({"text": "soak"}))
            .send()
            .await?,
    )
    .await?
    .bytes()
    .await?;
    Ok(())
}

/// Resident memory of a process in KiB (Linux; `None` elsewhere).
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `--big-mib`: one conversation of `mib` MiB of text (Alice writes it all; Bob has read
/// nothing), written through the store while no server runs; then the server is started on it
/// and asked for the conversation (which loads it), and Bob, far behind, checks.
async fn big_conversation(
    binary: &std::path::Path,
    mib: usize,
    message_chars: usize,
    json_out: bool,
) -> anyhow::Result<()> {
    use hark_core::protocol::{Effect, Message, ParticipantName};
    use hark_store::Store;

    let dir = tempfile::tempdir()?;
    // Created through a first server, so tokens and ids are the server's own.
    let (base, server) = start_server(binary, dir, "", None).await?;
    let client = reqwest::Client::new();
    let created: Value = checked(
        client
            .post(format!("{base}/v1/conversations"))
            .json(&json!({
                "participants": [{"name": "alice", "kind": "human"}, {"name": "bob", "kind": "agent"}]
            }))
            .send()
            .await?,
    )
    .await?
    .json()
    .await?;
    let id = created["id"].as_str().context("no id")?.to_owned();
    let bob = created["participants"][1]["token"]
        .as_str()
        .context("no token")?
        .to_owned();
    let dir = server.stop().await?;
    let db = dir.path().join("bench.db");

    let messages = (mib * 1024 * 1024).div_ceil(message_chars.max(1));
    let written = Instant::now();
    {
        let store = hark_store::SqliteStore::open(&db)?;
        let alice = ParticipantName::parse("alice").map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let text: String = "lorem ipsum dolor sit amet "
            .chars()
            .cycle()
            .take(message_chars)
            .collect();
        const BATCH: usize = 1_000;
        let mut seq = 0u64;
        while (seq as usize) < messages {
            let mut effects = Vec::with_capacity(BATCH);
            for _ in 0..BATCH.min(messages - seq as usize) {
                seq += 1;
                effects.push(Effect::InsertMessage(Arc::new(Message {
                    seq,
                    id: format!("{id}-{seq}"),
                    from: alice.clone(),
                    text: text.clone(),
                    sent_at: hark_core::time::Millis(1_700_000_000_000 + seq),
                    client_id: Some(format!("c{seq}")),
                    attachment: None,
                })));
            }
            store.commit(&id, effects).await?;
        }
    }
    let write_s = written.elapsed().as_secs_f64();
    let db_mib = std::fs::metadata(&db)?.len() as f64 / (1024.0 * 1024.0);

    let (base, server) = start_server(binary, dir, "", None).await?;
    let pid = server.child.id();
    let before_kib = pid.and_then(resident_kib);
    let started = Instant::now();
    let described: Value = checked(
        client
            .get(format!("{base}/v1/conversations/{id}"))
            .send()
            .await?,
    )
    .await?
    .json()
    .await?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    if described["last_seq"].as_u64() != Some(messages as u64) {
        bail!(
            "the server sees {} messages, not {messages}",
            described["last_seq"]
        );
    }
    let loaded_kib = pid.and_then(resident_kib);
    // Bob has read nothing: his first result starts at the very beginning of the log.
    let started = Instant::now();
    let envelope: Value = checked(
        client
            .post(format!("{base}/v1/conversations/{id}/check"))
            .bearer_auth(&bob)
            .json(&json!({"timeout_ms": 0}))
            .send()
            .await?,
    )
    .await?
    .json()
    .await?;
    let behind_ms = started.elapsed().as_secs_f64() * 1000.0;
    let first_seq = envelope["incoming"][0]["seq"].as_u64();
    let checked_kib = pid.and_then(resident_kib);
    drop(server);
    let mib_of = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    let figures = json!({
        "messages": messages,
        "message_chars": message_chars,
        "database_mib": db_mib,
        "write_s": write_s,
        "load_ms": load_ms,
        "far_behind_check_ms": behind_ms,
        "far_behind_first_seq": first_seq,
        "server_rss_mib_before": mib_of(before_kib),
        "server_rss_mib_loaded": mib_of(loaded_kib),
        "server_rss_mib_after_check": mib_of(checked_kib),
    });
    if json_out {
        println!("{figures}");
    } else {
        println!(
            "hark bench --big-mib {mib}: one conversation of {messages} messages \
             ({db_mib:.0} MiB database, written in {write_s:.1} s)"
        );
        println!(
            "  first request (loads it)      {load_ms:.0} ms; a participant who read nothing \
             checks in {behind_ms:.1} ms"
        );
        if let (Some(b), Some(l), Some(c)) =
            (mib_of(before_kib), mib_of(loaded_kib), mib_of(checked_kib))
        {
            println!(
                "  server resident memory        {b:.1} MiB before, {l:.1} MiB loaded, \
                 {c:.1} MiB after that check"
            );
        }
    }
    Ok(())
}

/// Starts `hark serve` (`binary`) on `db` (default a SQLite file in `dir`) and a free port,
/// with the rate limit off and `extra` appended to its config.
async fn start_server(
    binary: &std::path::Path,
    dir: tempfile::TempDir,
    extra: &str,
    db: Option<&str>,
) -> anyhow::Result<(String, ChildServer)> {
    let config = dir.path().join("bench.toml");
    std::fs::write(&config, format!("[server]\nrate_limit_per_s = 0\n{extra}"))?;
    let db: PathBuf = db.map_or_else(|| dir.path().join("bench.db"), PathBuf::from);
    let mut child = tokio::process::Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .env("RUST_LOG", "warn")
        .env_remove("HARK_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start hark serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.strip_prefix("hark listening on ") {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            return Ok((url, ChildServer { child, _dir: dir }));
        }
    }
    let status = child.wait().await?;
    bail!("hark serve exited before listening: {status}")
}

impl ChildServer {
    /// Stops the server and waits for it to exit; the database directory stays.
    async fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        self.child.start_kill()?;
        self.child.wait().await?;
        let dir = tempfile::tempdir()?;
        Ok(std::mem::replace(&mut self._dir, dir))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn checked(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("the server answered {status}: {body}");
    }
    Ok(response)
}

/// User + system CPU seconds a process has used so far (Linux; `None` elsewhere).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The send stamp of a `message` event, if this SSE event is one.
fn message_stamp(event: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(event).ok()?;
    if !text.lines().any(|l| l == "event: message") {
        return None;
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    let value: Value = serde_json::from_str(data).ok()?;
    value["text"].as_str()?.parse().ok()
}
