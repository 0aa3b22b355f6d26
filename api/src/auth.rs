//! Who is calling: bearer JWTs (HS256) with a role, as DESIGN §6 describes.
//!
//! * `member`: their own wallet and posts (`member` claim);
//! * `staff`: earn and redeem at one store (`store` claim);
//! * `admin`: everything;
//! * `auditor`: read-only access to the log and audits.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lru::LruCache;
use serde::{Deserialize, Serialize};

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A member of the loyalty programme.
    Member,
    /// Staff of one store.
    Staff,
    /// An administrator.
    Admin,
    /// A read-only auditor.
    Auditor,
}

/// The claims pointstream puts in (and expects of) a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: who the token was issued to.
    pub sub: String,
    /// Role.
    pub role: Role,
    /// The member a `member` token acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The store a `staff` token works at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Not a bearer token, or not a JWT.
    #[error("malformed token")]
    Malformed,
    /// Signed with another key.
    #[error("bad token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// A member token without a member, or a staff token without a store.
    #[error("token lacks the {0} its role needs")]
    Incomplete(&'static str),
}

/// Signs `claims` with `secret`.
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
}

/// Checks a token's signature, expiry and role requirements.
pub fn verify(secret: &[u8], token: &str) -> Result<Claims, AuthError> {
    use jsonwebtoken::errors::ErrorKind;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Malformed,
        })?
        .claims;
    match claims.role {
        Role::Member if claims.member.is_none() => Err(AuthError::Incomplete("member")),
        Role::Staff if claims.store.is_none() => Err(AuthError::Incomplete("store")),
        _ => Ok(claims),
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
fn bearer(header: &str) -> Result<&str, AuthError> {
    Ok(header.strip_prefix("Bearer ").ok_or(AuthError::Malformed)?.trim())
}

/// Tokens a [`Verifier`] remembers.
const VERIFIED_TOKENS: usize = 10_000;

/// [`verify`] with one secret, remembering the tokens it accepted: a client
/// sends the same token with every request, and checking its signature
/// again each time costs more than looking it up. A remembered token is
/// still refused once it expires.
pub struct Verifier {
    secret: Vec<u8>,
    accepted: Mutex<LruCache<String, Claims>>,
}

impl Verifier {
    /// Verifies tokens signed with `secret`.
    pub fn new(secret: Vec<u8>) -> Self {
        let capacity = NonZeroUsize::new(VERIFIED_TOKENS).unwrap_or(NonZeroUsize::MIN);
        Self { secret, accepted: Mutex::new(LruCache::new(capacity)) }
    }

    /// As [`verify`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, now_seconds())
    }

    /// As [`verify`], a remembered token judged at `now` (seconds since the epoch).
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let remembered = self.accepted().get(token).cloned();
        if let Some(claims) = remembered {
            // As `verify`: good up to and including its expiry second.
            return if claims.exp < now { Err(AuthError::Expired) } else { Ok(claims) };
        }
        let claims = verify(&self.secret, token)?;
        self.accepted().put(token.to_string(), claims.clone());
        Ok(claims)
    }

    /// The claims of an `Authorization: Bearer <token>` header value.
    pub fn from_header(&self, header: &str) -> Result<Claims, AuthError> {
        self.verify(bearer(header)?)
    }

    fn accepted(&self) -> std::sync::MutexGuard<'_, LruCache<String, Claims>> {
        self.accepted.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `claims` are past their expiry (good up to and including their expiry second).
pub fn expired(claims: &Claims) -> bool {
    claims.exp < now_seconds()
}

/// Seconds since the Unix epoch, as token expiries count them.
pub fn now_seconds() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test secret";

    fn claims(role: Role) -> Claims {
        Claims { sub: "ann".into(), role, member: Some("ann".into()), store: None, exp: u64::MAX / 2 }
    }

    #[test]
    fn a_minted_token_verifies() {
        let token = mint(SECRET, &claims(Role::Member)).expect("mints");
        assert_eq!(verify(SECRET, &token), Ok(claims(Role::Member)));
        let verifier = Verifier::new(SECRET.to_vec());
        assert_eq!(verifier.from_header(&format!("Bearer {token}")), Ok(claims(Role::Member)));
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let token = mint(SECRET, &claims(Role::Member)).expect("mints");
        assert_eq!(verify(b"other secret", &token), Err(AuthError::BadSignature));
        let expired = mint(SECRET, &Claims { exp: 1, ..claims(Role::Member) }).expect("mints");
        assert_eq!(verify(SECRET, &expired), Err(AuthError::Expired));
        assert_eq!(verify(SECRET, "not.a.jwt"), Err(AuthError::Malformed));
        assert_eq!(Verifier::new(SECRET.to_vec()).from_header(&token), Err(AuthError::Malformed), "no Bearer prefix");
        let staff = mint(SECRET, &Claims { store: None, ..claims(Role::Staff) }).expect("mints");
        assert_eq!(verify(SECRET, &staff), Err(AuthError::Incomplete("store")));
    }

    #[test]
    fn a_verifier_remembers_only_good_tokens_and_still_refuses_them_once_expired() {
        let verifier = Verifier::new(SECRET.to_vec());
        let now = now_seconds();
        let good = mint(SECRET, &Claims { exp: now + 100, ..claims(Role::Member) }).expect("mints");
        let expected = Claims { exp: now + 100, ..claims(Role::Member) };
        for _ in 0..2 {
            assert_eq!(verifier.verify(&good), Ok(expected.clone()));
            assert_eq!(verifier.from_header(&format!("Bearer {good}")), Ok(expected.clone()));
        }
        assert_eq!(verifier.verify_at(&good, now + 100), Ok(expected), "good through its expiry second");
        assert_eq!(verifier.verify_at(&good, now + 101), Err(AuthError::Expired));

        // Refused tokens are refused every time, and another key's verifier knows nothing of this one's.
        let forged = mint(b"other secret", &claims(Role::Admin)).expect("mints");
        for _ in 0..2 {
            assert_eq!(verifier.verify(&forged), Err(AuthError::BadSignature));
        }
        assert_eq!(Verifier::new(b"other secret".to_vec()).verify(&good), Err(AuthError::BadSignature));
        assert_eq!(verifier.from_header(&good), Err(AuthError::Malformed), "no Bearer prefix");
    }
}
