//! The one-shot commands, a module each: `status`, `dlq list` and
//! `dlq retry`, `token`, `schema`, `demo`, `replay`, `migrate`,
//! `audit verify`, `media gc`, `log`, `keygen`, `digest` and `proof`. Each prints its outcome on stdout
//! and returns the exit code.

pub mod audit;
pub mod demo;
pub mod digest;
pub mod dlq;
pub mod log;
pub mod media;
pub mod migrate;
pub mod replay;
pub mod schema;
pub mod status;
pub mod token;
