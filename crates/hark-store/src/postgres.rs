//! The store for several nodes: PostgreSQL through a connection pool.
//!
//! The same contract as [`SqliteStore`](crate::SqliteStore): a [`Store::commit`] that returns `Ok`
//! is durable (PostgreSQL's commit flushes its WAL, `synchronous_commit` left on), and a batch is
//! applied whole or not at all.
//!
//! **Group commit.** `commit` calls go to one writer task per process, which drains whatever is
//! queued and applies it in one transaction: every statement of every job is sent at once
//! (tokio-postgres pipelines requests polled together), so a batch costs about one round trip and
//! one WAL flush, not one per push. If the batch fails (one job broke a constraint, which is a
//! bug upstream, or the connection dropped), it is rolled back and the jobs are applied again
//! one by one, each in its own savepoint, so that one bad job cannot take the others down.
//!
//! **Migrations** run at open inside a transaction holding a transaction-level advisory lock, so
//! that nodes starting at once against an empty database migrate it exactly once.
//!
//! **Failure.** Every error talking to the database is [`StoreError::Unavailable`] (the server
//! answers 503); the pool drops broken connections and opens new ones when the database is back.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use hark_core::protocol::{
    AttachmentRef, Effect, LogPrefix, Message, ParticipantName, ParticipantRecord,
};
use hark_core::time::Millis;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::agent_state;
use crate::{
    AgentParticipant, AgentState, Cluster, NewAttachment, NewConversation, NewParticipant,
    NodeIdentity, Owner, Store, StoreError, StoredAttachment, StoredConversation,
    StoredParticipant, TokenHash, TokenOwner, parse_kind, parse_name,
};

/// The schema, applied in order; the table `hark_schema` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE conversations (
        id            TEXT PRIMARY KEY,
        title         TEXT,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE participants (
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        name            TEXT NOT NULL,
        position        INTEGER NOT NULL,
        kind            TEXT NOT NULL,
        agent           TEXT,
        token_hash      BYTEA NOT NULL UNIQUE,
        cursor          BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (conversation_id, name)
    );
    CREATE INDEX participants_agents ON participants (conversation_id, position)
        WHERE agent IS NOT NULL;
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL,
        seq             BIGINT NOT NULL,
        sender          TEXT NOT NULL,
        text            TEXT NOT NULL,
        sent_at_ms      BIGINT NOT NULL,
        client_id       TEXT,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE UNIQUE INDEX messages_client_id
        ON messages (conversation_id, sender, client_id) WHERE client_id IS NOT NULL;
    CREATE TABLE draft_segments (
        conversation_id TEXT NOT NULL,
        participant     TEXT NOT NULL,
        position        BIGINT NOT NULL,
        text            TEXT NOT NULL,
        PRIMARY KEY (conversation_id, participant, position)
    );
    CREATE TABLE agent_state (
        conversation_id TEXT NOT NULL,
        participant     TEXT NOT NULL,
        epoch           BIGINT NOT NULL,
        answered_up_to  BIGINT NOT NULL,
        rhythm          TEXT NOT NULL,
        PRIMARY KEY (conversation_id, participant)
    );
"#,
    r#"
    ALTER TABLE participants ADD COLUMN display_name TEXT;
    CREATE TABLE attachments (
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        id              TEXT NOT NULL,
        mime            TEXT NOT NULL,
        data            BYTEA NOT NULL,
        created_at_ms   BIGINT NOT NULL,
        UNIQUE (conversation_id, id)
    );
    ALTER TABLE messages ADD COLUMN attachment_id TEXT;
"#,
    // Several nodes: who is alive, who runs which conversation, the secret they share, and
    // the fence every write of a node passes (see the module docs, "Ownership").
    r#"
    CREATE TABLE hark_nodes (
        node       TEXT PRIMARY KEY,
        url        TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE SEQUENCE hark_owner_tickets;
    CREATE TABLE hark_owners (
        conversation_id TEXT PRIMARY KEY REFERENCES conversations (id),
        node            TEXT NOT NULL,
        ticket          BIGINT NOT NULL DEFAULT nextval('hark_owner_tickets')
    );
    CREATE INDEX hark_owners_node ON hark_owners (node);
    CREATE TABLE hark_cluster (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        secret TEXT NOT NULL
    );
    CREATE FUNCTION hark_fence(c TEXT, me TEXT) RETURNS void LANGUAGE plpgsql AS $fence$
    BEGIN
        PERFORM 1 FROM hark_owners o JOIN hark_nodes n ON n.node = o.node
         WHERE o.conversation_id = c AND o.node = me AND n.expires_at > clock_timestamp()
           FOR SHARE OF o;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'this node does not own conversation %', c USING ERRCODE = 'HK001';
        END IF;
    END
    $fence$;
    CREATE FUNCTION hark_fence_all(cs TEXT[], me TEXT) RETURNS void LANGUAGE plpgsql AS $fence$
    DECLARE
        owned INTEGER;
    BEGIN
        PERFORM 1 FROM hark_owners o JOIN hark_nodes n ON n.node = o.node
         WHERE o.conversation_id = ANY (cs) AND o.node = me
           AND n.expires_at > clock_timestamp()
           FOR SHARE OF o;
        GET DIAGNOSTICS owned = ROW_COUNT;
        IF owned < cardinality(cs) THEN
            RAISE EXCEPTION 'this node does not own every conversation of the batch'
                USING ERRCODE = 'HK001';
        END IF;
    END
    $fence$;
"#,
];

/// The SQLSTATE `hark_fence` raises when a node writes to a conversation it does not own.
const NOT_OWNER: &str = "HK001";

/// The advisory lock key under which migrations run (any fixed number; "hark" in ASCII).
const MIGRATION_LOCK: i64 = 0x6861_726b;

/// Most jobs folded into one transaction; bounds the latency a single commit can add.
const MAX_JOBS_PER_COMMIT: usize = 1024;

/// Connections in the pool (the writer takes one per batch; reads take the rest).
const POOL_SIZE: usize = 16;

/// How long to wait for a connection, or to open one, before answering `Unavailable`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The [`Store`] for several nodes: PostgreSQL, chosen by a `postgres://` database URL.
pub struct PostgresStore {
    pool: Pool,
    writer: mpsc::UnboundedSender<Job>,
    /// This process as a node of a cluster: its writes are fenced by its ownership.
    node: Option<NodeIdentity>,
}

struct Job {
    conversation: String,
    effects: Vec<Effect>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db?options=…`, the libpq
    /// URL form) and migrates it if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::open(url, None).await
    }

    /// Connects as the node `node` of a cluster: besides [`Store`], the store is its
    /// [`Cluster`], and every commit of a conversation checks, in its own transaction, that this
    /// node still owns it (a node that lost it gets [`StoreError::Moved`], and nothing is written).
    pub async fn connect_node(url: &str, node: NodeIdentity) -> Result<Self, StoreError> {
        Self::open(url, Some(node)).await
    }

    async fn open(url: &str, node: Option<NodeIdentity>) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("hark");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the pool: {e}")))?;
        migrate(&pool).await?;
        let (writer, queue) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(
            pool.clone(),
            queue,
            node.as_ref().map(|n| n.id.clone()),
        ));
        Ok(PostgresStore { pool, writer, node })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        get(&self.pool).await
    }
}

async fn get(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("PostgreSQL: {e}")))
}

fn unavailable(e: tokio_postgres::Error) -> StoreError {
    // The server's own sentence, when it sent one ("db error" alone says nothing).
    match e.as_db_error() {
        Some(db) if db.code().code() == NOT_OWNER => StoreError::Moved(db.message().to_owned()),
        Some(db) => StoreError::Unavailable(format!("PostgreSQL: {}", db.message())),
        None => StoreError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

fn is_foreign_key_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = get(pool).await?;
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(unavailable)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS hark_schema (version INTEGER NOT NULL)")
        .await
        .map_err(unavailable)?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM hark_schema", &[])
        .await
        .map_err(unavailable)?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO hark_schema (version) VALUES (0)", &[])
                .await
                .map_err(unavailable)?;
            0
        }
    };
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {version}, newer than this hark ({})",
            MIGRATIONS.len()
        )));
    }
    for migration in MIGRATIONS.iter().skip(version as usize) {
        tx.batch_execute(migration).await.map_err(unavailable)?;
    }
    tx.execute(
        "UPDATE hark_schema SET version = $1",
        &[&(MIGRATIONS.len() as i32)],
    )
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)
}

/// One statement of a commit, with its parameters.
struct Statement {
    sql: &'static str,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

/// The statements that make one batch of effects durable; on a node, behind its fence.
fn statements(conversation: &str, effects: &[Effect], node: Option<&str>) -> Vec<Statement> {
    fn s(sql: &'static str, params: Vec<Box<dyn ToSql + Sync + Send>>) -> Statement {
        Statement { sql, params }
    }
    let id = || Box::new(conversation.to_owned()) as Box<dyn ToSql + Sync + Send>;
    let name =
        |p: &ParticipantName| Box::new(p.as_str().to_owned()) as Box<dyn ToSql + Sync + Send>;
    let fence = node.map(|node| {
        s(
            "SELECT hark_fence($1, $2)",
            vec![id(), Box::new(node.to_owned())],
        )
    });
    fence
        .into_iter()
        .chain(effects.iter().map(|effect| match effect {
            Effect::InsertMessage(m) => s(
                "INSERT INTO messages
                   (conversation_id, seq, sender, text, sent_at_ms, client_id, attachment_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                vec![
                    id(),
                    Box::new(m.seq as i64),
                    name(&m.from),
                    Box::new(m.text.clone()),
                    Box::new(m.sent_at.0 as i64),
                    Box::new(m.client_id.clone()),
                    Box::new(m.attachment.as_ref().map(|a| a.id.clone())),
                ],
            ),
            // Cursors only move forward, even if effects were ever replayed out of order.
            Effect::SetCursor {
                participant,
                cursor,
            } => s(
                "UPDATE participants SET cursor = GREATEST(cursor, $3)
                 WHERE conversation_id = $1 AND name = $2",
                vec![id(), name(participant), Box::new(*cursor as i64)],
            ),
            Effect::PushSegment { participant, text } => s(
                "INSERT INTO draft_segments (conversation_id, participant, position, text)
                 VALUES ($1, $2, (SELECT COALESCE(MAX(position), 0) + 1 FROM draft_segments
                                  WHERE conversation_id = $1 AND participant = $2), $3)",
                vec![id(), name(participant), Box::new(text.clone())],
            ),
            Effect::PopSegment { participant } => s(
                "DELETE FROM draft_segments WHERE conversation_id = $1 AND participant = $2
                 AND position = (SELECT MAX(position) FROM draft_segments
                                 WHERE conversation_id = $1 AND participant = $2)",
                vec![id(), name(participant)],
            ),
            Effect::ClearDraft { participant } => s(
                "DELETE FROM draft_segments WHERE conversation_id = $1 AND participant = $2",
                vec![id(), name(participant)],
            ),
        }))
        .collect()
}

/// Sends every statement at once (pipelined) and waits for all of them.
async fn execute_all(
    client: &impl GenericClient,
    statements: &[Statement],
) -> Result<(), tokio_postgres::Error> {
    // Prepared once per connection (the wrapper caches them), so a batch is one round trip.
    let mut prepared = Vec::with_capacity(statements.len());
    for statement in statements {
        prepared.push(client.prepare_cached(statement.sql).await?);
    }
    let futures = statements
        .iter()
        .zip(&prepared)
        .map(|(statement, prepared)| {
            client.execute_raw(
                prepared,
                statement
                    .params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync)),
            )
        });
    futures::future::try_join_all(futures).await.map(drop)
}

async fn run_writer(pool: Pool, mut queue: mpsc::UnboundedReceiver<Job>, node: Option<String>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = apply_batch(&pool, &batch, node.as_deref()).await;
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.done.send(result);
        }
    }
}

/// Applies the batch in one pipelined transaction; if that fails, job by job in savepoints.
async fn apply_batch(
    pool: &Pool,
    batch: &[Job],
    node: Option<&str>,
) -> Vec<Result<(), StoreError>> {
    let fail_all = |e: StoreError| {
        let message = e.to_string();
        (0..batch.len())
            .map(|_| Err(StoreError::Unavailable(message.clone())))
            .collect()
    };
    let mut client = match get(pool).await {
        Ok(client) => client,
        Err(e) => return fail_all(e),
    };
    // One fence for the whole batch (its conversations, each once), then every job's effects;
    // if anything fails, the jobs are replayed one by one, each behind its own fence.
    let fence = node.map(|node| {
        let mut conversations: Vec<String> =
            batch.iter().map(|job| job.conversation.clone()).collect();
        conversations.sort_unstable();
        conversations.dedup();
        Statement {
            sql: "SELECT hark_fence_all($1, $2)",
            params: vec![Box::new(conversations), Box::new(node.to_owned())],
        }
    });
    let all: Vec<Statement> = fence
        .into_iter()
        .chain(
            batch
                .iter()
                .flat_map(|job| statements(&job.conversation, &job.effects, None)),
        )
        .collect();
    let fast = async {
        let tx = client.transaction().await?;
        execute_all(&tx, &all).await?;
        tx.commit().await
    };
    match fast.await {
        Ok(()) => return batch.iter().map(|_| Ok(())).collect(),
        // A lone job failed as a whole (its fence included, if it is one).
        Err(e) if batch.len() == 1 => return vec![Err(unavailable(e))],
        Err(e) => tracing::debug!("a group commit failed, applying its jobs one by one: {e}"),
    }
    let slow = async {
        let mut tx = client.transaction().await?;
        let mut results = Vec::with_capacity(batch.len());
        for job in batch {
            let savepoint = tx.savepoint("job").await?;
            let statements = statements(&job.conversation, &job.effects, node);
            match execute_all(&savepoint, &statements).await {
                Ok(()) => {
                    savepoint.commit().await?;
                    results.push(Ok(()));
                }
                Err(e) => {
                    savepoint.rollback().await?;
                    results.push(Err(unavailable(e)));
                }
            }
        }
        tx.commit().await?;
        Ok::<_, tokio_postgres::Error>(results)
    };
    match slow.await {
        Ok(results) => results,
        Err(e) => fail_all(unavailable(e)),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // A real write (the schema version set to itself): a read-only database or standby
        // fails here, as every write would.
        let client = self.client().await?;
        client
            .execute("UPDATE hark_schema SET version = version", &[])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn create_conversation(&self, conversation: NewConversation) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute(
            "INSERT INTO conversations (id, title, created_at_ms) VALUES ($1, $2, $3)",
            &[
                &conversation.id,
                &conversation.title,
                &(conversation.created_at.0 as i64),
            ],
        )
        .await
        .map_err(unavailable)?;
        for participant in &conversation.participants {
            insert_participant(&tx, &conversation.id, participant).await?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn add_participant(
        &self,
        conversation: &str,
        participant: NewParticipant,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // Positions are counted: two nodes adding at once must not both take the same one.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE",
                &[&conversation],
            )
            .await
            .map_err(unavailable)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        insert_participant(&tx, conversation, &participant).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn load_conversation(&self, id: &str) -> Result<Option<StoredConversation>, StoreError> {
        Ok(self.load(id, None).await?.map(|(stored, _)| stored))
    }

    /// Reads only the newest `window` messages: a long conversation loads in the time and
    /// memory of its window.
    async fn load_conversation_window(
        &self,
        id: &str,
        window: usize,
    ) -> Result<Option<(StoredConversation, LogPrefix)>, StoreError> {
        self.load(id, Some(window)).await
    }

    async fn message_by_client_id(
        &self,
        conversation: &str,
        sender: &ParticipantName,
        client_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let client = self.client().await?;
        let seq: Option<i64> = client
            .query_opt(
                "SELECT seq FROM messages
                 WHERE conversation_id = $1 AND sender = $2 AND client_id = $3",
                &[&conversation, &sender.as_str(), &client_id],
            )
            .await
            .map_err(unavailable)?
            .map(|row| row.get(0));
        let Some(seq) = seq else {
            return Ok(None);
        };
        Ok(
            messages_after(&client, conversation, (seq as u64).saturating_sub(1), 1)
                .await?
                .into_iter()
                .next(),
        )
    }

    async fn conversation_exists(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT 1 FROM conversations WHERE id = $1", &[&id])
            .await
            .map_err(unavailable)?;
        Ok(row.is_some())
    }

    async fn find_token(&self, hash: TokenHash) -> Result<Option<TokenOwner>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT conversation_id, name, kind FROM participants WHERE token_hash = $1",
                &[&&hash[..]],
            )
            .await
            .map_err(unavailable)?;
        row.map(|row| {
            Ok(TokenOwner {
                conversation: row.get(0),
                name: parse_name(row.get(1))?,
                kind: parse_kind(row.get(2))?,
            })
        })
        .transpose()
    }

    async fn messages_after(
        &self,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let client = self.client().await?;
        messages_after(&client, conversation, after, limit).await
    }

    async fn commit(&self, conversation: &str, effects: Vec<Effect>) -> Result<(), StoreError> {
        if effects.is_empty() {
            return Ok(());
        }
        let (done, result) = oneshot::channel();
        self.writer
            .send(Job {
                conversation: conversation.to_owned(),
                effects,
                done,
            })
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    async fn agent_participants(&self) -> Result<Vec<AgentParticipant>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT conversation_id, name, agent, kind FROM participants
                 WHERE agent IS NOT NULL ORDER BY conversation_id, position",
                &[],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                Ok(AgentParticipant {
                    conversation: row.get(0),
                    name: parse_name(row.get(1))?,
                    agent: row.get(2),
                    kind: parse_kind(row.get(3))?,
                })
            })
            .collect()
    }

    async fn load_agent_state(
        &self,
        conversation: &str,
        participant: &ParticipantName,
    ) -> Result<Option<AgentState>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT epoch, answered_up_to, rhythm FROM agent_state
                 WHERE conversation_id = $1 AND participant = $2",
                &[&conversation, &participant.as_str()],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.map(|row| AgentState {
            epoch: row.get::<_, i64>(0).max(0) as u64,
            answered_up_to: row.get::<_, i64>(1).max(0) as u64,
            rhythm: agent_state::decode_rhythm(row.get(2)),
        }))
    }

    async fn save_agent_state(
        &self,
        conversation: &str,
        participant: &ParticipantName,
        state: AgentState,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO agent_state (conversation_id, participant, epoch, answered_up_to, rhythm)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (conversation_id, participant) DO UPDATE SET
                   epoch = GREATEST(agent_state.epoch, excluded.epoch),
                   answered_up_to = GREATEST(agent_state.answered_up_to, excluded.answered_up_to),
                   rhythm = excluded.rhythm",
                &[
                    &conversation,
                    &participant.as_str(),
                    &(state.epoch as i64),
                    &(state.answered_up_to as i64),
                    &agent_state::encode_rhythm(&state.rhythm),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_attachment(
        &self,
        conversation: &str,
        attachment: NewAttachment,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO attachments (conversation_id, id, mime, data, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &conversation,
                    &attachment.id,
                    &attachment.mime,
                    &attachment.data,
                    &(attachment.created_at.0 as i64),
                ],
            )
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound
                } else {
                    unavailable(e)
                }
            })?;
        Ok(())
    }

    async fn attachment(
        &self,
        conversation: &str,
        id: &str,
    ) -> Result<Option<StoredAttachment>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT mime, data FROM attachments WHERE conversation_id = $1 AND id = $2",
                &[&conversation, &id],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.map(|row| StoredAttachment {
            mime: row.get(0),
            data: row.get(1),
        }))
    }
}

async fn insert_participant(
    tx: &impl GenericClient,
    conversation: &str,
    participant: &NewParticipant,
) -> Result<(), StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO participants
               (conversation_id, name, position, kind, agent, token_hash, display_name)
             VALUES ($1, $2,
                     (SELECT COUNT(*) FROM participants WHERE conversation_id = $1)::INTEGER,
                     $3, $4, $5, $6)
             ON CONFLICT (conversation_id, name) DO NOTHING",
            &[
                &conversation,
                &participant.name.as_str(),
                &participant.kind.as_str(),
                &participant.agent,
                &&participant.token_hash[..],
                &participant.display_name,
            ],
        )
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound
            } else if is_unique_violation(&e) {
                // Only the token's digest can collide here: 256 random bits, so a bug.
                StoreError::Corrupt(format!("a token digest is already in use: {e}"))
            } else {
                unavailable(e)
            }
        })?;
    if inserted == 0 {
        return Err(StoreError::NameTaken);
    }
    Ok(())
}

async fn messages_after(
    client: &impl GenericClient,
    conversation: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT m.seq, m.sender, m.text, m.sent_at_ms, m.client_id,
                    m.attachment_id, a.mime, octet_length(a.data)::BIGINT
             FROM messages m LEFT JOIN attachments a
               ON a.conversation_id = m.conversation_id AND a.id = m.attachment_id
             WHERE m.conversation_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
            &[&conversation, &after, &limit],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|row| {
            let seq: i64 = row.get(0);
            let attachment_id: Option<String> = row.get(5);
            let attachment = match (attachment_id, row.get::<_, Option<String>>(6)) {
                (None, _) => None,
                (Some(id), Some(mime)) => Some(AttachmentRef {
                    id,
                    mime,
                    bytes: row.get::<_, Option<i64>>(7).unwrap_or(0).max(0) as u64,
                }),
                (Some(id), None) => {
                    return Err(StoreError::Corrupt(format!(
                        "message {seq} of {conversation} names attachment {id}, which is missing"
                    )));
                }
            };
            Ok(Message {
                seq: u64::try_from(seq)
                    .map_err(|_| StoreError::Corrupt(format!("negative seq in {conversation}")))?,
                id: format!("{conversation}-{seq}"),
                from: parse_name(row.get(1))?,
                text: row.get(2),
                sent_at: Millis(row.get::<_, i64>(3).max(0) as u64),
                client_id: row.get(4),
                attachment,
            })
        })
        .collect()
}

/// Milliseconds as a PostgreSQL interval parameter.
fn lease_ms(node: &NodeIdentity) -> f64 {
    node.lease.as_millis() as f64
}

impl PostgresStore {
    /// A conversation with its whole log (`window: None`) or only its newest `window` messages
    /// and the prefix the state machine needs of the rest, all in one snapshot.
    async fn load(
        &self,
        id: &str,
        window: Option<usize>,
    ) -> Result<Option<(StoredConversation, LogPrefix)>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the head, the participants, their drafts and the log.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(unavailable)?;
        let Some(head) = tx
            .query_opt(
                "SELECT title, created_at_ms FROM conversations WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let title: Option<String> = head.get(0);
        let created_at: i64 = head.get(1);
        let segments = tx
            .query(
                "SELECT participant, text FROM draft_segments WHERE conversation_id = $1
                 ORDER BY participant, position",
                &[&id],
            )
            .await
            .map_err(unavailable)?;
        let rows = tx
            .query(
                "SELECT name, kind, agent, cursor, display_name FROM participants
                 WHERE conversation_id = $1 ORDER BY position",
                &[&id],
            )
            .await
            .map_err(unavailable)?;
        let mut participants = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.get(0);
            let kind: String = row.get(1);
            let draft_segments = segments
                .iter()
                .filter(|s| s.get::<_, &str>(0) == name)
                .map(|s| s.get::<_, String>(1))
                .collect();
            participants.push(StoredParticipant {
                record: ParticipantRecord {
                    name: parse_name(&name)?,
                    kind: parse_kind(&kind)?,
                    cursor: u64::try_from(row.get::<_, i64>(3))
                        .map_err(|_| StoreError::Corrupt(format!("negative cursor in {id}")))?,
                    draft_segments,
                },
                agent: row.get(2),
                display_name: row.get(4),
            });
        }
        let prefix = match window {
            None => LogPrefix::default(),
            Some(window) => log_prefix(&tx, id, window).await?,
        };
        let messages = messages_after(&tx, id, prefix.seq, usize::MAX).await?;
        for (index, message) in messages.iter().enumerate() {
            if message.seq != prefix.seq + index as u64 + 1 {
                return Err(StoreError::Corrupt(format!(
                    "conversation {id} has a gap in its log before seq {}",
                    message.seq
                )));
            }
        }
        tx.commit().await.map_err(unavailable)?;
        let stored = StoredConversation {
            id: id.to_owned(),
            title,
            created_at: Millis(created_at.max(0) as u64),
            participants,
            messages,
        };
        Ok(Some((stored, prefix)))
    }

    fn identity(&self) -> Result<&NodeIdentity, StoreError> {
        self.node.as_ref().ok_or_else(|| {
            StoreError::Unavailable("this store was not opened as a node of a cluster".into())
        })
    }
}

#[async_trait]
impl Cluster for PostgresStore {
    fn node(&self) -> &str {
        self.node.as_ref().map_or("", |n| n.id.as_str())
    }

    async fn secret(&self, proposal: &str) -> Result<String, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO hark_cluster (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING",
                &[&proposal],
            )
            .await
            .map_err(unavailable)?;
        let row = client
            .query_one("SELECT secret FROM hark_cluster WHERE id = 1", &[])
            .await
            .map_err(unavailable)?;
        Ok(row.get(0))
    }

    async fn heartbeat(&self) -> Result<Vec<String>, StoreError> {
        let node = self.identity()?;
        let client = self.client().await?;
        // Both statements pipelined: one round trip.
        let lease = lease_ms(node);
        let renew_params: [&(dyn ToSql + Sync); 3] = [&node.id, &node.url, &lease];
        let owned_params: [&(dyn ToSql + Sync); 1] = [&node.id];
        let renew = client.execute(
            "INSERT INTO hark_nodes (node, url, expires_at)
             VALUES ($1, $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (node) DO UPDATE SET url = excluded.url, expires_at = excluded.expires_at",
            &renew_params,
        );
        let owned = client.query(
            "SELECT conversation_id FROM hark_owners WHERE node = $1",
            &owned_params,
        );
        let (renewed, owned) = futures::future::join(renew, owned).await;
        renewed.map_err(unavailable)?;
        Ok(owned
            .map_err(unavailable)?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    async fn acquire(&self, conversation: &str) -> Result<Owner, StoreError> {
        let node = self.identity()?;
        let client = self.client().await?;
        // A row left by a node whose lease ran out is taken over; the row lock this takes waits
        // for a commit of the old owner that holds its fence (FOR SHARE) to finish first.
        for _ in 0..3 {
            let mine = client
                .query_opt(
                    "INSERT INTO hark_owners AS o (conversation_id, node) VALUES ($1, $2)
                     ON CONFLICT (conversation_id)
                     DO UPDATE SET node = excluded.node, ticket = excluded.ticket
                     WHERE o.node = excluded.node OR NOT EXISTS (
                         SELECT 1 FROM hark_nodes n
                         WHERE n.node = o.node AND n.expires_at > now())
                     RETURNING ticket",
                    &[&conversation, &node.id],
                )
                .await;
            match mine {
                Ok(Some(row)) => return Ok(Owner::Me { ticket: row.get(0) }),
                Ok(None) => {}
                Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::NotFound),
                Err(e) => return Err(unavailable(e)),
            }
            let other = client
                .query_opt(
                    "SELECT o.node, n.url FROM hark_owners o JOIN hark_nodes n ON n.node = o.node
                     WHERE o.conversation_id = $1 AND n.expires_at > now()",
                    &[&conversation],
                )
                .await
                .map_err(unavailable)?;
            if let Some(row) = other {
                return Ok(Owner::Node {
                    node: row.get(0),
                    url: row.get(1),
                });
            }
            // The owner's lease ran out or it left between the two statements: try again.
        }
        Err(StoreError::Unavailable(format!(
            "the ownership of conversation {conversation} keeps changing"
        )))
    }

    async fn release(&self, conversation: &str, ticket: i64) -> Result<(), StoreError> {
        let node = self.identity()?;
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM hark_owners WHERE conversation_id = $1 AND node = $2 AND ticket = $3",
                &[&conversation, &node.id, &ticket],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn orphans(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT p.conversation_id FROM participants p
                 WHERE p.agent IS NOT NULL AND NOT EXISTS (
                     SELECT 1 FROM hark_owners o JOIN hark_nodes n ON n.node = o.node
                     WHERE o.conversation_id = p.conversation_id AND n.expires_at > now())
                 ORDER BY 1",
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn leave(&self) -> Result<(), StoreError> {
        let node = self.identity()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute("DELETE FROM hark_owners WHERE node = $1", &[&node.id])
            .await
            .map_err(unavailable)?;
        tx.execute("DELETE FROM hark_nodes WHERE node = $1", &[&node.id])
            .await
            .map_err(unavailable)?;
        // Nodes gone for a day without leaving (killed) are forgotten with their rows.
        tx.execute(
            "DELETE FROM hark_owners o USING hark_nodes n
             WHERE n.node = o.node AND n.expires_at < now() - interval '1 day'",
            &[],
        )
        .await
        .map_err(unavailable)?;
        tx.execute(
            "DELETE FROM hark_nodes WHERE expires_at < now() - interval '1 day'",
            &[],
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}

/// What lies before a conversation's newest `window` messages.
async fn log_prefix(
    client: &impl GenericClient,
    id: &str,
    window: usize,
) -> Result<LogPrefix, StoreError> {
    let last: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = $1",
            &[&id],
        )
        .await
        .map_err(unavailable)?
        .get(0);
    let seq = (last.max(0) as u64).saturating_sub(window as u64);
    if seq == 0 {
        return Ok(LogPrefix::default());
    }
    let from: String = client
        .query_opt(
            "SELECT sender FROM messages WHERE conversation_id = $1 AND seq = $2",
            &[&id, &(seq as i64)],
        )
        .await
        .map_err(unavailable)?
        .ok_or_else(|| StoreError::Corrupt(format!("conversation {id} has a gap at seq {seq}")))?
        .get(0);
    // Backwards along the primary key: it stops at the first message of someone else.
    let last_other: i64 = client
        .query_opt(
            "SELECT seq FROM messages WHERE conversation_id = $1 AND seq < $2 AND sender <> $3
             ORDER BY seq DESC LIMIT 1",
            &[&id, &(seq as i64), &from],
        )
        .await
        .map_err(unavailable)?
        .map_or(0, |row| row.get(0));
    Ok(LogPrefix {
        seq,
        last_from: Some(parse_name(&from)?),
        last_other_seq: last_other.max(0) as u64,
    })
}
