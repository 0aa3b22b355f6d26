//! Social access tokens at rest: sealed with XChaCha20-Poly1305 under a key
//! from configuration, bound to their (member, provider) row, in the
//! `social_tokens` table. Never in events, logs, metrics or GraphQL output.

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

    fn seal(&self, member: &str, provider: &str, token: &str) -> Result<(String, String), TokenError> {
        let nonce: [u8; 24] = rand::random();
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: token.as_bytes(), aad: &bound(member, provider) })
            .map_err(|_| TokenError::Seal)?;
        Ok((hex::encode(nonce), hex::encode(sealed)))
    }

    fn open(&self, member: &str, provider: &str, nonce: &str, sealed: &str) -> Result<String, TokenError> {
        let unreadable = || TokenError::Unreadable { member: member.into(), provider: provider.into() };
        let nonce = hex::decode(nonce).map_err(|_| unreadable())?;
        let sealed = hex::decode(sealed).map_err(|_| unreadable())?;
        if nonce.len() != 24 {
            return Err(unreadable());
        }
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &sealed, aad: &bound(member, provider) })
            .map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }

    /// Stores (or replaces) `member`'s token at `provider`, sealed.
    pub async fn store(
        &self,
        db: &impl ConnectionTrait,
        member: &str,
        provider: &str,
        token: &str,
        now_us: i64,
    ) -> Result<(), TokenError> {
        let (nonce, sealed) = self.seal(member, provider, token)?;
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

    /// `member`'s token at `provider`, if one is stored.
    pub async fn load(
        &self,
        db: &impl ConnectionTrait,
        member: &str,
        provider: &str,
    ) -> Result<Option<String>, TokenError> {
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
        let (nonce, sealed) = vault.seal("ann", "facebook", "EAAB-secret").expect("seals");
        assert!(!sealed.contains(&hex::encode("EAAB-secret")), "the token is not stored in clear");
        assert_eq!(vault.open("ann", "facebook", &nonce, &sealed).expect("opens"), "EAAB-secret");
        assert!(vault.open("bob", "facebook", &nonce, &sealed).is_err(), "bound to its member");
        assert!(vault.open("ann", "twitter", &nonce, &sealed).is_err(), "bound to its provider");
        let other = TokenVault::from_hex(&KEY.replace("00", "ff")).expect("a key");
        assert!(other.open("ann", "facebook", &nonce, &sealed).is_err(), "needs the key");
        assert!(TokenVault::from_hex("abc").is_err());
    }
}
