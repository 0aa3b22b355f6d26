//! Many `walletUpdates` subscribers over WebSockets (`graphql-transport-ws`),
//! each on a connection of its own, and when each received which update.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the server may take to acknowledge one connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What a subscriber's task saw.
enum Report {
    /// An update at `position`, received at `at` (taken before parsing it).
    Next { subscriber: usize, position: u64, at: Instant },
    /// The subscription ended or failed.
    Failed { subscriber: usize, reason: String },
}

/// Connected, subscribed clients; each reports every update it receives.
pub struct Subscribers {
    tasks: Vec<JoinHandle<()>>,
    reports: mpsc::UnboundedReceiver<Report>,
}

impl Subscribers {
    /// Opens `count` connections to `address`, `concurrency` at a time, each
    /// authenticated with `bearer` in `connection_init` and subscribed to
    /// `walletUpdates(member)` once the server acknowledged it.
    pub async fn connect(
        address: &str,
        bearer: &str,
        member: &str,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {bearer}") } });
        let query = format!("subscription {{ walletUpdates(member: \"{member}\") {{ position balanceAfter }} }}");
        let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
        let messages = Arc::new((init.to_string(), subscribe.to_string()));
        let (sender, reports) = mpsc::unbounded_channel();
        let tasks = futures_util::stream::iter(0..count)
            .map(|subscriber| {
                let (messages, sender) = (messages.clone(), sender.clone());
                async move {
                    let socket = open(address, &messages.0, &messages.1)
                        .await
                        .with_context(|| format!("subscriber {subscriber} of {count}"))?;
                    anyhow::Ok(tokio::spawn(receive(socket, subscriber, sender)))
                }
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        Ok(Self { tasks, reports })
    }

    /// Waits until every subscriber has received the update at `position`, or
    /// `within` has passed; returns when each received it (`None`: not yet).
    /// Updates at other positions are skipped.
    pub async fn arrivals(&mut self, position: u64, within: Duration) -> anyhow::Result<Vec<Option<Instant>>> {
        let mut arrived = vec![None; self.tasks.len()];
        let mut missing = arrived.len();
        let deadline = tokio::time::Instant::now() + within;
        while missing > 0 {
            let Ok(report) = tokio::time::timeout_at(deadline, self.reports.recv()).await else { break };
            match report.context("every subscriber has stopped")? {
                Report::Next { subscriber, position: at_position, at } if at_position == position => {
                    if arrived[subscriber].replace(at).is_none() {
                        missing -= 1;
                    }
                }
                Report::Next { .. } => {}
                Report::Failed { subscriber, reason } => anyhow::bail!("subscriber {subscriber}: {reason}"),
            }
        }
        Ok(arrived)
    }

    /// Drops every connection.
    pub fn close(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// One connection: WebSocket upgrade, `connection_init`, `connection_ack`, `subscribe`.
async fn open(address: &str, init: &str, subscribe: &str) -> anyhow::Result<Socket> {
    // Small buffers: 10,000 clients share the process with nothing to read but one update each.
    let config = WebSocketConfig::default().read_buffer_size(4 << 10);
    let mut socket = handshake(address, init, config, ACK_TIMEOUT).await?;
    socket.send(Message::text(subscribe)).await?;
    Ok(socket)
}

/// A `graphql-transport-ws` connection to `address` with `config`, past
/// `connection_init` (`init`) and its `connection_ack` (pings answered
/// meanwhile), which must come within `ack_timeout`.
pub(crate) async fn handshake(
    address: &str,
    init: &str,
    config: WebSocketConfig,
    ack_timeout: Duration,
) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{address}/graphql/ws").into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .context("the WebSocket did not open")?;
    socket.send(Message::text(init)).await?;
    loop {
        let frame = tokio::time::timeout(ack_timeout, socket.next())
            .await
            .with_context(|| format!("no connection_ack within {ack_timeout:?}"))?
            .context("the server closed the WebSocket before connection_ack")??;
        let Message::Text(text) = frame else { continue };
        let message: Value = serde_json::from_str(&text).context("a message that is not JSON")?;
        match message["type"].as_str() {
            Some("connection_ack") => return Ok(socket),
            Some("ping") => socket.send(Message::text(json!({ "type": "pong" }).to_string())).await?,
            _ => anyhow::bail!("expected connection_ack, got {message}"),
        }
    }
}

/// Reports each update the subscription delivers until the connection ends.
async fn receive(mut socket: Socket, subscriber: usize, reports: mpsc::UnboundedSender<Report>) {
    let failed = |reason: String| Report::Failed { subscriber, reason };
    let report = loop {
        let frame = match socket.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => break failed(format!("the WebSocket failed: {err}")),
            None => break failed("the server closed the WebSocket".to_string()),
        };
        let at = Instant::now();
        let Message::Text(text) = frame else { continue };
        let message: Value = match serde_json::from_str(&text) {
            Ok(message) => message,
            Err(err) => break failed(format!("a message that is not JSON ({err}): {text}")),
        };
        match message["type"].as_str() {
            Some("next") => match message["payload"]["data"]["walletUpdates"]["position"].as_u64() {
                Some(position) => {
                    let _ = reports.send(Report::Next { subscriber, position, at });
                }
                None => break failed(format!("an update without a position: {message}")),
            },
            Some("ping") => {
                if let Err(err) = socket.send(Message::text(json!({ "type": "pong" }).to_string())).await {
                    break failed(format!("cannot answer a ping: {err}"));
                }
            }
            _ => break failed(format!("the subscription ended: {message}")),
        }
    };
    let _ = reports.send(report);
}
