//! An OpenID Connect provider's signing keys, read from its JWKS URL.
//!
//! The keys are fetched when the [`Jwks`] starts (a failure is logged, and
//! tokens are refused until keys come), then again every
//! [`OidcConfig::refresh`], and whenever a token names a key id the set
//! does not hold, so that a provider's new key works at once. That last
//! fetch happens at most once per [`OidcConfig::min_refresh`], whatever the
//! tokens say, and fetches that would overlap are one: a flood of made-up
//! key ids costs the provider one request per interval. A failed fetch is
//! retried after `min_refresh`, and keeps the keys held before.
//!
//! A key's algorithm is the JWK's own `alg`, or the one its key type
//! implies (RSA: RS256, EC P-256: ES256, P-384: ES384, OKP Ed25519: EdDSA);
//! a token whose header names another is refused, so neither `alg: none`
//! nor an HS256 token "signed" with a public key can pass. Symmetric keys
//! (`oct`) and keys for encryption are never used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use super::{AuthError, ClaimNames, Claims, decode_payload, judge, validation};

/// How long a token's times may be off, in seconds, unless configured.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// How often the keys are fetched anyway, in seconds, unless configured.
pub const DEFAULT_REFRESH_SECS: u64 = 600;
/// The least time between two fetches for unknown key ids (or after a
/// failed fetch), in seconds, unless configured.
pub const DEFAULT_MIN_REFRESH_SECS: u64 = 60;

/// The most a JWKS document may weigh: real ones are a few kilobytes.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// How long a fetch may take in all.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an identity provider publishes its keys, and what its tokens must say.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    url: reqwest::Url,
    /// The `iss` every token must carry; unchecked when `None`.
    pub issuer: Option<String>,
    /// The audience every token's `aud` must include; unchecked when `None`.
    pub audience: Option<String>,
    /// Which claims hold the role, the member and the store.
    pub claims: ClaimNames,
    /// How far off the provider's clock may be from this one: `exp`, `nbf`
    /// and `iat` are judged this much in the token's favour.
    pub leeway: Duration,
    /// How often the keys are fetched anyway.
    pub refresh: Duration,
    /// The least time between two fetches caused by tokens with unknown key
    /// ids, and before retrying a failed fetch.
    pub min_refresh: Duration,
}

/// A provider configuration that cannot work.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The JWKS URL is not an `http` or `https` URL.
    #[error("the JWKS URL {0:?} is not an http(s) URL")]
    Url(String),
}

impl OidcConfig {
    /// Keys from `jwks_url`, with no issuer or audience check, pointstream's
    /// claim names, and the default leeway and refresh intervals.
    pub fn new(jwks_url: &str) -> Result<Self, ConfigError> {
        let url = reqwest::Url::parse(jwks_url).map_err(|_| ConfigError::Url(jwks_url.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::Url(jwks_url.to_string()));
        }
        Ok(OidcConfig {
            url,
            issuer: None,
            audience: None,
            claims: ClaimNames::default(),
            leeway: Duration::from_secs(DEFAULT_LEEWAY_SECS),
            refresh: Duration::from_secs(DEFAULT_REFRESH_SECS),
            min_refresh: Duration::from_secs(DEFAULT_MIN_REFRESH_SECS),
        })
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> &str {
        self.url.as_str()
    }

    /// Whether the keys would travel unencrypted over a network: plain
    /// `http` to anything but a loopback address.
    pub fn insecure(&self) -> bool {
        let host = self.url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        self.url.scheme() == "http" && !loopback
    }
}

/// One key of the set, ready to verify with.
struct Key {
    /// As published, to tell a withdrawn or replaced key.
    jwk: Jwk,
    decoding: DecodingKey,
    /// Its algorithm, and the issuer and audience checks.
    validation: Validation,
}

/// The keys a fetch found.
#[derive(Default)]
struct KeySet {
    by_id: HashMap<String, Arc<Key>>,
    /// Keys published without a `kid`: a token without one uses the set's
    /// only key, if it has one key in all.
    unnamed: Vec<Arc<Key>>,
}

impl KeySet {
    /// The key a token naming `kid` (or none) is checked with.
    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_id.get(kid).cloned(),
            None => match (self.by_id.len(), self.unnamed.as_slice()) {
                (0, [only]) => Some(only.clone()),
                (1, []) => self.by_id.values().next().cloned(),
                _ => None,
            },
        }
    }

    fn len(&self) -> usize {
        self.by_id.len() + self.unnamed.len()
    }

    /// Whether a key of this set is missing from, or different in, `newer`.
    fn withdrawn_in(&self, newer: &KeySet) -> bool {
        self.by_id.iter().any(|(kid, key)| newer.by_id.get(kid).is_none_or(|new| new.jwk != key.jwk))
            || self.unnamed.iter().any(|key| !newer.unnamed.iter().any(|new| new.jwk == key.jwk))
    }
}

/// The algorithm a JWK verifies, if pointstream uses it at all: its `alg`
/// or its key type's, for signing keys of the asymmetric types only.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return None;
    }
    if jwk.common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS384)) => Algorithm::RS384,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS512)) => Algorithm::RS512,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS256)) => Algorithm::PS256,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS384)) => Algorithm::PS384,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS512)) => Algorithm::PS512,
        (AlgorithmParameters::EllipticCurve(key), None | Some(KeyAlgorithm::ES256))
            if key.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::EllipticCurve(key), None | Some(KeyAlgorithm::ES384))
            if key.curve == EllipticCurve::P384 =>
        {
            Algorithm::ES384
        }
        (AlgorithmParameters::OctetKeyPair(key), None | Some(KeyAlgorithm::EdDSA))
            if key.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    Some(algorithm)
}

/// Why a fetch of the keys failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("no HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the provider answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the document is over {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no usable signing key among the {0} published")]
    NoUsableKeys(usize),
}

/// A JWKS document; each key is read on its own, so that one key of a
/// type or algorithm jsonwebtoken does not know leaves the others usable.
#[derive(serde::Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// When the keys were last fetched, and how that went.
#[derive(Default)]
struct LastFetch {
    at: Option<Instant>,
    ok: bool,
}

/// What asks for a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The periodic refresh, which keeps its own time.
    Schedule,
    /// A token naming a key the set does not hold: at most once per `min_refresh`.
    UnknownKey,
}

/// A provider's keys, kept fresh.
pub(crate) struct Jwks {
    config: OidcConfig,
    client: Result<reqwest::Client, String>,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching, so that fetches never overlap.
    last: tokio::sync::Mutex<LastFetch>,
    /// Counts finished fetch attempts: one who waited for the lock sees
    /// that another fetched meanwhile, and does not fetch again.
    generation: AtomicU64,
    /// Counts key sets that withdrew or replaced a key.
    epoch: AtomicU64,
}

impl Jwks {
    /// The keys `config` names, fetched now and then every
    /// `config.refresh` on the current Tokio runtime while the returned
    /// handle lives.
    pub(crate) fn start(config: OidcConfig) -> Arc<Self> {
        if config.insecure() {
            tracing::warn!(url = %config.url, "the JWKS URL is plain http: anyone on the path can substitute keys");
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT / 2)
            .build()
            .map_err(|err| err.to_string());
        if let Err(err) = &client {
            tracing::error!(%err, "cannot build an HTTP client: the identity provider's keys cannot be fetched");
        }
        let jwks = Arc::new(Jwks {
            config,
            client,
            keys: RwLock::default(),
            last: tokio::sync::Mutex::default(),
            generation: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(refresher(Arc::downgrade(&jwks)))),
            Err(_) => {
                tracing::warn!("no Tokio runtime: the identity provider's keys are fetched when a token needs them")
            }
        }
        jwks
    }

    /// Changes whenever a fetch withdraws or replaces a key.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The claims of `token` at `now`, checked against the provider's keys.
    pub(crate) async fn verify(&self, token: &str, now: u64, max_lifetime: u64) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let key = self.key(header.kid.as_deref()).await?;
        let payload = decode_payload(token, &key.decoding, &key.validation)?;
        judge(&payload, now, &self.config.claims, self.config.leeway.as_secs(), max_lifetime)
    }

    /// The key for `kid`, fetching the set again if it does not hold it
    /// (at most once per `min_refresh`).
    async fn key(&self, kid: Option<&str>) -> Result<Arc<Key>, AuthError> {
        let seen = self.generation.load(Ordering::Acquire);
        if let Some(key) = self.current().find(kid) {
            return Ok(key);
        }
        self.refresh(seen, Trigger::UnknownKey).await;
        self.current().find(kid).ok_or(AuthError::UnknownKey)
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().map(|keys| keys.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Fetches the keys, unless a fetch finished since generation `seen`
    /// (its keys are as new as this one's would be) or, for an unknown
    /// key, one started less than `min_refresh` ago.
    async fn refresh(&self, seen: u64, trigger: Trigger) {
        let mut last = self.last.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return;
        }
        if trigger == Trigger::UnknownKey && last.at.is_some_and(|at| at.elapsed() < self.config.min_refresh) {
            return;
        }
        last.at = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.config.url, keys = keys.len(), ?trigger, "fetched the identity provider's keys");
                metrics::counter!("pointstream_jwks_fetches_total", "outcome" => "ok").increment(1);
                last.ok = true;
                self.install(keys);
            }
            Err(err) => {
                tracing::warn!(url = %self.config.url, %err, ?trigger, "cannot fetch the identity provider's keys");
                metrics::counter!("pointstream_jwks_fetches_total", "outcome" => "error").increment(1);
                last.ok = false;
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes `keys` the set, noting whether it withdrew a key.
    fn install(&self, keys: KeySet) {
        let mut current = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.withdrawn_in(&keys) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        *current = Arc::new(keys);
    }

    /// How long until the periodic refresh is due (zero: now), and the
    /// generation that answer is for.
    async fn due(&self) -> (Duration, u64) {
        let last = self.last.lock().await;
        let generation = self.generation.load(Ordering::Acquire);
        let wait = match last.at {
            None => Duration::ZERO,
            Some(at) => {
                // A failed fetch is retried no sooner than a second later, even
                // with no `min_refresh`: a provider that is down is not hammered.
                let every =
                    if last.ok { self.config.refresh } else { self.config.min_refresh.max(Duration::from_secs(1)) };
                (at + every).saturating_duration_since(Instant::now())
            }
        };
        (wait, generation)
    }

    /// One fetch of the key set.
    async fn fetch(&self) -> Result<KeySet, FetchError> {
        let client = self.client.as_ref().map_err(|err| FetchError::Client(err.clone()))?;
        let mut response =
            client.get(self.config.url.clone()).header(reqwest::header::ACCEPT, "application/json").send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let document: Document = serde_json::from_slice(&body)?;
        let published = document.keys.len();
        let mut keys = KeySet::default();
        for value in document.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
            let Some(algorithm) = algorithm(&jwk) else { continue };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else { continue };
            let validation = validation(algorithm, self.config.issuer.as_deref(), self.config.audience.as_deref());
            let kid = jwk.common.key_id.clone();
            let key = Arc::new(Key { jwk, decoding, validation });
            match kid {
                Some(kid) => drop(keys.by_id.insert(kid, key)),
                None => keys.unnamed.push(key),
            }
        }
        if keys.len() == 0 {
            return Err(FetchError::NoUsableKeys(published));
        }
        if keys.len() < published {
            tracing::debug!(
                published,
                usable = keys.len(),
                "some published keys are not for RS/PS, ES or EdDSA signatures"
            );
        }
        Ok(keys)
    }
}

/// Fetches the keys when they are due, for as long as the [`Jwks`] lives.
async fn refresher(jwks: Weak<Jwks>) {
    loop {
        let wait = {
            let Some(jwks) = jwks.upgrade() else { return };
            let (wait, seen) = jwks.due().await;
            if wait.is_zero() {
                jwks.refresh(seen, Trigger::Schedule).await;
                continue;
            }
            wait
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).expect("a JWK")
    }

    const N: &str =
        "sXchmGb1JOTFEBS3sYvQ8ijZXoz9fzOBFdbzKjdP-iqOzOhoO4CZRlYzKUWaHbHwmfNnCRS5wDhUtXhWbkDdJ8BPWq0pc8xGl5uPwf2PQQ";

    #[test]
    fn a_keys_algorithm_comes_from_the_key_never_from_elsewhere() {
        let rsa = |extra: serde_json::Value| {
            let mut key = serde_json::json!({ "kty": "RSA", "n": N, "e": "AQAB" });
            key.as_object_mut().expect("an object").extend(extra.as_object().cloned().unwrap_or_default());
            jwk(key)
        };
        assert_eq!(algorithm(&rsa(serde_json::json!({}))), Some(Algorithm::RS256), "RSA: RS256 by default");
        assert_eq!(algorithm(&rsa(serde_json::json!({ "alg": "PS256" }))), Some(Algorithm::PS256));
        assert_eq!(algorithm(&rsa(serde_json::json!({ "alg": "HS256" }))), None, "HMAC over a public key");
        assert_eq!(algorithm(&rsa(serde_json::json!({ "alg": "ES256" }))), None, "another family");
        assert_eq!(algorithm(&rsa(serde_json::json!({ "use": "enc" }))), None, "an encryption key");
        let ec = |crv: &str, alg: Option<&str>| {
            let mut key = serde_json::json!({ "kty": "EC", "crv": crv, "x": "AA", "y": "AA" });
            if let Some(alg) = alg {
                key["alg"] = alg.into();
            }
            jwk(key)
        };
        assert_eq!(algorithm(&ec("P-256", None)), Some(Algorithm::ES256));
        assert_eq!(algorithm(&ec("P-384", None)), Some(Algorithm::ES384));
        assert_eq!(algorithm(&ec("P-256", Some("ES384"))), None, "a curve its algorithm does not use");
        let ed = jwk(serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": "AA" }));
        assert_eq!(algorithm(&ed), Some(Algorithm::EdDSA));
        assert_eq!(algorithm(&jwk(serde_json::json!({ "kty": "oct", "k": "c2VjcmV0" }))), None, "symmetric");
    }

    #[test]
    fn only_http_urls_and_plain_http_beyond_loopback_is_insecure() {
        assert!(OidcConfig::new("not a url").is_err());
        assert!(OidcConfig::new("file:///etc/jwks.json").is_err());
        assert!(!OidcConfig::new("https://id.example.com/jwks").expect("a URL").insecure());
        assert!(!OidcConfig::new("http://127.0.0.1:8080/jwks").expect("a URL").insecure());
        assert!(!OidcConfig::new("http://localhost/jwks").expect("a URL").insecure());
        assert!(OidcConfig::new("http://id.example.com/jwks").expect("a URL").insecure());
    }
}
