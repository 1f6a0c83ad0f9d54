//! A [`Store`] in memory, for driver tests on tokio's paused clock: every call completes without
//! leaving the runtime (no writer thread, no blocking pool), so virtual time never jumps while a
//! commit is in flight and a run is deterministic. It keeps the SQLite store's rules (unique
//! names, unique `client_id` per sender, cursors that never move back, all-or-nothing batches).
//!
//! [`MemoryStore::reopen`] is a crash: the old handle fails every call from then on, as if its
//! process had been killed, and the new one sees exactly what was committed.
//! [`MemoryStore::fail_next_commits`] makes commits fail like a full disk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hark_core::protocol::{Effect, Message, ParticipantRecord};
use hark_core::time::Millis;
use hark_store::{
    AgentParticipant, AgentState, NewAttachment, NewConversation, NewParticipant, Store,
    StoreError, StoredAttachment, StoredConversation, StoredParticipant, TokenHash, TokenOwner,
};

#[derive(Clone)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
    /// The handle's generation: a handle older than the data's was "killed".
    generation: u64,
    fail_commits: Arc<AtomicU32>,
}

#[derive(Default)]
struct Data {
    generation: u64,
    conversations: BTreeMap<String, Conversation>,
    tokens: BTreeMap<TokenHash, TokenOwner>,
    agent_state: BTreeMap<(String, String), AgentState>,
    attachments: BTreeMap<(String, String), StoredAttachment>,
}

#[derive(Clone)]
struct Conversation {
    title: Option<String>,
    created_at: Millis,
    participants: Vec<Participant>,
    messages: Vec<Message>,
}

#[derive(Clone)]
struct Participant {
    new: NewParticipant,
    cursor: u64,
    draft: Vec<String>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            data: Arc::new(Mutex::new(Data::default())),
            generation: 0,
            fail_commits: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The process holding this handle died: it can no longer read or write. Returns the handle
    /// of the next process, over what was committed.
    pub fn reopen(&self) -> MemoryStore {
        let mut data = self.data.lock().unwrap();
        data.generation += 1;
        MemoryStore {
            data: Arc::clone(&self.data),
            generation: data.generation,
            fail_commits: Arc::clone(&self.fail_commits),
        }
    }

    /// The next `n` commits fail (nothing of them is applied).
    pub fn fail_next_commits(&self, n: u32) {
        self.fail_commits.store(n, Ordering::SeqCst);
    }

    /// Stores a message directly, as an earlier process would have.
    pub fn insert_message(&self, conversation: &str, message: Message) {
        let mut data = self.data.lock().unwrap();
        data.conversations
            .get_mut(conversation)
            .unwrap()
            .messages
            .push(message);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Data) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut data = self.data.lock().unwrap();
        if data.generation != self.generation {
            return Err(StoreError::Unavailable(
                "this process was killed (a simulated crash)".into(),
            ));
        }
        f(&mut data)
    }
}

fn apply(c: &mut Conversation, effect: &Effect) -> Result<(), StoreError> {
    let participant = |c: &mut Conversation, name: &hark_core::protocol::ParticipantName| {
        c.participants
            .iter_mut()
            .position(|p| &p.new.name == name)
            .ok_or_else(|| StoreError::Corrupt(format!("no participant {name}")))
    };
    match effect {
        Effect::InsertMessage(m) => {
            if m.seq != c.messages.len() as u64 + 1 {
                return Err(StoreError::Unavailable(format!(
                    "seq {} out of order",
                    m.seq
                )));
            }
            if m.client_id.is_some()
                && c.messages
                    .iter()
                    .any(|old| old.from == m.from && old.client_id == m.client_id)
            {
                return Err(StoreError::Unavailable("client_id used twice".into()));
            }
            c.messages.push((**m).clone());
        }
        Effect::SetCursor {
            participant: name,
            cursor,
        } => {
            let i = participant(c, name)?;
            let p = &mut c.participants[i];
            p.cursor = p.cursor.max(*cursor);
        }
        Effect::PushSegment {
            participant: name,
            text,
        } => {
            let i = participant(c, name)?;
            c.participants[i].draft.push(text.clone());
        }
        Effect::PopSegment { participant: name } => {
            let i = participant(c, name)?;
            c.participants[i].draft.pop();
        }
        Effect::ClearDraft { participant: name } => {
            let i = participant(c, name)?;
            c.participants[i].draft.clear();
        }
    }
    Ok(())
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|_| Ok(()))
    }

    async fn create_conversation(&self, new: NewConversation) -> Result<(), StoreError> {
        self.with(|data| {
            for p in &new.participants {
                data.tokens.insert(
                    p.token_hash,
                    TokenOwner {
                        conversation: new.id.clone(),
                        name: p.name.clone(),
                        kind: p.kind,
                    },
                );
            }
            data.conversations.insert(
                new.id.clone(),
                Conversation {
                    title: new.title,
                    created_at: new.created_at,
                    participants: new
                        .participants
                        .into_iter()
                        .map(|new| Participant {
                            new,
                            cursor: 0,
                            draft: Vec::new(),
                        })
                        .collect(),
                    messages: Vec::new(),
                },
            );
            Ok(())
        })
    }

    async fn add_participant(
        &self,
        conversation: &str,
        participant: NewParticipant,
    ) -> Result<(), StoreError> {
        self.with(|data| {
            let c = data
                .conversations
                .get_mut(conversation)
                .ok_or(StoreError::NotFound)?;
            if c.participants
                .iter()
                .any(|p| p.new.name == participant.name)
            {
                return Err(StoreError::NameTaken);
            }
            data.tokens.insert(
                participant.token_hash,
                TokenOwner {
                    conversation: conversation.to_owned(),
                    name: participant.name.clone(),
                    kind: participant.kind,
                },
            );
            c.participants.push(Participant {
                new: participant,
                cursor: 0,
                draft: Vec::new(),
            });
            Ok(())
        })
    }

    async fn load_conversation(&self, id: &str) -> Result<Option<StoredConversation>, StoreError> {
        self.with(|data| {
            Ok(data.conversations.get(id).map(|c| StoredConversation {
                id: id.to_owned(),
                title: c.title.clone(),
                created_at: c.created_at,
                participants: c
                    .participants
                    .iter()
                    .map(|p| StoredParticipant {
                        record: ParticipantRecord {
                            name: p.new.name.clone(),
                            kind: p.new.kind,
                            cursor: p.cursor,
                            draft_segments: p.draft.clone(),
                        },
                        agent: p.new.agent.clone(),
                        display_name: p.new.display_name.clone(),
                    })
                    .collect(),
                messages: c.messages.clone(),
            }))
        })
    }

    async fn conversation_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|data| Ok(data.conversations.contains_key(id)))
    }

    async fn find_token(&self, hash: TokenHash) -> Result<Option<TokenOwner>, StoreError> {
        self.with(|data| Ok(data.tokens.get(&hash).cloned()))
    }

    async fn messages_after(
        &self,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.with(|data| {
            Ok(data
                .conversations
                .get(conversation)
                .map(|c| {
                    c.messages
                        .iter()
                        .filter(|m| m.seq > after)
                        .take(limit)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    async fn commit(&self, conversation: &str, effects: Vec<Effect>) -> Result<(), StoreError> {
        self.with(|data| {
            if self
                .fail_commits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StoreError::Unavailable("the disk is full (test)".into()));
            }
            let c = data
                .conversations
                .get_mut(conversation)
                .ok_or(StoreError::NotFound)?;
            // All or nothing: apply to a copy.
            let mut next = c.clone();
            for effect in &effects {
                apply(&mut next, effect)?;
            }
            *c = next;
            Ok(())
        })
    }

    async fn agent_participants(&self) -> Result<Vec<AgentParticipant>, StoreError> {
        self.with(|data| {
            Ok(data
                .conversations
                .iter()
                .flat_map(|(id, c)| {
                    c.participants.iter().filter_map(|p| {
                        Some(AgentParticipant {
                            conversation: id.clone(),
                            name: p.new.name.clone(),
                            kind: p.new.kind,
                            agent: p.new.agent.clone()?,
                        })
                    })
                })
                .collect())
        })
    }

    async fn load_agent_state(
        &self,
        conversation: &str,
        participant: &hark_core::protocol::ParticipantName,
    ) -> Result<Option<AgentState>, StoreError> {
        self.with(|data| {
            Ok(data
                .agent_state
                .get(&(conversation.to_owned(), participant.to_string()))
                .cloned())
        })
    }

    async fn save_agent_state(
        &self,
        conversation: &str,
        participant: &hark_core::protocol::ParticipantName,
        state: AgentState,
    ) -> Result<(), StoreError> {
        self.with(|data| {
            let key = (conversation.to_owned(), participant.to_string());
            let merged = match data.agent_state.get(&key) {
                // As SQLite's upsert: the marks never move back.
                Some(old) => AgentState {
                    epoch: old.epoch.max(state.epoch),
                    answered_up_to: old.answered_up_to.max(state.answered_up_to),
                    rhythm: state.rhythm,
                },
                None => state,
            };
            data.agent_state.insert(key, merged);
            Ok(())
        })
    }

    async fn put_attachment(
        &self,
        conversation: &str,
        attachment: NewAttachment,
    ) -> Result<(), StoreError> {
        self.with(|data| {
            if !data.conversations.contains_key(conversation) {
                return Err(StoreError::NotFound);
            }
            data.attachments.insert(
                (conversation.to_owned(), attachment.id),
                StoredAttachment {
                    mime: attachment.mime,
                    data: attachment.data,
                },
            );
            Ok(())
        })
    }

    async fn attachment(
        &self,
        conversation: &str,
        id: &str,
    ) -> Result<Option<StoredAttachment>, StoreError> {
        self.with(|data| {
            Ok(data
                .attachments
                .get(&(conversation.to_owned(), id.to_owned()))
                .cloned())
        })
    }
}
