//! Bearer tokens: minting, hashing, resolving to a caller, and the per-token rate limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::RwLock;

use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hark_store::{Store, TokenHash, TokenOwner};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Caller {
    Admin,
    Participant(TokenOwner),
}

/// A fresh participant token: 256 random bits, printable.
pub fn mint_token() -> String {
    format!("hark_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// A fresh conversation id: 128 random bits.
pub fn mint_conversation_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

pub struct Auth {
    /// The admin token's hash; `None` with `admin_open` means admin routes are open (loopback
    /// development), `None` without it means there is no admin at all.
    admin: Option<TokenHash>,
    admin_open: bool,
    /// Tokens already resolved; tokens never change owner, so entries never go stale.
    known: RwLock<HashMap<TokenHash, TokenOwner>>,
    limiter: Option<DefaultKeyedRateLimiter<TokenHash>>,
}

impl Auth {
    pub fn new(
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

    pub fn remember(&self, hash: TokenHash, owner: TokenOwner) {
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, owner);
    }

    /// Resolves the bearer token, applying the rate limit. `Ok(None)`: no token was sent.
    pub async fn caller(
        &self,
        headers: &HeaderMap,
        store: &dyn Store,
    ) -> Result<Option<Caller>, ApiError> {
        let Some(token) = bearer(headers)? else {
            return Ok(None);
        };
        let hash = hash_token(token);
        if let Some(limiter) = &self.limiter
            && limiter.check_key(&hash).is_err()
        {
            return Err(ApiError::rate_limited());
        }
        // Comparing digests of equal length keeps the comparison free of token-dependent timing.
        if self
            .admin
            .is_some_and(|admin| constant_time_eq(&admin, &hash))
        {
            return Ok(Some(Caller::Admin));
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
                    .ok_or_else(|| ApiError::unauthorized("That token is not known here."))?;
                self.remember(hash, owner.clone());
                owner
            }
        };
        Ok(Some(Caller::Participant(owner)))
    }

    /// Admits admin callers; in open (loopback development) mode, anyone without a token.
    pub async fn require_admin(
        &self,
        headers: &HeaderMap,
        store: &dyn Store,
    ) -> Result<(), ApiError> {
        match self.caller(headers, store).await {
            Ok(Some(Caller::Admin)) => Ok(()),
            Ok(None) if self.admin_open => Ok(()),
            Ok(None) => Err(ApiError::unauthorized(
                "This route needs the admin token: send 'Authorization: Bearer <admin token>'.",
            )),
            // An unknown token on an open server is still a mistake worth reporting.
            Ok(Some(Caller::Participant(_))) => Err(ApiError::forbidden(
                "A participant token cannot use admin routes: use the admin token.",
            )),
            Err(error) => Err(error),
        }
    }

    /// Admits only a participant of `conversation`. A valid token aimed at a conversation the
    /// store does not know is answered `not_found`, as for anyone else.
    pub async fn require_participant(
        &self,
        headers: &HeaderMap,
        store: &dyn Store,
        conversation: &str,
    ) -> Result<TokenOwner, ApiError> {
        match self.caller(headers, store).await? {
            None => Err(ApiError::unauthorized(
                "Send your participant token: 'Authorization: Bearer <token>'.",
            )),
            Some(Caller::Admin) => Err(ApiError::forbidden(
                "The admin token cannot act as a participant: use that participant's token.",
            )),
            Some(Caller::Participant(owner)) if owner.conversation != conversation => {
                if !store.conversation_exists(conversation).await? {
                    return Err(ApiError::conversation_not_found());
                }
                Err(ApiError::forbidden(
                    "Your token belongs to another conversation.",
                ))
            }
            Some(Caller::Participant(owner)) => Ok(owner),
        }
    }

    /// Admits the admin (or anyone, when open) and participants of `conversation`.
    pub async fn require_admin_or_participant(
        &self,
        headers: &HeaderMap,
        store: &dyn Store,
        conversation: &str,
    ) -> Result<(), ApiError> {
        match self.caller(headers, store).await? {
            Some(Caller::Admin) => Ok(()),
            None if self.admin_open => Ok(()),
            None => Err(ApiError::unauthorized(
                "Send the admin token or a participant token: 'Authorization: Bearer <token>'.",
            )),
            Some(Caller::Participant(owner)) if owner.conversation != conversation => Err(
                ApiError::forbidden("Your token belongs to another conversation."),
            ),
            Some(Caller::Participant(_)) => Ok(()),
        }
    }
}

/// The bearer token of the request, if it sent an `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || ApiError::unauthorized("The Authorization header must be 'Bearer <token>'.");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

fn constant_time_eq(a: &TokenHash, b: &TokenHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
