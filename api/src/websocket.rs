//! Subscriptions over WebSocket, in `graphql-transport-ws` (the graphql-ws
//! library) and the legacy `graphql-ws` (subscriptions-transport-ws), with
//! the closes the protocols define:
//!
//! * a `connection_init` without a valid token closes the socket with
//!   `4403 Forbidden` (legacy: a `connection_error`, then the close);
//! * no `connection_init` within the configured time closes it with
//!   `4408 Connection initialisation timeout`;
//! * a `subscribe` before the acknowledgement closes it with `4401 Unauthorized`;
//! * the server shutting down closes it with `1001 Going Away`;
//! * the connection is closed (`4403`) when its token expires, and every
//!   operation checks the expiry as well (see `schema::claims`), so nothing
//!   runs on an expired token in between.
//!
//! async-graphql runs the protocol itself; this module owns the socket
//! around it: the token check at `connection_init`, the two timers, and the
//! close codes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::http::{WebSocketProtocols, WsMessage};
use futures_util::{FutureExt, SinkExt, StreamExt};
use poem::web::websocket::{Message, WebSocketStream};
use tokio::time::Instant;

use crate::auth::Verifier;
use crate::replicas::{ReadAfter, parse_position};
use crate::schema::{ApiSchema, Caller, ConnectionSlots};

/// Where a connection's authentication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// No `connection_init` yet.
    Pending,
    /// Accepted with a token good through this second (since the epoch).
    Accepted { exp: u64 },
    /// `connection_init` was refused.
    Refused,
}

/// Who opened a WebSocket: the token in `connection_init`'s payload, as
/// `{"Authorization": "Bearer ..."}` or `{"token": "..."}`.
async fn caller(tokens: &Verifier, payload: &serde_json::Value) -> Caller {
    let header = ["Authorization", "authorization"].iter().find_map(|key| payload.get(*key).and_then(|v| v.as_str()));
    let result = match (header, payload.get("token").and_then(|v| v.as_str())) {
        (Some(header), _) => tokens.from_header(header).await,
        (None, Some(token)) => tokens.verify(token).await,
        (None, None) => return Caller::Anonymous,
    };
    match result {
        Ok(claims) => Caller::Authenticated(claims),
        Err(reason) => Caller::Refused(reason),
    }
}

/// The position the client has seen (`position` in `connection_init`'s
/// payload, a number or a string of digits): its queries see at least that.
fn position(payload: &serde_json::Value) -> Result<Option<u64>, String> {
    match payload.get("position") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(number)) => number.as_u64().map(Some).ok_or_else(not_a_position),
        Some(serde_json::Value::String(text)) => parse_position(text).map(Some).map_err(|_| not_a_position()),
        Some(_) => Err(not_a_position()),
    }
}

/// Short: it becomes the close frame's reason (at most 123 bytes).
fn not_a_position() -> String {
    "Bad request: position must be a non-negative integer".to_string()
}

/// When a token good through second `exp` stops being good, as an instant.
fn expiry(exp: u64) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let until = Duration::from_secs(exp.saturating_add(1)).saturating_sub(now);
    Instant::now() + until
}

/// The legacy protocol's `connection_error` message.
fn connection_error(message: &str) -> Message {
    Message::text(serde_json::json!({ "type": "connection_error", "payload": { "message": message } }).to_string())
}

/// What goes on the socket for a message of the protocol engine (`None`:
/// the engine has ended, and the socket closes without a word).
fn outgoing(message: Option<WsMessage>, refused: bool) -> Option<Message> {
    Some(match message {
        None if refused => Message::close_with(4403u16, "Forbidden"),
        None => return None,
        Some(WsMessage::Text(text)) => Message::text(text),
        Some(WsMessage::Close(code, reason)) => match code {
            1002 if refused => Message::close_with(4403u16, reason),
            1011 => Message::close_with(4401u16, "Unauthorized"),
            _ => Message::close_with(code, reason),
        },
    })
}

/// Serves one upgraded connection until either side ends it.
pub async fn serve(
    socket: WebSocketStream,
    schema: ApiSchema,
    protocol: WebSocketProtocols,
    tokens: Arc<Verifier>,
    init_timeout: Duration,
    draining: crate::server::Draining,
) {
    let (mut sink, source) = socket.split();
    let source = source.take_while(|message| futures_util::future::ready(message.is_ok())).filter_map(|message| {
        futures_util::future::ready(message.ok().filter(|m| m.is_text() || m.is_binary()).map(Message::into_bytes))
    });
    let auth = Arc::new(Mutex::new(Auth::Pending));
    let on_init = {
        let auth = auth.clone();
        move |payload: serde_json::Value| async move {
            let (outcome, result) = match (caller(&tokens, &payload).await, position(&payload)) {
                (Caller::Authenticated(_), Err(reason)) => (Auth::Refused, Err(reason.into())),
                (Caller::Authenticated(claims), Ok(after)) => {
                    let exp = claims.exp;
                    let mut data = async_graphql::Data::default();
                    data.insert(Caller::Authenticated(claims));
                    data.insert(ConnectionSlots::default());
                    if let Some(after) = after {
                        data.insert(ReadAfter(after));
                    }
                    (Auth::Accepted { exp }, Ok(data))
                }
                (Caller::Refused(reason), _) => (Auth::Refused, Err(format!("Forbidden: {reason}").into())),
                (Caller::Anonymous, _) => {
                    (Auth::Refused, Err("Forbidden: connection_init carries no bearer token".into()))
                }
            };
            if let Ok(mut auth) = auth.lock() {
                *auth = outcome;
            }
            result
        }
    };
    let graphql = async_graphql::http::WebSocket::new(schema, source, protocol).on_connection_init(on_init);
    futures_util::pin_mut!(graphql);
    let legacy = protocol == WebSocketProtocols::SubscriptionsTransportWS;
    let init_deadline = Instant::now() + init_timeout;
    loop {
        let state = auth.lock().map(|auth| *auth).unwrap_or(Auth::Refused);
        let deadline = match state {
            Auth::Pending => Some(init_deadline),
            Auth::Accepted { exp } => Some(expiry(exp)),
            Auth::Refused => None,
        };
        let timer = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = graphql.next() => {
                // Everything the protocol has ready goes out in one write: a
                // connection whose subscriptions all follow what one update
                // touched pays one system call for them, not one each.
                let mut next = Some(message);
                let mut stop = false;
                while let Some(message) = next.take() {
                    let refused = auth.lock().map(|auth| *auth == Auth::Refused).unwrap_or(true);
                    let Some(message) = outgoing(message, refused) else {
                        stop = true;
                        break;
                    };
                    let closing = message.is_close();
                    if sink.feed(message).await.is_err() || closing {
                        stop = true;
                        break;
                    }
                    next = graphql.next().now_or_never();
                }
                if sink.flush().await.is_err() || stop {
                    break;
                }
            }
            () = draining.wait() => {
                // The server is stopping: the client should reconnect elsewhere.
                let _ = sink.send(Message::close_with(1001u16, "Going Away")).await;
                break;
            }
            () = timer => {
                let (code, reason) = match state {
                    Auth::Pending => (4408u16, "Connection initialisation timeout"),
                    _ => (4403u16, "Forbidden: token expired"),
                };
                if legacy {
                    let _ = sink.send(connection_error(reason)).await;
                }
                let _ = sink.send(Message::close_with(code, reason)).await;
                break;
            }
        }
    }
    let _ = sink.close().await;
}
