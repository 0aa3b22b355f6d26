//! HTTP: `POST /graphql`, GraphiQL on `GET /graphql`, subscriptions on
//! `/graphql/ws` (`graphql-transport-ws` and legacy `graphql-ws`), `/healthz`,
//! `/readyz`, `/metrics`.

use std::sync::Arc;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql_poem::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use fred::prelude::ClientLike;
use poem::http::{HeaderMap, StatusCode};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::middleware::SizeLimit;
use poem::web::websocket::{WebSocket, WebSocketConfig};
use poem::web::{Data, Html};
use poem::{Endpoint, EndpointExt, IntoResponse, Route, Server, get, handler};
use projections::ProjectorStatus;
use sea_orm::ConnectionTrait;
use tokio::sync::watch;

use crate::auth;
use crate::schema::{ApiSchema, ApiState, Caller, ConnectionSlots, Loaders};

/// What the HTTP layer needs besides the schema.
#[derive(Clone)]
pub struct Http {
    schema: ApiSchema,
    state: ApiState,
    secret: Arc<Vec<u8>>,
    statuses: Arc<Vec<watch::Receiver<ProjectorStatus>>>,
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

#[handler]
async fn graphql(http: Data<&Http>, headers: &HeaderMap, request: GraphQLRequest) -> GraphQLResponse {
    let caller = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => Caller::Anonymous,
        Some(value) => match auth::from_header(&http.secret, value) {
            Ok(claims) => Caller::Authenticated(claims),
            Err(reason) => Caller::Refused(reason),
        },
    };
    let loaders = Loaders::new(http.state.store.db(), true);
    let response = http.schema.execute(request.0.data(caller).data(loaders)).await;
    metrics::counter!("pointstream_graphql_requests_total").increment(1);
    for error in &response.errors {
        let code = match error.extensions.as_ref().and_then(|e| e.get("code")) {
            Some(async_graphql::Value::String(code)) => code.clone(),
            _ => "GRAPHQL_VALIDATION".to_string(),
        };
        metrics::counter!("pointstream_graphql_errors_total", "code" => code).increment(1);
    }
    response.into()
}

#[handler]
fn prometheus(http: Data<&Http>) -> poem::Response {
    poem::Response::builder().content_type("text/plain; version=0.0.4").body(crate::telemetry::render(&http.statuses))
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
    let Some(redis) = &http.state.redis else { return "ready: database ok".into_response() };
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), redis.ping::<String>(None)).await;
    match ping {
        Ok(Ok(_)) => "ready: database ok, redis ok".into_response(),
        Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: redis: {err}")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: redis does not answer").into_response(),
    }
}

/// The application: every route, with the body size limit.
pub fn app(
    schema: ApiSchema,
    state: ApiState,
    secret: Vec<u8>,
    statuses: Vec<watch::Receiver<ProjectorStatus>>,
) -> impl Endpoint {
    crate::telemetry::handle();
    let max_body = state.limits.max_body_bytes;
    let http = Http { schema, state, secret: Arc::new(secret), statuses: Arc::new(statuses) };
    Route::new()
        .at("/graphql", get(graphiql).post(graphql.with(SizeLimit::new(max_body))))
        .at("/graphql/ws", get(graphql_ws))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(prometheus))
        .data(http)
}

/// Binds `addr` (port 0: any free port) and returns the bound address and the
/// server future, which ends when `shutdown` resolves.
pub async fn bind(
    addr: String,
    endpoint: impl Endpoint + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(String, impl std::future::Future<Output = std::io::Result<()>>)> {
    let acceptor = TcpListener::bind(addr.clone()).into_acceptor().await?;
    let local =
        acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).map(|a| a.to_string()).unwrap_or(addr);
    let server = Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(endpoint, shutdown, None);
    Ok((local, server))
}
