//! `bench fanout-clients`: a share of the `fanout` mode's subscriber
//! connections, in a process of its own (this binary run again by the
//! `fanout` mode), so that the connections of all client processes together
//! can reach what one server process holds (about 19,000 under a 20,000
//! open-file limit) while each client process stays under the same limit.
//!
//! Connection `c` of the run (`0..connections`) carries the subscriptions
//! `s` with `s % connections == c` (`0..subscriptions`); this process opens
//! connections `first..first + count`. It is driven over stdin and answers
//! on stdout, a line each:
//!
//! * `subscribe fan` / `subscribe wallets W`: ends the subscriptions it holds
//!   (graphql-transport-ws `complete`), then subscribes each of its
//!   subscriptions to `walletUpdates` of `fan`, or of `w{s % W}`; answers `ok`.
//! * `status P`: `status <reached> <any> <failures> <subscriptions> <pending>`:
//!   how many of its subscriptions have received position `P` or later, how
//!   many have received anything since the last `subscribe`, how many failed,
//!   how many it carries, and the updates received since the last `drain`.
//! * `drain`: every update received since the last `drain`, a line each
//!   (`<subscription> <position> <received, ns since the epoch>`), then `end`.
//!
//! Times are the system clock's, which every process of the machine shares.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::subscribers::Socket;
use anyhow::Context;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Sink = tokio::sync::Mutex<SplitSink<Socket, Message>>;

/// How long the server may take to acknowledge one connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// This process's share of the run.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The server (`host:port`).
    #[arg(long)]
    pub address: String,
    /// Bearer token sent in every `connection_init`.
    #[arg(long)]
    pub token: String,
    /// The first connection of the run this process opens.
    #[arg(long)]
    pub first: usize,
    /// Connections this process opens.
    #[arg(long)]
    pub count: usize,
    /// Connections of the whole run (over every client process).
    #[arg(long)]
    pub connections: usize,
    /// Subscriptions of the whole run.
    #[arg(long)]
    pub subscriptions: usize,
    /// Connections opening at a time.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
}

/// Now, in nanoseconds since the epoch: comparable across processes.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)
}

/// What the readers of this process's connections have seen.
struct Seen {
    /// Subscriptions of the current `subscribe` carry ids `{generation}.{s}`;
    /// updates of earlier ones (in flight while they ended) are ignored.
    generation: AtomicU32,
    /// Per subscription of the run: the latest position received.
    last: Vec<AtomicU64>,
    /// Per subscription of the run: updates received since the last `subscribe`.
    received: Vec<AtomicU32>,
    /// Updates not yet drained: (subscription, position, received at).
    arrivals: Mutex<Vec<(u32, u64, u64)>>,
    /// What went wrong, on any connection.
    failures: Mutex<Vec<String>>,
}

impl Seen {
    fn fail(&self, reason: String) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.push(reason);
        }
    }

    /// Takes one server message; `Err` when the subscription protocol went wrong.
    fn take(&self, text: &str, at: u64) -> Result<(), String> {
        match field(text, "\"type\":\"") {
            Some("next") => {}
            Some("complete" | "pong" | "ping") => return Ok(()),
            _ => return Err(format!("unexpected message: {text}")),
        }
        let (generation, subscription) = field(text, "\"id\":\"")
            .and_then(|id| id.split_once('.'))
            .and_then(|(generation, s)| Some((generation.parse::<u32>().ok()?, s.parse::<usize>().ok()?)))
            .ok_or_else(|| format!("an update with an id not of this benchmark: {text}"))?;
        if generation != self.generation.load(Ordering::Acquire) {
            return Ok(());
        }
        let position = position(text).ok_or_else(|| format!("an update without a position: {text}"))?;
        let (Some(last), Some(received)) = (self.last.get(subscription), self.received.get(subscription)) else {
            return Err(format!("an update for subscription {subscription}, not of this run"));
        };
        last.fetch_max(position, Ordering::AcqRel);
        received.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut arrivals) = self.arrivals.lock() {
            arrivals.push((subscription as u32, position, at));
        }
        Ok(())
    }
}

/// The text between `prefix` and the next `"` (a string field, parsed only as
/// far as this benchmark's own messages need: no escapes in them).
fn field<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let start = text.find(prefix)? + prefix.len();
    let length = text[start..].find('"')?;
    Some(&text[start..start + length])
}

/// The `"position":` number of an update.
fn position(text: &str) -> Option<u64> {
    let start = text.find("\"position\":")? + "\"position\":".len();
    let digits = text[start..].trim_start_matches('"');
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// One open connection: its sink, and the subscriptions it carries.
struct Connection {
    sink: Arc<Sink>,
    subscriptions: Vec<usize>,
}

/// Runs this process's share until stdin closes.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    crate::api_bench::raise_open_files_limit()?;
    let seen = Arc::new(Seen {
        generation: AtomicU32::new(0),
        last: (0..options.subscriptions).map(|_| AtomicU64::new(0)).collect(),
        received: (0..options.subscriptions).map(|_| AtomicU32::new(0)).collect(),
        arrivals: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
    });
    let init =
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", options.token) } })
            .to_string();
    let (init, address) = (&init, &options.address);
    let connections: Vec<Connection> = futures_util::stream::iter(options.first..options.first + options.count)
        .map(|c| {
            let seen = seen.clone();
            async move {
                let socket = open(address, init).await.with_context(|| format!("connection {c}"))?;
                let (sink, stream) = socket.split();
                let sink = Arc::new(tokio::sync::Mutex::new(sink));
                tokio::spawn(receive(stream, sink.clone(), seen));
                let subscriptions = (c..options.subscriptions).step_by(options.connections.max(1)).collect();
                anyhow::Ok(Connection { sink, subscriptions })
            }
        })
        .buffer_unordered(options.connect_concurrency.max(1))
        .try_collect()
        .await?;
    let mine: Vec<usize> = connections.iter().flat_map(|c| c.subscriptions.iter().copied()).collect();

    let mut out = BufWriter::new(tokio::io::stdout());
    out.write_all(b"connected\n").await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["subscribe", target @ ..] => {
                let wallets = match target {
                    ["fan"] => None,
                    ["wallets", count] => Some(count.parse::<usize>().context("subscribe wallets <count>")?.max(1)),
                    _ => anyhow::bail!("subscribe fan | subscribe wallets <count>, not {line}"),
                };
                resubscribe(&connections, &seen, wallets).await?;
                out.write_all(b"ok\n").await?;
            }
            ["status", at] => {
                let at: u64 = at.parse().context("status <position>")?;
                let reached = mine.iter().filter(|&&s| seen.last[s].load(Ordering::Acquire) >= at).count();
                let any = mine.iter().filter(|&&s| seen.received[s].load(Ordering::Acquire) > 0).count();
                let failures = seen.failures.lock().map(|f| f.len()).unwrap_or(0);
                let pending = seen.arrivals.lock().map(|a| a.len()).unwrap_or(0);
                let answer = format!("status {reached} {any} {failures} {} {pending}\n", mine.len());
                out.write_all(answer.as_bytes()).await?;
            }
            ["drain"] => {
                let arrivals = seen.arrivals.lock().map(|mut a| std::mem::take(&mut *a)).unwrap_or_default();
                for (s, position, at) in arrivals {
                    out.write_all(format!("{s} {position} {at}\n").as_bytes()).await?;
                }
                out.write_all(b"end\n").await?;
            }
            ["failures"] => {
                let failures = seen.failures.lock().map(|f| f.clone()).unwrap_or_default();
                for failure in failures.iter().take(5) {
                    out.write_all(format!("{}\n", failure.replace('\n', " ")).as_bytes()).await?;
                }
                out.write_all(b"end\n").await?;
            }
            _ => anyhow::bail!("unknown command: {line}"),
        }
        out.flush().await?;
    }
    Ok(())
}

/// Ends every subscription of the previous generation and starts the next
/// one's: to `fan` (`wallets: None`) or to wallet `w{s % wallets}`.
async fn resubscribe(connections: &[Connection], seen: &Seen, wallets: Option<usize>) -> anyhow::Result<()> {
    let old = seen.generation.load(Ordering::Acquire);
    let new = old + 1;
    seen.generation.store(new, Ordering::Release);
    for received in &seen.received {
        received.store(0, Ordering::Release);
    }
    futures_util::stream::iter(connections)
        .map(|connection| async move {
            let mut sink = connection.sink.lock().await;
            for &s in &connection.subscriptions {
                if old > 0 {
                    sink.feed(Message::text(json!({ "id": format!("{old}.{s}"), "type": "complete" }).to_string()))
                        .await?;
                }
                let member = wallets.map_or_else(|| "fan".to_string(), |wallets| format!("w{}", s % wallets));
                let query =
                    format!("subscription {{ walletUpdates(member: \"{member}\") {{ position balanceAfter }} }}");
                let subscribe =
                    json!({ "id": format!("{new}.{s}"), "type": "subscribe", "payload": { "query": query } });
                sink.feed(Message::text(subscribe.to_string())).await?;
            }
            sink.flush().await?;
            anyhow::Ok(())
        })
        .buffer_unordered(256)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// One connection: WebSocket upgrade, `connection_init`, `connection_ack`.
async fn open(address: &str, init: &str) -> anyhow::Result<Socket> {
    // Small buffers: thousands of clients per process, each reading small updates.
    let config = WebSocketConfig::default().read_buffer_size(4 << 10).write_buffer_size(0);
    crate::subscribers::handshake(address, init, config, ACK_TIMEOUT).await
}

/// Records each update the connection's subscriptions receive until it ends.
async fn receive(mut stream: SplitStream<Socket>, sink: Arc<Sink>, seen: Arc<Seen>) {
    loop {
        let frame = match stream.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return seen.fail(format!("the WebSocket failed: {err}")),
            None => return seen.fail("the server closed the WebSocket".to_string()),
        };
        let at = now_ns();
        match frame {
            Message::Text(text) => {
                if text.contains("\"type\":\"ping\"") {
                    let pong = Message::text(json!({ "type": "pong" }).to_string());
                    if let Err(err) = sink.lock().await.send(pong).await {
                        return seen.fail(format!("cannot answer a ping: {err}"));
                    }
                } else if let Err(reason) = seen.take(&text, at) {
                    return seen.fail(reason);
                }
            }
            Message::Close(frame) => return seen.fail(format!("the server closed the WebSocket: {frame:?}")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_is_read_without_parsing_all_of_it() {
        let text =
            r#"{"type":"next","id":"2.17","payload":{"data":{"walletUpdates":{"position":"123","balanceAfter":"5"}}}}"#;
        assert_eq!(field(text, "\"type\":\""), Some("next"));
        assert_eq!(field(text, "\"id\":\""), Some("2.17"));
        assert_eq!(position(text), Some(123));
        let number = r#"{"type":"next","id":"1.0","payload":{"data":{"walletUpdates":{"position":42}}}}"#;
        assert_eq!(position(number), Some(42));
    }
}
