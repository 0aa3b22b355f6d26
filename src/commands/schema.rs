//! `pointstream schema`: the GraphQL schema; `schema.graphql` is its output.

use std::process::ExitCode;

/// Prints the schema (SDL).
pub fn run() -> anyhow::Result<ExitCode> {
    print!("{}", api::sdl());
    Ok(ExitCode::SUCCESS)
}
