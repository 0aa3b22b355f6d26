//! Who is calling: bearer JWTs with a role, as DESIGN §6 describes.
//!
//! * `member`: their own wallet and posts (`member` claim);
//! * `staff`: earn and redeem at one store (`store` claim);
//! * `admin`: everything;
//! * `auditor`: read-only access to the log and audits.
//!
//! A [`Verifier`] checks tokens against one [`TokenSource`]: an OpenID
//! Connect provider's published keys (RS256, ES256, EdDSA; see [`jwks`]),
//! or a shared HS256 secret for development and tests. Whoever signed it, a
//! token must be within its `exp` and `nbf`, and may not live longer than
//! the configured maximum ([`TokenConfig::max_lifetime`]): a stolen token is
//! only good for so long, however generous its issuer was.

pub mod jwks;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use jwks::{ConfigError, OidcConfig};

/// The longest a token may live (`exp` − `iat`) unless configured otherwise: a day.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: u64 = 86_400;

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

impl Role {
    /// The role named `name` (`member`, `staff`, `admin` or `auditor`, exactly).
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "member" => Some(Role::Member),
            "staff" => Some(Role::Staff),
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// The claims pointstream puts in its own tokens, and what a [`Verifier`]
/// makes of any token it accepts.
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
    /// Expiry, seconds since the Unix epoch: the token is good through this
    /// second. Of a verified provider token, its `exp` plus the configured
    /// leeway, so that every later check of the expiry allows the same skew.
    pub exp: u64,
}

impl Claims {
    /// Whether the claims name what their role needs: a member for a
    /// `member` token, a store for a `staff` token.
    pub fn check_binding(&self) -> Result<(), AuthError> {
        match self.role {
            Role::Member if self.member.is_none() => Err(AuthError::Incomplete("member")),
            Role::Staff if self.store.is_none() => Err(AuthError::Incomplete("store")),
            _ => Ok(()),
        }
    }
}

/// Why a token was not accepted. The message goes back to the client (and
/// into a `WWW-Authenticate` header), so it names no configuration.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Not a bearer token, or not a JWT (an `alg: none` token is not one either).
    #[error("malformed token")]
    Malformed,
    /// Signed with another key.
    #[error("bad token signature")]
    BadSignature,
    /// The header's algorithm is not the one of the key it names.
    #[error("token algorithm does not match its key")]
    BadAlgorithm,
    /// Signed by a key the identity provider does not publish (or whose keys
    /// could not be fetched yet).
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Before its `nbf`, or issued in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Its lifetime (`exp` − `iat`, or `exp` − now without `iat`) is over the maximum.
    #[error("token lifetime exceeds the maximum")]
    TooLong,
    /// Not issued by the configured issuer.
    #[error("token from another issuer")]
    WrongIssuer,
    /// Not meant for the configured audience.
    #[error("token for another audience")]
    WrongAudience,
    /// No role claim names a pointstream role.
    #[error("token carries no pointstream role")]
    NoRole,
    /// No `sub` claim.
    #[error("token lacks a subject")]
    NoSubject,
    /// A member token without a member, or a staff token without a store.
    #[error("token lacks the {0} its role needs")]
    Incomplete(&'static str),
}

/// Signs `claims` with `secret` (HS256), for development and tests.
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
}

/// The names of the claims that hold a caller's role, member and store.
///
/// A name that no claim has exactly is read as a dotted path into nested
/// objects (`realm_access.roles`), so that providers which nest their roles
/// can be mapped too; a name with dots that a claim has exactly (a
/// namespaced `https://example.com/role`) is that claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// The role: a string, or an array of strings of which the first that
    /// is a pointstream role counts.
    pub role: String,
    /// The member a `member` token acts as.
    pub member: String,
    /// The store a `staff` token works at.
    pub store: String,
}

impl Default for ClaimNames {
    /// pointstream's own names: `role`, `member`, `store`.
    fn default() -> Self {
        ClaimNames { role: "role".into(), member: "member".into(), store: "store".into() }
    }
}

/// Where a [`Verifier`]'s keys come from.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // Configuration, made once per server.
pub enum TokenSource {
    /// HS256 tokens signed with this shared secret: development and tests.
    Secret(Vec<u8>),
    /// Tokens signed by an OpenID Connect provider, checked against its JWKS.
    Oidc(OidcConfig),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never print the secret, as `HttpConfig`'s `Debug` would.
            TokenSource::Secret(_) => f.write_str("Secret(..)"),
            TokenSource::Oidc(config) => f.debug_tuple("Oidc").field(config).finish(),
        }
    }
}

/// How a [`Verifier`] checks tokens.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Where the keys come from.
    pub source: TokenSource,
    /// The longest a token may live: `exp` − `iat`, or `exp` − now for a
    /// token without `iat`.
    pub max_lifetime: Duration,
}

impl TokenConfig {
    /// HS256 tokens signed with `secret`, living at most a day.
    pub fn secret(secret: Vec<u8>) -> Self {
        TokenConfig {
            source: TokenSource::Secret(secret),
            max_lifetime: Duration::from_secs(DEFAULT_MAX_TOKEN_LIFETIME_SECS),
        }
    }

    /// Tokens of the provider `config` describes, living at most a day.
    pub fn oidc(config: OidcConfig) -> Self {
        TokenConfig {
            source: TokenSource::Oidc(config),
            max_lifetime: Duration::from_secs(DEFAULT_MAX_TOKEN_LIFETIME_SECS),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
fn bearer(header: &str) -> Result<&str, AuthError> {
    Ok(header.strip_prefix("Bearer ").ok_or(AuthError::Malformed)?.trim())
}

/// Tokens a [`Verifier`] remembers.
const VERIFIED_TOKENS: usize = 10_000;

/// A token accepted before, and under which keys.
#[derive(Clone)]
struct Remembered {
    claims: Claims,
    /// [`Keys::epoch`] when it was accepted: once a key is withdrawn, every
    /// remembered token is checked afresh, so a withdrawn key's tokens stop
    /// working at once rather than at their expiry.
    epoch: u64,
}

/// The HS256 secret, ready to check with.
struct SecretKey {
    key: DecodingKey,
    validation: Validation,
}

/// A [`Verifier`]'s keys.
#[allow(clippy::large_enum_variant)] // One per server, never moved after it starts.
enum Keys {
    Secret(SecretKey),
    Oidc(Arc<jwks::Jwks>),
}

impl Keys {
    /// Changes whenever a key is withdrawn; never for a secret.
    fn epoch(&self) -> u64 {
        match self {
            Keys::Secret(_) => 0,
            Keys::Oidc(jwks) => jwks.epoch(),
        }
    }
}

/// Checks tokens (signature, times, lifetime, issuer and audience, role),
/// remembering the ones it accepted: a client sends the same token with
/// every request, and checking its signature again each time costs more
/// than looking it up. A remembered token is still refused once it expires.
pub struct Verifier {
    keys: Keys,
    max_lifetime: u64,
    accepted: Mutex<LruCache<String, Remembered>>,
}

impl Verifier {
    /// Verifies tokens as `config` says. With a provider, its keys are
    /// fetched from now on in the background (this needs a Tokio runtime;
    /// without one they are fetched when a token first needs them).
    pub fn new(config: TokenConfig) -> Self {
        let capacity = NonZeroUsize::new(VERIFIED_TOKENS).unwrap_or(NonZeroUsize::MIN);
        let keys = match config.source {
            TokenSource::Secret(secret) => Keys::Secret(SecretKey {
                key: DecodingKey::from_secret(&secret),
                validation: validation(Algorithm::HS256, None, None),
            }),
            TokenSource::Oidc(oidc) => Keys::Oidc(jwks::Jwks::start(oidc)),
        };
        Self { keys, max_lifetime: config.max_lifetime.as_secs(), accepted: Mutex::new(LruCache::new(capacity)) }
    }

    /// The claims of `token`, if it is good now.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, now_seconds()).await
    }

    /// As [`Self::verify`], judged at `now` (seconds since the epoch).
    async fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let epoch = self.keys.epoch();
        if let Some(claims) = self.remembered(token, epoch) {
            // Good up to and including its expiry second.
            return if claims.exp < now { Err(AuthError::Expired) } else { Ok(claims) };
        }
        let claims = match &self.keys {
            Keys::Secret(secret) => {
                let payload = decode_payload(token, &secret.key, &secret.validation)?;
                judge(&payload, now, &ClaimNames::default(), 0, self.max_lifetime)?
            }
            Keys::Oidc(jwks) => jwks.verify(token, now, self.max_lifetime).await?,
        };
        self.accepted().put(token.to_string(), Remembered { claims: claims.clone(), epoch });
        Ok(claims)
    }

    /// The claims of an `Authorization: Bearer <token>` header value.
    pub async fn from_header(&self, header: &str) -> Result<Claims, AuthError> {
        self.verify(bearer(header)?).await
    }

    /// The claims `token` was accepted with, if it was under the keys of `epoch`.
    fn remembered(&self, token: &str, epoch: u64) -> Option<Claims> {
        let mut accepted = self.accepted();
        let remembered = accepted.get(token)?;
        (remembered.epoch == epoch).then(|| remembered.claims.clone())
    }

    fn accepted(&self) -> std::sync::MutexGuard<'_, LruCache<String, Remembered>> {
        self.accepted.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How a token signed with `algorithm` is decoded: its signature, and the
/// issuer and audience when they are configured (then required). Times are
/// judged apart, by [`judge`], at a given instant and with the leeway.
fn validation(algorithm: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    let mut required = vec!["exp"];
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // Provider tokens always name an audience; with none configured it is not checked.
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// A token's payload, once its signature, algorithm, issuer and audience are good.
fn decode_payload(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Map<String, Value>, AuthError> {
    use jsonwebtoken::errors::ErrorKind;
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map(|data| data.claims).map_err(|e| {
        match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => AuthError::BadAlgorithm,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            _ => AuthError::Malformed,
        }
    })
}

/// The claims of a verified `payload` at `now`: its times within `leeway`
/// seconds, its lifetime within `max_lifetime`, and pointstream's claims
/// read from the claims `names` names.
fn judge(
    payload: &Map<String, Value>,
    now: u64,
    names: &ClaimNames,
    leeway: u64,
    max_lifetime: u64,
) -> Result<Claims, AuthError> {
    let time = |name: &str| payload.get(name).and_then(seconds);
    let exp = time("exp").ok_or(AuthError::Malformed)?;
    let until = exp.saturating_add(leeway);
    if until < now {
        return Err(AuthError::Expired);
    }
    let skewed_now = now.saturating_add(leeway);
    if time("nbf").is_some_and(|nbf| nbf > skewed_now) {
        return Err(AuthError::NotYetValid);
    }
    // A token issued in the future would otherwise live longer than its
    // `exp` − `iat` says.
    let issued = match time("iat") {
        Some(iat) if iat > skewed_now => return Err(AuthError::NotYetValid),
        Some(iat) => iat,
        None => now,
    };
    if exp.saturating_sub(issued) > max_lifetime {
        return Err(AuthError::TooLong);
    }
    let sub = match payload.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        _ => return Err(AuthError::NoSubject),
    };
    let role = match claim(payload, &names.role) {
        Some(Value::String(name)) => Role::from_name(name),
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).find_map(Role::from_name),
        _ => None,
    }
    .ok_or(AuthError::NoRole)?;
    let claims = Claims {
        sub,
        role,
        member: claim(payload, &names.member).and_then(text),
        store: claim(payload, &names.store).and_then(text),
        exp: until,
    };
    claims.check_binding()?;
    Ok(claims)
}

/// The claim `name`, or the value at that dotted path when no claim has the name.
fn claim<'a>(payload: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = payload.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let first = payload.get(parts.next()?)?;
    parts.try_fold(first, |value, part| value.as_object()?.get(part))
}

/// A NumericDate: whole seconds (a fraction is dropped).
fn seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
}

/// An id: a non-empty string, or a number as its text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
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

    fn claims(role: Role, exp: u64) -> Claims {
        Claims { sub: "ann".into(), role, member: Some("ann".into()), store: None, exp }
    }

    fn verifier(secret: &[u8]) -> Verifier {
        Verifier::new(TokenConfig::secret(secret.to_vec()))
    }

    fn in_an_hour() -> u64 {
        now_seconds() + 3_600
    }

    #[tokio::test]
    async fn a_minted_token_verifies() {
        let exp = in_an_hour();
        let token = mint(SECRET, &claims(Role::Member, exp)).expect("mints");
        let verifier = verifier(SECRET);
        assert_eq!(verifier.verify(&token).await, Ok(claims(Role::Member, exp)));
        assert_eq!(verifier.from_header(&format!("Bearer {token}")).await, Ok(claims(Role::Member, exp)));
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_with_the_reason() {
        let exp = in_an_hour();
        let token = mint(SECRET, &claims(Role::Member, exp)).expect("mints");
        assert_eq!(verifier(b"other secret").verify(&token).await, Err(AuthError::BadSignature));
        let expired = mint(SECRET, &claims(Role::Member, 1)).expect("mints");
        let verifier = verifier(SECRET);
        assert_eq!(verifier.verify(&expired).await, Err(AuthError::Expired));
        assert_eq!(verifier.verify("not.a.jwt").await, Err(AuthError::Malformed));
        assert_eq!(verifier.from_header(&token).await, Err(AuthError::Malformed), "no Bearer prefix");
        let staff = mint(SECRET, &Claims { store: None, ..claims(Role::Staff, exp) }).expect("mints");
        assert_eq!(verifier.verify(&staff).await, Err(AuthError::Incomplete("store")));
        let years = mint(SECRET, &claims(Role::Admin, 4_000_000_000)).expect("mints");
        assert_eq!(verifier.verify(&years).await, Err(AuthError::TooLong));
    }

    #[tokio::test]
    async fn a_verifier_remembers_only_good_tokens_and_still_refuses_them_once_expired() {
        let verifier = verifier(SECRET);
        let now = now_seconds();
        let good = mint(SECRET, &claims(Role::Member, now + 100)).expect("mints");
        let expected = claims(Role::Member, now + 100);
        for _ in 0..2 {
            assert_eq!(verifier.verify(&good).await, Ok(expected.clone()));
            assert_eq!(verifier.from_header(&format!("Bearer {good}")).await, Ok(expected.clone()));
        }
        assert_eq!(verifier.verify_at(&good, now + 100).await, Ok(expected), "good through its expiry second");
        assert_eq!(verifier.verify_at(&good, now + 101).await, Err(AuthError::Expired));

        // Refused tokens are refused every time, and another key's verifier knows nothing of this one's.
        let forged = mint(b"other secret", &claims(Role::Admin, now + 100)).expect("mints");
        for _ in 0..2 {
            assert_eq!(verifier.verify(&forged).await, Err(AuthError::BadSignature));
        }
        assert_eq!(
            Verifier::new(TokenConfig::secret(b"other secret".to_vec())).verify(&good).await,
            Err(AuthError::BadSignature)
        );
        assert_eq!(verifier.from_header(&good).await, Err(AuthError::Malformed), "no Bearer prefix");
    }

    fn payload(value: serde_json::Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn times_are_judged_with_the_leeway_and_the_lifetime_from_iat_or_now() {
        let now = 1_000_000;
        let names = ClaimNames::default();
        let token = |extra: serde_json::Value| {
            let mut claims = payload(serde_json::json!({ "sub": "a", "role": "admin", "exp": now + 60 }));
            claims.extend(payload(extra));
            claims
        };
        let judged = |claims: &Map<String, Value>| judge(claims, now, &names, 30, 3_600);
        assert_eq!(judged(&token(serde_json::json!({}))).map(|c| c.exp), Ok(now + 90), "exp plus the leeway");
        assert_eq!(judged(&token(serde_json::json!({ "exp": now - 30 }))).map(|c| c.exp), Ok(now));
        assert_eq!(judged(&token(serde_json::json!({ "exp": now - 31 }))), Err(AuthError::Expired));
        assert!(judged(&token(serde_json::json!({ "nbf": now + 30 }))).is_ok());
        assert_eq!(judged(&token(serde_json::json!({ "nbf": now + 31 }))), Err(AuthError::NotYetValid));
        assert_eq!(judged(&token(serde_json::json!({ "iat": now + 31 }))), Err(AuthError::NotYetValid));
        assert!(judged(&token(serde_json::json!({ "exp": now + 3_600 }))).is_ok(), "exp − now at the maximum");
        assert_eq!(judged(&token(serde_json::json!({ "exp": now + 3_601 }))), Err(AuthError::TooLong));
        let issued_earlier = serde_json::json!({ "iat": now - 3_000, "exp": now + 601 });
        assert_eq!(judged(&token(issued_earlier)), Err(AuthError::TooLong), "exp − iat over the maximum");
        assert_eq!(judged(&payload(serde_json::json!({ "sub": "a", "role": "admin" }))), Err(AuthError::Malformed));
    }

    #[test]
    fn claims_map_by_name_from_strings_arrays_and_nested_objects() {
        let now = 1_000_000;
        let names = ClaimNames {
            role: "realm_access.roles".into(),
            member: "https://pointstream.example/member".into(),
            store: "store_id".into(),
        };
        let claims = payload(serde_json::json!({
            "sub": "u-1", "exp": now + 60,
            "realm_access": { "roles": ["offline_access", "staff", "admin"] },
            "https://pointstream.example/member": "ann", "store_id": 42,
        }));
        let judged = judge(&claims, now, &names, 0, 3_600).expect("accepted");
        assert_eq!(judged.role, Role::Staff, "the first pointstream role");
        assert_eq!((judged.member.as_deref(), judged.store.as_deref()), (Some("ann"), Some("42")));
        let no_role = payload(serde_json::json!({ "sub": "u-1", "exp": now + 60, "role": ["Admin", "viewer"] }));
        assert_eq!(judge(&no_role, now, &ClaimNames::default(), 0, 3_600), Err(AuthError::NoRole));
        let no_sub = payload(serde_json::json!({ "exp": now + 60, "role": "admin" }));
        assert_eq!(judge(&no_sub, now, &ClaimNames::default(), 0, 3_600), Err(AuthError::NoSubject));
    }
}
