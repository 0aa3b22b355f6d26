//! Cross-origin requests: which web pages on other origins may call the API.
//!
//! A browser sends `Origin` with every cross-origin request (and with POSTs
//! and WebSocket upgrades from the API's own pages too). A request from the
//! API's own origin passes as it is. One from an allowed origin is answered
//! with the CORS headers (and its preflight with the methods and headers
//! the API uses: `GET`, `POST`; `Authorization`, `Content-Type`, `Accept`,
//! `Pointstream-Position`), and may read the answer's `Pointstream-Position`
//! and `X-Request-Id`.
//! One from any other origin is refused with 403 before it reaches the API,
//! so that not even a "simple" cross-site request runs.

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

/// The request headers a page may send.
const ALLOWED_HEADERS: [&str; 4] = ["authorization", "content-type", "accept", crate::replicas::POSITION_HEADER];
/// The answer's headers a page may read besides the simple ones.
const EXPOSED_HEADERS: &str = "pointstream-position, x-request-id";
/// How long a browser may keep a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Pages served from this machine (`http://localhost:*`,
    /// `http://127.0.0.1:*`, `http://[::1]:*`): the default of a server
    /// listening on loopback, for front ends in development.
    Loopback,
    /// Exactly these origins (`scheme://host[:port]`, no trailing slash).
    List(Vec<String>),
    /// None: the default of a server listening beyond loopback.
    Nothing,
}

impl AllowedOrigins {
    /// The origins configured as a comma-separated `list` (`loopback` stands
    /// for [`AllowedOrigins::Loopback`]), or the default for a server that
    /// listens on loopback only or not.
    pub fn parse(list: Option<&str>, loopback_only: bool) -> Result<Self, String> {
        let Some(list) = list.map(str::trim).filter(|list| !list.is_empty()) else {
            return Ok(if loopback_only { AllowedOrigins::Loopback } else { AllowedOrigins::Nothing });
        };
        if list == "loopback" {
            return Ok(AllowedOrigins::Loopback);
        }
        let mut origins = Vec::new();
        for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.split("://").nth(1).is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !valid {
                return Err(format!(
                    "{origin:?} is not an origin (scheme://host[:port], e.g. https://app.example.com)"
                ));
            }
            origins.push(origin.to_ascii_lowercase());
        }
        Ok(AllowedOrigins::List(origins))
    }

    /// Whether a page on `origin` may call the API.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::Loopback => {
                let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
                let Some((host, port)) = authority.map(split_host_port) else { return false };
                port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
                    && matches!(host.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "[::1]")
            }
            AllowedOrigins::List(origins) => origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)),
            AllowedOrigins::Nothing => false,
        }
    }
}

/// An origin's authority as its host (an IPv6 address in brackets) and its port, if any.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let host_end =
        if authority.starts_with('[') { authority.find(']').map_or(authority.len(), |end| end + 1) } else { 0 };
    match authority[host_end..].rfind(':') {
        Some(colon) => (&authority[..host_end + colon], Some(&authority[host_end + colon + 1..])),
        None => (authority, None),
    }
}

/// The middleware.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: AllowedOrigins,
}

impl Cors {
    /// Allows `origins`.
    pub fn new(origins: AllowedOrigins) -> Self {
        Cors { origins }
    }
}

impl<E: Endpoint> Middleware<E> for Cors {
    type Output = CorsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        CorsEndpoint { inner, origins: self.origins.clone() }
    }
}

/// An endpoint behind [`Cors`].
pub struct CorsEndpoint<E> {
    inner: E,
    origins: AllowedOrigins,
}

/// Whether `origin` is the origin of the request's own `Host`.
fn same_origin(origin: &str, request: &Request) -> bool {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin.split_once("://").map(|(_, authority)| authority);
    matches!((host, authority), (Some(host), Some(authority)) if host.eq_ignore_ascii_case(authority))
}

fn forbidden(reason: &'static str) -> Response {
    (StatusCode::FORBIDDEN, reason).into_response()
}

impl<E: Endpoint> Endpoint for CorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let origin = match request.headers().get(header::ORIGIN) {
            None => return Ok(self.inner.get_response(request).await),
            Some(origin) => origin.clone(),
        };
        let origin_text = origin.to_str().unwrap_or_default();
        if same_origin(origin_text, &request) {
            return Ok(self.inner.get_response(request).await);
        }
        if !self.origins.allows(origin_text) {
            return Ok(forbidden("this origin may not call the API"));
        }
        let preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let method = request.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|m| m.to_str().ok());
            if !matches!(method, Some("GET" | "POST")) {
                return Ok(forbidden("only GET and POST are allowed"));
            }
            let requested = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|h| h.to_str().ok());
            let all_allowed = requested.into_iter().flat_map(|h| h.split(',')).map(str::trim).all(|name| {
                name.is_empty() || ALLOWED_HEADERS.iter().any(|allowed| allowed.eq_ignore_ascii_case(name))
            });
            if !all_allowed {
                return Ok(forbidden("a requested header is not allowed"));
            }
            return Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)
                .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST")
                .header(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS.join(", "))
                .header(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE)
                .header(header::VARY, "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
                .finish());
        }
        let mut response = self.inner.get_response(request).await;
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        response.headers_mut().insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
        response.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use poem::test::TestClient;
    use poem::{EndpointExt, handler};

    use super::*;

    #[handler]
    fn hello() -> &'static str {
        "hello"
    }

    #[test]
    fn the_loopback_default_allows_pages_on_this_machine_only() {
        let loopback = AllowedOrigins::parse(None, true).unwrap();
        for origin in ["http://localhost:3000", "http://127.0.0.1:5173", "http://[::1]:8080", "http://localhost"] {
            assert!(loopback.allows(origin), "{origin}");
        }
        for origin in ["http://example.com", "http://localhost.example.com", "http://127.0.0.2:80", "null", "file://"] {
            assert!(!loopback.allows(origin), "{origin}");
        }
        assert_eq!(AllowedOrigins::parse(None, false).unwrap(), AllowedOrigins::Nothing);
        assert!(!AllowedOrigins::Nothing.allows("http://localhost:3000"));
    }

    #[test]
    fn a_configured_list_allows_exactly_its_origins() {
        let list = AllowedOrigins::parse(Some("https://app.example.com, http://127.0.0.1:4000"), false).unwrap();
        assert!(list.allows("https://app.example.com"));
        assert!(list.allows("http://127.0.0.1:4000"));
        assert!(!list.allows("http://127.0.0.1:4001"));
        assert!(!list.allows("https://evil.example.com"));
        assert!(AllowedOrigins::parse(Some("https://app.example.com/"), false).is_err());
        assert!(AllowedOrigins::parse(Some("app.example.com"), false).is_err());
    }

    #[tokio::test]
    async fn an_allowed_origin_gets_its_preflight_and_headers_and_another_is_refused() {
        let origins = AllowedOrigins::parse(Some("https://app.example.com"), false).unwrap();
        let client = TestClient::new(hello.with(Cors::new(origins)));
        let preflight = client
            .options("/")
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
            .await;
        preflight.assert_status(StatusCode::NO_CONTENT);
        preflight.assert_header("access-control-allow-origin", "https://app.example.com");
        preflight.assert_header("access-control-allow-methods", "GET, POST");
        let unknown_header = client
            .options("/")
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-custom")
            .send()
            .await;
        unknown_header.assert_status(StatusCode::FORBIDDEN);
        let actual = client.post("/").header("origin", "https://app.example.com").send().await;
        actual.assert_status_is_ok();
        actual.assert_header("access-control-allow-origin", "https://app.example.com");
        let other = client.post("/").header("origin", "https://evil.example.com").send().await;
        other.assert_status(StatusCode::FORBIDDEN);
        other.assert_header_is_not_exist("access-control-allow-origin");
        let no_origin = client.post("/").send().await;
        no_origin.assert_status_is_ok();
    }

    #[tokio::test]
    async fn the_apis_own_pages_pass_whatever_is_allowed() {
        let client = TestClient::new(hello.with(Cors::new(AllowedOrigins::Nothing)));
        let own =
            client.post("/").header("host", "api.example.com").header("origin", "https://api.example.com").send().await;
        own.assert_status_is_ok();
    }
}
