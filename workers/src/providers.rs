//! Social networks behind one trait: Facebook's Graph API (a feed post with
//! its message and a link to the post in the app; a photo post through the
//! photos endpoint), Twitter's API v2 (the text and the link; photos uploaded
//! through the media endpoint first, then attached to the tweet; a photo
//! added to a post later is a reply to the post's tweet), Mastodon (any
//! instance; `Idempotency-Key` makes a repeated call answer with the status
//! the first one made), Bluesky (AT Protocol; a record key derived from the
//! post makes a repeat a conflict), and, for the embedded mode, one that only
//! logs. Base URLs are configurable, so tests point them at a fake server.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::Value;

use crate::oauth::OAuthApp;
use crate::tokens::TokenSet;

/// What is posted, on whose behalf.
#[derive(Clone)]
pub struct Outgoing {
    /// The post's id (for logs).
    pub post: String,
    /// The text.
    pub body: String,
    /// Where the post can be seen in the app, if the app has a public URL.
    pub link: Option<String>,
    /// The member's account at the network (a page or user id), if linked.
    pub account: Option<String>,
    /// The member's access token there, if stored.
    pub token: Option<String>,
    /// The account's server: a Mastodon instance's or Bluesky PDS's base URL.
    pub instance: Option<String>,
    /// A key of this post (or later photo) at this network, the same for
    /// every attempt: Mastodon's `Idempotency-Key`, Bluesky's record key.
    pub key: String,
    /// When the post (or photo) was written (µs): Bluesky's record time.
    pub written_at_us: i64,
    /// The post's photos, read from the photo store (never from the client).
    pub photos: Vec<media::Blob>,
    /// For a photo added to a post later: the network's id of the post it
    /// continues. Twitter posts it as a reply; Facebook, whose photo posts
    /// cannot answer a post, as a photo post of its own.
    pub reply_to: Option<String>,
}

/// Twitter attaches at most this many photos to a tweet.
const TWEET_PHOTOS: usize = 4;

/// A published post at a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The network's id of the post.
    pub external_id: String,
    /// Where it can be seen.
    pub url: String,
}

/// Why a post was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Worth trying again: a 5xx, a timeout, a 429 (with how long it asked to wait).
    #[error("{reason}")]
    Transient {
        /// What happened.
        reason: String,
        /// The network's `Retry-After`, if it gave one.
        retry_after: Option<Duration>,
    },
    /// A 4xx other than 401 and 429: the request itself is refused.
    #[error("{reason}")]
    Refused {
        /// What happened.
        reason: String,
    },
    /// A 401 (or Facebook's code 190): the token is no longer good. Worth
    /// one refresh and one more try.
    #[error("{reason}")]
    Unauthorized {
        /// What happened.
        reason: String,
    },
    /// The account must be linked again: its tokens were refused for good
    /// (a refused refresh), or there are none.
    #[error("{reason}")]
    Relink {
        /// What happened.
        reason: String,
    },
}

impl Refusal {
    /// How long the network asked to be left alone (a 429's `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A social network a post can be cross-posted to.
#[async_trait]
pub trait SocialNetwork: Send + Sync {
    /// Posts `outgoing`.
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal>;

    /// New tokens for `tokens` of an account on `instance`; a refusal for
    /// good is [`Refusal::Relink`]. Networks whose tokens do not expire (or
    /// cannot be refreshed) ask for a new link.
    async fn refresh(&self, instance: Option<&str>, tokens: &TokenSet) -> Result<TokenSet, Refusal> {
        let _ = (instance, tokens);
        Err(Refusal::Relink {
            reason: "the network refused the token and gives no refresh: link the account again".into(),
        })
    }
}

/// Facebook Graph API: `POST {base}/{account}/feed` with `message` and
/// `access_token`; with one photo, `POST {base}/{account}/photos` with the
/// photo as `source` and the message as caption; with several, each photo
/// unpublished through `/photos`, then a feed post attaching them.
pub struct Facebook {
    http: reqwest::Client,
    base: String,
}

/// Twitter API v2: `POST {base}/2/tweets` with `{"text": ...}` and a bearer
/// token; photos first go to `POST {base}/2/media/upload` and the tweet
/// carries their ids. With pointstream registered as an OAuth 2.0 app
/// (`app`), expiring tokens are refreshed at its token endpoint.
pub struct Twitter {
    http: reqwest::Client,
    base: String,
    app: Option<std::sync::Arc<OAuthApp>>,
}

/// Mastodon, any instance: photos through `POST {instance}/api/v2/media`,
/// then `POST {instance}/api/v1/statuses` with `Idempotency-Key`: a repeat
/// within the instance's hour of memory answers the status the first call
/// made, so a call repeated after a worker died never posts twice.
pub struct Mastodon {
    http: reqwest::Client,
}

/// Bluesky (AT Protocol), on the account's PDS: photos through
/// `com.atproto.repo.uploadBlob`, then `com.atproto.repo.createRecord` of an
/// `app.bsky.feed.post` under a record key derived from the post (a TID of
/// the post's time). A repeat is refused as a conflict; the record found
/// under that key is the post published.
pub struct Bluesky {
    http: reqwest::Client,
}

/// Mastodon takes at most 4 photos per status, as Bluesky per post.
const STATUS_PHOTOS: usize = 4;
/// Mastodon's default length of a status, in characters.
const MASTODON_CHARS: usize = 500;
/// Bluesky's length of a post, in graphemes (at most as many as characters).
const BLUESKY_CHARS: usize = 300;

/// The embedded mode's network: logs the post and calls it published.
pub struct LoggingNetwork {
    /// Which network it stands in for.
    pub name: &'static str,
}

/// An HTTP client for the networks: bounded waits, so a hanging network is a
/// transient failure, not a stuck worker.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl Facebook {
    /// Facebook at `base` (`https://graph.facebook.com/v19.0`).
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Facebook { http, base: base.into() }
    }
}

impl Twitter {
    /// Twitter at `base` (`https://api.twitter.com`), refreshing tokens as `app`.
    pub fn new(http: reqwest::Client, base: impl Into<String>, app: Option<std::sync::Arc<OAuthApp>>) -> Self {
        Twitter { http, base: base.into(), app }
    }
}

impl Mastodon {
    /// Mastodon, on whichever instance each account lives.
    pub fn new(http: reqwest::Client) -> Self {
        Mastodon { http }
    }
}

impl Bluesky {
    /// Bluesky, on whichever PDS each account lives.
    pub fn new(http: reqwest::Client) -> Self {
        Bluesky { http }
    }
}

/// The network's answer as a JSON body, or why not (shared with the linking flow).
pub async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Value, Refusal> {
    let response = sent.map_err(|e| Refusal::Transient {
        reason: if e.is_timeout() { "timed out".into() } else { format!("unreachable: {e}") },
        retry_after: None,
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    let reason = format!("HTTP {}: {}", status.as_u16(), body.chars().take(200).collect::<String>());
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(Refusal::Transient { reason, retry_after });
    }
    // Facebook answers an expired or revoked token with an OAuthException of code 190.
    let expired_at_facebook = || {
        serde_json::from_str::<Value>(&body).ok().and_then(|v| v.pointer("/error/code").and_then(Value::as_i64))
            == Some(190)
    };
    if status == StatusCode::UNAUTHORIZED || (status.is_client_error() && expired_at_facebook()) {
        return Err(Refusal::Unauthorized { reason });
    }
    if !status.is_success() {
        return Err(Refusal::Refused { reason });
    }
    serde_json::from_str(&body)
        .map_err(|_| Refusal::Transient { reason: format!("unreadable answer: {reason}"), retry_after })
}

/// The account and token, or a refusal: without them nothing can be posted.
fn credentials(outgoing: &Outgoing) -> Result<(&str, &str), Refusal> {
    match (&outgoing.account, &outgoing.token) {
        (Some(account), Some(token)) => Ok((account, token)),
        _ => Err(Refusal::Relink { reason: "the author has no linked account with a token there".into() }),
    }
}

/// The account's server, or a refusal.
fn instance(outgoing: &Outgoing) -> Result<&str, Refusal> {
    outgoing
        .instance
        .as_deref()
        .map(|base| base.trim_end_matches('/'))
        .ok_or_else(|| Refusal::Relink { reason: "the linked account names no server".into() })
}

/// The post's text and link within `limit` characters: the text is cut (with
/// an ellipsis), never the link.
fn fitted(outgoing: &Outgoing, limit: usize) -> String {
    let link = outgoing.link.as_ref().map_or(0, |link| link.chars().count() + 1);
    let room = limit.saturating_sub(link);
    let mut text: String = if outgoing.body.chars().count() > room {
        let mut cut: String = outgoing.body.chars().take(room.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        outgoing.body.clone()
    };
    if let Some(link) = &outgoing.link {
        text.push(' ');
        text.push_str(link);
    }
    text
}

/// The non-empty string at `pointer` in a network's answer. The answer
/// itself is not quoted in the refusal: a token endpoint's holds secrets.
pub fn id_in(value: &Value, pointer: &str) -> Result<String, Refusal> {
    let found = value.pointer(pointer).and_then(Value::as_str).filter(|id| !id.is_empty());
    found
        .map(str::to_string)
        .ok_or_else(|| Refusal::Transient { reason: format!("the answer has no {pointer}"), retry_after: None })
}

/// One photo as a multipart file part.
fn photo_part(photo: &media::Blob, index: usize) -> Result<reqwest::multipart::Part, Refusal> {
    let extension = photo.content_type.rsplit('/').next().unwrap_or("jpg");
    reqwest::multipart::Part::stream_with_length(reqwest::Body::from(photo.bytes.clone()), photo.bytes.len() as u64)
        .file_name(format!("photo-{index}.{extension}"))
        .mime_str(&photo.content_type)
        .map_err(|e| Refusal::Refused { reason: format!("photo {index}: {e}") })
}

impl Facebook {
    /// Uploads one photo to `/{account}/photos`; `caption` publishes it as
    /// the post, `None` keeps it unpublished for a feed post to attach.
    async fn photo(
        &self,
        account: &str,
        token: &str,
        photo: &media::Blob,
        index: usize,
        caption: Option<&str>,
    ) -> Result<String, Refusal> {
        let mut form = reqwest::multipart::Form::new()
            .text("access_token", token.to_string())
            .part("source", photo_part(photo, index)?);
        form = match caption {
            Some(caption) => form.text("message", caption.to_string()),
            None => form.text("published", "false"),
        };
        let url = format!("{}/{account}/photos", self.base);
        let value = answer(self.http.post(url).multipart(form).send().await).await?;
        id_in(&value, "/id")
    }
}

#[async_trait]
impl SocialNetwork for Facebook {
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal> {
        let (account, token) = credentials(outgoing)?;
        let id = if let [photo] = outgoing.photos.as_slice() {
            // The photos endpoint takes no link: it goes in the caption.
            let caption = match &outgoing.link {
                Some(link) => format!("{} {link}", outgoing.body),
                None => outgoing.body.clone(),
            };
            self.photo(account, token, photo, 0, Some(&caption)).await?
        } else {
            let mut attached = Vec::with_capacity(outgoing.photos.len());
            for (index, photo) in outgoing.photos.iter().enumerate() {
                attached.push(self.photo(account, token, photo, index, None).await?);
            }
            let url = format!("{}/{account}/feed", self.base);
            let mut form =
                vec![("message".to_string(), outgoing.body.clone()), ("access_token".to_string(), token.to_string())];
            if let Some(link) = &outgoing.link {
                form.push(("link".to_string(), link.clone()));
            }
            for (index, id) in attached.iter().enumerate() {
                form.push((format!("attached_media[{index}]"), serde_json::json!({ "media_fbid": id }).to_string()));
            }
            let value = answer(self.http.post(url).form(&form).send().await).await?;
            id_in(&value, "/id")?
        };
        Ok(Published { url: format!("https://www.facebook.com/{id}"), external_id: id })
    }
}

#[async_trait]
impl SocialNetwork for Twitter {
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal> {
        let (_, token) = credentials(outgoing)?;
        let mut media_ids = Vec::new();
        for (index, photo) in outgoing.photos.iter().take(TWEET_PHOTOS).enumerate() {
            let form = reqwest::multipart::Form::new()
                .text("media_category", "tweet_image")
                .part("media", photo_part(photo, index)?);
            let url = format!("{}/2/media/upload", self.base);
            let value = answer(self.http.post(url).bearer_auth(token).multipart(form).send().await).await?;
            media_ids.push(id_in(&value, "/data/id")?);
        }
        let url = format!("{}/2/tweets", self.base);
        let text = match &outgoing.link {
            Some(link) => format!("{} {link}", outgoing.body),
            None => outgoing.body.clone(),
        };
        let mut body = serde_json::json!({ "text": text });
        if !media_ids.is_empty() {
            body["media"] = serde_json::json!({ "media_ids": media_ids });
        }
        if let Some(tweet) = &outgoing.reply_to {
            body["reply"] = serde_json::json!({ "in_reply_to_tweet_id": tweet });
        }
        let value = answer(self.http.post(url).bearer_auth(token).json(&body).send().await).await?;
        let id = id_in(&value, "/data/id")?;
        Ok(Published { url: format!("https://twitter.com/i/web/status/{id}"), external_id: id })
    }

    async fn refresh(&self, _: Option<&str>, tokens: &TokenSet) -> Result<TokenSet, Refusal> {
        match &self.app {
            Some(app) => app.refresh(&self.http, tokens).await,
            None => Err(Refusal::Relink {
                reason: "no Twitter app is configured to refresh tokens with: link the account again".into(),
            }),
        }
    }
}

#[async_trait]
impl SocialNetwork for Mastodon {
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal> {
        let (_, token) = credentials(outgoing)?;
        let base = instance(outgoing)?;
        let mut media_ids = Vec::new();
        for (index, photo) in outgoing.photos.iter().take(STATUS_PHOTOS).enumerate() {
            let form = reqwest::multipart::Form::new().part("file", photo_part(photo, index)?);
            let sent = self.http.post(format!("{base}/api/v2/media")).bearer_auth(token).multipart(form).send().await;
            media_ids.push(id_in(&answer(sent).await?, "/id")?);
        }
        let mut body = serde_json::json!({ "status": fitted(outgoing, MASTODON_CHARS), "media_ids": media_ids });
        if let Some(status) = &outgoing.reply_to {
            body["in_reply_to_id"] = serde_json::json!(status);
        }
        let sent = self
            .http
            .post(format!("{base}/api/v1/statuses"))
            .bearer_auth(token)
            .header("Idempotency-Key", &outgoing.key)
            .json(&body)
            .send()
            .await;
        let value = answer(sent).await?;
        let id = id_in(&value, "/id")?;
        let url = value
            .pointer("/url")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{base}/statuses/{id}"), str::to_string);
        Ok(Published { external_id: id, url })
    }
}

/// The record key of an outgoing post at Bluesky: a TID (13 characters of
/// base32-sortable: 53 bits of microseconds, 10 of clock id), of the post's
/// time, with a clock id from its key. The same for every attempt, and as
/// the network expects of `app.bsky.feed.post` records.
pub fn record_key(written_at_us: i64, key: &str) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
    let hash = Sha256::digest(key.as_bytes());
    let clock = u64::from(u16::from_be_bytes([hash[0], hash[1]]) & 0x3FF);
    let micros = (written_at_us.max(0) as u64) & ((1 << 53) - 1);
    let mut tid = (micros << 10) | clock;
    let mut text = [b'2'; 13];
    for slot in text.iter_mut().rev() {
        *slot = ALPHABET[(tid & 31) as usize];
        tid >>= 5;
    }
    text.iter().map(|b| char::from(*b)).collect()
}

const POST_COLLECTION: &str = "app.bsky.feed.post";

impl Bluesky {
    /// The post under `rkey` in `did`'s repository, if there is one.
    async fn existing(&self, base: &str, did: &str, rkey: &str) -> Result<Option<Value>, Refusal> {
        let url = format!("{base}/xrpc/com.atproto.repo.getRecord");
        let query = [("repo", did), ("collection", POST_COLLECTION), ("rkey", rkey)];
        match answer(self.http.get(url).query(&query).send().await).await {
            Ok(found) => Ok(Some(found)),
            Err(Refusal::Refused { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

#[async_trait]
impl SocialNetwork for Bluesky {
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal> {
        let (did, token) = credentials(outgoing)?;
        let base = instance(outgoing)?;
        let rkey = record_key(outgoing.written_at_us, &outgoing.key);
        let text = fitted(outgoing, BLUESKY_CHARS);
        let published = |uri: &str| {
            let url = format!("https://bsky.app/profile/{did}/post/{rkey}");
            Published { external_id: uri.to_string(), url }
        };
        // Asked first, so a repeat uploads no photos again.
        if let Some(found) = self.existing(base, did, &rkey).await? {
            return Ok(published(&id_in(&found, "/uri")?));
        }
        let mut images = Vec::new();
        for photo in outgoing.photos.iter().take(STATUS_PHOTOS) {
            let sent = self
                .http
                .post(format!("{base}/xrpc/com.atproto.repo.uploadBlob"))
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, &photo.content_type)
                .body(photo.bytes.clone())
                .send()
                .await;
            let blob = answer(sent).await?.pointer("/blob").cloned().ok_or_else(|| Refusal::Transient {
                reason: "uploadBlob answered no blob".into(),
                retry_after: None,
            })?;
            images.push(serde_json::json!({ "alt": "", "image": blob }));
        }
        let created_at = chrono::DateTime::from_timestamp_micros(outgoing.written_at_us)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut record = serde_json::json!({ "$type": POST_COLLECTION, "text": text, "createdAt": created_at });
        if !images.is_empty() {
            record["embed"] = serde_json::json!({ "$type": "app.bsky.embed.images", "images": images });
        }
        let body = serde_json::json!({ "repo": did, "collection": POST_COLLECTION, "rkey": rkey, "record": record });
        let sent = self
            .http
            .post(format!("{base}/xrpc/com.atproto.repo.createRecord"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        match answer(sent).await {
            Ok(value) => Ok(published(&id_in(&value, "/uri")?)),
            // A record under this key already: an earlier attempt's, if its text is this post's.
            Err(Refusal::Refused { reason }) => match self.existing(base, did, &rkey).await? {
                Some(found) if found.pointer("/value/text").and_then(Value::as_str) == Some(text.as_str()) => {
                    Ok(published(&id_in(&found, "/uri")?))
                }
                _ => Err(Refusal::Refused { reason }),
            },
            Err(other) => Err(other),
        }
    }

    async fn refresh(&self, instance: Option<&str>, tokens: &TokenSet) -> Result<TokenSet, Refusal> {
        let base = instance
            .map(|b| b.trim_end_matches('/'))
            .ok_or_else(|| Refusal::Relink { reason: "the linked account names no server".into() })?;
        let refresh = tokens.refresh.as_deref().ok_or_else(|| Refusal::Relink {
            reason: "no refresh token is kept for this account: link it again".into(),
        })?;
        let sent =
            self.http.post(format!("{base}/xrpc/com.atproto.server.refreshSession")).bearer_auth(refresh).send().await;
        let session = crate::oauth::refreshed(answer(sent).await)?;
        Ok(crate::oauth::session_tokens(&session, tokens.link.clone())?)
    }
}

#[async_trait]
impl SocialNetwork for LoggingNetwork {
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal> {
        let account = outgoing.account.as_deref().unwrap_or("(none linked)");
        let photos = outgoing.photos.len();
        let reply_to = outgoing.reply_to.as_deref().unwrap_or("-");
        tracing::info!(network = self.name, post = %outgoing.post, account, photos, reply_to, "would post (embedded mode)");
        let id = match &outgoing.reply_to {
            None => format!("logged-{}", outgoing.post),
            Some(_) => format!("logged-{}-reply-{:08x}", outgoing.post, rand::random::<u32>()),
        };
        Ok(Published { url: format!("log://{}/{id}", self.name), external_id: id })
    }
}
