//! Bearer tokens: minting, hashing, resolving to a [`Caller`], the per-token rate limit, and the
//! proofs of access ([`Admin`], [`Participant`], [`Reader`]) that the service's calls take.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hark_core::protocol::{ParticipantKind, ParticipantName};
use hark_store::{Store, TokenHash, TokenOwner};
use sha2::{Digest, Sha256};

use super::error::AppError;

/// Who is calling, as far as the token tells.
#[derive(Clone, Debug)]
pub enum Caller {
    /// No token was sent.
    Anonymous,
    /// The admin token.
    Admin,
    /// A participant's token.
    Participant(Participant),
}

/// Proof that the caller may use admin routes. Only the service makes one.
#[derive(Clone, Copy, Debug)]
pub struct Admin(());

/// One participant of one conversation: the identity every participant call acts as. Only the
/// service makes one (from a token, or for a built-in agent or `hark mcp --db`), so holding one
/// proves access to that conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    conversation: Arc<str>,
    name: ParticipantName,
    kind: ParticipantKind,
}

impl Participant {
    pub(crate) fn new(conversation: &str, name: ParticipantName, kind: ParticipantKind) -> Self {
        Participant {
            conversation: Arc::from(conversation),
            name,
            kind,
        }
    }

    /// The conversation's id.
    pub fn conversation(&self) -> &str {
        &self.conversation
    }

    /// The participant's name.
    pub fn name(&self) -> &ParticipantName {
        &self.name
    }

    /// Person or model.
    pub fn kind(&self) -> ParticipantKind {
        self.kind
    }
}

impl From<TokenOwner> for Participant {
    fn from(owner: TokenOwner) -> Self {
        Participant::new(&owner.conversation, owner.name, owner.kind)
    }
}

/// Proof that the caller may read a conversation's description: the admin (or anyone, on an
/// open server) or one of its participants.
#[derive(Clone, Debug)]
pub struct Reader {
    conversation: Arc<str>,
}

impl Reader {
    pub(crate) fn new(conversation: &str) -> Self {
        Reader {
            conversation: Arc::from(conversation),
        }
    }

    /// The conversation's id.
    pub fn conversation(&self) -> &str {
        &self.conversation
    }
}

/// A fresh participant token: 256 random bits, printable.
pub(crate) fn mint_token() -> String {
    format!("hark_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// A fresh conversation id: 128 random bits.
pub(crate) fn mint_conversation_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A token's SHA-256 digest: all the store ever keeps of it.
pub(crate) fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Most resolved tokens kept in memory (about 17 MB). When full the cache starts again empty,
/// and tokens are resolved from the store (one indexed lookup) as they come back. Large: a
/// crowd of requests whose tokens all miss at once queues that many reads on the blocking pool.
pub(crate) const MAX_KNOWN_TOKENS: usize = 100_000;

/// Resolves tokens and rate-limits them.
pub(crate) struct Auth {
    /// The admin token's hash; `None` with `admin_open` means admin routes are open (loopback
    /// development), `None` without it means there is no admin at all.
    admin: Option<TokenHash>,
    admin_open: bool,
    /// Tokens already resolved; tokens never change owner, so entries never go stale. At most
    /// [`MAX_KNOWN_TOKENS`]: a cache, not a copy of every participant ever created.
    known: RwLock<HashMap<TokenHash, TokenOwner>>,
    limiter: Option<DefaultKeyedRateLimiter<TokenHash>>,
}

impl Auth {
    pub(crate) fn new(
        admin_token: Option<&str>,
        admin_open: bool,
        rate_limit_per_s: u32,
        burst: u32,
    ) -> Self {
        let limiter = NonZeroU32::new(rate_limit_per_s).map(|per_s| {
            let burst = NonZeroU32::new(burst).unwrap_or(per_s);
            RateLimiter::keyed(Quota::per_second(per_s).allow_burst(burst))
        });
        Auth {
            admin: admin_token.map(hash_token),
            admin_open,
            known: RwLock::new(HashMap::new()),
            limiter,
        }
    }

    pub(crate) fn remember(&self, hash: TokenHash, owner: TokenOwner) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_KNOWN_TOKENS && !known.contains_key(&hash) {
            known.clear();
        }
        known.insert(hash, owner);
    }

    /// Resolves a bearer token, applying the rate limit.
    pub(crate) async fn caller(
        &self,
        token: Option<&str>,
        store: &dyn Store,
    ) -> Result<Caller, AppError> {
        let Some(token) = token else {
            return Ok(Caller::Anonymous);
        };
        let hash = hash_token(token);
        if let Some(limiter) = &self.limiter
            && limiter.check_key(&hash).is_err()
        {
            return Err(AppError::rate_limited());
        }
        // Comparing digests of equal length keeps the comparison free of token-dependent timing.
        if self
            .admin
            .is_some_and(|admin| constant_time_eq(&admin, &hash))
        {
            return Ok(Caller::Admin);
        }
        let cached = self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        let owner = match cached {
            Some(owner) => owner,
            None => {
                let owner = store
                    .find_token(hash)
                    .await?
                    .ok_or_else(|| AppError::unauthorized("That token is not known here."))?;
                self.remember(hash, owner.clone());
                owner
            }
        };
        Ok(Caller::Participant(owner.into()))
    }

    /// Admits admin callers; in open (loopback development) mode, anyone without a token.
    pub(crate) fn admin(&self, caller: &Caller) -> Result<Admin, AppError> {
        match caller {
            Caller::Admin => Ok(Admin(())),
            Caller::Anonymous if self.admin_open => Ok(Admin(())),
            Caller::Anonymous => Err(AppError::unauthorized(
                "This route needs the admin token: send 'Authorization: Bearer <admin token>'.",
            )),
            Caller::Participant(_) => Err(AppError::forbidden(
                "A participant token cannot use admin routes: use the admin token.",
            )),
        }
    }

    /// Admits any participant, of whatever conversation.
    pub(crate) fn any_participant(&self, caller: &Caller) -> Result<Participant, AppError> {
        match caller {
            Caller::Participant(participant) => Ok(participant.clone()),
            Caller::Anonymous => Err(AppError::unauthorized(
                "Send your participant token: 'Authorization: Bearer <token>'.",
            )),
            Caller::Admin => Err(AppError::forbidden(
                "The admin token cannot act as a participant: use that participant's token.",
            )),
        }
    }

    /// Admits only a participant of `conversation`. A valid token aimed at a conversation the
    /// store does not know is answered `not_found`, as for anyone else.
    pub(crate) async fn participant(
        &self,
        caller: &Caller,
        store: &dyn Store,
        conversation: &str,
    ) -> Result<Participant, AppError> {
        let participant = self.any_participant(caller)?;
        if participant.conversation() == conversation {
            return Ok(participant);
        }
        if !store.conversation_exists(conversation).await? {
            return Err(AppError::conversation_not_found());
        }
        Err(AppError::forbidden(
            "Your token belongs to another conversation.",
        ))
    }

    /// Admits the admin (or anyone, when open) and participants of `conversation`.
    pub(crate) fn reader(&self, caller: &Caller, conversation: &str) -> Result<Reader, AppError> {
        match caller {
            Caller::Admin => Ok(Reader::new(conversation)),
            Caller::Anonymous if self.admin_open => Ok(Reader::new(conversation)),
            Caller::Anonymous => Err(AppError::unauthorized(
                "Send the admin token or a participant token: 'Authorization: Bearer <token>'.",
            )),
            Caller::Participant(p) if p.conversation() != conversation => Err(AppError::forbidden(
                "Your token belongs to another conversation.",
            )),
            Caller::Participant(_) => Ok(Reader::new(conversation)),
        }
    }
}

fn constant_time_eq(a: &TokenHash, b: &TokenHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_cache_stays_bounded() {
        let auth = Auth::new(None, true, 0, 0);
        let owner = TokenOwner {
            conversation: "c".into(),
            name: ParticipantName::parse("p").unwrap(),
            kind: ParticipantKind::Human,
        };
        for i in 0..MAX_KNOWN_TOKENS + 10 {
            auth.remember(hash_token(&i.to_string()), owner.clone());
            let len = auth.known.read().unwrap().len();
            assert!(len <= MAX_KNOWN_TOKENS, "{len} cached after {i}");
        }
        let last = hash_token(&(MAX_KNOWN_TOKENS + 9).to_string());
        assert!(auth.known.read().unwrap().contains_key(&last));
    }
}
