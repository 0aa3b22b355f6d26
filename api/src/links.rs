//! Linking social accounts on the server, so that no token passes through a
//! browser: the OAuth 2.0 authorization-code flow (PKCE S256 for X and
//! Mastodon) from `startSocialLink` to `GET /oauth/{provider}/callback`,
//! Facebook's choice among the Pages a member manages, Mastodon's
//! registration with each instance, and Bluesky's app passwords.
//!
//! A flow in progress is a row of `social_link_flows`, keyed by the SHA-256
//! of its `state` (the state itself is stored nowhere), bound to the member
//! who started it, expiring after `state_ttl`, and taken once: the callback
//! deletes it before it does anything else. Its PKCE verifier, and for a
//! Page choice the Pages' tokens, are sealed with the token key. Tokens end
//! sealed in `social_tokens`; the link itself is a `SocialAccountLinked`
//! event, which holds no token.

use std::sync::Arc;
use std::time::Duration;

use domain::values::{ExternalRef, Provider};
use domain::{Member, MemberCommand};
use eventstore::{CommandContext, CommandError, CommandOutcome, EventStore};
use migrations::tables::{SocialApps, SocialLinkFlows};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbErr};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use workers::oauth::{self, OAuthApp};
use workers::providers::{Refusal, answer, id_in};
use workers::tokens::{TokenError, TokenSet, TokenVault};

/// Why a link could not be started or finished.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// This server is not registered with the network.
    #[error("this server is not set up to link {0} accounts")]
    NotConfigured(Provider),
    /// The network links another way (Bluesky: an app password).
    #[error("{0} accounts are linked with linkBlueskyAccount, not OAuth")]
    NotOAuth(Provider),
    /// The instance is not one this server may call.
    #[error("instance: {0}")]
    BadInstance(String),
    /// No flow has this state (forged, or used already).
    #[error("this link is unknown or was used already; start again")]
    UnknownState,
    /// The flow expired.
    #[error("this link expired; start again")]
    Expired,
    /// The member said no at the network, or it answered with an error.
    #[error("the network did not authorize the link: {0}")]
    Denied(String),
    /// The member manages no Facebook Page to post to.
    #[error("the Facebook account manages no Page to post to")]
    NoPages,
    /// The Page chosen is not among those offered.
    #[error("no Page {0} was offered")]
    UnknownPage(String),
    /// The network refused the exchange or the credentials.
    #[error("the network refused: {0}")]
    Refused(String),
    /// The network could not be reached or answered unexpectedly.
    #[error("the network is unavailable: {0}")]
    Unavailable(String),
    /// The member's command was refused.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Sealing or opening failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] DbErr),
}

impl LinkError {
    /// The GraphQL error code.
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::NotConfigured(_) | LinkError::NotOAuth(_) | LinkError::BadInstance(_) => "BAD_USER_INPUT",
            LinkError::UnknownPage(_) | LinkError::NoPages => "BAD_USER_INPUT",
            LinkError::UnknownState | LinkError::Expired => "NOT_FOUND",
            LinkError::Denied(_) | LinkError::Refused(_) => "LINK_REFUSED",
            LinkError::Unavailable(_) => "UNAVAILABLE",
            LinkError::Command(_) | LinkError::Token(_) | LinkError::Database(_) => "INTERNAL",
        }
    }
}

impl From<Refusal> for LinkError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Transient { reason, .. } => LinkError::Unavailable(reason),
            Refusal::Refused { reason } | Refusal::Unauthorized { reason } | Refusal::Relink { reason } => {
                LinkError::Refused(reason)
            }
        }
    }
}

/// X (Twitter) as an OAuth 2.0 app: where users are, and pointstream's registration.
#[derive(Debug, Clone)]
pub struct TwitterLinking {
    /// The app (client id and secret, authorize and token URLs, scopes).
    pub app: Arc<OAuthApp>,
    /// The API's base URL (`/2/users/me` names the account).
    pub api: String,
}

/// Facebook as an app: Login dialog, Graph API.
#[derive(Debug, Clone)]
pub struct FacebookLinking {
    /// The app (app id and secret, dialog and token URLs, scopes).
    pub app: OAuthApp,
    /// The Graph API's base URL (`/me/accounts` lists the Pages).
    pub graph: String,
}

/// How this server links accounts.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The API's public base URL: networks send the browser back to
    /// `{callback_base}/oauth/{provider}/callback`.
    pub callback_base: String,
    /// The front end's page the browser is sent to afterwards, with
    /// `?linked={provider}`, `?provider=facebook&choose={id}` or
    /// `?provider=..&error=..`; without it the callback answers a short page.
    pub return_url: Option<String>,
    /// How long a started flow stays good.
    pub state_ttl: Duration,
    /// X, when registered.
    pub twitter: Option<TwitterLinking>,
    /// Facebook, when registered.
    pub facebook: Option<FacebookLinking>,
    /// The name pointstream registers under at Mastodon instances.
    pub client_name: String,
    /// Bluesky's default PDS (`https://bsky.social`).
    pub bluesky_service: String,
    /// Whether instances and PDSs may be `http://` or loopback addresses
    /// (development and tests only).
    pub insecure_instances: bool,
}

/// Linking social accounts: the flows, and the calls to the networks.
pub struct SocialLinks {
    config: LinkConfig,
    vault: TokenVault,
    http: reqwest::Client,
}

impl std::fmt::Debug for SocialLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocialLinks").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A flow started: where to send the member's browser.
#[derive(Debug, Clone)]
pub struct Started {
    /// The network's authorization URL.
    pub url: String,
    /// When the flow expires (µs).
    pub expires_at_us: i64,
}

/// A Facebook Page the member may post to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    /// The Page's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its access token (never shown).
    #[serde(default)]
    access_token: String,
}

/// Where a callback ended.
#[derive(Debug, Clone)]
pub enum Landing {
    /// The account is linked.
    Linked(Provider),
    /// The member picks one of several Pages with this choice id.
    ChoosePage(String),
}

/// An account ready to be linked: what the event says, and its tokens.
pub struct Prepared {
    /// The network.
    pub provider: Provider,
    /// The account there.
    pub external_id: String,
    /// Its server, where the network has many.
    pub instance: Option<String>,
    /// Its tokens (sealed before the link is recorded).
    pub tokens: TokenSet,
}

/// What a flow's row seals.
#[derive(Serialize, Deserialize, Default)]
struct Sealed {
    #[serde(default)]
    verifier: Option<String>,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    pages: Vec<Page>,
}

/// A flow's row, opened.
struct Flow {
    member: String,
    provider: String,
    expires_at_us: i64,
    sealed: Sealed,
}

/// Hex SHA-256: how a flow's secret is stored.
fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn flow_aad(id: &str) -> Vec<u8> {
    format!("social_link_flows\0{id}").into_bytes()
}

fn app_aad(provider: Provider, instance: &str) -> Vec<u8> {
    format!("social_apps\0{provider}\0{instance}").into_bytes()
}

/// The most bytes of an instance URL, a code or a state taken from a client.
const MAX_INPUT: usize = 2_048;

/// An instance URL reduced to its origin (`https://host[:port]`), if it is
/// one a server may call: `https` with a public host name, unless
/// `insecure` (development and tests) lets it be `http` or an address.
pub fn origin(raw: &str, insecure: bool) -> Result<String, LinkError> {
    let bad = |why: &str| LinkError::BadInstance(why.to_string());
    if raw.len() > MAX_INPUT {
        return Err(bad("too long"));
    }
    let raw = if raw.contains("://") { raw.to_string() } else { format!("https://{raw}") };
    let url = reqwest::Url::parse(&raw).map_err(|_| bad("not a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("no credentials in the URL"));
    }
    url.host_str().ok_or_else(|| bad("no host"))?;
    if !insecure {
        if url.scheme() != "https" {
            return Err(bad("must be https"));
        }
        match url.domain() {
            Some(name) if name.contains('.') && !name.ends_with(".localhost") => {}
            _ => return Err(bad("must be a public host name")),
        }
    } else if !matches!(url.scheme(), "https" | "http") {
        return Err(bad("must be http or https"));
    }
    Ok(url.origin().ascii_serialization())
}

impl SocialLinks {
    /// Linking as `config`, sealing with `vault`.
    pub fn new(config: LinkConfig, vault: TokenVault) -> Self {
        let http = workers::providers::http_client(Duration::from_secs(15));
        SocialLinks { config, vault, http }
    }

    /// Where the network sends the browser back for `provider`.
    pub fn redirect_uri(&self, provider: Provider) -> String {
        format!("{}/oauth/{provider}/callback", self.config.callback_base.trim_end_matches('/'))
    }

    /// Whether instances may be `http://` or addresses (see [`origin`]).
    pub fn insecure_instances(&self) -> bool {
        self.config.insecure_instances
    }

    /// The front end's page, if configured.
    pub fn return_url(&self) -> Option<&str> {
        self.config.return_url.as_deref()
    }

    /// An instance URL as this server takes it (see [`origin`]).
    pub fn instance(&self, raw: &str) -> Result<String, LinkError> {
        origin(raw, self.config.insecure_instances)
    }

    /// Starts linking `member`'s account at `provider` (a Mastodon account
    /// on `instance`): the URL to send their browser to.
    pub async fn start(
        &self,
        db: &impl ConnectionTrait,
        member: &str,
        provider: Provider,
        instance: Option<&str>,
    ) -> Result<Started, LinkError> {
        let state = oauth::secret();
        let (verifier, challenge) = oauth::pkce();
        let mut sealed = Sealed::default();
        let url = match provider {
            Provider::Twitter => {
                let twitter = self.config.twitter.as_ref().ok_or(LinkError::NotConfigured(provider))?;
                sealed.verifier = Some(verifier);
                twitter.app.authorize(&self.redirect_uri(provider), &state, Some(&challenge))
            }
            Provider::Facebook => {
                let facebook = self.config.facebook.as_ref().ok_or(LinkError::NotConfigured(provider))?;
                facebook.app.authorize(&self.redirect_uri(provider), &state, None)
            }
            Provider::Mastodon => {
                let raw = instance.ok_or_else(|| LinkError::BadInstance("Mastodon needs an instance".into()))?;
                let instance = self.instance(raw)?;
                let app = self.mastodon_app(db, &instance).await?;
                sealed.verifier = Some(verifier);
                sealed.instance = Some(instance);
                app.authorize(&self.redirect_uri(provider), &state, Some(&challenge))
            }
            Provider::Bluesky => return Err(LinkError::NotOAuth(provider)),
        }
        .map_err(LinkError::Unavailable)?;
        let expires_at_us = eventstore::now_us() + self.config.state_ttl.as_micros() as i64;
        self.save_flow(db, &digest(&state), member, provider, "authorize", &sealed, expires_at_us).await?;
        Ok(Started { url, expires_at_us })
    }

    // Each argument is a column of the flow's row.
    #[allow(clippy::too_many_arguments)]
    async fn save_flow(
        &self,
        db: &impl ConnectionTrait,
        id: &str,
        member: &str,
        provider: Provider,
        stage: &str,
        sealed: &Sealed,
        expires_at_us: i64,
    ) -> Result<(), LinkError> {
        let plain = serde_json::to_vec(sealed).map_err(|_| TokenError::Seal)?;
        let (nonce, ciphertext) = self.vault.seal_for(&flow_aad(id), &plain)?;
        // Expired flows go as new ones come: the table holds only live ones.
        let sweep = Query::delete()
            .from_table(SocialLinkFlows::Table)
            .and_where(Expr::col(SocialLinkFlows::ExpiresAtUs).lt(eventstore::now_us()))
            .to_owned();
        db.execute(&sweep).await?;
        let insert = Query::insert()
            .into_table(SocialLinkFlows::Table)
            .columns([
                SocialLinkFlows::Id,
                SocialLinkFlows::MemberId,
                SocialLinkFlows::Provider,
                SocialLinkFlows::Stage,
                SocialLinkFlows::Nonce,
                SocialLinkFlows::Ciphertext,
                SocialLinkFlows::ExpiresAtUs,
            ])
            .values_panic([
                id.into(),
                member.into(),
                provider.to_string().into(),
                stage.into(),
                nonce.into(),
                ciphertext.into(),
                expires_at_us.into(),
            ])
            .to_owned();
        db.execute(&insert).await?;
        Ok(())
    }

    /// The flow `secret` names at `stage`, unless unknown or expired.
    async fn flow(&self, db: &impl ConnectionTrait, secret: &str, stage: &str) -> Result<Flow, LinkError> {
        if secret.is_empty() || secret.len() > MAX_INPUT {
            return Err(LinkError::UnknownState);
        }
        let id = digest(secret);
        let select = Query::select()
            .columns([
                SocialLinkFlows::MemberId,
                SocialLinkFlows::Provider,
                SocialLinkFlows::Nonce,
                SocialLinkFlows::Ciphertext,
                SocialLinkFlows::ExpiresAtUs,
            ])
            .from(SocialLinkFlows::Table)
            .and_where(Expr::col(SocialLinkFlows::Id).eq(id.as_str()))
            .and_where(Expr::col(SocialLinkFlows::Stage).eq(stage))
            .to_owned();
        let row = db.query_one(&select).await?.ok_or(LinkError::UnknownState)?;
        let expires_at_us: i64 = row.try_get("", "expires_at_us")?;
        if expires_at_us < eventstore::now_us() {
            return Err(LinkError::Expired);
        }
        let (nonce, ciphertext): (String, String) = (row.try_get("", "nonce")?, row.try_get("", "ciphertext")?);
        let plain = self.vault.open_for(&flow_aad(&id), &nonce, &ciphertext).ok_or(LinkError::UnknownState)?;
        let sealed = serde_json::from_slice(&plain).map_err(|_| LinkError::UnknownState)?;
        Ok(Flow {
            member: row.try_get("", "member_id")?,
            provider: row.try_get("", "provider")?,
            expires_at_us,
            sealed,
        })
    }

    /// Takes the flow `secret` names, so that it is used once: of two
    /// requests with one secret, only the one that deletes it goes on.
    async fn take(&self, db: &impl ConnectionTrait, secret: &str) -> Result<(), LinkError> {
        let delete = Query::delete()
            .from_table(SocialLinkFlows::Table)
            .and_where(Expr::col(SocialLinkFlows::Id).eq(digest(secret)))
            .to_owned();
        match db.execute(&delete).await?.rows_affected() {
            1 => Ok(()),
            _ => Err(LinkError::UnknownState),
        }
    }

    /// pointstream's registration at a Mastodon instance: stored, or made
    /// now (`POST /api/v1/apps`) and stored.
    async fn mastodon_app(&self, db: &impl ConnectionTrait, instance: &str) -> Result<OAuthApp, LinkError> {
        let provider = Provider::Mastodon;
        let app = |client_id: String, client_secret: String| OAuthApp {
            client_id,
            client_secret,
            authorize_url: format!("{instance}/oauth/authorize"),
            token_url: format!("{instance}/oauth/token"),
            scopes: "write:statuses write:media read:accounts".into(),
            basic_auth: false,
        };
        let select = Query::select()
            .columns([SocialApps::ClientId, SocialApps::Nonce, SocialApps::Ciphertext])
            .from(SocialApps::Table)
            .and_where(Expr::col(SocialApps::Provider).eq(provider.to_string()))
            .and_where(Expr::col(SocialApps::Instance).eq(instance))
            .to_owned();
        if let Some(row) = db.query_one(&select).await? {
            let (client_id, nonce, sealed): (String, String, String) =
                (row.try_get("", "client_id")?, row.try_get("", "nonce")?, row.try_get("", "ciphertext")?);
            if let Some(secret) = self.vault.open_for(&app_aad(provider, instance), &nonce, &sealed) {
                return Ok(app(client_id, String::from_utf8_lossy(&secret).into_owned()));
            }
        }
        let form = [
            ("client_name", self.config.client_name.as_str()),
            ("redirect_uris", &self.redirect_uri(provider)),
            ("scopes", "write:statuses write:media read:accounts"),
        ];
        let registered = answer(self.http.post(format!("{instance}/api/v1/apps")).form(&form).send().await).await?;
        let field =
            |name: &str| {
                registered.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
                    LinkError::Unavailable(format!("the instance's app registration answered no {name}"))
                })
            };
        let (client_id, client_secret) = (field("client_id")?, field("client_secret")?);
        let (nonce, sealed) = self.vault.seal_for(&app_aad(provider, instance), client_secret.as_bytes())?;
        let insert = Query::insert()
            .into_table(SocialApps::Table)
            .columns([
                SocialApps::Provider,
                SocialApps::Instance,
                SocialApps::ClientId,
                SocialApps::Nonce,
                SocialApps::Ciphertext,
                SocialApps::CreatedAtUs,
            ])
            .values_panic([
                provider.to_string().into(),
                instance.into(),
                client_id.clone().into(),
                nonce.into(),
                sealed.into(),
                eventstore::now_us().into(),
            ])
            .on_conflict(
                OnConflict::columns([SocialApps::Provider, SocialApps::Instance])
                    .update_columns([SocialApps::ClientId, SocialApps::Nonce, SocialApps::Ciphertext])
                    .to_owned(),
            )
            .to_owned();
        db.execute(&insert).await?;
        Ok(app(client_id, client_secret))
    }

    /// The callback: takes the flow `state` names, exchanges `code`, and
    /// links the account (or, for Facebook with several Pages, offers the
    /// choice). `error` is what the network said instead of a code.
    pub async fn callback(
        &self,
        store: &EventStore,
        provider: Provider,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
    ) -> Result<Landing, LinkError> {
        let db = store.db();
        let flow = self.flow(db, state, "authorize").await?;
        self.take(db, state).await?;
        if flow.provider != provider.to_string() {
            return Err(LinkError::UnknownState);
        }
        if let Some(error) = error {
            return Err(LinkError::Denied(error.chars().take(200).collect()));
        }
        let code = code
            .filter(|c| !c.is_empty() && c.len() <= MAX_INPUT)
            .ok_or_else(|| LinkError::Denied("no code".into()))?;
        let redirect = self.redirect_uri(provider);
        let now = eventstore::now_us();
        let verifier = flow.sealed.verifier.as_deref();
        let prepared = match provider {
            Provider::Twitter => {
                let twitter = self.config.twitter.as_ref().ok_or(LinkError::NotConfigured(provider))?;
                let tokens = twitter.app.exchange(&self.http, code, &redirect, verifier, now).await?;
                let me = self
                    .http
                    .get(format!("{}/2/users/me", twitter.api.trim_end_matches('/')))
                    .bearer_auth(&tokens.access);
                let me = answer(me.send().await).await?;
                Prepared { provider, external_id: id_in(&me, "/data/id")?, instance: None, tokens }
            }
            Provider::Mastodon => {
                let instance = flow.sealed.instance.clone().ok_or(LinkError::UnknownState)?;
                let app = self.mastodon_app(db, &instance).await?;
                let tokens = app.exchange(&self.http, code, &redirect, verifier, now).await?;
                let me =
                    self.http.get(format!("{instance}/api/v1/accounts/verify_credentials")).bearer_auth(&tokens.access);
                let me = answer(me.send().await).await?;
                Prepared { provider, external_id: id_in(&me, "/id")?, instance: Some(instance), tokens }
            }
            Provider::Facebook => {
                let pages = self.facebook_pages(code, &redirect).await?;
                match pages.as_slice() {
                    [] => return Err(LinkError::NoPages),
                    [page] => Prepared {
                        provider,
                        external_id: page.id.clone(),
                        instance: None,
                        tokens: TokenSet::access(page.access_token.clone()),
                    },
                    _ => {
                        let choice = oauth::secret();
                        let sealed = Sealed { pages, ..Sealed::default() };
                        let expires = std::cmp::max(flow.expires_at_us, now + self.config.state_ttl.as_micros() as i64);
                        self.save_flow(db, &digest(&choice), &flow.member, provider, "choose_page", &sealed, expires)
                            .await?;
                        return Ok(Landing::ChoosePage(choice));
                    }
                }
            }
            Provider::Bluesky => return Err(LinkError::NotOAuth(provider)),
        };
        let context = CommandContext {
            actor: Some(flow.member.clone()),
            role: Some("member".into()),
            ..CommandContext::default()
        };
        let member = flow.member.clone();
        let id = member.clone();
        self.record(store, &member, prepared, |command| async move {
            store.execute::<Member>(&id, command, context).await.map_err(LinkError::from)
        })
        .await?;
        Ok(Landing::Linked(provider))
    }

    /// Facebook: the code for a user token, made long-lived, then the Pages
    /// it manages, each with its own token (which does not expire).
    async fn facebook_pages(&self, code: &str, redirect: &str) -> Result<Vec<Page>, LinkError> {
        let facebook = self.config.facebook.as_ref().ok_or(LinkError::NotConfigured(Provider::Facebook))?;
        let app = &facebook.app;
        let short = [
            ("client_id", app.client_id.as_str()),
            ("client_secret", &app.client_secret),
            ("redirect_uri", redirect),
            ("code", code),
        ];
        let short = answer(self.http.get(&app.token_url).query(&short).send().await).await?;
        let short = id_in(&short, "/access_token")?;
        let long = [
            ("grant_type", "fb_exchange_token"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", &app.client_secret),
            ("fb_exchange_token", &short),
        ];
        let long = answer(self.http.get(&app.token_url).query(&long).send().await).await?;
        let user = id_in(&long, "/access_token")?;
        let url = format!("{}/me/accounts", facebook.graph.trim_end_matches('/'));
        let query = [("fields", "id,name,access_token"), ("access_token", user.as_str())];
        let listed = answer(self.http.get(url).query(&query).send().await).await?;
        let pages: Vec<Page> = serde_json::from_value(listed.get("data").cloned().unwrap_or(Value::Null))
            .map_err(|_| LinkError::Unavailable("the Pages list is not what Facebook answers".into()))?;
        Ok(pages.into_iter().filter(|page| !page.access_token.is_empty()).take(100).collect())
    }

    /// The Pages offered to `member` by choice `choice` (not taken).
    pub async fn pages(&self, db: &impl ConnectionTrait, member: &str, choice: &str) -> Result<Vec<Page>, LinkError> {
        let flow = self.flow(db, choice, "choose_page").await?;
        if flow.member != member {
            return Err(LinkError::UnknownState);
        }
        Ok(flow.sealed.pages)
    }

    /// Takes choice `choice` of `member`: Page `page`, ready to link.
    pub async fn choose(
        &self,
        db: &impl ConnectionTrait,
        member: &str,
        choice: &str,
        page: &str,
    ) -> Result<Prepared, LinkError> {
        let offered = self.pages(db, member, choice).await?;
        let page = offered
            .into_iter()
            .find(|p| p.id == page)
            .ok_or_else(|| LinkError::UnknownPage(page.chars().take(64).collect()))?;
        self.take(db, choice).await?;
        Ok(Prepared {
            provider: Provider::Facebook,
            external_id: page.id,
            instance: None,
            tokens: TokenSet::access(page.access_token),
        })
    }

    /// Bluesky: an app password exchanged for a session on `service` (the
    /// member's PDS, `bsky.social` by default); the password is not kept.
    pub async fn bluesky(
        &self,
        identifier: &str,
        app_password: &str,
        service: Option<&str>,
    ) -> Result<Prepared, LinkError> {
        let service = self.instance(service.unwrap_or(&self.config.bluesky_service))?;
        let body = serde_json::json!({ "identifier": identifier, "password": app_password });
        let sent = self.http.post(format!("{service}/xrpc/com.atproto.server.createSession")).json(&body).send().await;
        let session = answer(sent).await?;
        let tokens = oauth::session_tokens(&session, None)?;
        Ok(Prepared {
            provider: Provider::Bluesky,
            external_id: id_in(&session, "/did")?,
            instance: Some(service),
            tokens,
        })
    }

    /// Links `prepared` for `member` by running `execute` on the link
    /// command. The tokens are sealed first, with the link's id, so a worker
    /// that sees the link finds them; if the command is refused (or was done
    /// already: an idempotent retry), the tokens before are put back.
    pub async fn record<F, Fut, T, E>(
        &self,
        store: &EventStore,
        member: &str,
        prepared: Prepared,
        execute: F,
    ) -> Result<T, E>
    where
        F: FnOnce(MemberCommand) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        T: Linked,
        E: From<LinkError>,
    {
        let db = store.db();
        let provider = prepared.provider.to_string();
        let link = uuid::Uuid::now_v7().simple().to_string();
        let invalid = |e: domain::values::ValueError| E::from(LinkError::Refused(e.to_string()));
        let sealing = |e: TokenError| E::from(LinkError::Token(e));
        let command = MemberCommand::LinkSocialAccount {
            provider: prepared.provider,
            external_id: ExternalRef::parse(prepared.external_id).map_err(invalid)?,
            instance: prepared.instance.map(ExternalRef::parse).transpose().map_err(invalid)?,
            link: Some(ExternalRef::parse(link.clone()).map_err(invalid)?),
        };
        let before = self.vault.load(db, member, &provider).await.ok().flatten();
        let tokens = TokenSet { link: Some(link), ..prepared.tokens };
        self.vault.store(db, member, &provider, &tokens, eventstore::now_us()).await.map_err(sealing)?;
        let done = execute(command).await;
        if done.as_ref().is_ok_and(|done| !done.replayed()) {
            return done;
        }
        match before {
            Some(before) => self.vault.store(db, member, &provider, &before, eventstore::now_us()).await,
            None => TokenVault::remove(db, member, &provider).await,
        }
        .map_err(sealing)?;
        done
    }
}

/// A link command's outcome: whether it was an idempotent repeat.
pub trait Linked {
    /// Whether the command had been run already (its tokens are the first run's).
    fn replayed(&self) -> bool;
}

impl Linked for CommandOutcome {
    fn replayed(&self) -> bool {
        self.replayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(insecure: bool) -> SocialLinks {
        let config = LinkConfig {
            callback_base: "https://api.example.com/".into(),
            return_url: None,
            state_ttl: Duration::from_secs(600),
            twitter: None,
            facebook: None,
            client_name: "pointstream".into(),
            bluesky_service: "https://bsky.social".into(),
            insecure_instances: insecure,
        };
        let vault = TokenVault::from_hex(&"ab".repeat(32)).expect("a key");
        SocialLinks::new(config, vault)
    }

    #[test]
    fn instances_are_public_https_origins() {
        let strict = links(false);
        assert_eq!(strict.instance("mastodon.social").expect("a host"), "https://mastodon.social");
        assert_eq!(strict.instance("https://fosstodon.org/about").expect("an origin"), "https://fosstodon.org");
        for bad in [
            "http://mastodon.social",
            "https://127.0.0.1",
            "https://localhost",
            "https://u:p@host.org",
            "https://[::1]",
        ] {
            assert!(strict.instance(bad).is_err(), "{bad}");
        }
        assert_eq!(links(true).instance("http://127.0.0.1:8080").expect("allowed"), "http://127.0.0.1:8080");
        assert_eq!(strict.redirect_uri(Provider::Mastodon), "https://api.example.com/oauth/mastodon/callback");
    }
}
