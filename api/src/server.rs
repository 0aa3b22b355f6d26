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
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::auth;
use crate::errors::code_of;
use crate::schema::{ApiSchema, ApiState, Caller, ConnectionSlots, Limits, Loaders};

/// What the HTTP layer needs besides the schema.
#[derive(Clone)]
pub struct Http {
    schema: ApiSchema,
    state: ApiState,
    secret: Arc<Vec<u8>>,
}

#[handler]
async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").finish())
}

/// Who opened a WebSocket: the token in `connection_init`'s payload, as
/// `{"Authorization": "Bearer ..."}` or `{"token": "..."}`.
fn ws_caller(secret: &[u8], payload: &serde_json::Value) -> Caller {
    let header = ["Authorization", "authorization"].iter().find_map(|key| payload.get(*key).and_then(|v| v.as_str()));
    let result = match (header, payload.get("token").and_then(|v| v.as_str())) {
        (Some(header), _) => auth::from_header(secret, header),
        (None, Some(token)) => auth::verify(secret, token),
        (None, None) => return Caller::Anonymous,
    };
    match result {
        Ok(claims) => Caller::Authenticated(claims),
        Err(reason) => Caller::Refused(reason),
    }
}

#[handler]
async fn graphql_ws(http: Data<&Http>, protocol: GraphQLProtocol, websocket: WebSocket) -> impl IntoResponse {
    let (schema, secret) = (http.schema.clone(), http.secret.clone());
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
                data.insert(ws_caller(&secret, &payload));
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

/// Refuses a multipart body with more than `max` parts (counted by their
/// delimiter lines as the bytes arrive) before they are all parsed: each
/// file part costs a temporary file, and async-graphql does not count them.
struct PartLimit<R> {
    inner: R,
    delimiter: Vec<u8>,
    /// The last bytes read, shorter than a delimiter: a delimiter split
    /// across two reads starts here.
    carry: Vec<u8>,
    /// Delimiters seen.
    seen: usize,
    /// Most delimiters allowed.
    max: usize,
    /// Bytes before the first file: the `operations` and `map` parts.
    head: usize,
    /// Most bytes allowed before the first file.
    max_head: usize,
}

/// The delimiter that ends the `operations` and `map` parts (the spec puts
/// them first) and opens the first file.
const FIRST_FILE: usize = 3;

impl<R> PartLimit<R> {
    /// `None` when the content type names no boundary (multer refuses it then).
    fn new(inner: R, content_type: &str, max: usize, max_head: usize) -> Option<Self> {
        let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
        let delimiter = format!("--{boundary}").into_bytes();
        Some(PartLimit { inner, delimiter, carry: Vec::new(), seen: 0, max, head: 0, max_head })
    }

    fn count(&mut self, new: &[u8]) {
        let n = self.delimiter.len();
        // Where each delimiter starts in `new`; one that starts in the carried
        // bytes and ends in the new ones counts as starting at 0.
        let carried = self.carry.len();
        let mut straddle = std::mem::take(&mut self.carry);
        straddle.extend_from_slice(&new[..new.len().min(n - 1)]);
        let mut starts: Vec<usize> =
            memchr::memmem::find_iter(&straddle, &self.delimiter).filter(|&start| start < carried).map(|_| 0).collect();
        starts.extend(memchr::memmem::find_iter(new, &self.delimiter));
        if self.seen < FIRST_FILE {
            self.head += starts.get(FIRST_FILE - self.seen - 1).copied().unwrap_or(new.len());
        }
        self.seen += starts.len();
        self.carry = if new.len() >= n - 1 {
            new[new.len() - (n - 1)..].to_vec()
        } else {
            // `straddle` holds the old carry and all of `new`.
            straddle.split_off(straddle.len().saturating_sub(n - 1))
        };
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for PartLimit<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        this.count(&buf.filled()[before..]);
        if this.seen > this.max {
            let error = std::io::Error::other(format!("more than {} parts", this.max.saturating_sub(1)));
            return std::task::Poll::Ready(Err(error));
        }
        if this.head > this.max_head {
            let error = std::io::Error::other(format!(
                "the operations and map parts are over the limit of {} bytes",
                this.max_head
            ));
            return std::task::Poll::Ready(Err(error));
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// Reads a GraphQL request within the limits: a JSON body up to
/// `max_body_bytes`; a multipart body streamed to temporary files, each file
/// up to `max_upload_bytes`, at most `max_uploads` of them, after
/// `operations` and `map` parts of up to `max_body_bytes` between them.
async fn read_request(
    limits: &Limits,
    headers: &HeaderMap,
    body: Body,
) -> Result<async_graphql::Request, poem::Response> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let multipart = content_type.as_deref().is_some_and(|t| t.starts_with("multipart/"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let too_large = |limit: usize| {
        refused(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is over the limit of {limit} bytes"))
    };
    let batch = if multipart {
        // The files plus their part headers, and the operations beside them.
        let limit =
            limits.max_upload_bytes.saturating_add(4 << 10).saturating_mul(limits.max_uploads) + limits.max_body_bytes;
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(limit));
        }
        let options =
            MultipartOptions::default().max_file_size(limits.max_upload_bytes).max_num_files(limits.max_uploads + 1);
        // The operations, the map, the files, and the closing delimiter.
        let parts = limits.max_uploads + 3;
        let type_ = content_type.clone().unwrap_or_default();
        let Some(reader) = PartLimit::new(body.into_async_read(), &type_, parts, limits.max_body_bytes) else {
            return Err(refused(StatusCode::BAD_REQUEST, "the multipart content type names no boundary"));
        };
        async_graphql::http::receive_batch_body(content_type, reader.compat(), options).await
    } else {
        let limit = limits.max_body_bytes;
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(limit));
        }
        let bytes = body.into_bytes_limit(limit).await.map_err(|_| too_large(limit))?;
        async_graphql::http::receive_batch_body(content_type, bytes.as_ref(), MultipartOptions::default()).await
    };
    let request = batch.and_then(|batch| batch.into_single()).map_err(|err| match err {
        ParseRequestError::PayloadTooLarge => refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a file is over the limit of {} bytes", limits.max_upload_bytes),
        ),
        ParseRequestError::Io(_) | ParseRequestError::InvalidMultipart(_) => {
            refused(StatusCode::BAD_REQUEST, format!("the multipart body could not be read: {err}"))
        }
        other => refused(StatusCode::BAD_REQUEST, format!("not a GraphQL request: {other}")),
    })?;
    if request.uploads.len() > limits.max_uploads {
        return Err(refused(StatusCode::BAD_REQUEST, format!("at most {} files per request", limits.max_uploads)));
    }
    Ok(request)
}

#[handler]
async fn graphql(http: Data<&Http>, headers: &HeaderMap, body: Body) -> poem::Response {
    let request = match read_request(&http.state.limits, headers, body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let caller = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => Caller::Anonymous,
        Some(value) => match auth::from_header(&http.secret, value) {
            Ok(claims) => Caller::Authenticated(claims),
            Err(reason) => Caller::Refused(reason),
        },
    };
    let loaders = Loaders::new(http.state.store.db(), true);
    let response = http.schema.execute(request.data(caller).data(loaders)).await;
    metrics::counter!("pointstream_graphql_requests_total").increment(1);
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
async fn photo(http: Data<&Http>, Path(key): Path<String>, signed: Option<Query<Signed>>) -> poem::Response {
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
fn prometheus(http: Data<&Http>) -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::render(&http.state.projectors))
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

#[handler]
async fn readyz(http: Data<&Http>) -> poem::Response {
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
    let http = Http { schema, state, secret: Arc::new(secret) };
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

#[cfg(test)]
mod tests {
    use super::PartLimit;

    #[test]
    fn parts_and_the_bytes_before_the_first_file_are_counted_however_the_bytes_are_split() {
        let body = b"--xyz\r\nA\r\n--xyz\r\nB\r\n--xyz\r\nfile\r\n--xyz--\r\n";
        let before_file = body.windows(5).enumerate().filter(|(_, w)| w == b"--xyz").nth(2).map(|(at, _)| at);
        for size in 1..body.len() {
            let mut limit = PartLimit::new((), "multipart/form-data; boundary=xyz", 10, 100).expect("a boundary");
            for chunk in body.chunks(size) {
                limit.count(chunk);
            }
            assert_eq!(limit.seen, 4, "read {size} bytes at a time");
            // A delimiter split across reads adds its first bytes to the head.
            let head = before_file.expect("a third delimiter");
            assert!((head..head + 5).contains(&limit.head), "{} for {head}, {size} at a time", limit.head);
        }
        assert!(PartLimit::new((), "multipart/form-data", 10, 100).is_none());
    }
}
