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
//! mcp_allowed_hosts = ["localhost", "127.0.0.1", "::1"]   # Host values /mcp answers; [] = any
//!
//! [limits]
//! max_append_chars = 2000
//! max_draft_chars = 20000
//! max_incoming = 100
//! max_check_ms = 60000
//! typing_timeout_ms = 8000
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
    /// Built-in agents (SPEC.md section 6); only their names are used so far.
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
    /// `Host` header values `/mcp` answers (DNS-rebinding guard); default loopback, `[]` any.
    pub mcp_allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_append_chars: Option<usize>,
    pub max_draft_chars: Option<usize>,
    pub max_incoming: Option<usize>,
    pub max_check_ms: Option<u64>,
    pub typing_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct AgentSection {
    pub name: String,
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a valid config", path.display()))
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
        limits
    }
}
