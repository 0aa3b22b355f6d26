//! Social access tokens at rest: sealed with XChaCha20-Poly1305 under a key
//! from configuration, bound to their (member, provider) row, in the
//! `social_tokens` table. Never in events, logs, metrics or GraphQL output.
//!
//! What is sealed is a [`TokenSet`]: the access token, the refresh token and
//! the access token's expiry where the network gives them, and the id of the
//! link they belong to. A row sealed before sets were stored holds the bare
//! access token, and is read as a set of that token alone.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use migrations::tables::SocialTokens;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbErr};

/// Why a token could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key is not 32 bytes of hex.
    #[error("the token key must be 64 hex digits (32 bytes)")]
    BadKey,
    /// The stored token does not open with this key (another key, or altered).
    #[error("the stored token for {member} at {provider} cannot be opened with this key")]
    Unreadable {
        /// Whose.
        member: String,
        /// Where.
        provider: String,
    },
    /// The token could not be sealed (beyond the cipher's size limits).
    #[error("the token could not be sealed")]
    Seal,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] DbErr),
}

/// One linked account's tokens, as sealed.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenSet {
    /// What posts are made with.
    pub access: String,
    /// What gets a new access token, where the network gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// When the access token expires (µs since the epoch), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_us: Option<i64>,
    /// The link these tokens were stored for (`SocialAccountLinked`'s `link`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("refresh", &self.refresh.as_ref().map(|_| ".."))
            .field("expires_at_us", &self.expires_at_us)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// An access token alone, which does not expire.
    pub fn access(token: impl Into<String>) -> Self {
        TokenSet { access: token.into(), refresh: None, expires_at_us: None, link: None }
    }

    /// Whether the access token expires before `now_us + margin_us`.
    pub fn expires_within(&self, now_us: i64, margin_us: i64) -> bool {
        self.expires_at_us.is_some_and(|at| at <= now_us.saturating_add(margin_us))
    }
}

/// Seals and opens tokens; stores and loads them.
#[derive(Clone)]
pub struct TokenVault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVault(..)")
    }
}

/// What a sealed token is bound to, so a row copied elsewhere does not open.
fn bound(member: &str, provider: &str) -> Vec<u8> {
    format!("social_tokens\0{member}\0{provider}").into_bytes()
}

impl TokenVault {
    /// A vault with the 32-byte key given as 64 hex digits.
    pub fn from_hex(key: &str) -> Result<Self, TokenError> {
        let key = hex::decode(key.trim()).map_err(|_| TokenError::BadKey)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|_| TokenError::BadKey)?;
        Ok(TokenVault { cipher })
    }

    /// Seals `plain` for a row that `aad` names: (hex nonce, hex ciphertext).
    pub fn seal_for(&self, aad: &[u8], plain: &[u8]) -> Result<(String, String), TokenError> {
        let nonce: [u8; 24] = rand::random();
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| TokenError::Seal)?;
        Ok((hex::encode(nonce), hex::encode(sealed)))
    }

    /// Opens what [`Self::seal_for`] sealed for `aad`; `None` if it does not
    /// open (another key, another row, altered).
    pub fn open_for(&self, aad: &[u8], nonce: &str, sealed: &str) -> Option<Vec<u8>> {
        let nonce = hex::decode(nonce).ok()?;
        let sealed = hex::decode(sealed).ok()?;
        if nonce.len() != 24 {
            return None;
        }
        self.cipher.decrypt(XNonce::from_slice(&nonce), Payload { msg: &sealed, aad }).ok()
    }

    fn seal(&self, member: &str, provider: &str, tokens: &TokenSet) -> Result<(String, String), TokenError> {
        let plain = serde_json::to_vec(tokens).map_err(|_| TokenError::Seal)?;
        self.seal_for(&bound(member, provider), &plain)
    }

    fn open(&self, member: &str, provider: &str, nonce: &str, sealed: &str) -> Result<TokenSet, TokenError> {
        let unreadable = || TokenError::Unreadable { member: member.into(), provider: provider.into() };
        let plain = self.open_for(&bound(member, provider), nonce, sealed).ok_or_else(unreadable)?;
        // A set as JSON, or (sealed before sets were) the bare access token.
        match serde_json::from_slice::<TokenSet>(&plain) {
            Ok(tokens) => Ok(tokens),
            Err(_) => String::from_utf8(plain).map(TokenSet::access).map_err(|_| unreadable()),
        }
    }

    /// Stores (or replaces) `member`'s tokens at `provider`, sealed.
    pub async fn store(
        &self,
        db: &impl ConnectionTrait,
        member: &str,
        provider: &str,
        tokens: &TokenSet,
        now_us: i64,
    ) -> Result<(), TokenError> {
        let (nonce, sealed) = self.seal(member, provider, tokens)?;
        let insert = Query::insert()
            .into_table(SocialTokens::Table)
            .columns([
                SocialTokens::MemberId,
                SocialTokens::Provider,
                SocialTokens::Nonce,
                SocialTokens::Ciphertext,
                SocialTokens::UpdatedAtUs,
            ])
            .values_panic([member.into(), provider.into(), nonce.into(), sealed.into(), now_us.into()])
            .on_conflict(
                OnConflict::columns([SocialTokens::MemberId, SocialTokens::Provider])
                    .update_columns([SocialTokens::Nonce, SocialTokens::Ciphertext, SocialTokens::UpdatedAtUs])
                    .to_owned(),
            )
            .to_owned();
        db.execute(&insert).await?;
        Ok(())
    }

    /// `member`'s tokens at `provider`, if stored.
    pub async fn load(
        &self,
        db: &impl ConnectionTrait,
        member: &str,
        provider: &str,
    ) -> Result<Option<TokenSet>, TokenError> {
        let select = Query::select()
            .columns([SocialTokens::Nonce, SocialTokens::Ciphertext])
            .from(SocialTokens::Table)
            .and_where(Expr::col(SocialTokens::MemberId).eq(member))
            .and_where(Expr::col(SocialTokens::Provider).eq(provider))
            .to_owned();
        let Some(row) = db.query_one(&select).await? else { return Ok(None) };
        let nonce: String = row.try_get("", "nonce")?;
        let sealed: String = row.try_get("", "ciphertext")?;
        self.open(member, provider, &nonce, &sealed).map(Some)
    }

    /// Forgets `member`'s token at `provider`.
    pub async fn remove(db: &impl ConnectionTrait, member: &str, provider: &str) -> Result<(), TokenError> {
        let delete = Query::delete()
            .from_table(SocialTokens::Table)
            .and_where(Expr::col(SocialTokens::MemberId).eq(member))
            .and_where(Expr::col(SocialTokens::Provider).eq(provider))
            .to_owned();
        db.execute(&delete).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_token_opens_only_with_its_key_and_row() {
        let vault = TokenVault::from_hex(KEY).expect("a key");
        let tokens = TokenSet {
            access: "EAAB-secret".into(),
            refresh: Some("refresh-secret".into()),
            expires_at_us: Some(7_200_000_000),
            link: Some("link-1".into()),
        };
        let (nonce, sealed) = vault.seal("ann", "facebook", &tokens).expect("seals");
        assert!(!sealed.contains(&hex::encode("EAAB-secret")), "the token is not stored in clear");
        assert!(!format!("{tokens:?}").contains("secret"), "nor shown by Debug");
        assert_eq!(vault.open("ann", "facebook", &nonce, &sealed).expect("opens"), tokens);
        // A row sealed before token sets: the bare access token.
        let (old_nonce, old) = vault.seal_for(&bound("ann", "twitter"), b"bare-token").expect("seals");
        assert_eq!(vault.open("ann", "twitter", &old_nonce, &old).expect("opens"), TokenSet::access("bare-token"));
        assert!(vault.open("bob", "facebook", &nonce, &sealed).is_err(), "bound to its member");
        assert!(vault.open("ann", "twitter", &nonce, &sealed).is_err(), "bound to its provider");
        let other = TokenVault::from_hex(&KEY.replace("00", "ff")).expect("a key");
        assert!(other.open("ann", "facebook", &nonce, &sealed).is_err(), "needs the key");
        assert!(TokenVault::from_hex("abc").is_err());
    }
}
