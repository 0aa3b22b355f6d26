//! GraphQL over one keep-alive HTTP/1.1 connection (hyper's client, the HTTP
//! stack poem itself runs on), as a front end sends it: `POST /graphql` with a
//! JSON body and an optional bearer token (and `GET` for `/metrics`).

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// One client connection; requests on it go one after the other.
pub struct GraphqlHttp {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl GraphqlHttp {
    /// Opens a connection to the server at `address` (`host:port`).
    pub async fn connect(address: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address).await.with_context(|| format!("cannot connect to {address}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.context("HTTP/1.1 handshake with the server")?;
        // Drives the connection; a failure surfaces in the next request.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, host: address.to_string() })
    }

    /// Posts `body` (`{"query": ..., "variables": ...}`) and returns the
    /// response's `data`; a non-200 status or any GraphQL error is an error.
    pub async fn post(&mut self, bearer: Option<&str>, body: &Value) -> anyhow::Result<Value> {
        let mut request =
            Request::post("/graphql").header(header::HOST, &self.host).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = self.send(request.body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?).await?;
        let mut response: Value = serde_json::from_slice(&body).context("the response is not JSON")?;
        if let Some(errors) = response.get("errors").filter(|errors| !errors.is_null()) {
            anyhow::bail!("GraphQL errors: {errors}");
        }
        Ok(response["data"].take())
    }

    /// The text at `path` (`GET`), such as `/metrics`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<String> {
        let request = Request::get(path).header(header::HOST, &self.host).body(Full::new(Bytes::new()))?;
        let body = self.send(request).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Sends `request`; the body of a 200 answer.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<Bytes> {
        let target = format!("{} {}", request.method(), request.uri());
        self.sender.ready().await.context("the HTTP connection to the server closed")?;
        let response = self.sender.send_request(request).await.with_context(|| format!("{target} failed"))?;
        let status = response.status();
        let body = response.into_body().collect().await.context("reading the response body")?.to_bytes();
        anyhow::ensure!(status.is_success(), "{target} answered {status}: {}", String::from_utf8_lossy(&body));
        Ok(body)
    }
}
