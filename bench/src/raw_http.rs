//! A load generator's HTTP/1.1 client, as wrk's: one keep-alive connection,
//! each request's bytes written straight into a reused buffer and sent in one
//! write, the answer's head parsed in place (httparse, the parser hyper uses)
//! and its body read by its `Content-Length`. On a machine that runs the
//! server and its clients on the same cores, what the clients spend is taken
//! from the server: this one spends as little as a correct client can, so
//! that a figure over HTTP measures the server.

use std::io::Write;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headers an answer may have (poem sends a handful).
const MAX_HEADERS: usize = 32;

/// One client connection; requests on it go one after the other.
pub struct RawHttp {
    stream: TcpStream,
    /// The request line and headers every request has.
    head: Vec<u8>,
    request: Vec<u8>,
    answer: Vec<u8>,
}

/// Where an answer's body lies in what was read, and its status.
struct Framed {
    status: u16,
    body: std::ops::Range<usize>,
}

impl RawHttp {
    /// Opens a connection to the server at `address` (`host:port`) for
    /// `POST /graphql`.
    pub async fn connect(address: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address).await.with_context(|| format!("cannot connect to {address}"))?;
        stream.set_nodelay(true)?;
        let head =
            format!("POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n").into_bytes();
        Ok(Self { stream, head, request: Vec::with_capacity(1024), answer: Vec::with_capacity(4096) })
    }

    /// Posts `body` (JSON) with an optional bearer token; the body of a 200
    /// answer, any other status being an error.
    pub async fn post(&mut self, bearer: Option<&str>, body: &[u8]) -> anyhow::Result<&[u8]> {
        let (status, body) = self.exchange(bearer, body).await?;
        anyhow::ensure!(status == 200, "POST /graphql answered {status}: {}", String::from_utf8_lossy(body));
        Ok(body)
    }

    /// [`Self::post`], whatever the answer's status: its status and body
    /// (for a caller that counts refusals rather than fail on them).
    pub async fn exchange(&mut self, bearer: Option<&str>, body: &[u8]) -> anyhow::Result<(u16, &[u8])> {
        self.request.clear();
        self.request.extend_from_slice(&self.head);
        if let Some(token) = bearer {
            write!(self.request, "Authorization: Bearer {token}\r\n")?;
        }
        write!(self.request, "Content-Length: {}\r\n\r\n", body.len())?;
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await.context("sending a request to the server")?;

        self.answer.clear();
        let framed = loop {
            if let Some(framed) = frame(&self.answer)? {
                break framed;
            }
            self.answer.reserve(4096);
            let read = self.stream.read_buf(&mut self.answer).await.context("reading the server's answer")?;
            anyhow::ensure!(read > 0, "the server closed the connection before it answered in full");
        };
        anyhow::ensure!(
            framed.body.end == self.answer.len(),
            "the server sent {} bytes more than its answer",
            self.answer.len() - framed.body.end
        );
        Ok((framed.status, &self.answer[framed.body]))
    }
}

/// The answer at the start of `read`, once its head and the whole body are
/// there; `None` while more is to come.
fn frame(read: &[u8]) -> anyhow::Result<Option<Framed>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(read).context("the server's answer is not HTTP/1.1")? else {
        return Ok(None);
    };
    let status = response.code.context("an answer without a status")?;
    let mut length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value).context("a Content-Length that is not text")?;
            length = Some(text.trim().parse::<usize>().context("a Content-Length that is not a number")?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            anyhow::bail!("the server sent a body in chunks; this client reads bodies by their Content-Length");
        }
    }
    let length = length.context("an answer without a Content-Length")?;
    Ok((read.len() >= head + length).then_some(Framed { status, body: head..head + length }))
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn an_answer_is_framed_once_its_whole_body_is_read() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"data\":{}}";
        assert!(frame(&answer[..20]).unwrap().is_none(), "the head is incomplete");
        assert!(frame(&answer[..answer.len() - 1]).unwrap().is_none(), "the body is incomplete");
        let framed = frame(answer).unwrap().unwrap();
        assert_eq!((framed.status, &answer[framed.body]), (200, &b"{\"data\":{}}"[..]));
    }

    #[test]
    fn answers_it_cannot_frame_are_errors() {
        assert!(frame(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(frame(b"HTTP/1.1 200 OK\r\n\r\n").is_err(), "no Content-Length");
        assert!(frame(b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n").is_err());
        assert!(frame(b"SMTP 220 hello\r\n\r\n").is_err());
    }
}
