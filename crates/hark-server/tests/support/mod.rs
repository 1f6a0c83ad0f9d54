//! Driver tests on a virtual clock: the whole server (service, conversation tasks, agents) on
//! tokio's paused time, an in-memory store and in-process scripted models, driven by a script of
//! timed lines and checked against a text trace (the style of hark-core's `*_script*.rs`).
//!
//! A script is a few lines (blank lines and `#` comments are skipped):
//!
//! - `config KEY=VALUE …`: the agent's settings. Any turn-engine knob by its name (`on`/`off` for
//!   booleans), and `mode=reply|actions`, `streaming`, `error_notice`, `max_messages_per_minute`,
//!   `max_turns`, `typing_timeout_ms` (the server's `[limits]`), `endpoint_timeout_ms` (gives the
//!   agent an endpoint model).
//! - `model: say "TEXT" after MS`, `model: call NAME {JSON} after MS`, `model: fail after MS`,
//!   `model: hang`: the model's next answer (queued in order). `endpoint: …` the same for the
//!   endpoint model.
//! - `t=TIME EVENT` (`TIME` like `0`, `1.2s`, `800ms`), run when the virtual clock reaches it:
//!   `pat: TEXT` (pat sends), `pat typing`, `pat stops typing`, `restart` (the process is killed
//!   and a new one starts on what was committed), `disk full` (the next commit fails),
//!   `observer leaves` (the trace stops following the conversation's events: nobody but the
//!   agent listens), `loaded` (traces how many conversations are loaded).
//!
//! After the last line the clock runs on for 60 s. The trace has one line per thing that
//! happened, stamped with the virtual time since the start: what each model was asked
//! (`model ← [U "…", A "…"]`), a stream dropped before it finished, every message (`[3] coach:
//! … (turn-1-0-r2)`), composing starting and stopping, and restarts.

#![allow(dead_code)]

pub mod memory;
pub mod model;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hark_core::protocol::{Action, Event, ParticipantKind, ParticipantName};
use hark_core::time::Millis;
use hark_core::turn::{KnobValue, TurnConfig};
use hark_server::agents::{Activity, AgentConfig, AgentMode, AgentSpec, EndpointModel, Supervisor};
use hark_server::app::{App, Participant};
use hark_server::{Clock, Server, ServerConfig};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use memory::MemoryStore;
use model::{Model, Reply};

/// The wall clock when a test starts: 2027-01-15T08:00:00Z, far from any edge.
pub const WALL_START: Millis = Millis(1_800_000_000_000);

/// The shared trace: lines stamped with virtual time since the start.
#[derive(Clone)]
pub struct Trace {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace {
            start: Instant::now(),
            lines: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn log(&self, line: impl Into<String>) {
        let stamp = seconds(self.elapsed_ms());
        self.lines
            .lock()
            .unwrap()
            .push(format!("{stamp:<8}{}", line.into()));
    }

    pub fn text(&self) -> String {
        let mut out = self.lines.lock().unwrap().join("\n");
        out.push('\n');
        out
    }
}

fn seconds(ms: u64) -> String {
    let s = format!("{}.{:03}", ms / 1000, ms % 1000);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
}

/// The agent's settings as the script gave them.
struct Setup {
    config: AgentConfig,
    endpoint_timeout_ms: Option<u64>,
    server: ServerConfig,
}

/// One running "process": a server over its own store handle, and the observer that traces
/// what pat sees.
struct Process {
    server: Server,
    shutdown: CancellationToken,
    observer: JoinHandle<()>,
}

/// The world a script runs in.
pub struct World {
    pub trace: Trace,
    pub store: MemoryStore,
    pub model: Arc<Model>,
    pub endpoint: Arc<Model>,
    setup: Setup,
    process: Option<Process>,
    pub conversation: String,
}

impl World {
    fn spec(&self) -> AgentSpec {
        let endpoint = self
            .setup
            .endpoint_timeout_ms
            .map(|timeout_ms| EndpointModel {
                provider: self.endpoint.clone(),
                model: "small".into(),
                prompt: EndpointModel::DEFAULT_PROMPT.into(),
                timeout_ms,
            });
        AgentSpec {
            config: self.setup.config.clone(),
            provider: self.model.clone(),
            endpoint,
        }
    }

    fn boot(&self, store: MemoryStore) -> (Server, CancellationToken) {
        let shutdown = CancellationToken::new();
        // A new process reads the wall clock when it starts.
        let clock = Clock::starting_at(WALL_START.saturating_add(self.trace.elapsed_ms()));
        let (activity, mut activities) = tokio::sync::mpsc::unbounded_channel();
        let trace = self.trace.clone();
        tokio::spawn(async move {
            while let Some(activity) = activities.recv().await {
                // Appends and sends show as messages and model requests already.
                let line = match activity {
                    Activity::Held { unseen, .. } => {
                        format!("coach's push is held ({unseen} unseen)")
                    }
                    Activity::Interrupted { by, .. } => format!("coach is interrupted by {by:?}"),
                    Activity::Revised { how, .. } => format!("coach revises: {how}"),
                    Activity::Stopped { why, .. } => format!("coach stops: {why}"),
                    Activity::Failed { error, .. } => format!("coach's model failed: {error}"),
                    Activity::Appended { .. } | Activity::Sent { .. } => continue,
                };
                trace.log(line);
            }
        });
        let server = Server::with_clock(
            Arc::new(store),
            self.setup.server.clone(),
            Arc::new(Supervisor::new(vec![self.spec()], Some(activity))),
            clock,
            shutdown.clone(),
        );
        (server, shutdown)
    }

    pub fn app(&self) -> &App {
        self.process.as_ref().expect("a process runs").server.app()
    }

    pub async fn pat(&self) -> Participant {
        let name = ParticipantName::parse("pat").unwrap();
        self.app()
            .participant_named(&self.conversation, &name)
            .await
            .expect("pat is a participant")
    }

    async fn observe(&self) -> JoinHandle<()> {
        let pat = self.pat().await;
        let mut live = self
            .app()
            .subscribe(&pat)
            .await
            .expect("the conversation answers")
            .live;
        let trace = self.trace.clone();
        tokio::spawn(async move {
            while let Ok(event) = live.recv().await {
                match event {
                    Event::Message(m) => {
                        let id = m
                            .client_id
                            .as_deref()
                            .map(|c| format!(" ({c})"))
                            .unwrap_or_default();
                        trace.log(format!("[{}] {}: {}{id}", m.seq, m.from, m.text));
                    }
                    Event::Composing {
                        participant,
                        composing,
                    } => {
                        let verb = if composing {
                            "composing"
                        } else {
                            "stops composing"
                        };
                        trace.log(format!("{participant} {verb}"));
                    }
                    Event::Receipt(_) => {}
                }
            }
        })
    }

    /// Starts the first process and creates the conversation: pat (a person) and coach (the
    /// agent).
    async fn start(&mut self) {
        let (server, shutdown) = self.boot(self.store.clone());
        let participants = vec![
            (
                ParticipantName::parse("pat").unwrap(),
                ParticipantKind::Human,
                None,
            ),
            (
                ParticipantName::parse("coach").unwrap(),
                ParticipantKind::Agent,
                Some("coach".to_owned()),
            ),
        ];
        let (id, _) = server
            .create_conversation(None, participants)
            .await
            .expect("created");
        self.conversation = id;
        self.process = Some(Process {
            server,
            shutdown,
            observer: tokio::spawn(async {}),
        });
        let observer = self.observe().await;
        self.process.as_mut().unwrap().observer = observer;
    }

    /// Kills the running process (nothing it does from now on reaches the store) and starts a
    /// new one on what was committed.
    pub async fn restart(&mut self) {
        self.trace.log("-- restart");
        let store = self.store.reopen();
        if let Some(old) = self.process.take() {
            old.observer.abort();
            old.shutdown.cancel();
        }
        let (server, shutdown) = self.boot(store);
        self.process = Some(Process {
            server,
            shutdown,
            observer: tokio::spawn(async {}),
        });
        let observer = self.observe().await;
        let process = self.process.as_mut().unwrap();
        process.observer = observer;
        process.server.start_agents().await.expect("agents start");
    }

    pub async fn act(&self, action: Action) {
        let pat = self.pat().await;
        if let Err(error) = self.app().act(&pat, action).await {
            self.trace.log(format!("pat's action failed: {error}"));
        }
    }
}

/// Runs `script` and returns its trace.
pub async fn run(script: &str) -> String {
    let trace = Trace::new();
    let mut setup = Setup {
        config: AgentConfig::new("coach", "stand-in"),
        endpoint_timeout_ms: None,
        server: ServerConfig::default(),
    };
    let (mut model_replies, mut endpoint_replies) = (Vec::new(), Vec::new());
    let mut timed = Vec::new();
    for line in script.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("config ") {
            for pair in rest.split_whitespace() {
                configure(&mut setup, pair);
            }
        } else if let Some(rest) = line.strip_prefix("model: ") {
            model_replies.push(reply(rest));
        } else if let Some(rest) = line.strip_prefix("endpoint: ") {
            endpoint_replies.push(reply(rest));
        } else if let Some(rest) = line.strip_prefix("t=") {
            let (time, event) = rest.split_once(char::is_whitespace).expect("t=TIME EVENT");
            timed.push((time_ms(time), event.trim().to_owned()));
        } else {
            panic!("unknown script line: {line}");
        }
    }
    // Tool loops are long: there, show each request's last message only.
    let last_only = matches!(setup.config.mode, AgentMode::Actions { .. });
    let model = Model::new("model", trace.clone(), last_only);
    for reply in model_replies {
        model.push(reply);
    }
    let endpoint = Model::new("endpoint", trace.clone(), false);
    for reply in endpoint_replies {
        endpoint.push(reply);
    }
    run_world(trace, setup, model, endpoint, timed).await
}

async fn run_world(
    trace: Trace,
    setup: Setup,
    model: Arc<Model>,
    endpoint: Arc<Model>,
    timed: Vec<(u64, String)>,
) -> String {
    let mut world = World {
        trace: trace.clone(),
        store: MemoryStore::new(),
        model,
        endpoint,
        setup,
        process: None,
        conversation: String::new(),
    };
    world.start().await;
    let start = trace.start;
    for (at, event) in timed {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        match event.as_str() {
            "restart" => world.restart().await,
            "disk full" => {
                trace.log("-- the disk is full for one commit");
                world.store.fail_next_commits(1);
            }
            "observer leaves" => {
                // Nobody but the agent listens any more.
                trace.log("-- the observer leaves");
                if let Some(process) = &world.process {
                    process.observer.abort();
                }
            }
            "loaded" => trace.log(format!(
                "-- conversations loaded: {}",
                world.app().loaded_conversations()
            )),
            "pat typing" => world.act(Action::Typing { typing: true }).await,
            "pat stops typing" => world.act(Action::Typing { typing: false }).await,
            other => {
                let text = other
                    .strip_prefix("pat: ")
                    .unwrap_or_else(|| panic!("unknown event: {other}"));
                world
                    .act(Action::Send {
                        text: text.to_owned(),
                        client_id: None,
                        attachment: None,
                    })
                    .await;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    if let Some(process) = world.process.take() {
        process.shutdown.cancel();
        process.observer.abort();
    }
    trace.text()
}

fn configure(setup: &mut Setup, pair: &str) {
    let (key, value) = pair.split_once('=').unwrap_or((pair, "on"));
    let number = || value.parse::<u64>().expect("a number");
    let flag = || match value {
        "on" | "true" => true,
        "off" | "false" => false,
        other => panic!("{key}: on or off, not {other}"),
    };
    let config = &mut setup.config;
    match key {
        "mode" => {
            config.mode = match value {
                "reply" => AgentMode::Reply,
                "actions" => AgentMode::Actions { streaming: false },
                other => panic!("mode {other}"),
            }
        }
        "streaming" => config.mode = AgentMode::Actions { streaming: flag() },
        "error_notice" => config.error_notice = flag(),
        "max_messages_per_minute" => config.max_messages_per_minute = number() as u32,
        "max_turns" => config.max_turns = number() as u32,
        "typing_timeout_ms" => setup.server.limits.typing_timeout_ms = number(),
        "endpoint_timeout_ms" => setup.endpoint_timeout_ms = Some(number()),
        knob => {
            let value = match value {
                "on" | "true" => KnobValue::Bool(true),
                "off" | "false" => KnobValue::Bool(false),
                v => match v.parse::<i64>() {
                    Ok(n) => KnobValue::Integer(n),
                    Err(_) => KnobValue::Text(v.to_owned()),
                },
            };
            TurnConfig::set(&mut config.turn, knob, &value).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// `say "TEXT" after MS`, `call NAME {JSON} after MS`, `fail after MS`, `hang`.
fn reply(spec: &str) -> Reply {
    if spec == "hang" {
        return Reply::Hang;
    }
    let after = |rest: &str| {
        time_ms(
            rest.trim()
                .strip_prefix("after ")
                .unwrap_or_else(|| panic!("… after MS: {rest}"))
                .trim(),
        )
    };
    if let Some(rest) = spec.strip_prefix("fail") {
        return Reply::Fail {
            after_ms: after(rest),
        };
    }
    if let Some(rest) = spec.strip_prefix("say ") {
        let (text, rest) = json_prefix(rest);
        return Reply::say(text.as_str().expect("a quoted text"), after(rest));
    }
    if let Some(rest) = spec.strip_prefix("call ") {
        let (name, rest) = rest.split_once(' ').expect("call NAME {JSON} after MS");
        let (arguments, rest) = json_prefix(rest);
        return Reply::call(name, arguments, after(rest));
    }
    panic!("unknown reply: {spec}");
}

/// The JSON value at the start of `text`, and what follows it.
fn json_prefix(text: &str) -> (Value, &str) {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let value = values.next().expect("a JSON value").expect("valid JSON");
    (value, &text[values.byte_offset()..])
}

/// `0`, `1.2s`, `800ms`.
pub fn time_ms(time: &str) -> u64 {
    if let Some(ms) = time.strip_suffix("ms") {
        return ms.parse().expect("ms");
    }
    if let Some(s) = time.strip_suffix('s') {
        return (s.parse::<f64>().expect("seconds") * 1000.0).round() as u64;
    }
    time.parse().expect("a time")
}
