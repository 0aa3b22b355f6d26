//! HTTP: `POST /graphql` (JSON, or GraphQL multipart requests with
//! uploads) and `GET /graphql` for queries, as GraphQL over HTTP defines them
//! (see [`crate::transport`]); GraphiQL on `GET /graphql` for a browser
//! (assets under `/graphiql/`, see [`crate::graphiql`]); subscriptions on
//! `/graphql/ws` (see [`crate::websocket`]); `/media/{key}` (photos of the
//! filesystem store, behind signed URLs), `/healthz`, `/readyz`, `/metrics`;
//! every route behind [`crate::cors`].

use std::sync::Arc;

use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_poem::GraphQLProtocol;
use eventstore::trace::TraceContext;
use fred::prelude::ClientLike;
use poem::http::{HeaderMap, Method, StatusCode, header};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::RemoteAddr;
use poem::web::websocket::{WebSocket, WebSocketConfig};
use poem::web::{Data, Path, Query};
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Route, Server, get, handler};
use sea_orm::ConnectionTrait;
use serde::Deserialize;
use tracing::Instrument;

use crate::auth;
use crate::cors::{AllowedOrigins, Cors};
use crate::errors::code_of;
use crate::graphiql::Playground;
use crate::multipart::UploadMemory;
use crate::rate::{RateLimit, RateLimiter};
use crate::replicas::{self, POSITION_HEADER, ReadRoute};
use crate::schema::{ApiSchema, ApiState, Caller, Limits, RequestId, RequestLoaders};
use crate::transport::{MediaType, OverGet, PersistedQueries, Progress};

/// How the HTTP layer is set up, besides the schema and its state.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// How bearer tokens are checked: a shared secret or an identity provider's keys.
    pub tokens: auth::TokenConfig,
    /// Which browser origins may call the API.
    pub origins: AllowedOrigins,
    /// What the GraphiQL page is told.
    pub playground: Playground,
    /// How long a WebSocket may wait before its `connection_init`.
    pub ws_init_timeout: Duration,
    /// How many requests each caller may make.
    pub rate_limit: RateLimit,
    /// How long `/readyz` waits for each dependency.
    pub ready_timeout: Duration,
    /// Turns on when the server starts shutting down.
    pub draining: Draining,
}

/// Whether the server is shutting down: then `/readyz` answers 503 at once
/// and every WebSocket is closed with `1001 Going Away`.
#[derive(Debug, Clone, Default)]
pub struct Draining(Option<tokio::sync::watch::Receiver<bool>>);

impl Draining {
    /// Draining once `signal` turns true.
    pub fn on(signal: tokio::sync::watch::Receiver<bool>) -> Draining {
        Draining(Some(signal))
    }

    /// Whether shutting down has started.
    pub fn started(&self) -> bool {
        self.0.as_ref().is_some_and(|signal| *signal.borrow())
    }

    /// Resolves once shutting down starts (never, for a server that is never told).
    pub async fn wait(&self) {
        if let Some(signal) = &self.0 {
            let mut signal = signal.clone();
            if signal.wait_for(|draining| *draining).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

impl HttpConfig {
    /// Tokens signed with `secret` (HS256, living at most a day); loopback
    /// origins; GraphiQL with introspection and no token; 10 s for a
    /// WebSocket's `connection_init`.
    pub fn new(secret: Vec<u8>) -> Self {
        HttpConfig {
            tokens: auth::TokenConfig::secret(secret),
            origins: AllowedOrigins::Loopback,
            playground: Playground { dev_token: None, introspection: true },
            ws_init_timeout: Duration::from_secs(10),
            rate_limit: RateLimit::default(),
            ready_timeout: Duration::from_secs(2),
            draining: Draining::default(),
        }
    }
}

/// What the HTTP layer needs besides the schema.
pub struct Http {
    schema: ApiSchema,
    state: ApiState,
    tokens: Arc<auth::Verifier>,
    uploads: UploadMemory,
    persisted: PersistedQueries,
    playground: Playground,
    ws_init_timeout: Duration,
    limiter: RateLimiter,
    ready_timeout: Duration,
    draining: Draining,
}

/// Bytes a WebSocket reads at a time (see [`graphql_ws`]).
const WS_READ_BUFFER_BYTES: usize = 512;
/// Bytes of frames a WebSocket gathers before it writes without a flush.
const WS_WRITE_BUFFER_BYTES: usize = 16 << 10;

#[handler]
async fn graphql_ws(http: Data<&Arc<Http>>, protocol: GraphQLProtocol, websocket: WebSocket) -> impl IntoResponse {
    let (schema, tokens, init_timeout) = (http.schema.clone(), http.tokens.clone(), http.ws_init_timeout);
    let draining = http.draining.clone();
    // Small buffers: a subscriber mostly listens, and 19,000 of them must
    // fit. The read buffer is filled to its size on every read (tungstenite
    // zeroes it first), so each connection's holds that much; what a client
    // sends is a few hundred bytes (`connection_init`, `subscribe`), and a
    // longer message grows it for its length. Writes gather until a flush
    // (`websocket::serve` flushes once the protocol has nothing more ready),
    // up to `write_buffer_size`.
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .max_message_size(Some(http.state.limits.max_body_bytes))
        .max_frame_size(Some(http.state.limits.max_body_bytes));
    websocket
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .config(config)
        .on_upgrade(move |stream| crate::websocket::serve(stream, schema, protocol.0, tokens, init_timeout, draining))
}

/// A request refused before it reached the schema: an error with `code` in
/// the GraphQL error shape, with an HTTP status that says why.
fn refused_with(status: StatusCode, code: &'static str, message: impl Into<String>) -> poem::Response {
    metrics::counter!("pointstream_graphql_errors_total", "code" => code).increment(1);
    let body = serde_json::json!({ "errors": [{ "message": message.into(), "extensions": { "code": code } }] });
    poem::Response::builder().status(status).content_type(MediaType::Json.content_type()).body(body.to_string())
}

/// A request refused before it reached the schema: `BAD_USER_INPUT`.
fn refused(status: StatusCode, message: impl Into<String>) -> poem::Response {
    refused_with(status, "BAD_USER_INPUT", message)
}

/// Reads a GraphQL request within the limits: a JSON body up to
/// `max_body_bytes`; a multipart body (see [`crate::multipart`]) with
/// `operations` and `map` parts of up to `max_body_bytes` each, and at most
/// `max_uploads` files of up to `max_upload_bytes`, held in memory within
/// `uploads` or streamed to temporary files, the only one also put into
/// `media` (if given) as it arrives where it can be.
async fn read_request(
    limits: &Limits,
    uploads: &UploadMemory,
    media: Option<&media::MediaStore>,
    headers: &HeaderMap,
    body: Body,
) -> Result<async_graphql::Request, poem::Response> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = |limit: u64| {
        refused(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is over the limit of {limit} bytes"))
    };
    if content_type.as_deref().is_some_and(|t| t.starts_with("multipart/")) {
        let limit = crate::multipart::max_body(limits);
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(limit));
        }
        let Some(boundary) = content_type.as_deref().and_then(crate::multipart::boundary) else {
            return Err(refused(StatusCode::BAD_REQUEST, "the multipart content type names no boundary"));
        };
        let started = std::time::Instant::now();
        return match crate::multipart::receive(
            body.into_bytes_stream(),
            boundary,
            declared,
            limits,
            uploads,
            media.filter(|_| limits.stream_uploads),
        )
        .await
        {
            Ok(request) => {
                metrics::histogram!("pointstream_upload_receive_seconds").record(started.elapsed().as_secs_f64());
                Ok(request)
            }
            Err(err) if err.is_size() => Err(refused(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())),
            Err(err) => Err(refused(StatusCode::BAD_REQUEST, err.to_string())),
        };
    }
    let limit = limits.max_body_bytes as u64;
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let json = content_type.as_deref().is_none_or(|t| {
        let essence = t.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("application/graphql+json")
    });
    if !json {
        return Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a GraphQL request is application/json (or multipart/form-data with uploads)",
        ));
    }
    let bytes = body.into_bytes_limit(limits.max_body_bytes).await.map_err(|_| too_large(limit))?;
    if bytes.is_empty() {
        return Err(refused(StatusCode::BAD_REQUEST, "the request has no body"));
    }
    crate::transport::from_json(&bytes).map_err(|message| refused(StatusCode::BAD_REQUEST, message))
}

/// The media type a request asks for.
fn media_type(headers: &HeaderMap) -> MediaType {
    MediaType::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

/// The caller a request's `Authorization` header names, or why its token is refused.
async fn caller_of(http: &Http, headers: &HeaderMap) -> Result<Caller, auth::AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Caller::Anonymous) };
    let value = value.to_str().map_err(|_| auth::AuthError::Malformed)?;
    http.tokens.from_header(value).await.map(Caller::Authenticated)
}

/// The answer to a request whose token is refused, whatever it asks:
/// `UNAUTHENTICATED`, with 401 under `application/graphql-response+json`
/// (200 under `application/json`, as every GraphQL error there).
fn unauthenticated(headers: &HeaderMap, reason: auth::AuthError) -> poem::Response {
    let media_type = media_type(headers);
    if media_type == MediaType::Json {
        return refused_with(StatusCode::OK, "UNAUTHENTICATED", reason.to_string());
    }
    let mut response = refused_with(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", reason.to_string());
    set_content_type(&mut response, media_type);
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{reason}\"");
    if let Ok(challenge) = challenge.parse() {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

fn set_content_type(response: &mut poem::Response, media_type: MediaType) {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, poem::http::HeaderValue::from_static(media_type.content_type()));
}

/// Runs a request read from POST or GET and answers it in the media type
/// the client asked for, with the status that says how far it got.
async fn answer(
    http: &Http,
    headers: &HeaderMap,
    caller: Caller,
    mut request: async_graphql::Request,
    over_get: bool,
    started: std::time::Instant,
) -> poem::Response {
    let media_type = media_type(headers);
    if let Err(err) = http.persisted.resolve(&mut request) {
        // Not found is part of the protocol (the client sends the query
        // next), answered with 200 as Apollo's clients expect.
        let status = if err.code() == "PERSISTED_QUERY_NOT_FOUND" { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        let mut response = refused_with(status, err.code(), err.to_string());
        set_content_type(&mut response, media_type);
        return response;
    }
    let position = headers.get(POSITION_HEADER).map(|value| value.to_str().map_err(|e| e.to_string()));
    let after = match position.map(|text| text.and_then(replicas::parse_position)).transpose() {
        Ok(after) => after,
        Err(err) => {
            let mut response =
                refused_with(StatusCode::BAD_REQUEST, "BAD_REQUEST", format!("{POSITION_HEADER}: {err}"));
            set_content_type(&mut response, media_type);
            return response;
        }
    };
    let progress = Arc::new(Progress::default());
    let route = Arc::new(ReadRoute::new(http.state.reads.clone(), after));
    let loaders = RequestLoaders::new(http.state.store.db(), route.clone());
    let request_id = RequestId::from_header(headers.get("x-request-id").and_then(|value| value.to_str().ok()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id.0,
        operation = request.operation_name.as_deref().unwrap_or_default()
    );
    if eventstore::trace::enabled() {
        // A client's trace context makes this request a part of its trace.
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        if let Some(traceparent) = header("traceparent") {
            let tracestate = header("tracestate").map(str::to_string);
            eventstore::trace::parent_of(&span, &TraceContext { traceparent: traceparent.to_string(), tracestate });
        }
    }
    let mut request = request.data(caller).data(loaders).data(route).data(progress.clone()).data(request_id.clone());
    if over_get {
        request = request.data(OverGet);
    }
    let response = http.schema.execute(request).instrument(span).await;
    metrics::counter!("pointstream_graphql_requests_total").increment(1);
    metrics::histogram!("pointstream_graphql_request_seconds").record(started.elapsed().as_secs_f64());
    for error in &response.errors {
        let code = code_of(error.extensions.as_ref()).unwrap_or("GRAPHQL_VALIDATION").to_string();
        metrics::counter!("pointstream_graphql_errors_total", "code" => code).increment(1);
    }
    let (status, body) = if progress.refused_over_get() {
        (StatusCode::METHOD_NOT_ALLOWED, serde_json::to_vec(&Errors { errors: &response.errors }))
    } else if !progress.executed() && media_type == MediaType::GraphqlResponse {
        // Nothing ran: no `data` at all, and a status that says the request was bad.
        (StatusCode::BAD_REQUEST, serde_json::to_vec(&Errors { errors: &response.errors }))
    } else {
        (StatusCode::OK, serde_json::to_vec(&response))
    };
    let Ok(body) = body else {
        return refused_with(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error");
    };
    let mut builder = poem::Response::builder()
        .status(status)
        .content_type(media_type.content_type())
        .header(header::VARY, "Accept, Authorization")
        .header("x-request-id", request_id.0.as_str());
    if status == StatusCode::METHOD_NOT_ALLOWED {
        builder = builder.header(header::ALLOW, "POST");
    }
    if let Some(position) = progress.written() {
        // What the client sends back for its next queries to see this write.
        builder = builder.header(POSITION_HEADER, position);
    }
    if over_get {
        // Answers depend on who asks; a shared cache keeps none of them.
        builder = builder.header(header::CACHE_CONTROL, "private, no-store");
    }
    builder.body(body)
}

/// An answer with errors only, as GraphQL over HTTP wants it when nothing ran.
#[derive(serde::Serialize)]
struct Errors<'a> {
    errors: &'a [async_graphql::ServerError],
}

/// `Ok` if the caller (its token's subject, else its address) is within its
/// rate, else the answer: `RATE_LIMITED` with 429 and `Retry-After`.
#[allow(clippy::result_large_err)] // The refusal is the response, built once.
fn within_rate(http: &Http, caller: &Caller, remote: &RemoteAddr) -> Result<(), poem::Response> {
    let key = match caller {
        Caller::Authenticated(claims) => crate::rate::Caller::Subject(&claims.sub),
        _ => match remote.as_socket_addr() {
            Some(address) => crate::rate::Caller::Address(address.ip()),
            None => return Ok(()),
        },
    };
    http.limiter.check(key).map_err(|wait| {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = refused_with(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!("too many requests: try again in {seconds} s"),
        );
        response.headers_mut().insert(header::RETRY_AFTER, poem::http::HeaderValue::from(seconds.max(1)));
        response
    })
}

#[handler]
async fn graphql_post(http: Data<&Arc<Http>>, headers: &HeaderMap, remote: &RemoteAddr, body: Body) -> poem::Response {
    let started = std::time::Instant::now();
    let caller = match caller_of(&http, headers).await {
        Ok(caller) => caller,
        Err(reason) => return unauthenticated(headers, reason),
    };
    if let Err(refusal) = within_rate(&http, &caller, remote) {
        return refusal;
    }
    // Only a caller who may upload at all has a photo put into S3 as it arrives.
    let media = matches!(caller, Caller::Authenticated(_)).then_some(&http.state.media);
    let request = match read_request(&http.state.limits, &http.uploads, media, headers, body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    answer(&http, headers, caller, request, false, started).await
}

/// Whether a GET is a browser opening the page rather than a client asking
/// a query: it accepts HTML and carries no GraphQL parameters.
fn opens_the_page(headers: &HeaderMap, query: &str) -> bool {
    let accepts_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|range| range.trim().starts_with("text/html")));
    let asks = query.split('&').any(|pair| pair.starts_with("query=") || pair.starts_with("extensions="));
    accepts_html && !asks
}

#[handler]
async fn graphql_get(http: Data<&Arc<Http>>, request: &Request) -> poem::Response {
    let remote = request.remote_addr();
    let started = std::time::Instant::now();
    let headers = request.headers();
    let query = request.uri().query().unwrap_or_default();
    if opens_the_page(headers, query) {
        return crate::graphiql::page(&http.playground);
    }
    if query.len() > http.state.limits.max_body_bytes {
        return refused(StatusCode::URI_TOO_LONG, "the query string is over the request size limit");
    }
    let caller = match caller_of(&http, headers).await {
        Ok(caller) => caller,
        Err(reason) => return unauthenticated(headers, reason),
    };
    if let Err(refusal) = within_rate(&http, &caller, remote) {
        return refusal;
    }
    let graphql = match crate::transport::from_query_string(query) {
        Ok(graphql) => graphql,
        Err(message) => return refused(StatusCode::BAD_REQUEST, message),
    };
    answer(&http, headers, caller, graphql, true, started).await
}

#[handler]
fn graphql_other(method: Method) -> poem::Response {
    let mut response = refused(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not a GraphQL request method"));
    response.headers_mut().insert(header::ALLOW, poem::http::HeaderValue::from_static("GET, POST"));
    response
}

/// The query of a signed photo URL.
#[derive(Deserialize)]
struct Signed {
    expires: u64,
    signature: String,
}

/// A photo of the filesystem store, if the URL's signature holds and it has
/// not expired (403 otherwise). With S3, photo URLs point at S3 instead.
#[handler]
async fn photo(http: Data<&Arc<Http>>, Path(key): Path<String>, signed: Option<Query<Signed>>) -> poem::Response {
    let media::MediaStore::Fs(store) = &http.state.media else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(Query(signed)) = signed else {
        return (StatusCode::FORBIDDEN, "a signed URL is required").into_response();
    };
    match store.open(&key, signed.expires, &signed.signature).await {
        Ok(opened) => poem::Response::builder()
            .content_type(opened.content_type)
            .header(header::CONTENT_LENGTH, opened.size)
            // Cached no longer than the URL is good.
            .header(header::CACHE_CONTROL, format!("private, max-age={}", opened.fresh_for.min(300)))
            .header("x-content-type-options", "nosniff")
            .body(Body::from_async_read(opened.file)),
        Err(media::fs::OpenError::Refused(reason)) => (StatusCode::FORBIDDEN, reason.to_string()).into_response(),
        Err(media::fs::OpenError::NotFound) => StatusCode::NOT_FOUND.into_response(),
    }
}

#[handler]
fn prometheus(http: Data<&Arc<Http>>) -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::render(&http.state.projectors))
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

/// One dependency's check for `/readyz`, within `timeout`.
async fn ready_within<E: std::fmt::Display>(
    name: &str,
    timeout: Duration,
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Result<String, String> {
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(())) => Ok(format!("{name} ok")),
        Ok(Err(err)) => Err(format!("{name}: {err}")),
        Err(_) => Err(format!("{name} does not answer within {} ms", timeout.as_millis())),
    }
}

/// 200 when every dependency answers within the readiness timeout (the
/// database, the photo store, and Redis when configured), checked at once;
/// 503 naming each that does not.
#[handler]
async fn readyz(http: Data<&Arc<Http>>) -> poem::Response {
    if http.draining.started() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down").into_response();
    }
    let timeout = http.ready_timeout;
    let db = http.state.store.db();
    let database = ready_within("database", timeout, async { db.execute_unprepared("SELECT 1").await.map(|_| ()) });
    let media = ready_within(http.state.media.kind(), timeout, http.state.media.check());
    let redis = async {
        match &http.state.redis {
            Some(redis) => {
                Some(ready_within("redis", timeout, async { redis.ping::<String>(None).await.map(|_| ()) }).await)
            }
            None => None,
        }
    };
    let (database, media, redis) = tokio::join!(database, media, redis);
    let checks: Vec<Result<String, String>> = [Some(database), Some(media), redis].into_iter().flatten().collect();
    let failed: Vec<&str> = checks.iter().filter_map(|c| c.as_ref().err().map(String::as_str)).collect();
    if failed.is_empty() {
        // Replicas out of rotation leave queries to the primary: said, not failed.
        let replicas = http.state.reads.report().into_iter().map(|replica| match replica.health.reason {
            None => format!("replica {} in rotation at {}", replica.name, replica.applied),
            Some(reason) => format!("replica {} out of rotation: {reason}", replica.name),
        });
        let passed: Vec<String> = checks.into_iter().filter_map(Result::ok).chain(replicas).collect();
        format!("ready: {}", passed.join(", ")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}", failed.join("; "))).into_response()
    }
}

/// What a network sends back to the callback.
#[derive(Debug, serde::Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

/// `GET /oauth/{provider}/callback`: the end of a link's OAuth flow (see
/// [`crate::links`]). The browser is sent on to the front end's page
/// (`--oauth-return-url`) with the outcome in its query, or shown a short
/// page; a forged, used or expired `state` is refused with 400 and changes
/// nothing. No token is ever in the answer.
#[handler]
async fn oauth_callback(
    http: Data<&Arc<Http>>,
    Path(provider): Path<String>,
    Query(callback): Query<Callback>,
) -> poem::Response {
    let page = |status: StatusCode, text: &str| {
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>pointstream</title><p>{}</p>",
            text.replace('&', "&amp;").replace('<', "&lt;")
        );
        poem::Response::builder().status(status).content_type("text/html; charset=utf-8").body(body)
    };
    let (Some(links), Ok(provider)) = (&http.state.links, provider.parse::<domain::values::Provider>()) else {
        return page(StatusCode::NOT_FOUND, "No such link.");
    };
    let state = callback.state.as_deref().unwrap_or_default();
    let landed =
        links.callback(&http.state.store, provider, state, callback.code.as_deref(), callback.error.as_deref()).await;
    let query = match &landed {
        Ok(crate::links::Landing::Linked(provider)) => vec![("linked", provider.to_string())],
        Ok(crate::links::Landing::ChoosePage(choice)) => {
            vec![("provider", provider.to_string()), ("choose", choice.clone())]
        }
        Err(error @ (crate::links::LinkError::UnknownState | crate::links::LinkError::Expired)) => {
            tracing::warn!(%provider, %error, "link callback refused");
            return page(StatusCode::BAD_REQUEST, &error.to_string());
        }
        Err(error) => {
            tracing::warn!(%provider, %error, "link callback failed");
            vec![("provider", provider.to_string()), ("error", error.code().to_lowercase())]
        }
    };
    metrics::counter!("pointstream_social_links_total", "provider" => provider.to_string(), "outcome" => if landed.is_ok() { "linked" } else { "failed" }).increment(1);
    match links.return_url().and_then(|base| reqwest::Url::parse_with_params(base, &query).ok()) {
        Some(url) => {
            poem::Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, url.as_str()).finish()
        }
        None => match landed {
            Ok(crate::links::Landing::Linked(_)) => page(StatusCode::OK, "Linked. You can close this window."),
            Ok(crate::links::Landing::ChoosePage(_)) => {
                page(StatusCode::OK, "Choose a Page in the app to finish linking.")
            }
            Err(error) => page(StatusCode::BAD_GATEWAY, &error.to_string()),
        },
    }
}

/// The application: every route.
pub fn app(schema: ApiSchema, state: ApiState, config: HttpConfig) -> impl Endpoint {
    crate::telemetry::handle();
    let uploads = UploadMemory::new(&state.limits);
    let tokens = Arc::new(auth::Verifier::new(config.tokens));
    let playground = Playground { introspection: state.limits.introspection, ..config.playground };
    // Shared, not cloned into each request: the state holds many handles.
    let http = Arc::new(Http {
        schema,
        state,
        tokens,
        uploads,
        persisted: PersistedQueries::default(),
        playground,
        ws_init_timeout: config.ws_init_timeout,
        limiter: RateLimiter::new(config.rate_limit),
        ready_timeout: config.ready_timeout,
        draining: config.draining,
    });
    http.limiter.sweep_every_minute();
    Route::new()
        .at(
            "/graphql",
            get(graphql_get).post(graphql_post).put(graphql_other).delete(graphql_other).patch(graphql_other),
        )
        .at("/graphiql/:file", get(crate::graphiql::asset))
        .at("/media/*key", get(photo))
        .at("/oauth/:provider/callback", get(oauth_callback))
        .at("/graphql/ws", get(graphql_ws))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(prometheus))
        .data(http)
        .with(Cors::new(config.origins))
}

/// Binds `addr` (port 0: any free port), builds the endpoint with the bound
/// address (`host:port`; the filesystem photo store's URLs point there), and
/// returns the address and the server future, which ends when `shutdown`
/// resolves.
pub async fn bind<E: Endpoint + 'static>(
    addr: String,
    endpoint: impl FnOnce(&str) -> E,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(String, impl std::future::Future<Output = std::io::Result<()>>)> {
    bind_graceful(addr, endpoint, shutdown, None).await
}

/// [`bind`], with the server future ending at most `grace` after `shutdown`
/// resolves: it stops accepting at once, lets the requests in flight finish
/// within `grace`, then drops what is left.
pub async fn bind_graceful<E: Endpoint + 'static>(
    addr: String,
    endpoint: impl FnOnce(&str) -> E,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Option<Duration>,
) -> std::io::Result<(String, impl std::future::Future<Output = std::io::Result<()>>)> {
    let acceptor = TcpListener::bind(addr.clone()).into_acceptor().await?;
    let local =
        acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).map(|a| a.to_string()).unwrap_or(addr);
    let server = Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(endpoint(&local), shutdown, grace);
    Ok((local, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dependency_that_does_not_answer_is_named_once_its_timeout_passes() {
        let silent = std::future::pending::<Result<(), String>>();
        let answer = ready_within("database", Duration::from_millis(20), silent).await;
        assert_eq!(answer, Err("database does not answer within 20 ms".to_string()));
        let failing = ready_within("redis", Duration::from_secs(1), async { Err::<(), _>("connection refused") }).await;
        assert_eq!(failing, Err("redis: connection refused".to_string()));
        let fine = ready_within("filesystem", Duration::from_secs(1), async { Ok::<(), String>(()) }).await;
        assert_eq!(fine, Ok("filesystem ok".to_string()));
    }
}
