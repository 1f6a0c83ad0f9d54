//! The embedded store: one SQLite file in WAL mode.
//!
//! Writes go to one writer thread that drains whatever jobs are queued and applies them in one
//! transaction (group commit: one fsync for many pushes), each job inside its own savepoint so a
//! failing job cannot take the others down. Reads use a small pool of connections on the blocking
//! thread pool; WAL lets them run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use hark_core::protocol::{
    AttachmentRef, Effect, LogPrefix, Message, ParticipantName, ParticipantRecord,
};
use hark_core::time::Millis;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::agent_state;
use crate::{
    AgentParticipant, AgentState, NewAttachment, NewConversation, NewParticipant, Store,
    StoreError, StoredAttachment, StoredConversation, StoredParticipant, TokenHash, TokenOwner,
    parse_kind, parse_name,
};

/// The schema, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE conversations (
        id            TEXT PRIMARY KEY,
        title         TEXT,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE participants (
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        name            TEXT NOT NULL,
        position        INTEGER NOT NULL,
        kind            TEXT NOT NULL,
        agent           TEXT,
        token_hash      BLOB NOT NULL UNIQUE,
        cursor          INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (conversation_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        sender          TEXT NOT NULL,
        text            TEXT NOT NULL,
        sent_at_ms      INTEGER NOT NULL,
        client_id       TEXT,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX messages_client_id
        ON messages (conversation_id, sender, client_id) WHERE client_id IS NOT NULL;
    CREATE TABLE draft_segments (
        conversation_id TEXT NOT NULL,
        participant     TEXT NOT NULL,
        position        INTEGER NOT NULL,
        text            TEXT NOT NULL,
        PRIMARY KEY (conversation_id, participant, position)
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE agent_state (
        conversation_id TEXT NOT NULL,
        participant     TEXT NOT NULL,
        epoch           INTEGER NOT NULL,
        answered_up_to  INTEGER NOT NULL,
        rhythm          TEXT NOT NULL,
        PRIMARY KEY (conversation_id, participant)
    ) WITHOUT ROWID;
"#,
    r#"
    ALTER TABLE participants ADD COLUMN display_name TEXT;
"#,
    r#"
    CREATE TABLE attachments (
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        id              TEXT NOT NULL,
        mime            TEXT NOT NULL,
        data            BLOB NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        UNIQUE (conversation_id, id)
    );
"#,
    r#"
    ALTER TABLE messages ADD COLUMN attachment_id TEXT;
"#,
];

/// Most jobs folded into one transaction; bounds the latency a single commit can add.
const MAX_JOBS_PER_COMMIT: usize = 2048;
const READ_CONNECTIONS: usize = 4;

/// The embedded [`Store`]: one SQLite file in WAL mode, one writer thread doing group commit.
pub struct SqliteStore {
    writer: mpsc::UnboundedSender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

enum Write {
    Create(NewConversation),
    AddParticipant(String, NewParticipant),
    Commit(String, Vec<Effect>),
    AgentState(String, ParticipantName, AgentState),
    /// A write that changes nothing but still reaches the disk: whether the store can write.
    Probe,
    Attachment(String, NewAttachment),
}

struct Job {
    write: Write,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut writer = open_connection(&path)?;
        migrate(&mut writer)?;
        // SQLite opens a file it may not write read-only, and every write would then fail:
        // one write now says so at start.
        probe(&writer).map_err(|e| {
            StoreError::Unavailable(format!(
                "the database file {} cannot be written (read-only?): {e}",
                path.display()
            ))
        })?;
        let mut readers = Vec::with_capacity(READ_CONNECTIONS);
        for _ in 0..READ_CONNECTIONS {
            readers.push(open_connection(&path)?);
        }
        let (jobs, queue) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name("hark-sqlite-writer".into())
            .spawn(move || run_writer(writer, queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            writer: jobs,
            readers: Arc::new(Mutex::new(readers)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write(&self, write: Write) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        self.writer
            .send(Job { write, done })
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    /// Runs `read` on a pooled connection on the blocking thread pool.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().map_err(|_| poisoned())?.pop();
            let connection = match pooled {
                Some(connection) => connection,
                None => open_connection(&path)?,
            };
            let result = read(&connection);
            let mut pool = readers.lock().map_err(|_| poisoned())?;
            if pool.len() < READ_CONNECTIONS {
                pool.push(connection);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("a read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// Writes through the writer thread and commits (with whatever else is queued): healthy
    /// means a write reaches the disk now, not only that a read answers.
    async fn ping(&self) -> Result<(), StoreError> {
        self.write(Write::Probe).await
    }

    async fn create_conversation(&self, conversation: NewConversation) -> Result<(), StoreError> {
        self.write(Write::Create(conversation)).await
    }

    async fn add_participant(
        &self,
        conversation: &str,
        participant: NewParticipant,
    ) -> Result<(), StoreError> {
        self.write(Write::AddParticipant(conversation.to_owned(), participant))
            .await
    }

    async fn load_conversation(&self, id: &str) -> Result<Option<StoredConversation>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| Ok(load_conversation(c, &id, None)?.map(|(stored, _)| stored)))
            .await
    }

    /// Reads only the newest `window` messages: a long conversation loads in the time and
    /// memory of its window.
    async fn load_conversation_window(
        &self,
        id: &str,
        window: usize,
    ) -> Result<Option<(StoredConversation, LogPrefix)>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| load_conversation(c, &id, Some(window)))
            .await
    }

    async fn message_by_client_id(
        &self,
        conversation: &str,
        sender: &ParticipantName,
        client_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let (conversation, sender, client_id) = (
            conversation.to_owned(),
            sender.as_str().to_owned(),
            client_id.to_owned(),
        );
        self.read(move |c| {
            let seq = c
                .prepare_cached(
                    "SELECT seq FROM messages
                     WHERE conversation_id = ?1 AND sender = ?2 AND client_id = ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![conversation, sender, client_id], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()
                })
                .map_err(unavailable)?;
            let Some(seq) = seq else {
                return Ok(None);
            };
            Ok(messages_after(c, &conversation, seq as u64 - 1, 1)?
                .into_iter()
                .next())
        })
        .await
    }

    async fn conversation_exists(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")
                .and_then(|mut s| s.exists([id]))
                .map_err(unavailable)
        })
        .await
    }

    async fn find_token(&self, hash: TokenHash) -> Result<Option<TokenOwner>, StoreError> {
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT conversation_id, name, kind FROM participants WHERE token_hash = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([&hash[..]], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })
                    .optional()
                })
                .map_err(unavailable)?;
            row.map(|(conversation, name, kind)| {
                Ok(TokenOwner {
                    conversation,
                    name: parse_name(&name)?,
                    kind: parse_kind(&kind)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn messages_after(
        &self,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let conversation = conversation.to_owned();
        self.read(move |c| messages_after(c, &conversation, after, limit))
            .await
    }

    async fn commit(&self, conversation: &str, effects: Vec<Effect>) -> Result<(), StoreError> {
        if effects.is_empty() {
            return Ok(());
        }
        self.write(Write::Commit(conversation.to_owned(), effects))
            .await
    }

    async fn agent_participants(&self) -> Result<Vec<AgentParticipant>, StoreError> {
        self.read(|c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT conversation_id, name, agent, kind FROM participants
                     WHERE agent IS NOT NULL ORDER BY conversation_id, position",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (conversation, name, agent, kind) = row.map_err(unavailable)?;
                out.push(AgentParticipant {
                    conversation,
                    name: parse_name(&name)?,
                    kind: parse_kind(&kind)?,
                    agent,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn load_agent_state(
        &self,
        conversation: &str,
        participant: &ParticipantName,
    ) -> Result<Option<AgentState>, StoreError> {
        let (conversation, participant) = (conversation.to_owned(), participant.clone());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT epoch, answered_up_to, rhythm FROM agent_state
                 WHERE conversation_id = ?1 AND participant = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![conversation, participant.as_str()], |r| {
                    Ok(AgentState {
                        epoch: r.get::<_, i64>(0)? as u64,
                        answered_up_to: r.get::<_, i64>(1)? as u64,
                        rhythm: agent_state::decode_rhythm(&r.get::<_, String>(2)?),
                    })
                })
                .optional()
            })
            .map_err(unavailable)
        })
        .await
    }

    async fn save_agent_state(
        &self,
        conversation: &str,
        participant: &ParticipantName,
        state: AgentState,
    ) -> Result<(), StoreError> {
        self.write(Write::AgentState(
            conversation.to_owned(),
            participant.clone(),
            state,
        ))
        .await
    }

    async fn put_attachment(
        &self,
        conversation: &str,
        attachment: NewAttachment,
    ) -> Result<(), StoreError> {
        self.write(Write::Attachment(conversation.to_owned(), attachment))
            .await
    }

    async fn attachment(
        &self,
        conversation: &str,
        id: &str,
    ) -> Result<Option<StoredAttachment>, StoreError> {
        let (conversation, id) = (conversation.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT mime, data FROM attachments WHERE conversation_id = ?1 AND id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![conversation, id], |r| {
                    Ok(StoredAttachment {
                        mime: r.get(0)?,
                        data: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(unavailable)
        })
        .await
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    // FULL makes every commit fsync the WAL: an acknowledged push survives power loss, not only
    // a killed process. Group commit keeps the cost to one fsync per batch.
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(unavailable)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {version}, newer than this hark ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = connection.transaction().map_err(unavailable)?;
        tx.execute_batch(migration).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

fn run_writer(mut connection: Connection, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = apply_batch(&mut connection, &batch);
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.done.send(result);
        }
    }
}

/// Applies every job in one transaction, each in a savepoint; commit failure fails them all.
fn apply_batch(connection: &mut Connection, batch: &[Job]) -> Vec<Result<(), StoreError>> {
    let fail_all = |e: rusqlite::Error| {
        let message = e.to_string();
        (0..batch.len())
            .map(|_| Err(StoreError::Unavailable(message.clone())))
            .collect()
    };
    let mut tx = match connection.transaction() {
        Ok(tx) => tx,
        Err(e) => return fail_all(e),
    };
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let result = (|| {
            let savepoint = tx.savepoint().map_err(unavailable)?;
            apply_write(&savepoint, &job.write)?;
            savepoint.commit().map_err(unavailable)
        })();
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(e),
    }
}

fn apply_write(tx: &Connection, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Create(conversation) => {
            tx.execute(
                "INSERT INTO conversations (id, title, created_at_ms) VALUES (?1, ?2, ?3)",
                params![
                    conversation.id,
                    conversation.title,
                    conversation.created_at.0 as i64
                ],
            )
            .map_err(unavailable)?;
            for participant in &conversation.participants {
                insert_participant(tx, &conversation.id, participant)?;
            }
            Ok(())
        }
        Write::AddParticipant(conversation, participant) => {
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM conversations WHERE id = ?1",
                    [conversation],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            insert_participant(tx, conversation, participant)
        }
        Write::Commit(conversation, effects) => {
            for effect in effects {
                apply_effect(tx, conversation, effect)?;
            }
            Ok(())
        }
        Write::AgentState(conversation, participant, state) => tx
            .prepare_cached(
                "INSERT INTO agent_state (conversation_id, participant, epoch, answered_up_to, rhythm)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (conversation_id, participant) DO UPDATE SET
                   epoch = MAX(epoch, excluded.epoch),
                   answered_up_to = MAX(answered_up_to, excluded.answered_up_to),
                   rhythm = excluded.rhythm",
            )
            .and_then(|mut s| {
                s.execute(params![
                    conversation,
                    participant.as_str(),
                    state.epoch as i64,
                    state.answered_up_to as i64,
                    agent_state::encode_rhythm(&state.rhythm)
                ])
            })
            .map(drop)
            .map_err(unavailable),
        // Setting the schema version to itself rewrites the database header, so the commit
        // really goes to the disk: a read-only file or a full disk fails here.
        Write::Probe => probe(tx).map_err(unavailable),
        Write::Attachment(conversation, attachment) => {
            let exists = tx
                .prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")
                .and_then(|mut s| s.exists([conversation]))
                .map_err(unavailable)?;
            if !exists {
                return Err(StoreError::NotFound);
            }
            tx.prepare_cached(
                "INSERT INTO attachments (conversation_id, id, mime, data, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    conversation,
                    attachment.id,
                    attachment.mime,
                    attachment.data,
                    attachment.created_at.0 as i64
                ])
            })
            .map(drop)
            .map_err(unavailable)
        }
    }
}

/// Sets the schema version to itself: this rewrites the database header, so its commit really
/// goes to the disk, and a read-only file or a full disk fails it.
fn probe(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))
}

fn insert_participant(
    tx: &Connection,
    conversation: &str,
    participant: &NewParticipant,
) -> Result<(), StoreError> {
    let taken: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM participants WHERE conversation_id = ?1 AND name = ?2",
            params![conversation, participant.name.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    if taken.is_some() {
        return Err(StoreError::NameTaken);
    }
    tx.execute(
        "INSERT INTO participants
           (conversation_id, name, position, kind, agent, token_hash, display_name)
         VALUES (?1, ?2,
                 (SELECT COUNT(*) FROM participants WHERE conversation_id = ?1),
                 ?3, ?4, ?5, ?6)",
        params![
            conversation,
            participant.name.as_str(),
            participant.kind.as_str(),
            participant.agent,
            &participant.token_hash[..],
            participant.display_name
        ],
    )
    .map_err(unavailable)?;
    Ok(())
}

fn apply_effect(tx: &Connection, conversation: &str, effect: &Effect) -> Result<(), StoreError> {
    let result = match effect {
        Effect::InsertMessage(m) => tx
            .prepare_cached(
                "INSERT INTO messages
                   (conversation_id, seq, sender, text, sent_at_ms, client_id, attachment_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    conversation,
                    m.seq as i64,
                    m.from.as_str(),
                    m.text,
                    m.sent_at.0 as i64,
                    m.client_id,
                    m.attachment.as_ref().map(|a| &a.id)
                ])
            }),
        // Cursors only move forward, even if effects were ever replayed out of order.
        Effect::SetCursor {
            participant,
            cursor,
        } => tx
            .prepare_cached(
                "UPDATE participants SET cursor = MAX(cursor, ?3)
                 WHERE conversation_id = ?1 AND name = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![conversation, participant.as_str(), *cursor as i64])
            }),
        Effect::PushSegment { participant, text } => tx
            .prepare_cached(
                "INSERT INTO draft_segments (conversation_id, participant, position, text)
                 VALUES (?1, ?2, (SELECT COALESCE(MAX(position), 0) + 1 FROM draft_segments
                                  WHERE conversation_id = ?1 AND participant = ?2), ?3)",
            )
            .and_then(|mut s| s.execute(params![conversation, participant.as_str(), text])),
        Effect::PopSegment { participant } => tx
            .prepare_cached(
                "DELETE FROM draft_segments WHERE conversation_id = ?1 AND participant = ?2
                 AND position = (SELECT MAX(position) FROM draft_segments
                                 WHERE conversation_id = ?1 AND participant = ?2)",
            )
            .and_then(|mut s| s.execute(params![conversation, participant.as_str()])),
        Effect::ClearDraft { participant } => tx
            .prepare_cached(
                "DELETE FROM draft_segments WHERE conversation_id = ?1 AND participant = ?2",
            )
            .and_then(|mut s| s.execute(params![conversation, participant.as_str()])),
    };
    result.map(drop).map_err(unavailable)
}

/// A conversation with its whole log (`window: None`) or only its newest `window` messages.
fn load_conversation(
    c: &Connection,
    id: &str,
    window: Option<usize>,
) -> Result<Option<(StoredConversation, LogPrefix)>, StoreError> {
    let head = c
        .query_row(
            "SELECT title, created_at_ms FROM conversations WHERE id = ?1",
            [id],
            |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    let Some((title, created_at)) = head else {
        return Ok(None);
    };
    let mut participants = Vec::new();
    let mut statement = c
        .prepare_cached(
            "SELECT name, kind, agent, cursor, display_name FROM participants
             WHERE conversation_id = ?1 ORDER BY position",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(unavailable)?;
    for row in rows {
        let (name, kind, agent, cursor, display_name) = row.map_err(unavailable)?;
        let draft_segments = c
            .prepare_cached(
                "SELECT text FROM draft_segments WHERE conversation_id = ?1 AND participant = ?2
                 ORDER BY position",
            )
            .and_then(|mut s| {
                s.query_map(params![id, name], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(unavailable)?;
        participants.push(StoredParticipant {
            record: ParticipantRecord {
                name: parse_name(&name)?,
                kind: parse_kind(&kind)?,
                cursor: cursor as u64,
                draft_segments,
            },
            agent,
            display_name,
        });
    }
    let prefix = match window {
        None => LogPrefix::default(),
        Some(window) => log_prefix(c, id, window)?,
    };
    let messages = messages_after(c, id, prefix.seq, usize::MAX)?;
    for (index, message) in messages.iter().enumerate() {
        if message.seq != prefix.seq + index as u64 + 1 {
            return Err(StoreError::Corrupt(format!(
                "conversation {id} has a gap in its log before seq {}",
                message.seq
            )));
        }
    }
    let stored = StoredConversation {
        id: id.to_owned(),
        title,
        created_at: Millis(created_at as u64),
        participants,
        messages,
    };
    Ok(Some((stored, prefix)))
}

/// What lies before a conversation's newest `window` messages.
fn log_prefix(c: &Connection, id: &str, window: usize) -> Result<LogPrefix, StoreError> {
    let last: i64 = c
        .prepare_cached(
            "SELECT seq FROM messages WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(unavailable)?
        .unwrap_or(0);
    let seq = (last as u64).saturating_sub(window as u64);
    if seq == 0 {
        return Ok(LogPrefix::default());
    }
    let from: String = c
        .prepare_cached("SELECT sender FROM messages WHERE conversation_id = ?1 AND seq = ?2")
        .and_then(|mut s| s.query_row(params![id, seq as i64], |r| r.get(0)))
        .optional()
        .map_err(unavailable)?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "conversation {id} has a gap in its log at seq {seq}"
            ))
        })?;
    // Read backwards along the primary key: it stops at the first message of someone else.
    let last_other: i64 = c
        .prepare_cached(
            "SELECT seq FROM messages WHERE conversation_id = ?1 AND seq < ?2 AND sender <> ?3
             ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![id, seq as i64, from], |r| r.get(0))
                .optional()
        })
        .map_err(unavailable)?
        .unwrap_or(0);
    Ok(LogPrefix {
        seq,
        last_from: Some(parse_name(&from)?),
        last_other_seq: last_other as u64,
    })
}

fn messages_after(
    c: &Connection,
    conversation: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let mut statement = c
        .prepare_cached(
            "SELECT m.seq, m.sender, m.text, m.sent_at_ms, m.client_id,
                    m.attachment_id, a.mime, length(a.data)
             FROM messages m LEFT JOIN attachments a
               ON a.conversation_id = m.conversation_id AND a.id = m.attachment_id
             WHERE m.conversation_id = ?1 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map(params![conversation, after, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                (
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                ),
            ))
        })
        .map_err(unavailable)?;
    let mut messages = Vec::new();
    for row in rows {
        let (seq, from, text, sent_at, client_id, attachment) = row.map_err(unavailable)?;
        let attachment = match attachment {
            (None, _, _) => None,
            (Some(id), Some(mime), Some(bytes)) => Some(AttachmentRef {
                id,
                mime,
                bytes: bytes as u64,
            }),
            (Some(id), _, _) => {
                return Err(StoreError::Corrupt(format!(
                    "message {seq} of {conversation} names attachment {id}, which is missing"
                )));
            }
        };
        messages.push(Message {
            seq: seq as u64,
            id: format!("{conversation}-{seq}"),
            from: parse_name(&from)?,
            text,
            sent_at: Millis(sent_at as u64),
            client_id,
            attachment,
        });
    }
    Ok(messages)
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("the connection pool is poisoned".into())
}

#[cfg(test)]
mod tests {
    use hark_core::protocol::ParticipantKind;

    use super::*;

    fn participant(name: &str, hash: u8) -> NewParticipant {
        NewParticipant {
            name: ParticipantName::parse(name).unwrap(),
            kind: ParticipantKind::Human,
            agent: None,
            display_name: None,
            token_hash: [hash; 32],
        }
    }

    #[tokio::test]
    async fn display_names_round_trip_and_a_version_2_file_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            // A file written before display names existed.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(MIGRATIONS[1]).unwrap();
            c.execute_batch(
                "PRAGMA user_version = 2;
                 INSERT INTO conversations (id, title, created_at_ms) VALUES ('c', NULL, 1);
                 INSERT INTO participants (conversation_id, name, position, kind, token_hash)
                 VALUES ('c', 'old', 0, 'human', x'01');",
            )
            .unwrap();
        }
        {
            let store = SqliteStore::open(&path).unwrap();
            let mut zoe = participant("zoe", 2);
            zoe.display_name = Some("Zoë سارا".into());
            store.add_participant("c", zoe).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let loaded = store.load_conversation("c").await.unwrap().unwrap();
        let names: Vec<_> = loaded
            .participants
            .iter()
            .map(|p| (p.record.name.as_str().to_owned(), p.display_name.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("old".to_owned(), None),
                ("zoe".to_owned(), Some("Zoë سارا".to_owned()))
            ]
        );
    }
}
