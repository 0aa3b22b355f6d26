//! GraphiQL, served by the binary itself: the page for a browser asking
//! `GET /graphql`, and its scripts and stylesheets under `GET /graphiql/{file}`.
//!
//! Everything the page needs is embedded (`api/assets/graphiql/`, refreshed by
//! `scripts/graphiql-assets`, described in `docs/graphiql.md`), so the page works
//! on a machine with no internet and loads nothing from elsewhere. The page runs
//! under a strict Content-Security-Policy: no inline script or style, every
//! request to the page's own origin.

use std::sync::LazyLock;

use poem::http::{StatusCode, header};
use poem::web::Path;
use sha2::{Digest, Sha256};

/// What the GraphiQL page is told.
#[derive(Debug, Clone, Default)]
pub struct Playground {
    /// A development token to pre-fill the Headers tab with (only when the server runs on the development secret).
    pub dev_token: Option<String>,
    /// Whether the server answers introspection; when false the page says so instead of showing "Error fetching schema".
    pub introspection: bool,
}

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file `asset` serves. The third-party ones carry their version in
/// their name; `scripts/graphiql-assets` writes them and SHA256SUMS, which a
/// test compares with these bytes.
static ASSETS: &[Asset] = &[
    Asset {
        name: "graphiql-3.9.0.min.css",
        content_type: CSS,
        bytes: include_bytes!("../assets/graphiql/graphiql-3.9.0.min.css"),
    },
    Asset {
        name: "pointstream-graphiql.css",
        content_type: CSS,
        bytes: include_bytes!("../assets/graphiql/pointstream-graphiql.css"),
    },
    Asset {
        name: "react-18.3.1.production.min.js",
        content_type: JS,
        bytes: include_bytes!("../assets/graphiql/react-18.3.1.production.min.js"),
    },
    Asset {
        name: "react-dom-18.3.1.production.min.js",
        content_type: JS,
        bytes: include_bytes!("../assets/graphiql/react-dom-18.3.1.production.min.js"),
    },
    Asset {
        name: "graphql-ws-6.4.2.min.js",
        content_type: JS,
        bytes: include_bytes!("../assets/graphiql/graphql-ws-6.4.2.min.js"),
    },
    Asset {
        name: "graphiql-3.9.0.min.js",
        content_type: JS,
        bytes: include_bytes!("../assets/graphiql/graphiql-3.9.0.min.js"),
    },
    Asset {
        name: "pointstream-graphiql.js",
        content_type: JS,
        bytes: include_bytes!("../assets/graphiql/pointstream-graphiql.js"),
    },
    Asset {
        name: "THIRD-PARTY-LICENSES.txt",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../assets/graphiql/THIRD-PARTY-LICENSES.txt"),
    },
];

/// Stylesheets, then scripts in the order they must run (GraphiQL needs React
/// and ReactDOM as globals; the glue needs all of them).
const STYLESHEETS: [&str; 2] = ["graphiql-3.9.0.min.css", "pointstream-graphiql.css"];
const SCRIPTS: [&str; 5] = [
    "react-18.3.1.production.min.js",
    "react-dom-18.3.1.production.min.js",
    "graphql-ws-6.4.2.min.js",
    "graphiql-3.9.0.min.js",
    "pointstream-graphiql.js",
];

/// Scripts and styles from this origin only, none inline. GraphiQL's fonts and
/// icons are data: URLs inside its stylesheet. `connect-src 'self'` covers the
/// WebSocket on the same host too (CSP level 3; Safari since 15.4).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// What the page opens on when the browser has nothing saved from an earlier
/// visit. Only fields that are stable across schema revisions.
const EXAMPLE: &str = r#"# pointstream. Run: Ctrl-Enter or the run button.
# Stores are public; a member's data needs a token in
# the Headers tab: {"Authorization": "Bearer ..."}
# (`pointstream token --role admin` prints one).
query Stores {
  stores {
    id
    name
    open
  }
}

# A member's points at each store:
# query Balances {
#   balances(member: "MEMBER_ID") {
#     storeId
#     balance
#   }
# }

# Live, over the WebSocket /graphql/ws:
# subscription Wallet {
#   walletUpdates(member: "MEMBER_ID") {
#     kind
#     delta
#     balanceAfter
#   }
# }
"#;

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|candidate| candidate.name == name)
}

/// `/graphiql/{name}?v={hash}`: the content hash makes the URL change with the
/// bytes, so a browser may keep each URL for ever, our unversioned files too.
fn url(name: &str) -> String {
    let hash = find(name).map(|found| hex::encode(&Sha256::digest(found.bytes)[..8])).unwrap_or_default();
    format!("/graphiql/{name}?v={hash}")
}

/// The page's `<link>` and `<script>` tags: the same for every page, hashed once.
static TAGS: LazyLock<String> = LazyLock::new(|| {
    let styles = STYLESHEETS.iter().map(|name| format!("<link rel=\"stylesheet\" href=\"{}\">\n", url(name)));
    let scripts = SCRIPTS.iter().map(|name| format!("<script src=\"{}\" defer></script>\n", url(name)));
    styles.chain(scripts).collect()
});

/// JSON that is safe inside `<script type="application/json">`: that element's
/// text is not HTML-decoded, so `<`, `>` and `&` are escaped the JSON way
/// instead, and no `</script>` can end it early.
fn json_for_script(value: &serde_json::Value) -> String {
    value.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// The GraphiQL page (HTML) for a browser asking `GET /graphql` with Accept: text/html.
pub fn page(playground: &Playground) -> poem::Response {
    // The Headers tab's text, as GraphiQL shows it.
    let headers = playground
        .dev_token
        .as_ref()
        .map(|token| format!("{{\n  \"Authorization\": {}\n}}", serde_json::Value::String(format!("Bearer {token}"))));
    let config = serde_json::json!({
        "endpoint": "/graphql",
        "subscriptionPath": "/graphql/ws",
        "defaultQuery": EXAMPLE,
        "headers": headers,
        "introspection": playground.introspection,
    });
    let notice = if playground.introspection {
        ""
    } else {
        "<p class=\"pointstream-notice\" role=\"status\">Introspection is turned off on this server: \
         no schema, so no completion and no docs.</p>\n"
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>pointstream GraphiQL</title>\n<link rel=\"icon\" href=\"data:,\">\n{tags}\
         <script type=\"application/json\" id=\"pointstream-graphiql-config\">{config}</script>\n\
         </head>\n<body>\n{notice}<div id=\"graphiql\"><noscript><p class=\"pointstream-noscript\">\
         GraphiQL needs JavaScript.</p></noscript></div>\n</body>\n</html>\n",
        tags = TAGS.as_str(),
        config = json_for_script(&config),
    );
    poem::Response::builder()
        .content_type("text/html; charset=utf-8")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        // `GET /graphql` answers by its Accept header.
        .header(header::VARY, "accept")
        .body(html)
}

/// `GET /graphiql/{file}`: an embedded asset (include_bytes!), with a content type, strong cache headers
/// (versioned file names or a content-hash in the URL so `immutable` is safe), `x-content-type-options: nosniff`; 404 for anything else.
#[poem::handler]
pub fn asset(Path(file): Path<String>) -> poem::Response {
    match find(&file) {
        Some(found) => poem::Response::builder()
            .content_type(found.content_type)
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .body(found.bytes),
        None => poem::Response::builder()
            .status(StatusCode::NOT_FOUND)
            .content_type("text/plain; charset=utf-8")
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .body("not found"),
    }
}

#[cfg(test)]
mod tests {
    use poem::test::TestClient;
    use poem::{Route, get};

    use super::*;

    fn body_of(response: poem::Response) -> String {
        futures_util::FutureExt::now_or_never(response.into_body().into_string())
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// The text between `start` and the next `end`, for each occurrence.
    fn between<'a>(text: &'a str, start: &str, end: &str) -> Vec<&'a str> {
        text.split(start).skip(1).filter_map(|rest| rest.split(end).next()).collect()
    }

    fn config_of(html: &str) -> serde_json::Value {
        let block = between(html, "<script type=\"application/json\" id=\"pointstream-graphiql-config\">", "</script>");
        assert_eq!(block.len(), 1, "one config block");
        serde_json::from_str(block[0]).expect("the config block is JSON")
    }

    #[test]
    fn page_has_a_strict_csp_and_no_inline_script() {
        let response = page(&Playground { dev_token: None, introspection: true });
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.content_type(), Some("text/html; charset=utf-8"));
        let csp = response.header(header::CONTENT_SECURITY_POLICY).expect("a CSP").to_owned();
        for directive in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(response.header(header::CACHE_CONTROL), Some("no-cache"));
        let html = body_of(response);
        // Every <script> either loads a file of ours or is the JSON block.
        for tag in between(&html, "<script", ">") {
            assert!(tag.starts_with(" src=\"/graphiql/") || tag.contains("type=\"application/json\""), "{tag}");
        }
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("=\"//"), "{html}");
        assert!(!html.contains("Introspection is turned off"));
        let config = config_of(&html);
        assert_eq!(config["headers"], serde_json::Value::Null, "no token, no pre-filled headers");
        assert_eq!(config["introspection"], true);
        assert_eq!(config["endpoint"], "/graphql");
        assert_eq!(config["subscriptionPath"], "/graphql/ws");
        assert!(config["defaultQuery"].as_str().is_some_and(|query| query.contains("stores {")));
    }

    #[test]
    fn page_escapes_the_token_and_pre_fills_the_headers() {
        let token = "a</script><script>alert(\"x\")</script>&amp;'";
        let html = body_of(page(&Playground { dev_token: Some(token.to_owned()), introspection: true }));
        assert!(!html.contains("<script>alert") && !html.contains("&amp;'"), "{html}");
        // The token closed no element: one </script> for each <script.
        assert_eq!(html.matches("</script>").count(), html.matches("<script").count(), "{html}");
        let config = config_of(&html);
        let headers: serde_json::Value =
            serde_json::from_str(config["headers"].as_str().expect("pre-filled headers")).expect("headers are JSON");
        assert_eq!(headers, serde_json::json!({ "Authorization": format!("Bearer {token}") }));
    }

    #[test]
    fn page_says_when_introspection_is_off() {
        let html = body_of(page(&Playground { dev_token: None, introspection: false }));
        assert!(html.contains("Introspection is turned off on this server"));
        assert_eq!(config_of(&html)["introspection"], false);
    }

    #[tokio::test]
    async fn every_asset_of_the_page_is_served() {
        let html = body_of(page(&Playground::default()));
        let client = TestClient::new(Route::new().at("/graphiql/:file", get(asset)));
        let urls: Vec<&str> = between(&html, "=\"/graphiql/", "\"");
        assert_eq!(urls.len(), STYLESHEETS.len() + SCRIPTS.len());
        for url in urls {
            let (name, version) = url.split_once("?v=").expect("a content hash");
            let response = client.get(format!("/graphiql/{url}")).send().await;
            response.assert_status_is_ok();
            let expected = if name.ends_with(".js") { JS } else { CSS };
            response.assert_content_type(expected);
            response.assert_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
            response.assert_header(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
            let bytes = response.0.into_body().into_vec().await.expect("a body");
            assert_eq!(hex::encode(&Sha256::digest(&bytes)[..8]), version, "{name}");
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_not_found() {
        let client = TestClient::new(Route::new().at("/graphiql/:file", get(asset)));
        for name in ["nope.js", "SHA256SUMS", "..%2FCargo.toml", "graphiql-3.9.0.min.js.map"] {
            client.get(format!("/graphiql/{name}")).send().await.assert_status(StatusCode::NOT_FOUND);
        }
    }

    #[test]
    fn sha256sums_matches_the_embedded_bytes() {
        let sums = include_str!("../assets/graphiql/SHA256SUMS");
        let mut listed: Vec<&str> = Vec::new();
        for line in sums.lines() {
            let (hash, name) = line.split_once("  ").expect("sha256sum's format");
            let entry = find(name).unwrap_or_else(|| panic!("{name} is listed but not embedded"));
            assert_eq!(hex::encode(Sha256::digest(entry.bytes)), hash, "{name}: run scripts/graphiql-assets");
            listed.push(name);
        }
        for entry in ASSETS {
            assert!(listed.contains(&entry.name), "{} is embedded but not in SHA256SUMS", entry.name);
        }
    }

    #[test]
    fn no_asset_loads_anything_from_elsewhere() {
        for entry in ASSETS {
            let text = String::from_utf8_lossy(entry.bytes);
            assert!(!text.contains("sourceMappingURL"), "{} names a source map", entry.name);
            for host in ["fonts.googleapis", "fonts.gstatic", "unpkg.com", "cdn.jsdelivr", "cdnjs."] {
                assert!(!text.contains(host), "{} names {host}", entry.name);
            }
            if entry.content_type == CSS {
                assert!(!text.contains("@import"), "{}", entry.name);
                for remote in ["url(http", "url(\"http", "url('http", "url(//"] {
                    assert!(!text.contains(remote), "{} has {remote}", entry.name);
                }
            }
        }
    }
}
