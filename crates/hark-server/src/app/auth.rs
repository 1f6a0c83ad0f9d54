//! Bearer tokens: minting, hashing, resolving to a [`Caller`], the per-token rate limit, and the
//! proofs of access ([`Admin`], [`Participant`], [`Reader`]) that the service's calls take.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hark_core::protocol::{ParticipantKind, ParticipantName};
use hark_store::{Store, TokenHash, TokenOwner};
use sha2::{Digest, Sha256};

use super::error::{AppError, ErrorKind};

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

/// Resolves tokens and rate-limits them: known tokens each on their own, everything else (no
/// token, an unknown one) by the peer address it comes from.
pub(crate) struct Auth {
    /// The admin token's hash; `None` with `admin_open` means admin routes are open (loopback
    /// development), `None` without it means there is no admin at all.
    admin: Option<TokenHash>,
    admin_open: bool,
    /// Tokens already resolved; tokens never change owner, so entries never go stale. At most
    /// [`MAX_KNOWN_TOKENS`]: a cache, not a copy of every participant ever created.
    known: RwLock<HashMap<TokenHash, TokenOwner>>,
    limiter: Option<DefaultKeyedRateLimiter<TokenHash>>,
    peers: Option<PeerLimiter>,
}

/// The rate limit of requests without a known token, per peer address, in bounded memory:
/// addresses whose allowance is whole again are forgotten, and beyond [`PeerLimiter::MAX_PEERS`]
/// addresses at once, new ones are refused until some are forgotten.
struct PeerLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Checks made while the map was large, since it was last swept.
    unswept: AtomicU64,
}

impl PeerLimiter {
    /// Addresses remembered at once (about 100 bytes each).
    const MAX_PEERS: usize = 65_536;
    /// From this many addresses, the map is swept every [`PeerLimiter::SWEEP_EVERY`] checks.
    const SWEEP_FROM: usize = 1024;
    const SWEEP_EVERY: u64 = 1024;

    fn new(quota: Quota) -> Self {
        PeerLimiter {
            limiter: RateLimiter::keyed(quota),
            unswept: AtomicU64::new(0),
        }
    }

    fn check(&self, peer: IpAddr) -> Result<(), AppError> {
        if self.limiter.len() >= Self::SWEEP_FROM {
            if self
                .unswept
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(Self::SWEEP_EVERY)
            {
                self.limiter.retain_recent();
                self.limiter.shrink_to_fit();
            }
            if self.limiter.len() >= Self::MAX_PEERS {
                return Err(AppError::new(
                    ErrorKind::RateLimited,
                    "Too many clients without a token right now: retry in a moment.",
                ));
            }
        }
        self.limiter.check_key(&peer_key(peer)).map_err(|_| {
            AppError::new(
                ErrorKind::RateLimited,
                "Too many requests without a known token from your address: slow down and \
                 retry in a moment.",
            )
        })
    }
}

/// The key of a peer: its IPv4 address, or its IPv6 /64 (one host's share of addresses).
fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl Auth {
    pub(crate) fn new(
        admin_token: Option<&str>,
        admin_open: bool,
        rate_limit_per_s: u32,
        burst: u32,
    ) -> Self {
        let quota = NonZeroU32::new(rate_limit_per_s).map(|per_s| {
            let burst = NonZeroU32::new(burst).unwrap_or(per_s);
            Quota::per_second(per_s).allow_burst(burst)
        });
        Auth {
            admin: admin_token.map(hash_token),
            admin_open,
            known: RwLock::new(HashMap::new()),
            limiter: quota.map(RateLimiter::keyed),
            peers: quota.map(PeerLimiter::new),
        }
    }

    /// Admits a request from `peer` before anything else is done for it: one with a token
    /// already known (the admin's or a resolved participant's) is limited per token later; any
    /// other (no token, an unknown one, a malformed header) counts against its peer address.
    pub(crate) fn screen(&self, peer: IpAddr, token: Option<&str>) -> Result<(), AppError> {
        let Some(peers) = &self.peers else {
            return Ok(());
        };
        if let Some(token) = token {
            let hash = hash_token(token);
            let admin = self
                .admin
                .is_some_and(|admin| constant_time_eq(&admin, &hash));
            if admin
                || self
                    .known
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&hash)
            {
                return Ok(());
            }
        }
        peers.check(peer)
    }

    /// The per-token limit of a token that resolved.
    fn limit(&self, hash: &TokenHash) -> Result<(), AppError> {
        match &self.limiter {
            Some(limiter) if limiter.check_key(hash).is_err() => Err(AppError::rate_limited()),
            _ => Ok(()),
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
        // Comparing digests of equal length keeps the comparison free of token-dependent timing.
        if self
            .admin
            .is_some_and(|admin| constant_time_eq(&admin, &hash))
        {
            self.limit(&hash)?;
            return Ok(Caller::Admin);
        }
        let owner = self
            .owner(hash, store)
            .await?
            .ok_or_else(|| AppError::unauthorized("That token is not known here."))?;
        // Only tokens that resolved get a limiter entry of their own: random ones would each
        // keep one for ever. Those are limited by their peer address (`screen`).
        self.limit(&hash)?;
        Ok(Caller::Participant(owner.into()))
    }

    /// The conversation a participant's token opens, without counting against its rate limit
    /// (for routing a request that the node serving it counts).
    pub(crate) async fn conversation_of(
        &self,
        token: &str,
        store: &dyn Store,
    ) -> Result<Option<String>, AppError> {
        Ok(self
            .owner(hash_token(token), store)
            .await?
            .map(|owner| owner.conversation))
    }

    /// Who a token's digest belongs to, from the cache or the store.
    async fn owner(
        &self,
        hash: TokenHash,
        store: &dyn Store,
    ) -> Result<Option<TokenOwner>, AppError> {
        let cached = self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        if let Some(owner) = cached {
            return Ok(Some(owner));
        }
        let Some(owner) = store.find_token(hash).await? else {
            return Ok(None);
        };
        self.remember(hash, owner.clone());
        Ok(Some(owner))
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
    fn a_peer_is_its_ipv4_address_or_its_ipv6_slash_64() {
        let key = |s: &str| peer_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn an_unknown_token_counts_against_its_address_and_keeps_no_entry_of_its_own() {
        let auth = Auth::new(Some("admin"), false, 1, 3);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for guess in 0..3 {
            assert!(auth.screen(peer, Some(&format!("guess{guess}"))).is_ok());
        }
        let refused = auth.screen(peer, Some("guess3")).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::RateLimited);
        assert!(
            auth.screen(other, None).is_ok(),
            "another address has its own allowance"
        );
        assert!(
            auth.screen(peer, Some("admin")).is_ok(),
            "a known token is not screened"
        );
        assert_eq!(
            auth.limiter.as_ref().unwrap().len(),
            0,
            "no per-token entries for guesses"
        );
        assert_eq!(auth.peers.as_ref().unwrap().limiter.len(), 2);
    }

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
