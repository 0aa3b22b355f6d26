//! HTTP: `POST /graphql` (JSON, or GraphQL multipart requests with
//! uploads), GraphiQL on `GET /graphql`, subscriptions on `/graphql/ws`
//! (`graphql-transport-ws` and legacy `graphql-ws`), `/media/{key}` (photos of
//! the filesystem store, behind signed URLs), `/healthz`, `/readyz`,
//! `/metrics`.

use std::sync::Arc;

use async_graphql::ParseRequestError;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource, MultipartOptions};
use async_graphql_poem::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use fred::prelude::ClientLike;
use poem::http::{HeaderMap, StatusCode, header};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::websocket::{WebSocket, WebSocketConfig};
use poem::web::{Data, Html, Path, Query};
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Route, Server, get, handler};
use sea_orm::ConnectionTrait;
use serde::Deserialize;

use crate::auth;
use crate::errors::code_of;
use crate::multipart::UploadMemory;
use crate::schema::{ApiSchema, ApiState, Caller, ConnectionSlots, Limits, RequestLoaders};

/// What the HTTP layer needs besides the schema.
#[derive(Clone)]
pub struct Http {
    schema: ApiSchema,
    state: ApiState,
    tokens: Arc<auth::Verifier>,
    uploads: UploadMemory,
}

#[handler]
async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").finish())
}

/// Who opened a WebSocket: the token in `connection_init`'s payload, as
/// `{"Authorization": "Bearer ..."}` or `{"token": "..."}`.
fn ws_caller(tokens: &auth::Verifier, payload: &serde_json::Value) -> Caller {
    let header = ["Authorization", "authorization"].iter().find_map(|key| payload.get(*key).and_then(|v| v.as_str()));
    let result = match (header, payload.get("token").and_then(|v| v.as_str())) {
        (Some(header), _) => tokens.from_header(header),
        (None, Some(token)) => tokens.verify(token),
        (None, None) => return Caller::Anonymous,
    };
    match result {
        Ok(claims) => Caller::Authenticated(claims),
        Err(reason) => Caller::Refused(reason),
    }
}

#[handler]
async fn graphql_ws(http: Data<&Arc<Http>>, protocol: GraphQLProtocol, websocket: WebSocket) -> impl IntoResponse {
    let (schema, tokens) = (http.schema.clone(), http.tokens.clone());
    // Small buffers: a subscriber mostly listens, and 10,000 of them must fit.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(http.state.limits.max_body_bytes))
        .max_frame_size(Some(http.state.limits.max_body_bytes));
    websocket.protocols(ALL_WEBSOCKET_PROTOCOLS).config(config).on_upgrade(move |stream| {
        GraphQLWebSocket::new(stream, schema, protocol)
            .on_connection_init(move |payload| async move {
                let mut data = async_graphql::Data::default();
                data.insert(ws_caller(&tokens, &payload));
                data.insert(ConnectionSlots::default());
                Ok(data)
            })
            .serve()
    })
}

/// A request refused before it reached the schema: `BAD_USER_INPUT` in the
/// GraphQL error shape, with an HTTP status that says why.
fn refused(status: StatusCode, message: impl Into<String>) -> poem::Response {
    metrics::counter!("pointstream_graphql_errors_total", "code" => "BAD_USER_INPUT").increment(1);
    let body =
        serde_json::json!({ "errors": [{ "message": message.into(), "extensions": { "code": "BAD_USER_INPUT" } }] });
    poem::Response::builder().status(status).content_type("application/json").body(body.to_string())
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
    let not_graphql =
        |err: ParseRequestError| refused(StatusCode::BAD_REQUEST, format!("not a GraphQL request: {err}"));
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
    let bytes = body.into_bytes_limit(limits.max_body_bytes).await.map_err(|_| too_large(limit))?;
    async_graphql::http::receive_batch_body(content_type, bytes.as_ref(), MultipartOptions::default())
        .await
        .and_then(|batch| batch.into_single())
        .map_err(not_graphql)
}

#[handler]
async fn graphql(http: Data<&Arc<Http>>, headers: &HeaderMap, body: Body) -> poem::Response {
    let started = std::time::Instant::now();
    let caller = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => Caller::Anonymous,
        Some(value) => match http.tokens.from_header(value) {
            Ok(claims) => Caller::Authenticated(claims),
            Err(reason) => Caller::Refused(reason),
        },
    };
    // Only a caller who may upload at all has a photo put into S3 as it arrives.
    let media = matches!(caller, Caller::Authenticated(_)).then_some(&http.state.media);
    let request = match read_request(&http.state.limits, &http.uploads, media, headers, body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let loaders = RequestLoaders::new(http.state.store.db());
    let response = http.schema.execute(request.data(caller).data(loaders)).await;
    metrics::counter!("pointstream_graphql_requests_total").increment(1);
    metrics::histogram!("pointstream_graphql_request_seconds").record(started.elapsed().as_secs_f64());
    for error in &response.errors {
        let code = code_of(error.extensions.as_ref()).unwrap_or("GRAPHQL_VALIDATION").to_string();
        metrics::counter!("pointstream_graphql_errors_total", "code" => code).increment(1);
    }
    GraphQLResponse::from(response).into_response()
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

#[handler]
async fn readyz(http: Data<&Arc<Http>>) -> poem::Response {
    let db = http.state.store.db();
    if let Err(err) = db.execute_unprepared("SELECT 1").await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: database: {err}")).into_response();
    }
    let media = http.state.media.kind();
    match tokio::time::timeout(std::time::Duration::from_secs(2), http.state.media.check()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {media}: {err}")).into_response(),
        Err(_) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {media} does not answer")).into_response();
        }
    }
    let Some(redis) = &http.state.redis else { return format!("ready: database ok, {media} ok").into_response() };
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), redis.ping::<String>(None)).await;
    match ping {
        Ok(Ok(_)) => format!("ready: database ok, {media} ok, redis ok").into_response(),
        Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: redis: {err}")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: redis does not answer").into_response(),
    }
}

/// The application: every route.
pub fn app(schema: ApiSchema, state: ApiState, secret: Vec<u8>) -> impl Endpoint {
    crate::telemetry::handle();
    let uploads = UploadMemory::new(&state.limits);
    let tokens = Arc::new(auth::Verifier::new(secret));
    // Shared, not cloned into each request: the state holds many handles.
    let http = Arc::new(Http { schema, state, tokens, uploads });
    Route::new()
        .at("/graphql", get(graphiql).post(graphql))
        .at("/media/*key", get(photo))
        .at("/graphql/ws", get(graphql_ws))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(prometheus))
        .data(http)
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
    let acceptor = TcpListener::bind(addr.clone()).into_acceptor().await?;
    let local =
        acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).map(|a| a.to_string()).unwrap_or(addr);
    let server = Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(endpoint(&local), shutdown, None);
    Ok((local, server))
}
