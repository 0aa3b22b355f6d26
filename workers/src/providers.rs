//! Social networks behind one trait: Facebook's Graph API (a feed post with
//! its message and a link to the post in the app), Twitter's API v2 (the text
//! and the link),
//! and, for the embedded mode, one that only logs. Base URLs are
//! configurable, so tests point them at a fake server.

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
}

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

/// A social network a post can be cross-posted to.
#[async_trait]
pub trait SocialNetwork: Send + Sync {
    /// Posts `outgoing`.
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal>;
}

/// Facebook Graph API: `POST {base}/{account}/feed` with `message` and `access_token`.
pub struct Facebook {
    http: reqwest::Client,
    base: String,
}

/// Twitter API v2: `POST {base}/2/tweets` with `{"text": ...}` and a bearer token.
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

#[async_trait]
impl SocialNetwork for Facebook {
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal> {
        let (account, token) = credentials(outgoing)?;
        let url = format!("{}/{account}/feed", self.base);
        let mut form = vec![("message", outgoing.body.as_str()), ("access_token", token)];
        if let Some(link) = &outgoing.link {
            form.push(("link", link.as_str()));
        }
        let value = answer(self.http.post(url).form(&form).send().await).await?;
        let id = id_in(&value, "/id")?;
        Ok(Published { url: format!("https://www.facebook.com/{id}"), external_id: id })
    }
}

#[async_trait]
impl SocialNetwork for Twitter {
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal> {
        let (_, token) = credentials(outgoing)?;
        let url = format!("{}/2/tweets", self.base);
        let text = match &outgoing.link {
            Some(link) => format!("{} {link}", outgoing.body),
            None => outgoing.body.clone(),
        };
        let body = serde_json::json!({ "text": text });
        let value = answer(self.http.post(url).bearer_auth(token).json(&body).send().await).await?;
        let id = id_in(&value, "/data/id")?;
        Ok(Published { url: format!("https://twitter.com/i/web/status/{id}"), external_id: id })
    }
}

#[async_trait]
impl SocialNetwork for LoggingNetwork {
    async fn publish(&self, outgoing: &Outgoing) -> Result<Published, Refusal> {
        let account = outgoing.account.as_deref().unwrap_or("(none linked)");
        tracing::info!(network = self.name, post = %outgoing.post, account, "would post (embedded mode)");
        let id = format!("logged-{}", outgoing.post);
        Ok(Published { url: format!("log://{}/{id}", self.name), external_id: id })
    }
}
