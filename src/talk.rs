//! `hark talk`: two or more configured agents talk with drafts, printed live in the terminal.
//!
//! A host posts the topic; every agent hears it and starts drafting at once, so drafts grow in
//! parallel, appends come back with the other side's messages, generations are interrupted and
//! revised, and pushes are held. The run ends after `--max-messages` agent messages.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hark_core::protocol::{Action, ParticipantKind, ParticipantName};
use hark_server::agents::{Activity, AgentMode, Supervisor};
use hark_server::{Server, ServerConfig};
use hark_store::SqliteStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigFile;

#[derive(clap::Args)]
pub struct TalkArgs {
    /// The config file that defines the agents.
    #[arg(long, env = "HARK_CONFIG")]
    config: PathBuf,
    /// Comma-separated agent names, at least two.
    #[arg(long, value_delimiter = ',')]
    agents: Vec<String>,
    /// What they should talk about; posted by the host as the first message.
    #[arg(long)]
    topic: String,
    /// Stop after this many messages from the agents.
    #[arg(long, default_value_t = 8)]
    max_messages: usize,
    /// Stop after this many seconds in any case.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Keep the conversation in this database (default: a temporary one).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Let the model call append/push as tools instead of streaming sentences into the draft.
    #[arg(long)]
    no_streaming: bool,
}

pub async fn run(args: TalkArgs) -> anyhow::Result<()> {
    if args.agents.len() < 2 {
        bail!("--agents needs at least two agent names, e.g. --agents alice,bob");
    }
    let file = ConfigFile::load(&args.config)?;
    let mut specs = Vec::new();
    for name in &args.agents {
        let section = file
            .agent
            .iter()
            .find(|a| &a.name == name)
            .with_context(|| format!("no [[agent]] named {name} in {}", args.config.display()))?;
        let mut spec = section.build()?;
        spec.config.mode = AgentMode::Actions {
            streaming: !args.no_streaming,
        };
        specs.push(spec);
    }
    let temp = tempfile::tempdir()?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| temp.path().join("talk.db"));
    let _lock = crate::process::lock_database(&db, "stop the other process first")?;
    let store = SqliteStore::open(&db)?;
    let (activity_tx, mut activity) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        limits: file.limits(),
        ..ServerConfig::default()
    };
    let server = Arc::new(Server::with_agents(
        Arc::new(store),
        config,
        Supervisor::new(specs, Some(activity_tx)),
        shutdown.clone(),
    ));

    let host = ParticipantName::parse("host").context("the host's name")?;
    let mut participants = vec![(host.clone(), ParticipantKind::Human, None)];
    for name in &args.agents {
        let participant = ParticipantName::parse(name)
            .map_err(|e| anyhow::anyhow!("agent name {name:?} cannot be a participant: {e}"))?;
        participants.push((participant, ParticipantKind::Agent, Some(name.clone())));
    }
    let (id, _tokens) = server
        .create_conversation(Some(args.topic.clone()), participants)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let paint = Paint::new(std::io::stdout().is_terminal());
    println!(
        "{}",
        paint.dim(&format!("conversation {id} · database {}", db.display()))
    );
    server
        .act(
            &id,
            host.clone(),
            Action::Send {
                text: args.topic.clone(),
                client_id: None,
                attachment: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    println!("{:<10} {} {}", "host", paint.bold("▸"), args.topic);

    let mut sent = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_s));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => {
                println!("{}", paint.dim("(time is up)"));
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
            event = activity.recv() => {
                let Some(event) = event else { break };
                if let Activity::Sent { .. } = event {
                    sent += 1;
                }
                println!("{}", describe(&event, &paint));
                if sent >= args.max_messages {
                    break;
                }
            }
        }
    }
    shutdown.cancel();
    Ok(())
}

/// One line of the live transcript.
pub fn describe(event: &Activity, paint: &Paint) -> String {
    match event {
        Activity::Appended { agent, text } => {
            format!(
                "{agent:<10} {} {}",
                paint.dim("✎"),
                paint.dim(&format!("+{text:?}"))
            )
        }
        Activity::Interrupted { agent, by } => format!(
            "{agent:<10} {} interrupted mid-draft by {} — re-reading",
            paint.yellow("⚡"),
            by.join(", ")
        ),
        Activity::Revised { agent, how } => format!("{agent:<10} {} {how}", paint.yellow("↺")),
        Activity::Held { agent, unseen } => format!(
            "{agent:<10} {} push held: {unseen} unseen message(s)",
            paint.yellow("⏸")
        ),
        Activity::Sent { agent, seq, text } => {
            format!(
                "{agent:<10} {} #{seq} {}",
                paint.bold("✉"),
                paint.bold(text)
            )
        }
        Activity::Stopped { agent, why } => format!("{agent:<10} ■ stopped: {why}"),
        Activity::Failed { agent, error } => {
            format!("{agent:<10} {} provider error: {error}", paint.yellow("!"))
        }
    }
}

/// ANSI styling, only when printing to a terminal.
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn new(on: bool) -> Self {
        Paint { on }
    }

    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn dim(&self, text: &str) -> String {
        self.wrap("2", text)
    }

    fn bold(&self, text: &str) -> String {
        self.wrap("1", text)
    }

    fn yellow(&self, text: &str) -> String {
        self.wrap("33", text)
    }
}
