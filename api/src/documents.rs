//! Parsed GraphQL documents and their validation, kept by query text.
//!
//! Front ends send the same few query texts over and over with different
//! variables, and parsing one costs more than running most resolvers (the
//! parser is a PEG grammar that allocates a node per token). The parsed
//! document of each recently seen query text is kept, and a request with the
//! same text starts from a copy of it. Only documents that passed the
//! parser's own checks (recursion depth, directives) are kept.
//!
//! Validation (the rules, the depth and the complexity) is kept with the
//! document too, but only for the variables' *shape*: what validation can
//! see of them. A `String` or `ID` variable's string is valid whatever it
//! says, so its shape is "a string"; every other value is part of the shape
//! as it is (an `Int` may be a page size the complexity multiplies, an
//! enum's name may not exist, a number may stand where a string must). A
//! request whose operation and shape were validated before skips the
//! validation and gets the same result; any other is validated in full, and
//! only a successful validation is kept.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextValidation,
};
use async_graphql::parser::types::{BaseType, ExecutableDocument, Type};
use async_graphql::{ServerError, ServerResult, ValidationResult, Value, Variables};
use lru::LruCache;

/// How many documents are kept.
const KEPT: NonZeroUsize = NonZeroUsize::MIN.saturating_add(255);
/// Longer query texts are parsed every time: a client sending large unique
/// documents must not make the cache grow beyond `KEPT` small ones.
const MAX_KEPT_QUERY_BYTES: usize = 4 << 10;
/// Validations kept per document (one per operation and variables' shape).
const SHAPES_PER_DOCUMENT: usize = 16;
/// Longer shapes (large variable values) are validated every time.
const MAX_SHAPE_BYTES: usize = 1 << 10;

/// A parsed document and the validations it passed.
struct Kept {
    document: ExecutableDocument,
    /// Whether it is within the limits [`Reach`] checks, and if not, why.
    within: Result<(), String>,
    validated: HashMap<Shape, ValidationResult>,
}

/// Deepest nesting of selection sets (fragments counted) a document may
/// have: every later walk over it recurses this deep.
pub const MAX_NESTING: usize = 32;

/// The longest string a client may send as an argument or a variable, in
/// characters: the longest text pointstream keeps (a post's body). Fields
/// with their own, shorter limits check those too (see `docs/api.md`).
pub const MAX_STRING_CHARS: usize = 5_000;

/// `Ok` if no string in `variables` is longer than [`MAX_STRING_CHARS`].
fn check_variables(variables: &Variables) -> Result<(), ServerError> {
    let longest = variables.values().map(crate::depth::longest_string).max().unwrap_or(0);
    if longest > MAX_STRING_CHARS {
        return Err(ServerError::new(format!("A variable holds a string over {MAX_STRING_CHARS} characters."), None));
    }
    Ok(())
}

/// The limits checked on a document's structure before any validation
/// walks it (see [`crate::depth`]).
#[derive(Debug, Clone, Copy)]
pub struct Reach {
    /// Deepest selection outside introspection.
    pub max_depth: usize,
    /// Most fields once fragments are expanded: every field costs at least
    /// one unit of complexity, so a document over the complexity limit here
    /// is refused before the complexity walk expands it.
    pub max_expanded_fields: u64,
    /// Whether introspection (`__schema`, `__type`) is answered.
    pub introspection: bool,
}

impl Reach {
    /// `Ok`, or why `document` is refused.
    pub fn check(&self, document: &ExecutableDocument) -> Result<(), String> {
        let measure = crate::depth::measure(document);
        if measure.expanded_fields > self.max_expanded_fields {
            return Err("Query is too complex.".into());
        }
        if measure.longest_string > MAX_STRING_CHARS {
            return Err(format!("An argument holds a string over {MAX_STRING_CHARS} characters."));
        }
        if measure.audit_reports > 1 {
            return Err("At most one auditReport per request: each is a full replay of the log.".into());
        }
        if measure.nesting > MAX_NESTING {
            return Err(format!("The recursion depth of the query cannot be greater than `{MAX_NESTING}`"));
        }
        if measure.depth > self.max_depth {
            return Err("Query is nested too deep.".into());
        }
        if !self.introspection && measure.introspection_depth > 0 {
            return Err("Introspection is turned off on this server.".into());
        }
        if measure.introspection_depth > crate::depth::MAX_INTROSPECTION_DEPTH
            || measure.introspection_lists > crate::depth::MAX_INTROSPECTION_LISTS
        {
            return Err("Introspection query is nested too deep.".into());
        }
        Ok(())
    }
}

impl Default for Reach {
    fn default() -> Self {
        let limits = crate::Limits::default();
        Reach { max_depth: limits.max_depth, max_expanded_fields: limits.max_complexity as u64, introspection: true }
    }
}

/// What validation sees of a request besides its document: the operation it
/// selects and the shape of its variables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    operation: Option<String>,
    variables: String,
}

impl Shape {
    /// The shape of `variables` for every variable `document` declares, in
    /// the order of its operations' names and their declarations; `None`
    /// when it is too long to keep.
    fn of(operation: Option<String>, document: &ExecutableDocument, variables: &Variables) -> Option<Shape> {
        let mut operations: Vec<_> = document.operations.iter().collect();
        operations.sort_by_key(|(name, _)| *name);
        let mut shape = String::new();
        for (name, definition) in operations {
            let _ = write!(shape, "{}(", name.map(|name| name.as_str()).unwrap_or_default());
            for variable in &definition.node.variable_definitions {
                let variable = &variable.node;
                let _ = write!(shape, "{}:", variable.name.node);
                value_shape(&mut shape, &variable.var_type.node, variables.get(&variable.name.node));
                shape.push(';');
            }
            shape.push(')');
        }
        (shape.len() <= MAX_SHAPE_BYTES).then_some(Shape { operation, variables: shape })
    }
}

/// Writes what validation can see of `value`, given to a variable of type `ty`:
/// `~` absent, `$` a string of a `String` or `ID`, `=` and the value otherwise.
fn value_shape(out: &mut String, ty: &Type, value: Option<&Value>) {
    match (&ty.base, value) {
        (_, None) => out.push('~'),
        (BaseType::Named(name), Some(Value::String(_))) if name.as_str() == "String" || name.as_str() == "ID" => {
            out.push('$');
        }
        (BaseType::List(item), Some(Value::List(items))) => {
            out.push('[');
            for value in items {
                value_shape(out, item, Some(value));
                out.push(',');
            }
            out.push(']');
        }
        // One value where a list is declared stands for a list of one.
        (BaseType::List(item), Some(value)) => {
            out.push('1');
            value_shape(out, item, Some(value));
        }
        (BaseType::Named(_), Some(value)) => {
            let _ = write!(out, "={value}");
        }
    }
}

/// The schema extension that keeps parsed documents and validations (one
/// per schema).
#[derive(Clone)]
pub struct Documents {
    kept: Arc<Mutex<LruCache<String, Kept>>>,
    reach: Reach,
}

impl Default for Documents {
    fn default() -> Self {
        Documents::new(Reach::default())
    }
}

impl Documents {
    /// Keeps documents, each checked against `reach` once.
    pub fn new(reach: Reach) -> Self {
        Documents { kept: Arc::new(Mutex::new(LruCache::new(KEPT))), reach }
    }

    fn kept(&self) -> Option<MutexGuard<'_, LruCache<String, Kept>>> {
        self.kept.lock().ok()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept().map(|kept| kept.len()).unwrap_or(0)
    }
}

impl ExtensionFactory for Documents {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ForRequest { documents: self.clone(), state: Mutex::new(RequestState::default()) })
    }
}

/// The extension's instance for one request.
struct ForRequest {
    documents: Documents,
    state: Mutex<RequestState>,
}

/// What one request's hooks tell each other.
#[derive(Default)]
struct RequestState {
    /// The request's operation name, as it came.
    operation: Option<String>,
    validation: Validation,
}

/// What the kept documents say of a request's validation.
#[derive(Default)]
enum Validation {
    /// Nothing: the document is not kept, or its shape is too long.
    #[default]
    Unknown,
    /// The same document, operation and shape passed it before.
    Kept(ValidationResult),
    /// Not validated yet: a success is to be kept under this query text and shape.
    ToKeep { query: String, shape: Shape },
}

impl ForRequest {
    fn state(&self) -> Option<MutexGuard<'_, RequestState>> {
        self.state.lock().ok()
    }
}

/// Parses `query`, as async-graphql would.
fn parse(query: &str) -> ServerResult<ExecutableDocument> {
    async_graphql::parser::parse_query(query).map_err(ServerError::from)
}

#[async_trait::async_trait]
impl Extension for ForRequest {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        let request = next.run(ctx, request).await?;
        if let Some(mut state) = self.state() {
            state.operation = request.operation_name.clone();
        }
        Ok(request)
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        _next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // The document is parsed here, not by `next`: async-graphql's own
        // check after parsing walks every fragment at every spread, which a
        // document whose fragments each spread the next twice turns into
        // exponential work. `Reach::check` measures the same, linearly.
        check_variables(variables)?;
        let operation = self.state().and_then(|mut state| state.operation.take());
        let document = self.document(query, variables, operation.clone())?;
        crate::transport::check_over_get(ctx, &document, operation.as_deref())?;
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let validation = self.state().map(|mut state| std::mem::take(&mut state.validation)).unwrap_or_default();
        if let Validation::Kept(validated) = validation {
            return Ok(validated);
        }
        let result = next.run(ctx).await?;
        if let Validation::ToKeep { query, shape } = validation
            && let Some(mut kept) = self.documents.kept()
            && let Some(kept) = kept.get_mut(&query)
            && kept.validated.len() < SHAPES_PER_DOCUMENT
        {
            kept.validated.insert(shape, result);
        }
        Ok(result)
    }
}

impl ForRequest {
    /// `query`'s document, kept or parsed, within the limits; notes what is
    /// known of its validation for `operation` and `variables`.
    fn document(
        &self,
        query: &str,
        variables: &Variables,
        operation: Option<String>,
    ) -> ServerResult<ExecutableDocument> {
        if query.len() > MAX_KEPT_QUERY_BYTES {
            let document = parse(query)?;
            self.documents.reach.check(&document).map_err(|message| ServerError::new(message, None))?;
            return Ok(document);
        }
        let found = self.documents.kept().and_then(|mut kept| {
            let kept = kept.get(query)?;
            if let Err(refused) = &kept.within {
                return Some(Err(refused.clone()));
            }
            let shape = Shape::of(operation.clone(), &kept.document, variables);
            let validated = shape.as_ref().and_then(|shape| kept.validated.get(shape).copied());
            Some(Ok((kept.document.clone(), shape, validated)))
        });
        let (document, shape, validated) = match found {
            Some(Ok(found)) => found,
            Some(Err(refused)) => return Err(ServerError::new(refused, None)),
            None => {
                let document = parse(query)?;
                let within = self.documents.reach.check(&document);
                if let Some(mut kept) = self.documents.kept() {
                    kept.put(
                        query.to_string(),
                        Kept { document: document.clone(), within: within.clone(), validated: HashMap::new() },
                    );
                }
                within.map_err(|message| ServerError::new(message, None))?;
                let shape = Shape::of(operation, &document, variables);
                (document, shape, None)
            }
        };
        if let Some(mut state) = self.state() {
            state.validation = match (validated, shape) {
                (Some(validated), _) => Validation::Kept(validated),
                (None, Some(shape)) => Validation::ToKeep { query: query.to_string(), shape },
                (None, None) => Validation::Unknown,
            };
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_graphql::{EmptyMutation, EmptySubscription, Enum, Object, Schema};
    use serde_json::json;

    use super::*;

    struct Query;

    #[derive(Enum, Clone, Copy, PartialEq, Eq)]
    enum Tone {
        Loud,
        Quiet,
    }

    #[Object]
    impl Query {
        async fn double(&self, n: i32) -> i32 {
            n * 2
        }

        async fn echo(&self, s: String, tone: Option<Tone>) -> String {
            if tone == Some(Tone::Loud) { s.to_uppercase() } else { s }
        }

        async fn count(&self, words: Vec<String>) -> usize {
            words.len()
        }

        /// Costs `n`, as a page of `n` would.
        #[graphql(complexity = "usize::try_from(n).unwrap_or(0)")]
        async fn page(&self, n: i32) -> Vec<i32> {
            (0..n).collect()
        }
    }

    /// Counts the validations that reach the schema's rules.
    #[derive(Clone, Default)]
    struct Validations(Arc<AtomicUsize>);

    impl ExtensionFactory for Validations {
        fn create(&self) -> Arc<dyn Extension> {
            Arc::new(self.clone())
        }
    }

    #[async_trait::async_trait]
    impl Extension for Validations {
        async fn validation(
            &self,
            ctx: &ExtensionContext<'_>,
            next: NextValidation<'_>,
        ) -> Result<ValidationResult, Vec<ServerError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            next.run(ctx).await
        }
    }

    impl Validations {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn schema(documents: &Documents) -> Schema<Query, EmptyMutation, EmptySubscription> {
        Schema::build(Query, EmptyMutation, EmptySubscription).extension(documents.clone()).finish()
    }

    /// A schema that keeps documents, counts validations and allows a complexity of 10.
    fn counted() -> (Schema<Query, EmptyMutation, EmptySubscription>, Validations) {
        let validations = Validations::default();
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(Documents::default())
            .extension(validations.clone())
            .limit_complexity(10)
            .finish();
        (schema, validations)
    }

    async fn run(
        schema: &Schema<Query, EmptyMutation, EmptySubscription>,
        query: &str,
        operation: Option<&str>,
        variables: serde_json::Value,
    ) -> async_graphql::Response {
        let mut request = async_graphql::Request::new(query).variables(Variables::from_json(variables));
        if let Some(operation) = operation {
            request = request.operation_name(operation);
        }
        schema.execute(request).await
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

    #[tokio::test]
    async fn a_validation_is_reused_for_strings_of_any_content_but_not_for_other_values() {
        let (schema, validations) = counted();
        let query = "query($s: String!, $n: Int!) { echo(s: $s) double(n: $n) }";
        for s in ["a", "b", "a much longer string with \"quotes\""] {
            let response = run(&schema, query, None, json!({ "s": s, "n": 1 })).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            assert_eq!(response.data.into_json().unwrap()["echo"], json!(s));
        }
        assert_eq!(validations.count(), 1, "one shape: three strings, the same Int");
        assert!(run(&schema, query, None, json!({ "s": "c", "n": 2 })).await.errors.is_empty());
        assert_eq!(validations.count(), 2, "another Int is another shape");
    }

    #[tokio::test]
    async fn a_reused_validation_still_refuses_values_of_the_wrong_type() {
        let (schema, validations) = counted();
        let query = "query($s: String!, $t: Tone, $w: [String!]!) { echo(s: $s, tone: $t) count(words: $w) }";
        let good = json!({ "s": "a", "t": "LOUD", "w": ["x", "y"] });
        assert!(run(&schema, query, None, good.clone()).await.errors.is_empty());
        assert!(run(&schema, query, None, good).await.errors.is_empty());
        assert_eq!(validations.count(), 1);
        for bad in [
            json!({ "s": 5, "t": "LOUD", "w": ["x", "y"] }),
            json!({ "s": "a", "t": "SHOUTING", "w": ["x", "y"] }),
            json!({ "s": "a", "t": "LOUD", "w": ["x", 5] }),
        ] {
            let response = run(&schema, query, None, bad.clone()).await;
            assert!(!response.errors.is_empty(), "{bad} must be refused");
            assert_eq!(response.data, async_graphql::Value::Null, "{bad}: nothing runs");
        }
        let response = run(&schema, query, None, json!({ "s": "b", "t": null, "w": "z" })).await;
        assert!(
            response.errors.is_empty(),
            "one string where a list is declared is a list of one: {:?}",
            response.errors
        );
    }

    #[tokio::test]
    async fn a_reused_validation_still_applies_the_complexity_of_each_requests_variables() {
        let (schema, validations) = counted();
        let query = "query($n: Int!) { page(n: $n) }";
        for _ in 0..2 {
            assert!(run(&schema, query, None, json!({ "n": 5 })).await.errors.is_empty());
        }
        assert_eq!(validations.count(), 1);
        let response = run(&schema, query, None, json!({ "n": 50 })).await;
        assert_eq!(response.errors.len(), 1);
        assert_eq!(response.errors[0].message, "Query is too complex.");
        assert!(run(&schema, query, None, json!({ "n": 5 })).await.errors.is_empty());
        assert_eq!(validations.count(), 2, "the refused validation was not kept");
    }

    #[tokio::test]
    async fn each_operation_of_a_document_is_validated_on_its_own() {
        let (schema, validations) = counted();
        let query = "query A($t: Tone) { echo(s: \"x\", tone: $t) } query B($t: Int) { double(n: $t) }";
        let variables = json!({ "t": "LOUD" });
        for _ in 0..2 {
            let loud = run(&schema, query, Some("A"), variables.clone()).await;
            assert!(loud.errors.is_empty(), "{:?}", loud.errors);
        }
        assert_eq!(validations.count(), 1);
        let doubled = run(&schema, query, Some("B"), variables).await;
        assert_eq!(doubled.errors.len(), 1, "B takes an Int: {:?}", doubled.errors);
        assert_eq!(validations.count(), 2, "B was validated, not given A's validation");
    }
}
