//! Social networks behind one trait: Facebook's Graph API (a feed post with
//! its message and a link to the post in the app; a photo post through the
//! photos endpoint), Twitter's API v2 (the text and the link; photos uploaded
//! through the media endpoint first, then attached to the tweet; a photo
//! added to a post later is a reply to the post's tweet), and, for the
//! embedded mode, one that only logs. Base URLs are configurable, so
//! tests point them at a fake server.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::Value;

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
    /// A 4xx other than 429: the request itself is refused.
    #[error("{reason}")]
    Refused {
        /// What happened.
        reason: String,
    },
}

impl Refusal {
    /// How long the network asked to be left alone (a 429's `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Transient { retry_after, .. } => *retry_after,
            Refusal::Refused { .. } => None,
        }
    }
}

/// A social network a post can be cross-posted to.
#[async_trait]
pub trait SocialNetwork: Send + Sync {
    /// Posts `outgoing`.
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal>;
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
/// carries their ids.
pub struct Twitter {
    http: reqwest::Client,
    base: String,
}

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
    /// Twitter at `base` (`https://api.twitter.com`).
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Twitter { http, base: base.into() }
    }
}

/// The network's answer as a JSON body, or why not.
async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Value, Refusal> {
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
        _ => Err(Refusal::Refused { reason: "the author has no linked account with a token there".into() }),
    }
}

fn id_in(value: &Value, pointer: &str) -> Result<String, Refusal> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_string).ok_or_else(|| Refusal::Transient {
        reason: format!("the answer has no {pointer}: {value}"),
        retry_after: None,
    })
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
