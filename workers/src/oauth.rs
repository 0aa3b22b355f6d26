//! OAuth 2.0 with the networks, as a confidential client: the authorization
//! URL (with PKCE S256), the code exchanged for tokens, and tokens refreshed.
//! What the API's linking flow and the social workers' refreshes share.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::providers::{Refusal, answer, id_in};
use crate::tokens::TokenSet;

/// pointstream registered as an app with a network (or one instance of it).
#[derive(Clone)]
pub struct OAuthApp {
    /// The client id the network gave.
    pub client_id: String,
    /// The client secret the network gave.
    pub client_secret: String,
    /// Where the member's browser is sent to authorize.
    pub authorize_url: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_url: String,
    /// Scopes asked for, space-separated (Facebook: comma-separated).
    pub scopes: String,
    /// Whether the token endpoint takes the client's credentials as HTTP
    /// Basic (X) rather than in the form (Mastodon).
    pub basic_auth: bool,
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("client_id", &self.client_id)
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

/// A PKCE pair: the verifier kept on the server, the S256 challenge sent.
pub fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A fresh secret of 32 random bytes, URL-safe.
pub fn secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The tokens in a token endpoint's answer (`access_token`, `refresh_token`,
/// `expires_in` seconds), for link `link`.
pub fn granted(value: &Value, now_us: i64, link: Option<String>) -> Result<TokenSet, Refusal> {
    let access = id_in(value, "/access_token")?;
    let expires_at_us = value
        .pointer("/expires_in")
        .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .map(|seconds| now_us.saturating_add(seconds.saturating_mul(1_000_000)));
    Ok(TokenSet {
        access,
        refresh: value.pointer("/refresh_token").and_then(Value::as_str).map(str::to_string),
        expires_at_us,
        link,
    })
}

/// An AT Protocol session's tokens (`accessJwt`, `refreshJwt`); the access
/// token's expiry is read from its JWT claims when it has one.
pub fn session_tokens(session: &Value, link: Option<String>) -> Result<TokenSet, Refusal> {
    let access = id_in(session, "/accessJwt")?;
    let expires_at_us = access
        .split('.')
        .nth(1)
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok())
        .and_then(|claims| serde_json::from_slice::<Value>(&claims).ok())
        .and_then(|claims| claims.pointer("/exp").and_then(Value::as_i64))
        .map(|seconds| seconds.saturating_mul(1_000_000));
    Ok(TokenSet { access, refresh: Some(id_in(session, "/refreshJwt")?), expires_at_us, link })
}

/// A refresh's answer: a 400 or 401 (the grant revoked or expired) is for good.
pub fn refreshed(answered: Result<Value, Refusal>) -> Result<Value, Refusal> {
    answered.map_err(|refusal| match refusal {
        Refusal::Refused { reason } | Refusal::Unauthorized { reason } => {
            Refusal::Relink { reason: format!("the network refused to refresh the token: {reason}") }
        }
        other => other,
    })
}

impl OAuthApp {
    /// The URL the member's browser goes to: the code comes back to
    /// `redirect_uri` with `state`; `challenge` is the PKCE S256 challenge.
    pub fn authorize(&self, redirect_uri: &str, state: &str, challenge: Option<&str>) -> Result<String, String> {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", self.scopes.as_str()),
            ("state", state),
        ];
        if let Some(challenge) = challenge {
            params.extend([("code_challenge", challenge), ("code_challenge_method", "S256")]);
        }
        reqwest::Url::parse_with_params(&self.authorize_url, &params)
            .map(String::from)
            .map_err(|e| format!("the authorization URL {:?} is not a URL: {e}", self.authorize_url))
    }

    /// A form to the token endpoint, with the client's credentials.
    async fn token_call(&self, http: &reqwest::Client, form: &[(&str, &str)]) -> Result<Value, Refusal> {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        form.push(("client_id", &self.client_id));
        let request = http.post(&self.token_url);
        let request = if self.basic_auth {
            request.basic_auth(&self.client_id, Some(&self.client_secret))
        } else {
            form.push(("client_secret", &self.client_secret));
            request
        };
        answer(request.form(&form).timeout(Duration::from_secs(15)).send().await).await
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
        now_us: i64,
    ) -> Result<TokenSet, Refusal> {
        let mut form = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri)];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        granted(&self.token_call(http, &form).await?, now_us, None)
    }

    /// New tokens for `tokens` (rotating the refresh token where the network does).
    pub async fn refresh(&self, http: &reqwest::Client, tokens: &TokenSet) -> Result<TokenSet, Refusal> {
        let refresh = tokens.refresh.as_deref().ok_or_else(|| Refusal::Relink {
            reason: "no refresh token is kept for this account: link it again".into(),
        })?;
        let answered = self.token_call(http, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
        let mut renewed = granted(&refreshed(answered)?, eventstore::now_us(), tokens.link.clone())?;
        // A network that does not rotate refresh tokens keeps the old one good.
        if renewed.refresh.is_none() {
            renewed.refresh = tokens.refresh.clone();
        }
        Ok(renewed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_the_verifiers_s256() {
        let (verifier, challenge) = pkce();
        assert_eq!(verifier.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(challenge, URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())));
        // RFC 7636, appendix B.
        let known = URL_SAFE_NO_PAD.encode(Sha256::digest(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert_eq!(known, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn an_expiry_in_seconds_becomes_a_time() {
        let value = serde_json::json!({ "access_token": "a", "refresh_token": "r", "expires_in": 7200 });
        let tokens = granted(&value, 1_000_000, None).expect("tokens");
        assert_eq!(tokens.expires_at_us, Some(7_201_000_000));
        assert_eq!(tokens.refresh.as_deref(), Some("r"));
        assert!(granted(&serde_json::json!({}), 0, None).is_err());
    }
}
