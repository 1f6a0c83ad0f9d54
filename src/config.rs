//! `hark.toml`: the one config file. Every key is optional; defaults are in SPEC.md.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:7878"
//! db = "hark.db"
//! admin_token = "…"          # or HARK_ADMIN_TOKEN in the environment, which wins
//! max_body_bytes = 1048576
//! rate_limit_per_s = 200      # 0 turns the limit off
//! rate_limit_burst = 400
//! sse_keepalive_ms = 15000    # keep-alive comments on event streams
//! header_read_timeout_ms = 10000
//! body_read_timeout_ms = 30000
//! allowed_hosts = ["chat.example.com"]   # Host names answered besides loopback; "*" = any
//!
//! [limits]
//! max_append_chars = 2000
//! max_draft_chars = 20000
//! max_incoming = 100
//! max_check_ms = 60000
//! typing_timeout_ms = 8000    # also the built-in agents' turn engine's lease length
//! max_client_id_chars = 128
//! log_window_messages = 1000  # a loaded conversation's newest messages kept in memory
//! max_connections = 4096      # lowered to what the descriptor limit allows
//! idle_timeout_ms = 60000     # an HTTP/2 connection without a request in flight
//! shutdown_drain_ms = 10000   # SIGTERM: time to finish, then what is left is closed
//! max_streams_per_participant = 8
//! max_mcp_sessions_per_participant = 8
//! max_mcp_sessions = 1024
//! mcp_session_idle_ms = 120000
//! max_participants = 256      # per conversation, added ones included
//! idle_conversation_ms = 60000   # unload a conversation idle this long; 0 keeps all loaded
//! max_attachment_bytes = 5242880   # a photo's bytes, after base64 decoding
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Built-in agents (SPEC.md section 6).
    #[serde(default)]
    pub agent: Vec<AgentSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub db: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub rate_limit_per_s: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    pub sse_keepalive_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    /// Host names answered besides the loopback names (DNS-rebinding guard); `"*"` any.
    pub allowed_hosts: Option<Vec<String>>,
    /// The older name of `allowed_hosts`, when only `/mcp` checked `Host`; `[]` meant any.
    pub mcp_allowed_hosts: Option<Vec<String>>,
}

/// `[cluster]`: several `hark serve` on one PostgreSQL database.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Where the other nodes reach this one (default: `http://` and the bound address, with
    /// 127.0.0.1 for an unspecified one).
    pub node_url: Option<String>,
    /// How long a silent node keeps its conversations (default 3000 ms).
    pub lease_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_append_chars: Option<usize>,
    pub max_draft_chars: Option<usize>,
    pub max_incoming: Option<usize>,
    pub max_check_ms: Option<u64>,
    pub typing_timeout_ms: Option<u64>,
    pub max_client_id_chars: Option<usize>,
    /// Messages of a loaded conversation's log kept in memory; older ones are read from the
    /// store when needed.
    pub log_window_messages: Option<usize>,
    pub max_connections: Option<usize>,
    pub idle_timeout_ms: Option<u64>,
    pub shutdown_drain_ms: Option<u64>,
    pub max_streams_per_participant: Option<usize>,
    pub max_mcp_sessions_per_participant: Option<usize>,
    pub max_mcp_sessions: Option<usize>,
    pub mcp_session_idle_ms: Option<u64>,
    pub max_participants: Option<usize>,
    /// A conversation with nothing going on is unloaded from memory after this long; 0 never.
    pub idle_conversation_ms: Option<u64>,
    pub max_attachment_bytes: Option<usize>,
}

/// One `[[agent]]`: a participant played by a model (SPEC.md section 6).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub name: String,
    /// "openai" (any OpenAI-compatible endpoint) or "anthropic".
    pub provider: String,
    pub base_url: Option<String>,
    pub model: String,
    /// The environment variable holding the API key; keys are never written in the config.
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub system_prompt: String,
    /// "reply" (turn engine and bubbles) or "actions" (the model drives the tools).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Mode "actions": append streamed sentences and interrupt on news.
    #[serde(default)]
    pub streaming: bool,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub error_notice: Option<bool>,
    pub max_messages_per_minute: Option<u32>,
    pub max_turns: Option<u32>,
    pub first_token_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_retries: Option<u32>,
    /// `[agent.turn]`: any knob of the turn engine by its name (`hark_core::turn::TurnConfig::KNOBS`,
    /// SPEC.md section 6.1); checked when the agent is built. Two knobs live elsewhere:
    /// `typing_timeout_ms` is `[limits]`' and `endpoint_model_timeout_ms` is
    /// `[agent.endpoint_model] timeout_ms`.
    #[serde(default)]
    pub turn: toml::Table,
    /// `[agent.endpoint_model]`: a small, fast model that tells the turn engine when the person
    /// is done (mode "reply").
    pub endpoint_model: Option<EndpointModelSection>,
}

/// `[agent.endpoint_model]`: the model asked `{"done": bool, "wait_ms": n}` after each message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointModelSection {
    /// "openai" (any OpenAI-compatible endpoint) or "anthropic".
    pub provider: String,
    pub base_url: Option<String>,
    pub model: String,
    /// The environment variable holding its API key.
    pub api_key_env: Option<String>,
    /// Its instructions; a default asks for the JSON verdict.
    pub prompt: Option<String>,
    /// How long a verdict may take before the rules decide (default 300).
    pub timeout_ms: Option<u64>,
}

/// What `[agent.endpoint_model] timeout_ms` is when left out: a small model answers a few tokens
/// in well under this, and the person waits this much longer only when it does not.
const DEFAULT_ENDPOINT_TIMEOUT_MS: u64 = 300;

/// Knobs of `[agent.turn]` that have their home elsewhere, and where.
const KNOBS_ELSEWHERE: [(&str, &str); 2] = [
    (
        "typing_timeout_ms",
        "it is the server's lease length for everyone: set [limits] typing_timeout_ms",
    ),
    (
        "endpoint_model_timeout_ms",
        "it is the endpoint model's: set [agent.endpoint_model] timeout_ms",
    ),
];

fn default_mode() -> String {
    "reply".to_owned()
}

/// A provider's config from its `provider`, `base_url` and `api_key_env`, the key read from the
/// environment.
fn provider_config(
    what: &str,
    provider: &str,
    base_url: Option<&str>,
    api_key_env: Option<&str>,
) -> anyhow::Result<hark_llm::ProviderConfig> {
    use hark_llm::{ProviderConfig, ProviderKind, Secret};

    let (kind, default_url) = match provider {
        "openai" => (ProviderKind::OpenAi, "https://api.openai.com/v1"),
        "anthropic" => (ProviderKind::Anthropic, "https://api.anthropic.com"),
        other => {
            anyhow::bail!("{what}: provider must be \"openai\" or \"anthropic\", not {other:?}")
        }
    };
    let api_key = match api_key_env {
        Some(var) => Some(Secret::new(std::env::var(var).with_context(|| {
            format!("{what}: the environment variable {var} (its API key) is not set")
        })?)),
        None => None,
    };
    Ok(ProviderConfig::new(
        kind,
        base_url.unwrap_or(default_url).to_owned(),
        api_key,
    ))
}

impl AgentSection {
    /// The agent's runtime config and providers, with their keys read from the environment.
    pub fn build(&self) -> anyhow::Result<hark_server::agents::AgentSpec> {
        use hark_server::agents::{AgentConfig, AgentMode, EndpointModel};

        let name = &self.name;
        let mut provider = provider_config(
            &format!("agent {name}"),
            &self.provider,
            self.base_url.as_deref(),
            self.api_key_env.as_deref(),
        )?;
        if let Some(v) = self.first_token_timeout_ms {
            provider.first_token_timeout_ms = v;
        }
        if let Some(v) = self.idle_timeout_ms {
            provider.idle_timeout_ms = v;
        }
        if let Some(v) = self.max_retries {
            provider.max_retries = v;
        }
        let mut config = AgentConfig::new(name.clone(), self.model.clone());
        config.system_prompt = self.system_prompt.clone();
        config.mode = match self.mode.as_str() {
            "reply" => AgentMode::Reply,
            "actions" => AgentMode::Actions {
                streaming: self.streaming,
            },
            other => {
                anyhow::bail!("agent {name}: mode must be \"reply\" or \"actions\", not {other:?}")
            }
        };
        if let Some(v) = self.max_tokens {
            config.max_tokens = v;
        }
        config.temperature = self.temperature;
        if let Some(v) = self.error_notice {
            config.error_notice = v;
        }
        if let Some(v) = self.max_messages_per_minute {
            config.max_messages_per_minute = v;
        }
        if let Some(v) = self.max_turns {
            config.max_turns = v;
        }
        for (key, value) in &self.turn {
            if let Some((_, home)) = KNOBS_ELSEWHERE.iter().find(|(knob, _)| knob == key) {
                anyhow::bail!("agent {name}: [agent.turn] {key} cannot be set here: {home}");
            }
            let value = knob_value(value).with_context(|| {
                format!("agent {name}: [agent.turn] {key} is not a plain value")
            })?;
            config
                .turn
                .set(key, &value)
                .with_context(|| format!("agent {name}: [agent.turn]"))?;
        }
        let endpoint = match &self.endpoint_model {
            Some(e) => {
                let provider = provider_config(
                    &format!("agent {name}: [agent.endpoint_model]"),
                    &e.provider,
                    e.base_url.as_deref(),
                    e.api_key_env.as_deref(),
                )?;
                Some(EndpointModel {
                    provider: hark_llm::provider(provider),
                    model: e.model.clone(),
                    prompt: e
                        .prompt
                        .clone()
                        .unwrap_or_else(|| EndpointModel::DEFAULT_PROMPT.to_owned()),
                    timeout_ms: e.timeout_ms.unwrap_or(DEFAULT_ENDPOINT_TIMEOUT_MS),
                })
            }
            None => None,
        };
        if endpoint.is_some() && config.mode != AgentMode::Reply {
            anyhow::bail!(
                "agent {name}: [agent.endpoint_model] is for mode \"reply\" (the turn engine asks it)"
            );
        }
        Ok(hark_server::agents::AgentSpec {
            config,
            provider: hark_llm::provider(provider),
            endpoint,
        })
    }
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a valid config", path.display()))
    }

    /// The server's resource caps: `[limits]`' keys beside the protocol's. A cap of 0 would
    /// refuse everything, so each is at least 1.
    pub fn caps(&self) -> hark_server::Caps {
        let mut caps = hark_server::Caps::default();
        let l = &self.limits;
        if let Some(v) = l.max_connections {
            caps.max_connections = v.max(1);
        }
        if let Some(v) = l.idle_timeout_ms {
            caps.idle_timeout_ms = v.max(1);
        }
        if let Some(v) = l.shutdown_drain_ms {
            caps.shutdown_drain_ms = v;
        }
        if let Some(v) = l.max_streams_per_participant {
            caps.max_streams_per_participant = v.max(1);
        }
        if let Some(v) = l.max_mcp_sessions_per_participant {
            caps.max_mcp_sessions_per_participant = v.max(1);
        }
        if let Some(v) = l.max_mcp_sessions {
            caps.max_mcp_sessions = v.max(1);
        }
        if let Some(v) = l.mcp_session_idle_ms {
            caps.mcp_session_idle_ms = v.max(1);
        }
        if let Some(v) = l.max_participants {
            caps.max_participants = v.max(1);
        }
        caps
    }

    /// Host names answered besides the loopback names: `allowed_hosts`, else the older
    /// `mcp_allowed_hosts` (whose `[]` meant any), else any on a public address (which needs an
    /// admin token) and none on a loopback one.
    pub fn allowed_hosts(&self, loopback: bool) -> Vec<String> {
        let any = || vec!["*".to_owned()];
        match (&self.server.allowed_hosts, &self.server.mcp_allowed_hosts) {
            (Some(hosts), _) => hosts.clone(),
            (None, Some(hosts)) if hosts.is_empty() => any(),
            (None, Some(hosts)) => hosts.clone(),
            (None, None) if loopback => Vec::new(),
            (None, None) => any(),
        }
    }

    pub fn limits(&self) -> hark_core::protocol::Limits {
        let mut limits = hark_core::protocol::Limits::default();
        let l = &self.limits;
        if let Some(v) = l.max_append_chars {
            limits.max_append_chars = v;
        }
        if let Some(v) = l.max_draft_chars {
            limits.max_draft_chars = v;
        }
        if let Some(v) = l.max_incoming {
            limits.max_incoming = v.max(1);
        }
        if let Some(v) = l.max_check_ms {
            limits.max_check_ms = v;
            limits.default_check_ms = limits.default_check_ms.min(v);
        }
        if let Some(v) = l.typing_timeout_ms {
            limits.typing_timeout_ms = v;
        }
        if let Some(v) = l.max_client_id_chars {
            limits.max_client_id_chars = v.max(1);
        }
        if let Some(v) = l.log_window_messages {
            limits.log_window_messages = v.max(1);
        }
        limits
    }
}

/// A TOML value as a turn engine knob's value: only plain scalars are knobs.
fn knob_value(value: &toml::Value) -> Option<hark_core::turn::KnobValue> {
    use hark_core::turn::KnobValue;
    match value {
        toml::Value::Boolean(v) => Some(KnobValue::Bool(*v)),
        toml::Value::Integer(v) => Some(KnobValue::Integer(*v)),
        toml::Value::Float(v) => Some(KnobValue::Float(*v)),
        toml::Value::String(v) => Some(KnobValue::Text(v.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(turn: &str) -> AgentSection {
        let text = format!(
            "[[agent]]\nname = \"coach\"\nprovider = \"openai\"\nmodel = \"m\"\n[agent.turn]\n{turn}"
        );
        let mut file: ConfigFile = toml::from_str(&text).expect("parses");
        file.agent.remove(0)
    }

    #[test]
    fn every_turn_knob_is_read_by_name() {
        let spec = agent(
            "window_complete_ms = 650\nendpoint = \"typing:2000\"\nmax_bubbles = 3.0\nuse_tempo = false",
        )
        .build()
        .expect("builds");
        let turn = &spec.config.turn;
        assert_eq!(turn.window_complete_ms, 650);
        assert_eq!(
            turn.endpoint,
            hark_core::turn::EndpointPolicy::Typing { window_ms: 2000 }
        );
        assert_eq!(turn.max_bubbles, 3);
        assert!(!turn.use_tempo);
    }

    #[test]
    fn bad_turn_knobs_are_refused_with_a_sentence() {
        for (turn, says) in [
            ("window_ms = 5", "\"window_ms\" is not a turn engine knob"),
            (
                "speculate = \"yes\"",
                "the knob speculate takes true or false",
            ),
            ("max_bubbles = [1]", "max_bubbles is not a plain value"),
        ] {
            let err = format!("{:#}", agent(turn).build().err().expect(turn));
            assert!(err.contains(says), "{turn}: {err}");
        }
    }

    #[test]
    fn knobs_with_another_home_are_refused_with_where_to_set_them() {
        for (turn, says) in [
            ("typing_timeout_ms = 5000", "set [limits] typing_timeout_ms"),
            (
                "endpoint_model_timeout_ms = 300",
                "set [agent.endpoint_model] timeout_ms",
            ),
        ] {
            let err = format!("{:#}", agent(turn).build().err().expect(turn));
            assert!(
                err.contains("cannot be set here") && err.contains(says),
                "{err}"
            );
        }
    }

    #[test]
    fn an_endpoint_model_is_read_with_its_defaults() {
        let text = "[[agent]]\nname = \"coach\"\nprovider = \"openai\"\nmodel = \"m\"\n\
                    [agent.endpoint_model]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                    model = \"small\"\n";
        let file: ConfigFile = toml::from_str(text).expect("parses");
        let spec = file.agent[0].build().expect("builds");
        let endpoint = spec.endpoint.expect("an endpoint model");
        assert_eq!(endpoint.model, "small");
        assert_eq!(endpoint.timeout_ms, DEFAULT_ENDPOINT_TIMEOUT_MS);
        assert!(endpoint.prompt.contains("\"done\""));
        let typo = format!("{text}timeout = 5\n");
        assert!(
            toml::from_str::<ConfigFile>(&typo).is_err(),
            "unknown keys are refused"
        );
        let actions = text.replace("model = \"m\"\n", "model = \"m\"\nmode = \"actions\"\n");
        let file: ConfigFile = toml::from_str(&actions).expect("parses");
        let err = format!("{:#}", file.agent[0].build().err().expect("refused"));
        assert!(err.contains("is for mode \"reply\""), "{err}");
    }
}
