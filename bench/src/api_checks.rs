//! `bench api --parts checks`: what two checks on every request's path cost,
//! per-caller rate limiting (`api::rate`) and the verification of bearer
//! tokens against an identity provider's published keys (OIDC: RS256 tokens,
//! a JWKS).
//!
//! Two servers, each a `bench api-server` process on a database of its own:
//! "on", with `pointstream serve`'s default rate limit and tokens checked
//! against a JWKS that this process serves on a loopback port, and "off",
//! with neither (HS256 tokens signed with a shared secret, no limit).
//! `{ __typename }` (the server's ceiling, where a check's cost shows most)
//! and `earnPoints` on each, in turns, so that both sides of each ratio run
//! in the same stretches of a machine whose speed drifts.
//!
//! A limit applies to a token's subject, so each client cycles through
//! callers of its own, enough of them that none comes near its limit: the
//! figure is what the checks cost when they refuse nothing. Every refusal is
//! counted (by the clients and by the server) and printed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::auth::{Claims, OidcConfig, Role, TokenConfig, Verifier, mint, now_seconds};
use api::rate::{Caller, RateLimit, RateLimiter};
use eventstore::{EventStore, EventStoreConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::{EndpointExt, Route, get, handler};
use tokio::sync::Mutex;

use crate::api_bench::{Earners, TYPENAME, caught_up, check_earned, check_typename, connect_all, earn_body};
use crate::api_server::ServerProcess;
use crate::cpu::Meter;
use crate::graphql_http::GraphqlHttp;
use crate::measure::{Contender, Interleaved, Op, interleave, ms, series_total, warm_up};
use crate::pointstream::register;
use crate::raw_http::RawHttp;
use crate::run::Scratch;

/// How the `checks` part is measured.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Turns each of the four checks figures is measured in.
    #[arg(long, default_value_t = 6)]
    pub check_turns: usize,
    /// Seconds of each turn of the checks figures.
    #[arg(long, default_value_t = 2)]
    pub check_turn_seconds: u64,
    /// Callers (token subjects) each client cycles through in the checks
    /// figures: enough that none of them comes near its rate limit.
    #[arg(long, default_value_t = 64)]
    pub callers_per_client: usize,
    /// The checks the "on" server makes: `rate` (`serve`'s default rate limit per
    /// caller), `jwks` (RS256 tokens against a JWKS); one alone tells its cost apart,
    /// and `none` makes the two servers alike, which shows the machine's noise.
    #[arg(long, value_delimiter = ',', default_value = "rate,jwks")]
    pub checks_on: Vec<Check>,
}

/// A check the "on" server makes and the "off" server does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Check {
    /// Per-caller rate limiting with `RateLimit::default()`.
    Rate,
    /// Bearer tokens verified against an identity provider's keys (RS256, JWKS).
    Jwks,
    /// Neither (unless the other values name one).
    None,
}

// A test-only RSA key (the API's JWKS tests sign with it): it signs nothing real.
const RSA_KEY: &str = include_str!("../../api/tests/fixtures/test-only-rsa-2048.pem");
/// The public halves of the test-only keys; the provider publishes the RSA one.
const JWKS: &str = include_str!("../../api/tests/fixtures/test-only-jwks.json");
/// The key id of [`RSA_KEY`] in [`JWKS`].
const KID: &str = "test-rsa";
const ISSUER: &str = "https://id.pointstream.bench/";
const AUDIENCE: &str = "pointstream-api";
/// Fresh tokens whose first check is timed in this process.
const FIRST_CHECKS: usize = 200;

pub async fn run(server: &str, options: &crate::api_bench::Options) -> anyhow::Result<()> {
    Scratch::around_all(server, ["api_on", "api_off"], |[on, off]| async move {
        Box::pin(measure(&on, &off, options)).await
    })
    .await
}

/// Callers' tokens for one server: client `w`'s `i`th request is made with
/// `token(w, i)`, cycling through `per_client` callers of its own.
struct Callers {
    tokens: Vec<String>,
    concurrency: usize,
    per_client: usize,
}

impl Callers {
    /// A token for each of `concurrency × per_client` subjects, made by `mint(subject)`.
    fn new(
        concurrency: usize,
        per_client: usize,
        mint: impl Fn(&str) -> anyhow::Result<String>,
    ) -> anyhow::Result<Self> {
        let tokens =
            (0..concurrency * per_client).map(|k| mint(&format!("caller-{k:05}"))).collect::<Result<_, _>>()?;
        Ok(Callers { tokens, concurrency, per_client })
    }

    fn token(&self, w: usize, i: u64) -> &str {
        &self.tokens[w + self.concurrency * (i as usize % self.per_client)]
    }

    /// Requests per client before a measurement: one per caller, so that the
    /// server has checked every token once and remembers it, as it does a
    /// client's token between its requests.
    fn warm_up_rounds(&self) -> u64 {
        self.per_client as u64
    }
}

/// What this process hands the identity provider's role: the JWKS it
/// serves, and how it signs tokens.
struct Provider {
    /// Where the keys are published.
    url: String,
    /// Requests for the keys so far.
    fetches: Arc<AtomicU64>,
    key: EncodingKey,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[handler]
fn jwks_document(document: poem::web::Data<&Arc<String>>, fetches: poem::web::Data<&Arc<AtomicU64>>) -> poem::Response {
    fetches.fetch_add(1, Ordering::Relaxed);
    poem::Response::builder().content_type("application/json").body(document.as_str().to_owned())
}

impl Provider {
    /// Serves the test key's JWKS on a free loopback port.
    async fn start() -> anyhow::Result<Self> {
        let mut document: serde_json::Value = serde_json::from_str(JWKS).context("the test JWKS")?;
        // Only the key the tokens are signed with, as a provider with one signing key publishes it.
        if let Some(keys) = document["keys"].as_array_mut() {
            keys.retain(|key| key["kid"] == KID);
        }
        anyhow::ensure!(document["keys"].as_array().is_some_and(|keys| keys.len() == 1), "no {KID} key in the JWKS");
        let fetches = Arc::new(AtomicU64::new(0));
        let endpoint = Route::new()
            .at("/.well-known/jwks.json", get(jwks_document))
            .data(Arc::new(document.to_string()))
            .data(fetches.clone());
        let (address, server) = api::server::bind("127.0.0.1:0".into(), |_| endpoint, std::future::pending())
            .await
            .context("the JWKS cannot listen on 127.0.0.1")?;
        let key = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).context("the test RSA key")?;
        Ok(Provider {
            url: format!("http://{address}/.well-known/jwks.json"),
            fetches,
            key,
            server: tokio::spawn(server),
        })
    }

    /// An RS256 token for staff of the cafe, `subject`, issued now for an hour.
    fn token(&self, subject: &str) -> anyhow::Result<String> {
        let now = now_seconds();
        let claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 3_600,
            "role": "staff", "store": "cafe",
        });
        let header = Header { kid: Some(KID.into()), ..Header::new(Algorithm::RS256) };
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }

    /// The arguments that make a server check tokens against these keys.
    fn server_arguments(&self) -> Vec<String> {
        ["--oidc-jwks-url", self.url.as_str(), "--oidc-issuer", ISSUER, "--oidc-audience", AUDIENCE]
            .map(String::from)
            .to_vec()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An HS256 token for staff of the cafe, `subject`, signed with `secret`, for an hour.
fn hs256(secret: &str, subject: &str) -> anyhow::Result<String> {
    let claims = Claims {
        sub: subject.into(),
        role: Role::Staff,
        member: None,
        store: Some("cafe".into()),
        exp: now_seconds() + 3_600,
    };
    Ok(mint(secret.as_bytes(), &claims)?)
}

/// Requests answered 429 (`RATE_LIMITED`) to one figure's clients.
type Limited = Arc<AtomicU64>;

/// The body of a 200 answer, or `None` for a 429 (counted in `limited`);
/// any other status is an error.
fn unless_limited<'a>(answer: (u16, &'a [u8]), limited: &AtomicU64) -> anyhow::Result<Option<&'a [u8]>> {
    match answer {
        (200, body) => Ok(Some(body)),
        (429, _) => {
            limited.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
        (status, body) => anyhow::bail!("POST /graphql answered {status}: {}", String::from_utf8_lossy(body)),
    }
}

/// `{ __typename }` with client `w`'s `i`th caller's token.
fn typename_op(clients: &Arc<Vec<Mutex<RawHttp>>>, callers: &Arc<Callers>, limited: &Limited) -> Op {
    let (clients, callers, limited) = (clients.clone(), callers.clone(), limited.clone());
    Arc::new(move |w, i| {
        let (clients, callers, limited) = (clients.clone(), callers.clone(), limited.clone());
        Box::pin(async move {
            let mut client = clients[w].lock().await;
            match unless_limited(client.exchange(Some(callers.token(w, i)), TYPENAME).await?, &limited)? {
                Some(body) => check_typename(body),
                None => Ok(()),
            }
        })
    })
}

/// `earnPoints` with client `w`'s `i`th caller's token, for
/// `earners.member(w, i)` under purchase ref `p{w}-{i}`.
fn earn_op(clients: &Arc<Vec<Mutex<RawHttp>>>, callers: &Arc<Callers>, earners: Earners, limited: &Limited) -> Op {
    let (clients, callers, limited) = (clients.clone(), callers.clone(), limited.clone());
    Arc::new(move |w, i| {
        let (clients, callers, limited) = (clients.clone(), callers.clone(), limited.clone());
        let body = earn_body(&earners.member(w, i), &format!("p{w}-{i}"));
        Box::pin(async move {
            let body = body?;
            let mut client = clients[w].lock().await;
            match unless_limited(client.exchange(Some(callers.token(w, i)), &body).await?, &limited)? {
                Some(body) => check_earned(body),
                None => Ok(()),
            }
        })
    })
}

/// What a figure's clients send.
#[derive(Debug, Clone, Copy)]
enum Request {
    /// `{ __typename }`.
    Typename,
    /// `earnPoints`.
    Earn,
}

/// One server of the comparison and what its clients use.
struct Side {
    process: ServerProcess,
    /// The server's database.
    database_url: String,
    callers: Arc<Callers>,
    limited_typename: Limited,
    limited_earn: Limited,
}

impl Side {
    /// The server's `/metrics` text.
    async fn metrics(&self) -> anyhow::Result<String> {
        GraphqlHttp::connect(&self.process.address).await?.get("/metrics").await
    }
}

/// What the server's metrics counted between two readings.
#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    /// Requests the server refused as over their caller's rate.
    limited: f64,
    /// Fetches of the identity provider's keys.
    key_fetches: f64,
}

impl Counted {
    fn between(before: &str, after: &str) -> Self {
        let delta = |name: &str, label: &str| {
            series_total(after, name, label).unwrap_or(0.0) - series_total(before, name, label).unwrap_or(0.0)
        };
        Counted {
            limited: delta("pointstream_graphql_errors_total", "code=\"RATE_LIMITED\""),
            key_fetches: delta("pointstream_jwks_fetches_total", ""),
        }
    }
}

/// The figures of one run.
struct Figures {
    typename: [Interleaved; 2],
    earn: [Interleaved; 2],
    /// Requests answered 429, on then off: `{ __typename }`, `earnPoints`.
    limited: [[u64; 2]; 2],
    /// What the servers counted over the measurement, on then off.
    counted: [Counted; 2],
    /// What each check costs alone.
    costs: CheckCosts,
}

async fn measure(on_url: &str, off_url: &str, options: &crate::api_bench::Options) -> anyhow::Result<()> {
    let checks = &options.check_options;
    let (rate, jwks) = (checks.checks_on.contains(&Check::Rate), checks.checks_on.contains(&Check::Jwks));
    let concurrency = options.concurrency.max(1);
    let earners = Earners { concurrency, per_worker: (options.members / concurrency).max(1) };
    let config = earners.store_config(options.append_scripts);
    let members = earners.members();
    for url in [on_url, off_url] {
        register(&EventStore::open(url, config.clone()).await?, &members).await?;
    }

    let secret = uuid::Uuid::new_v4().simple().to_string();
    let per_client = checks.callers_per_client.max(1);
    let provider = if jwks { Some(Provider::start().await?) } else { None };
    let signing = Instant::now();
    let on_callers = match &provider {
        Some(provider) => Callers::new(concurrency, per_client, |subject| provider.token(subject))?,
        None => Callers::new(concurrency, per_client, |subject| hs256(&secret, subject))?,
    };
    let off_callers = Callers::new(concurrency, per_client, |subject| hs256(&secret, subject))?;
    eprintln!("({} tokens per server made in {:.1?})", on_callers.tokens.len(), signing.elapsed());

    let mut on_arguments = provider.as_ref().map(Provider::server_arguments).unwrap_or_default();
    let limit = RateLimit::default();
    if rate {
        on_arguments.extend(
            ["--rate-limit-per-minute", &limit.per_minute.to_string(), "--rate-limit-burst", &limit.burst.to_string()]
                .map(String::from),
        );
    }
    // The off server: `api-server`'s defaults, HS256 and no rate limit.
    let on = ServerProcess::spawn_with(on_url, &secret, &config, &on_arguments).await?;
    let off = ServerProcess::spawn(off_url, &secret, &config).await?;
    let side = |process, database_url: &str, callers| Side {
        process,
        database_url: database_url.to_string(),
        callers: Arc::new(callers),
        limited_typename: Limited::default(),
        limited_earn: Limited::default(),
    };
    let sides = [side(on, on_url, on_callers), side(off, off_url, off_callers)];
    let measured = measure_sides(&sides, earners, options, (provider.as_ref(), &secret)).await;
    let [on, off] = sides;
    let stopped = [on.process.stop().await, off.process.stop().await];
    let figures = measured?;
    stopped.into_iter().collect::<anyhow::Result<Vec<()>>>()?;

    let setup = Setup {
        concurrency,
        per_client,
        members: members.len(),
        config,
        rate: rate.then_some(limit),
        provider_fetches: provider.as_ref().map(|provider| provider.fetches.load(Ordering::Relaxed)),
    };
    figures.print(&setup, checks);
    Ok(())
}

/// The run's setup, as printed.
struct Setup {
    concurrency: usize,
    per_client: usize,
    members: usize,
    config: EventStoreConfig,
    /// The on server's limit, if it has one.
    rate: Option<RateLimit>,
    /// Requests for the JWKS over the whole run, if the on server used it.
    provider_fetches: Option<u64>,
}

/// Warms both servers up, then measures the four figures in turns, and
/// the first check of a token in this process.
async fn measure_sides(
    sides: &[Side; 2],
    earners: Earners,
    options: &crate::api_bench::Options,
    (provider, secret): (Option<&Provider>, &str),
) -> anyhow::Result<Figures> {
    let checks = &options.check_options;
    let concurrency = earners.concurrency;
    for side in sides {
        // The registrations' events, projected before the first earn reads a balance.
        caught_up(&side.database_url).await?;
    }
    let mut contenders = Vec::new();
    let [on, off] = sides;
    // In this order, then the reverse, and so on: each figure's turns follow
    // turns of the same kinds as its counterpart's (an earn turn leaves
    // MariaDB flushing for a while after it, which slows the turn after it; in
    // the order on, off, on, off an on earn turn would follow the idle
    // database's turns more often than the off one).
    for (request, side) in
        [(Request::Typename, on), (Request::Earn, on), (Request::Earn, off), (Request::Typename, off)]
    {
        let clients = connect_all(concurrency, || RawHttp::connect(&side.process.address)).await?;
        let meter = Meter::new(Some(side.process.pid()?));
        let (op, rounds) = match request {
            Request::Typename => {
                (typename_op(&clients, &side.callers, &side.limited_typename), side.callers.warm_up_rounds())
            }
            Request::Earn => (earn_op(&clients, &side.callers, earners, &side.limited_earn), earners.warm_up_rounds()),
        };
        warm_up(concurrency, rounds, &op).await?;
        contenders.push(Contender { op, concurrency, meter, from: rounds });
    }
    let before = [on.metrics().await?, off.metrics().await?];
    let slice = Duration::from_secs(checks.check_turn_seconds.max(1));
    let figures = interleave(&contenders, checks.check_turns.max(1), slice).await?;
    let after = [on.metrics().await?, off.metrics().await?];
    let [typename_on, earn_on, earn_off, typename_off] = <[Interleaved; 4]>::try_from(figures)
        .map_err(|figures| anyhow::anyhow!("{} figures measured, not 4", figures.len()))?;
    let limited =
        |side: &Side| [side.limited_typename.load(Ordering::Relaxed), side.limited_earn.load(Ordering::Relaxed)];
    let costs = check_costs(provider, secret, on.callers.tokens.len()).await?;
    Ok(Figures {
        typename: [typename_on, typename_off],
        earn: [earn_on, earn_off],
        limited: [limited(on), limited(off)],
        counted: [Counted::between(&before[0], &after[0]), Counted::between(&before[1], &after[1])],
        costs,
    })
}

/// What the checks cost one at a time, in this process (one thread): a
/// server's first check of a token, its check of a token it remembers, and
/// a rate-limit check.
#[derive(Debug, Clone, Copy)]
struct CheckCosts {
    /// A fresh token's check: RS256 against the provider's keys (when the on server used them), HS256.
    first: (Option<Duration>, Duration),
    /// A remembered token's check: RS256, HS256.
    remembered: (Option<Duration>, Duration),
    /// `RateLimiter::check` with `RateLimit::default()`, its key made from a subject as the server makes it.
    rate_limit: Duration,
}

/// Checks of remembered tokens, and of rate limits, timed per kind.
const REPEATED_CHECKS: usize = 100_000;

/// Measures [`CheckCosts`]: [`FIRST_CHECKS`] fresh tokens of each kind,
/// checked once (a server checks a token's signature once, then remembers
/// it), then again and again ([`REPEATED_CHECKS`] in all), and as many
/// rate-limit checks over `subjects` callers (never over their limit).
async fn check_costs(provider: Option<&Provider>, secret: &str, subjects: usize) -> anyhow::Result<CheckCosts> {
    let by_secret = Verifier::new(TokenConfig::secret(secret.as_bytes().to_vec()));
    let hs256: Vec<String> =
        (0..FIRST_CHECKS).map(|k| hs256(secret, &format!("first-{k}"))).collect::<Result<_, _>>()?;
    let (first_hs256, remembered_hs256) = time_checks(&by_secret, &hs256).await?;
    let (first_rs256, remembered_rs256) = match provider {
        Some(provider) => {
            let mut oidc = OidcConfig::new(&provider.url).map_err(|e| anyhow::anyhow!("{e}"))?;
            oidc.issuer = Some(ISSUER.into());
            oidc.audience = Some(AUDIENCE.into());
            let by_keys = Verifier::new(TokenConfig::oidc(oidc));
            // The keys are fetched in the background: one token first, untimed.
            by_keys.verify(&provider.token("first-check")?).await.context("a token against the bench's JWKS")?;
            let rs256: Vec<String> =
                (0..FIRST_CHECKS).map(|k| provider.token(&format!("first-{k}"))).collect::<Result<_, _>>()?;
            let (first, remembered) = time_checks(&by_keys, &rs256).await?;
            (Some(first), Some(remembered))
        }
        None => (None, None),
    };

    let limiter = RateLimiter::new(RateLimit::default());
    let subjects: Vec<String> = (0..subjects.max(1)).map(|k| format!("caller-{k:05}")).collect();
    let started = Instant::now();
    let mut refused = 0;
    for k in 0..REPEATED_CHECKS {
        // The server builds the key from the claims' subject for each request.
        refused += usize::from(limiter.check(Caller::Subject(&subjects[k % subjects.len()])).is_err());
    }
    let rate_limit = started.elapsed() / REPEATED_CHECKS as u32;
    anyhow::ensure!(refused == 0, "{refused} of {REPEATED_CHECKS} timed rate-limit checks were refused");
    Ok(CheckCosts { first: (first_rs256, first_hs256), remembered: (remembered_rs256, remembered_hs256), rate_limit })
}

/// The mean time of the first check of each of `tokens` by `verifier`,
/// then of a check of one it remembers ([`REPEATED_CHECKS`] in all).
async fn time_checks(verifier: &Verifier, tokens: &[String]) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    for token in tokens {
        verifier.verify(token).await.context("a fresh token")?;
    }
    let first = started.elapsed() / tokens.len().max(1) as u32;
    let started = Instant::now();
    for token in tokens.iter().cycle().take(REPEATED_CHECKS) {
        verifier.verify(token).await.context("a remembered token")?;
    }
    Ok((first, started.elapsed() / REPEATED_CHECKS as u32))
}

impl Figures {
    fn print(&self, setup: &Setup, options: &Options) {
        let Setup { concurrency, per_client, members, .. } = *setup;
        let callers = concurrency * per_client;
        let [typename_on, typename_off] = &self.typename;
        let [earn_on, earn_off] = &self.earn;
        println!("## API request checks: rate limiting and JWKS verification (MySQL, one run)");
        println!();
        let on = match (setup.rate, setup.provider_fetches.is_some()) {
            (Some(limit), true) => format!(
                "a rate limit per caller of {} a minute with bursts of {} (`RateLimit::default()`), and tokens \
                 verified against the keys of a JWKS this process serves on 127.0.0.1 (RS256, one 2048-bit RSA \
                 test key; issuer and audience checked)",
                limit.per_minute, limit.burst
            ),
            (Some(limit), false) => format!(
                "a rate limit per caller of {} a minute with bursts of {} (`RateLimit::default()`); HS256 tokens",
                limit.per_minute, limit.burst
            ),
            (None, true) => "tokens verified against the keys of a JWKS this process serves on 127.0.0.1 (RS256, \
                             one 2048-bit RSA test key; issuer and audience checked); no rate limit"
                .to_string(),
            (None, false) => "HS256 tokens, no rate limit: the same as off (`--checks-on none`)".to_string(),
        };
        println!(
            "Two `bench api-server` processes wired as `pointstream serve`, each on a database of its own with \
             {members} members: **on**: {on}; **off**: HS256 tokens (a shared secret), no rate limit. \
             {concurrency} clients per figure, each on its own keep-alive HTTP/1.1 connection (the load \
             generator's client), cycling through {per_client} callers (token subjects, staff of one store) of its \
             own: {callers} per server. Before the measurement every caller's token was checked once by its server \
             (which remembers the tokens it accepted) and every member earned once. The four figures take turns \
             of {} s, {} each, in the order on `{{ __typename }}`, on `earnPoints`, off `earnPoints`, off \
             `{{ __typename }}`, then the reverse, and so on (each figure's turns follow turns of the same kinds as \
             its counterpart's); every event store with a pool of {} connections.",
            options.check_turn_seconds.max(1),
            typename_on.slices.len(),
            setup.config.max_connections
        );
        println!();
        println!(
            "| at concurrency {concurrency} | on: per second | on: p50 / p99 | off: per second | off: p50 / p99 | \
             on/off | turns: mean (≈95% interval) | on/off turn by turn |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let row = |name: &str, on: &Interleaved, off: &Interleaved| {
            let turns: Vec<String> = turn_ratios(on, off).map(|ratio| format!("{ratio:.2}")).collect();
            let interval = match Spread::of(turn_ratios(on, off)) {
                Some(Spread { mean, low, high }) => format!("{mean:.3} ({low:.3}–{high:.3})"),
                None => "–".to_string(),
            };
            println!(
                "| {name} | {:.0} | {} / {} | {:.0} | {} / {} | **{:.3}** | {interval} | {} |",
                on.rate,
                ms(on.p50),
                ms(on.p99),
                off.rate,
                ms(off.p50),
                ms(off.p99),
                on.rate / off.rate.max(f64::MIN_POSITIVE),
                turns.join(", ")
            );
        };
        row("`{ __typename }` (bearer token)", typename_on, typename_off);
        row("`earnPoints` (mutations)", earn_on, earn_off);
        println!();
        let verdict = |on: &Interleaved, off: &Interleaved| {
            let met = if on.rate >= 0.95 * off.rate { "met" } else { "**not met**" };
            match Spread::of(turn_ratios(on, off)) {
                Some(Spread { low, high, .. }) if low < 0.95 && 0.95 < high => {
                    format!("{met} (but the turns' interval {low:.3}–{high:.3} holds 0.95: not resolved by this run)")
                }
                _ => met.to_string(),
            }
        };
        println!(
            "Target on/off ≥ 0.95: `{{ __typename }}` {}, `earnPoints` {}.",
            verdict(typename_on, typename_off),
            verdict(earn_on, earn_off)
        );
        println!();
        let [[typename_limited, earn_limited], [off_typename_limited, off_earn_limited]] = self.limited;
        let limited = typename_limited + earn_limited + off_typename_limited + off_earn_limited;
        let per_caller = typename_on.rate / callers as f64;
        let refusals = format!(
            "Requests refused as over their caller's rate (answered 429), warm-up included: {} on the on server \
             ({typename_limited} `{{ __typename }}`, {earn_limited} `earnPoints`; during the measurement the server \
             counted {:.0} `RATE_LIMITED`), {} on the off server. Each caller sent about {per_caller:.1} \
             `{{ __typename }}` requests a second during the on server's `{{ __typename }}` turns.",
            typename_limited + earn_limited,
            self.counted[0].limited,
            off_typename_limited + off_earn_limited
        );
        if limited > 0 || self.counted[0].limited > 0.0 {
            println!(
                "**{refusals} Refused requests are counted in the rates: more callers (`--callers-per-client`) \
                 measure the cost of checks that refuse nothing.**"
            );
        } else {
            println!("{refusals}");
        }
        if let Some(fetches) = setup.provider_fetches {
            println!();
            println!(
                "The JWKS was fetched {fetches} time(s) over the whole run ({:.0} during the measurement, as the \
                 on server counted): at the server's start, and by this process's own verifier below.",
                self.counted[0].key_fetches
            );
        }
        println!();
        println!(
            "CPU time per request ({} cores; `/proc`): this process (the clients), the figure's server process, \
             MariaDB, and the machine's idle time:",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!();
        crate::api_bench::print_cpu(&[
            ("`{ __typename }` on", typename_on),
            ("`{ __typename }` off", typename_off),
            ("`earnPoints` on", earn_on),
            ("`earnPoints` off", earn_off),
        ]);
        let us = |d: Duration| format!("{:.2} µs", d.as_secs_f64() * 1e6);
        let CheckCosts { first, remembered, rate_limit } = self.costs;
        let rs256 = |d: Option<Duration>| d.map(|d| format!("{} with an RS256 token against the JWKS's key, ", us(d)));
        println!();
        println!(
            "Each check alone, in this process (one thread): a token's first check (mean over {FIRST_CHECKS} fresh \
             tokens) {}{} with an HS256 token; the check of a token already accepted (a server remembers up to \
             10,000 and checks each one's signature once; mean over {REPEATED_CHECKS}) {}{} with an HS256 token; a \
             rate-limit check (`RateLimiter::check` with `RateLimit::default()`, {callers} callers, mean over \
             {REPEATED_CHECKS}) {}.",
            rs256(first.0).unwrap_or_default(),
            us(first.1),
            rs256(remembered.0).unwrap_or_default(),
            us(remembered.1),
            us(rate_limit)
        );
        println!();
    }
}

/// Each turn's on/off ratio: the on figure's turn against the off figure's
/// turn of the same round.
fn turn_ratios<'a>(on: &'a Interleaved, off: &'a Interleaved) -> impl Iterator<Item = f64> + 'a {
    on.slices.iter().zip(&off.slices).map(|(on, off)| on / off.max(f64::MIN_POSITIVE))
}

/// How far a run's turns agree on a ratio: their geometric mean, and an
/// interval of about 95% around it (Student's t over the logarithms). On a
/// machine whose speed changes from one turn to the next, an interval that
/// holds the target says that this run cannot tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) mean: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
}

impl Spread {
    /// The spread of `ratios`; `None` with fewer than two, or any not above 0.
    pub(crate) fn of(ratios: impl Iterator<Item = f64>) -> Option<Self> {
        let logs: Vec<f64> = ratios.map(|ratio| (ratio > 0.0).then(|| ratio.ln())).collect::<Option<_>>()?;
        let n = logs.len();
        if n < 2 {
            return None;
        }
        let mean = logs.iter().sum::<f64>() / n as f64;
        let variance = logs.iter().map(|log| (log - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = t95(n - 1) * (variance / n as f64).sqrt();
        Some(Spread { mean: mean.exp(), low: (mean - half).exp(), high: (mean + half).exp() })
    }
}

/// Student's t for a two-sided 95% interval with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const TABLE: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    match df {
        0 => f64::INFINITY,
        1..=10 => TABLE[df - 1],
        11..=20 => 2.086 + (2.228 - 2.086) * (20 - df) as f64 / 10.0,
        21..=30 => 2.042 + (2.086 - 2.042) * (30 - df) as f64 / 10.0,
        _ => 1.96 + 0.08 * 30.0 / df as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_that_agree_give_a_narrow_interval_around_their_ratio() {
        let spread = Spread::of([0.9, 0.9, 0.9].into_iter()).unwrap();
        assert!((spread.mean - 0.9).abs() < 1e-12 && (spread.low - 0.9).abs() < 1e-12, "{spread:?}");
        let spread = Spread::of([0.8, 1.25].into_iter()).unwrap();
        assert!((spread.mean - 1.0).abs() < 1e-12, "the geometric mean of 0.8 and 1.25 is 1: {spread:?}");
        assert!(spread.low < 0.1 && spread.high > 10.0, "two turns that disagree tell little: {spread:?}");
        let spread = Spread::of([0.96, 1.0, 0.98, 0.97, 0.99, 1.01].into_iter()).unwrap();
        assert!(spread.low > 0.95 && spread.high < 1.01, "{spread:?}");
        assert_eq!(Spread::of([1.0].into_iter()), None);
        assert_eq!(Spread::of([1.0, 0.0].into_iter()), None);
    }

    #[test]
    fn t_falls_towards_the_normal_quantile() {
        assert_eq!(t95(5), 2.571);
        assert!((t95(20) - 2.086).abs() < 1e-9 && (t95(30) - 2.042).abs() < 1e-9);
        assert!(t95(11) < t95(10) && t95(31) < t95(30) && t95(1_000) > 1.96);
    }
}
