//! Parsed GraphQL documents, kept by query text.
//!
//! Front ends send the same few query texts over and over with different
//! variables, and parsing one costs more than running most resolvers (the
//! parser is a PEG grammar that allocates a node per token). The parsed
//! document of each recently seen query text is kept, and a request with the
//! same text starts from a copy of it. Only documents that passed the
//! parser's own checks (recursion depth, directives) are kept; validation,
//! depth and complexity limits still run on every request, since they depend
//! on the variables.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};
use lru::LruCache;

/// How many documents are kept.
const KEPT: NonZeroUsize = NonZeroUsize::MIN.saturating_add(255);
/// Longer query texts are parsed every time: a client sending large unique
/// documents must not make the cache grow beyond `KEPT` small ones.
const MAX_KEPT_QUERY_BYTES: usize = 4 << 10;

/// The schema extension that keeps parsed documents (one per schema).
#[derive(Clone)]
pub struct Documents {
    kept: Arc<Mutex<LruCache<String, ExecutableDocument>>>,
}

impl Default for Documents {
    fn default() -> Self {
        Documents { kept: Arc::new(Mutex::new(LruCache::new(KEPT))) }
    }
}

impl Documents {
    fn kept(&self, query: &str) -> Option<ExecutableDocument> {
        self.kept.lock().ok()?.get(query).cloned()
    }

    fn keep(&self, query: &str, document: &ExecutableDocument) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.put(query.to_string(), document.clone());
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().map(|kept| kept.len()).unwrap_or(0)
    }
}

impl ExtensionFactory for Documents {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for Documents {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if query.len() > MAX_KEPT_QUERY_BYTES {
            return next.run(ctx, query, variables).await;
        }
        if let Some(document) = self.kept(query) {
            return Ok(document);
        }
        let document = next.run(ctx, query, variables).await?;
        self.keep(query, &document);
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    use super::*;

    struct Query;

    #[Object]
    impl Query {
        async fn double(&self, n: i32) -> i32 {
            n * 2
        }
    }

    fn schema(documents: &Documents) -> Schema<Query, EmptyMutation, EmptySubscription> {
        Schema::build(Query, EmptyMutation, EmptySubscription).extension(documents.clone()).finish()
    }

    #[tokio::test]
    async fn a_kept_document_answers_each_request_with_its_own_variables() {
        let documents = Documents::default();
        let schema = schema(&documents);
        let query = "query($n: Int!) { double(n: $n) }";
        for n in [1, 2, 3] {
            let request =
                async_graphql::Request::new(query).variables(Variables::from_json(serde_json::json!({ "n": n })));
            let response = schema.execute(request).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            assert_eq!(response.data.into_json().unwrap(), serde_json::json!({ "double": n * 2 }));
        }
        assert_eq!(documents.len(), 1);
    }

    #[tokio::test]
    async fn documents_that_fail_to_parse_or_are_long_are_not_kept() {
        let documents = Documents::default();
        let schema = schema(&documents);
        let broken = schema.execute("{ double(n: ").await;
        assert!(!broken.errors.is_empty());
        let long = format!("{{ double(n: 1) {} }}", " ".repeat(MAX_KEPT_QUERY_BYTES));
        assert!(schema.execute(long.as_str()).await.errors.is_empty());
        assert_eq!(documents.len(), 0);
    }

    #[tokio::test]
    async fn a_kept_document_is_still_validated_against_each_requests_variables() {
        let documents = Documents::default();
        let schema = schema(&documents);
        let query = "query($n: Int!) { double(n: $n) }";
        let good = async_graphql::Request::new(query).variables(Variables::from_json(serde_json::json!({ "n": 1 })));
        assert!(schema.execute(good).await.errors.is_empty());
        let bad = async_graphql::Request::new(query).variables(Variables::from_json(serde_json::json!({ "n": "one" })));
        assert!(!schema.execute(bad).await.errors.is_empty());
    }

    #[tokio::test]
    async fn a_kept_document_over_a_limit_is_refused_every_time() {
        let documents = Documents::default();
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(documents.clone())
            .limit_complexity(1)
            .finish();
        let query = "{ a: double(n: 1) b: double(n: 2) }";
        for attempt in 1..=2 {
            let response = schema.execute(query).await;
            assert!(!response.errors.is_empty(), "attempt {attempt}: complexity 2 is over the limit of 1");
        }
        assert_eq!(documents.len(), 1, "it parsed, so it is kept; the limit is checked after");
    }
}
