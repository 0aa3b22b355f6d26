//! Who is calling: bearer JWTs (HS256) with a role, as DESIGN §6 describes.
//!
//! * `member`: their own wallet and posts (`member` claim);
//! * `staff`: earn and redeem at one store (`store` claim);
//! * `admin`: everything;
//! * `auditor`: read-only access to the log and audits.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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

/// The claims of an `Authorization: Bearer <token>` header value.
pub fn from_header(secret: &[u8], header: &str) -> Result<Claims, AuthError> {
    let token = header.strip_prefix("Bearer ").ok_or(AuthError::Malformed)?;
    verify(secret, token.trim())
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
        assert_eq!(from_header(SECRET, &format!("Bearer {token}")), Ok(claims(Role::Member)));
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let token = mint(SECRET, &claims(Role::Member)).expect("mints");
        assert_eq!(verify(b"other secret", &token), Err(AuthError::BadSignature));
        let expired = mint(SECRET, &Claims { exp: 1, ..claims(Role::Member) }).expect("mints");
        assert_eq!(verify(SECRET, &expired), Err(AuthError::Expired));
        assert_eq!(verify(SECRET, "not.a.jwt"), Err(AuthError::Malformed));
        assert_eq!(from_header(SECRET, &token), Err(AuthError::Malformed), "no Bearer prefix");
        let staff = mint(SECRET, &Claims { store: None, ..claims(Role::Staff) }).expect("mints");
        assert_eq!(verify(SECRET, &staff), Err(AuthError::Incomplete("store")));
    }
}
