//! [`Supervisor`]: starts one task per (conversation, agent participant) and keeps it single.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::Instrument;

use super::config::{Activity, AgentMode, AgentSpec};
use super::{actions, reply};
use crate::app::{AgentContext, AgentInfo, AgentLauncher};

/// Starts and tracks the agent tasks of this server: the service's [`AgentLauncher`].
pub struct Supervisor {
    specs: BTreeMap<String, Arc<AgentSpec>>,
    /// The (conversation, participant) pairs whose agent task runs: a pair leaves when its task
    /// ends (its conversation moved to another node, say), so it may start again later.
    running: Arc<Mutex<BTreeSet<(String, String)>>>,
    activity: Option<mpsc::UnboundedSender<Activity>>,
}

impl Supervisor {
    /// The agents `specs`; `activity` receives what they do (for `hark talk`).
    pub fn new(specs: Vec<AgentSpec>, activity: Option<mpsc::UnboundedSender<Activity>>) -> Self {
        Supervisor {
            specs: specs
                .into_iter()
                .map(|s| (s.config.name.clone(), Arc::new(s)))
                .collect(),
            running: Arc::default(),
            activity,
        }
    }
}

impl AgentLauncher for Supervisor {
    fn knows(&self, agent: &str) -> bool {
        self.specs.contains_key(agent)
    }

    fn agents(&self) -> Vec<AgentInfo> {
        self.specs
            .iter()
            .map(|(name, spec)| AgentInfo {
                name: name.clone(),
                mode: match spec.config.mode {
                    AgentMode::Reply => "reply",
                    AgentMode::Actions { .. } => "actions",
                },
            })
            .collect()
    }

    fn launch(&self, context: AgentContext, agent: &str) {
        let Some(spec) = self.specs.get(agent).cloned() else {
            tracing::warn!(
                agent,
                "a participant names an agent this server does not define"
            );
            return;
        };
        let me = context.me();
        let key = (me.conversation().to_owned(), me.name().as_str().to_owned());
        if !self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let running = Arc::clone(&self.running);
        let span = tracing::info_span!(
            "agent",
            conversation = %me.conversation(),
            participant = %me.name(),
            agent = %spec.config.name
        );
        let activity = self.activity.clone();
        let task = async move {
            match spec.config.mode {
                AgentMode::Reply => reply::run(context, spec).await,
                AgentMode::Actions { streaming } => {
                    actions::run(context, spec, streaming, activity).await
                }
            }
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        };
        tokio::spawn(task.instrument(span));
    }
}
