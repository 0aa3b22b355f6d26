//! GraphQL over HTTP, as the GraphQL-over-HTTP specification and the
//! clients built on it expect:
//!
//! * a request is read from a JSON body ([`from_json`]) or from a GET's
//!   query string ([`from_query_string`]), each parameter of its own type or
//!   refused with 400;
//! * the answer is `application/graphql-response+json` when the client asks
//!   for it, else `application/json` ([`MediaType`]);
//! * the status tells how far a request got ([`Progress`], recorded by the
//!   [`Transport`] schema extension): a document that fails to parse or
//!   validate is 400 under `application/graphql-response+json`, with no
//!   `data` (200 with `"data": null` under `application/json`, as before);
//!   a mutation over GET is 405;
//! * Apollo's automatic persisted queries ([`PersistedQueries`]): a client
//!   may send a query's SHA-256 alone (also over GET, so that a CDN can
//!   cache it) once the server has seen the query with its hash.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, NextExecute};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{ServerError, ServerResult, Variables};
use lru::LruCache;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The media type of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: the status code tells whether
    /// the request was executed.
    GraphqlResponse,
    /// `application/json`: 200 for every well-formed request (the legacy
    /// behaviour every client understands).
    Json,
}

impl MediaType {
    /// What a request's `Accept` header asks for: the GraphQL response type
    /// when it is listed (and not refused with `q=0`), else JSON, which is
    /// also the answer to `*/*` and to no header at all.
    pub fn negotiate(accept: Option<&str>) -> MediaType {
        let asks = accept.into_iter().flat_map(|accept| accept.split(',')).any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let refused =
                parts.any(|p| matches!(p.trim().replace(' ', "").as_str(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            media.eq_ignore_ascii_case("application/graphql-response+json") && !refused
        });
        if asks { MediaType::GraphqlResponse } else { MediaType::Json }
    }

    /// The `Content-Type` of the answer.
    pub fn content_type(self) -> &'static str {
        match self {
            MediaType::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        }
    }
}

/// How far one request got, told by the [`Transport`] extension to the
/// HTTP layer (one per request, in its data).
#[derive(Debug, Default)]
pub struct Progress {
    executed: AtomicBool,
    refused_over_get: AtomicBool,
    /// The highest position a mutation of the request wrote (0: none).
    written: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// Whether the operation ran (parsing and validation passed).
    pub fn executed(&self) -> bool {
        self.executed.load(Ordering::Relaxed)
    }

    /// Whether the request came over GET and selected a mutation or subscription.
    pub fn refused_over_get(&self) -> bool {
        self.refused_over_get.load(Ordering::Relaxed)
    }

    /// Records that a mutation of the request wrote up to `position`.
    pub fn wrote(&self, position: u64) {
        self.written.fetch_max(position, Ordering::Relaxed);
    }

    /// The highest position the request's mutations wrote, if any: the
    /// answer's `Pointstream-Position`.
    pub fn written(&self) -> Option<u64> {
        Some(self.written.load(Ordering::Relaxed)).filter(|position| *position > 0)
    }
}

/// Request data: the request came over GET, which may run queries only.
#[derive(Debug, Clone, Copy)]
pub struct OverGet;

/// The schema extension that records a request's [`Progress`]; GET is kept
/// to queries by [`check_over_get`], which `documents` calls once it has
/// the document. Its hook runs inside the schema's one extension
/// ([`crate::pipeline::Pipeline`]).
pub struct Transport;

/// The kind of the operation `name` selects in `document` (the only one when
/// no name is given); `None` when there is no such operation.
fn selected_kind(document: &ExecutableDocument, name: Option<&str>) -> Option<OperationType> {
    let mut operations = document.operations.iter();
    match name {
        Some(name) => operations.find(|(n, _)| n.map(|n| n.as_str()) == Some(name)),
        None => operations.next(),
    }
    .map(|(_, operation)| operation.node.ty)
}

/// Refuses a request that came over GET ([`OverGet`]) and selects a
/// mutation or subscription, recording it in its [`Progress`] (405).
pub(crate) fn check_over_get(
    ctx: &ExtensionContext<'_>,
    document: &ExecutableDocument,
    operation: Option<&str>,
) -> ServerResult<()> {
    if ctx.data_opt::<OverGet>().is_none()
        || selected_kind(document, operation).is_none_or(|kind| kind == OperationType::Query)
    {
        return Ok(());
    }
    if let Some(progress) = ctx.data_opt::<Arc<Progress>>() {
        progress.refused_over_get.store(true, Ordering::Relaxed);
    }
    Err(ServerError::new("GET runs queries only: send mutations with POST", None))
}

#[async_trait::async_trait]
impl Extension for Transport {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        if let Some(progress) = ctx.data_opt::<Arc<Progress>>() {
            progress.executed.store(true, Ordering::Relaxed);
        }
        next.run(ctx, operation_name).await
    }
}

/// A request's parameters as a JSON body carries them: each of its type or
/// absent (`null` counts as absent).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Parameters {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Variables>,
    extensions: Option<HashMap<String, async_graphql::Value>>,
}

impl Parameters {
    fn into_request(self) -> Result<async_graphql::Request, String> {
        let extensions = self.extensions.unwrap_or_default();
        if self.query.is_none() && !extensions.contains_key(PERSISTED_QUERY) {
            return Err("the request has no query".into());
        }
        let mut request = async_graphql::Request::new(self.query.unwrap_or_default());
        request.operation_name = self.operation_name;
        request.variables = self.variables.unwrap_or_default();
        request.extensions = async_graphql::Extensions(extensions);
        Ok(request)
    }
}

/// A request from a JSON body; why not, for a 400.
pub fn from_json(body: &[u8]) -> Result<async_graphql::Request, String> {
    let parameters: Parameters = serde_json::from_slice(body).map_err(|err| format!("not a GraphQL request: {err}"))?;
    parameters.into_request()
}

/// A GET's parameters: `variables` and `extensions` as JSON text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryString {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// A request from a GET's query string; why not, for a 400.
pub fn from_query_string(query: &str) -> Result<async_graphql::Request, String> {
    let params: QueryString =
        serde_urlencoded::from_str(query).map_err(|err| format!("not a GraphQL request: {err}"))?;
    let json = |name: &str, text: Option<String>| -> Result<Option<serde_json::Value>, String> {
        match text.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => serde_json::from_str(text).map(Some).map_err(|err| format!("{name} is not JSON: {err}")),
        }
    };
    let parameters = Parameters {
        query: params.query.filter(|query| !query.is_empty()),
        operation_name: params.operation_name.filter(|name| !name.is_empty()),
        variables: json("variables", params.variables)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|err| format!("variables must be a JSON object: {err}"))?,
        extensions: json("extensions", params.extensions)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|err| format!("extensions must be a JSON object: {err}"))?,
    };
    parameters.into_request()
}

/// The extension key of an automatic persisted query.
const PERSISTED_QUERY: &str = "persistedQuery";
/// Queries kept by their hash.
const PERSISTED: NonZeroUsize = NonZeroUsize::MIN.saturating_add(1023);
/// Longer queries are not kept (they run, and their hash alone is not found
/// later), so that the store holds at most `PERSISTED` × this many bytes.
const MAX_PERSISTED_BYTES: usize = 16 << 10;

/// Why a persisted query could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistedQueryError {
    /// The hash alone was sent, and the query is not known: the client
    /// sends it again with the query.
    #[error("PersistedQueryNotFound")]
    NotFound,
    /// The query's SHA-256 is not the hash sent with it.
    #[error("provided sha does not match query")]
    Mismatch,
    /// The extension is not `{"version": 1, "sha256Hash": "<64 hex digits>"}`.
    #[error("the persistedQuery extension must be {{\"version\": 1, \"sha256Hash\": \"<hex SHA-256>\"}}")]
    Malformed,
}

impl PersistedQueryError {
    /// The error's `extensions.code`, as Apollo's clients read it.
    pub fn code(&self) -> &'static str {
        match self {
            PersistedQueryError::NotFound => "PERSISTED_QUERY_NOT_FOUND",
            PersistedQueryError::Mismatch | PersistedQueryError::Malformed => "BAD_USER_INPUT",
        }
    }
}

/// Queries kept by their SHA-256 (Apollo's automatic persisted queries).
pub struct PersistedQueries {
    kept: Mutex<LruCache<String, String>>,
}

impl Default for PersistedQueries {
    fn default() -> Self {
        PersistedQueries { kept: Mutex::new(LruCache::new(PERSISTED)) }
    }
}

impl PersistedQueries {
    /// Completes `request` from its `persistedQuery` extension, if it has
    /// one: a hash alone gets its kept query; a query with its hash is
    /// checked against it and kept.
    pub fn resolve(&self, request: &mut async_graphql::Request) -> Result<(), PersistedQueryError> {
        let Some(extension) = request.extensions.0.get(PERSISTED_QUERY) else { return Ok(()) };
        let async_graphql::Value::Object(extension) = extension else { return Err(PersistedQueryError::Malformed) };
        let version = extension.get("version").and_then(|v| match v {
            async_graphql::Value::Number(n) => n.as_i64(),
            _ => None,
        });
        let hash = match extension.get("sha256Hash") {
            Some(async_graphql::Value::String(hash))
                if version == Some(1) && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                hash.to_ascii_lowercase()
            }
            _ => return Err(PersistedQueryError::Malformed),
        };
        if request.query.is_empty() {
            let mut kept = self.kept.lock().map_err(|_| PersistedQueryError::NotFound)?;
            request.query = kept.get(&hash).cloned().ok_or(PersistedQueryError::NotFound)?;
            return Ok(());
        }
        if hex::encode(Sha256::digest(request.query.as_bytes())) != hash {
            return Err(PersistedQueryError::Mismatch);
        }
        if request.query.len() <= MAX_PERSISTED_BYTES
            && let Ok(mut kept) = self.kept.lock()
        {
            kept.put(hash, request.query.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graphql_response_type_is_answered_only_when_asked_for() {
        use MediaType::*;
        assert_eq!(MediaType::negotiate(None), Json);
        assert_eq!(MediaType::negotiate(Some("*/*")), Json);
        assert_eq!(MediaType::negotiate(Some("application/json")), Json);
        assert_eq!(MediaType::negotiate(Some("application/graphql-response+json")), GraphqlResponse);
        assert_eq!(
            MediaType::negotiate(Some("application/graphql-response+json, application/json;q=0.9")),
            GraphqlResponse
        );
        assert_eq!(MediaType::negotiate(Some("application/graphql-response+json;q=0, application/json")), Json);
    }

    #[test]
    fn parameters_of_the_wrong_type_are_refused_and_nulls_are_absent() {
        assert!(
            from_json(br#"{"query": "{ a }", "variables": null, "operationName": null, "extensions": null}"#).is_ok()
        );
        for body in [
            r#"{"query": 0}"#,
            r#"{"query": {"obj": "ect"}}"#,
            r#"{"query": "{ a }", "variables": "string"}"#,
            r#"{"query": "{ a }", "variables": ["array"]}"#,
            r#"{"query": "{ a }", "operationName": false}"#,
            r#"{"query": "{ a }", "extensions": 0}"#,
            r#"{"notquery": "{ a }"}"#,
            r#"{ "not a JSON"#,
        ] {
            assert!(from_json(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn a_query_string_carries_json_variables() {
        let request = from_query_string(
            "query=query%20Q(%24n%3A%20Int)%20%7B%20a%20%7D&variables=%7B%22n%22%3A1%7D&operationName=Q",
        )
        .unwrap();
        assert_eq!(request.operation_name.as_deref(), Some("Q"));
        assert_eq!(request.variables.get("n"), Some(&async_graphql::Value::from(1)));
        assert!(from_query_string("query=%7Ba%7D&variables=nope").is_err());
        assert!(from_query_string("").is_err());
    }

    fn persisted(query: &str, hash: &str) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(query);
        let extension = serde_json::json!({ "version": 1, "sha256Hash": hash });
        request.extensions.0.insert(PERSISTED_QUERY.into(), async_graphql::Value::from_json(extension).unwrap());
        request
    }

    #[test]
    fn a_persisted_query_is_found_by_its_hash_once_sent_with_it() {
        let queries = PersistedQueries::default();
        let query = "{ stores { id } }";
        let hash = hex::encode(Sha256::digest(query.as_bytes()));
        assert_eq!(queries.resolve(&mut persisted("", &hash)), Err(PersistedQueryError::NotFound));
        assert_eq!(queries.resolve(&mut persisted("{ other }", &hash)), Err(PersistedQueryError::Mismatch));
        assert_eq!(queries.resolve(&mut persisted(query, &hash)), Ok(()));
        let mut hash_only = persisted("", &hash);
        assert_eq!(queries.resolve(&mut hash_only), Ok(()));
        assert_eq!(hash_only.query, query);
        assert_eq!(queries.resolve(&mut persisted("", "abc")), Err(PersistedQueryError::Malformed));
    }

    #[test]
    fn only_a_query_may_be_selected_over_get() {
        let document = async_graphql::parser::parse_query("query Q { a } mutation M { b }").unwrap();
        assert_eq!(selected_kind(&document, Some("Q")), Some(OperationType::Query));
        assert_eq!(selected_kind(&document, Some("M")), Some(OperationType::Mutation));
        assert_eq!(selected_kind(&document, Some("X")), None);
    }
}
