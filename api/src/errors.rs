//! The one place errors become GraphQL errors with `extensions.code`.

use async_graphql::{Error, ErrorExtensions};
use domain::DomainError;
use eventstore::CommandError;

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
        CommandError::IdempotencyKeyReused { .. } => coded("IDEMPOTENCY_KEY_REUSED", error.to_string()),
        CommandError::Store(inner) => {
            tracing::error!(error = %inner, "command failed in the store");
            coded("INTERNAL", "internal error")
        }
    }
}
