//! A TCP relay on loopback in front of a server (MariaDB, Redis, ...) that
//! keeps what each connection through it sent and received, so a test can
//! see what one client (a process, a task) said to the server and heard
//! back, and can cut that client off as a dead process would be.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The bytes of one connection, each way.
#[derive(Debug, Default, Clone)]
pub struct Conversation {
    /// What the client sent.
    pub sent: Vec<u8>,
    /// What the server answered.
    pub received: Vec<u8>,
    /// Whether the connection is over (either side closed it).
    pub closed: bool,
}

#[derive(Default)]
struct Shared {
    conversations: Mutex<Vec<Conversation>>,
    sockets: Mutex<Vec<TcpStream>>,
    cut: AtomicBool,
}

/// See the module's documentation.
#[derive(Clone)]
pub struct Tap {
    address: String,
    shared: Arc<Shared>,
}

impl Tap {
    /// Listens on a free loopback port; each connection made to it is
    /// carried to `upstream` (`host:port`), connected anew each time (so a
    /// server restarted on the same port is reached again).
    pub fn start(upstream: &str) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the tap binds");
        let address = listener.local_addr().expect("an address").to_string();
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_string();
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accepting.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let index = {
                    let mut conversations = accepting.conversations.lock().expect("not poisoned");
                    conversations.push(Conversation::default());
                    conversations.len() - 1
                };
                {
                    let mut sockets = accepting.sockets.lock().expect("not poisoned");
                    sockets.push(client.try_clone().expect("a socket clones"));
                    sockets.push(server.try_clone().expect("a socket clones"));
                }
                let (client_in, server_in) =
                    (client.try_clone().expect("a socket clones"), server.try_clone().expect("a socket clones"));
                let (up, down) = (accepting.clone(), accepting.clone());
                std::thread::spawn(move || carry(client_in, server, &up, index, true));
                std::thread::spawn(move || carry(server_in, client, &down, index, false));
            }
        });
        Tap { address, shared }
    }

    /// `host:port` to connect to instead of the upstream.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Every connection so far, in the order they were made.
    pub fn conversations(&self) -> Vec<Conversation> {
        self.shared.conversations.lock().expect("not poisoned").clone()
    }

    /// How many times `needle` occurs in what clients sent, over every connection.
    pub fn sent_count(&self, needle: &[u8]) -> usize {
        self.conversations().iter().map(|c| occurrences(&c.sent, needle)).sum()
    }

    /// How many times `needle` occurs in what the server answered, over every connection.
    pub fn received_count(&self, needle: &[u8]) -> usize {
        self.conversations().iter().map(|c| occurrences(&c.received, needle)).sum()
    }

    /// Closes every connection through the tap and refuses new ones: the
    /// client is cut off from the server as if its process had died.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for socket in self.shared.sockets.lock().expect("not poisoned").drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to`, keeping the bytes, until either side closes (or the tap is cut).
fn carry(mut from: TcpStream, mut to: TcpStream, shared: &Shared, index: usize, client_side: bool) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if shared.cut.load(Ordering::SeqCst) {
            break;
        }
        // Kept before it is passed on: whatever the other side answers to it
        // is kept after it.
        {
            let mut conversations = shared.conversations.lock().expect("not poisoned");
            let conversation = &mut conversations[index];
            let kept = if client_side { &mut conversation.sent } else { &mut conversation.received };
            kept.extend_from_slice(&buffer[..read]);
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    if client_side {
        shared.conversations.lock().expect("not poisoned")[index].closed = true;
    }
}

/// How many times `needle` occurs in `haystack`.
pub fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack.windows(needle.len()).filter(|window| *window == needle).count()
}

/// `url` (`scheme://[user@]host:port/...`) with its host and port replaced by `tap`'s.
pub fn through(url: &str, tap: &Tap) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let user = authority.rsplit_once('@').map_or(String::new(), |(user, _)| format!("{user}@"));
    let slash = if path.is_empty() && !rest.contains('/') { "" } else { "/" };
    format!("{scheme}://{user}{}{slash}{path}", tap.address())
}

/// The `host:port` of `url`.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().expect("an authority");
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_string()
}
