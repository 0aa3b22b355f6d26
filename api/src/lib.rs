//! The GraphQL API (poem + async-graphql): the way in for the front end.
//!
//! * [`schema`]: queries over the read models and mutations that run one
//!   command each, answering after the read model has caught up;
//! * [`auth`]: bearer JWTs with roles;
//! * [`checkpoints`]: one shared poller per projection for read-your-writes;
//! * [`documents`]: parsed query documents kept by query text;
//! * [`errors`]: the one mapping of errors to `extensions.code`;
//! * [`tail`]: live tails of the log and the ledger that feed subscriptions;
//! * [`server`]: the HTTP routes; [`transport`]: GraphQL over HTTP (GET,
//!   media types, statuses, persisted queries); [`cors`]: cross-origin
//!   requests; [`websocket`]: subscriptions' sockets and their closes;
//!   [`graphiql`]: the GraphiQL page and its embedded assets;
//! * [`depth`]: how deep a document reaches, introspection apart, measured
//!   without expanding its fragments;
//! * [`telemetry`]: Prometheus metrics; [`traces`]: OpenTelemetry traces
//!   over OTLP, when configured.

pub mod auth;
pub mod checkpoints;
pub mod cors;
pub mod depth;
pub mod documents;
pub mod errors;
pub mod graphiql;
pub mod links;
pub mod multipart;
pub mod pipeline;
pub mod rate;
pub mod replicas;
pub mod schema;
pub mod server;
pub mod tail;
pub mod telemetry;
pub mod traces;
pub mod transport;
pub mod websocket;

pub use schema::{ApiSchema, ApiState, Limits, build, sdl};
