//! Several nodes on one PostgreSQL database: which node runs a conversation, and how a node
//! keeps (or learns it lost) what it runs.
//!
//! - **Ownership.** A conversation is run by the node that holds its row in `hark_owners`, valid
//!   while that node's row in `hark_nodes` has not expired. A node loads a conversation only
//!   after acquiring it (`Registry::get`), and releases it when the conversation goes idle.
//! - **Lease.** [`Node::run`] renews this node's lease every third of its length and reads back
//!   what it owns. A conversation loaded here but no longer owned (taken over after this node
//!   was silent for a lease) is evicted at once; after a lease's length without a successful
//!   heartbeat, everything is. The database's fence (`hark_fence`, checked in every commit's
//!   transaction) refuses a write that slips through in between, so a stale node can answer
//!   from memory for at most a heartbeat but never store anything.
//! - **Agents.** A built-in agent runs where its conversation is owned: a node starts the agents
//!   of the conversations it acquires for them, and adopts agent conversations that no live node
//!   owns (their node died) on every heartbeat. The restart contract (an unanswered burst is
//!   answered once) is the same one a restart relies on: the agent's state is in the database.
//! - **Requests** for a conversation owned elsewhere are forwarded to its owner by the HTTP
//!   layer (`routes::forward`), authenticated by the secret the nodes of one database share.

use std::sync::Arc;
use std::time::Duration;

use hark_store::{Cluster, StoreError};

use super::auth::mint_token;

/// This process as one node of a cluster.
pub struct Node {
    cluster: Arc<dyn Cluster>,
    secret: String,
    lease: Duration,
}

impl Node {
    /// Joins the cluster of `cluster`'s database: learns the shared secret (proposing one if
    /// this is the first node ever) and takes a first lease.
    pub async fn join(cluster: Arc<dyn Cluster>, lease: Duration) -> Result<Self, StoreError> {
        let secret = cluster.secret(&mint_token()).await?;
        cluster.heartbeat().await?;
        Ok(Node {
            cluster,
            secret,
            lease,
        })
    }

    /// How long this node's lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The secret the nodes send each other with a forwarded request.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `value` is the shared secret (compared in constant time).
    pub fn vouches(&self, value: &[u8]) -> bool {
        let secret = self.secret.as_bytes();
        value.len() == secret.len()
            && value
                .iter()
                .zip(secret)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub(crate) fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.cluster
    }

    /// Leaves the cluster: this node's conversations are free for the others at once.
    pub async fn leave(&self) -> Result<(), StoreError> {
        self.cluster.leave().await
    }
}
