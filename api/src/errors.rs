//! The one place errors become GraphQL errors with `extensions.code`.

use async_graphql::extensions::{Extension, ExtensionContext, NextRequest, NextSubscribe};
use async_graphql::{Error, ErrorExtensions, Response};
use domain::DomainError;
use eventstore::CommandError;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// A GraphQL error with `code` in its extensions.
pub fn coded(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

/// A refused or failed command as the client should see it; internals are
/// logged, never sent.
pub fn command_error(error: CommandError) -> Error {
    match error {
        CommandError::Rejected(reason) => {
            let code = match &reason {
                DomainError::InsufficientPoints { .. } => "INSUFFICIENT_POINTS",
                DomainError::UnknownMember(_) | DomainError::UnknownStore(_) | DomainError::NotFound(_) => "NOT_FOUND",
                _ => "BAD_USER_INPUT",
            };
            coded(code, reason.to_string())
        }
        CommandError::Conflict { .. } => coded("CONFLICT", error.to_string()),
        // The stored key is scoped to the caller; the client knows its own key.
        CommandError::IdempotencyKeyReused { .. } => {
            coded("IDEMPOTENCY_KEY_REUSED", "this idempotency key was already used for a different command")
        }
        CommandError::Store(inner) => {
            tracing::error!(error = %inner, "command failed in the store");
            coded("INTERNAL", "internal error")
        }
    }
}

/// Gives every error a code: the request errors async-graphql raises itself
/// (unparsable query, unknown field, wrong argument type, depth or
/// complexity over the limit) become `BAD_USER_INPUT`. Its hooks run inside
/// the schema's one extension ([`crate::pipeline::Pipeline`]).
pub struct ErrorCodes;

fn with_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
        }
    }
    response
}

#[async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        with_codes(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(with_codes).boxed()
    }
}

/// The `code` in an error's extensions, if it has one.
pub fn code_of(extensions: Option<&async_graphql::ErrorExtensionValues>) -> Option<&str> {
    match extensions?.get("code")? {
        async_graphql::Value::String(code) => Some(code.as_str()),
        _ => None,
    }
}
