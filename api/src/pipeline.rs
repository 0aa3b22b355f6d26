//! The schema's one extension. async-graphql runs every field and every list
//! item of an answer through each extension's `resolve` hook, a boxed future
//! apiece, whenever a schema has any extension at all (with none it takes a
//! faster path the documents cache cannot do without). None of pointstream's
//! extensions looks at fields, so they are one extension whose hooks each go
//! to the part that has them: error codes (`request`, `subscribe`), the
//! transport's progress mark (`execute`) and the documents cache
//! (`prepare_request`, `parse_query`, `validation`).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Variables};
use futures_util::stream::BoxStream;

use crate::documents::Documents;
use crate::errors::ErrorCodes;
use crate::transport::Transport;

/// Creates each request's [`Pipeline`] instance.
pub struct Pipeline {
    documents: Documents,
}

impl Pipeline {
    pub fn new(documents: Documents) -> Self {
        Pipeline { documents }
    }
}

impl ExtensionFactory for Pipeline {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ForRequest { documents: self.documents.create() })
    }
}

/// One request's instance: the documents cache keeps per-request state.
struct ForRequest {
    documents: Arc<dyn Extension>,
}

#[async_trait::async_trait]
impl Extension for ForRequest {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        ErrorCodes.request(ctx, next).await
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        ErrorCodes.subscribe(ctx, stream, next)
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.documents.prepare_request(ctx, request, next).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        self.documents.parse_query(ctx, query, variables, next).await
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        self.documents.validation(ctx, next).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        Transport.execute(ctx, operation_name, next).await
    }
}
