//! `pointstream token`: a development bearer token, signed with the
//! configured secret.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::ApiArgs;
use crate::config;

/// Prints a token for `role` (and its member or store) that expires in
/// `hours`, signed with `secret`; refused when the server would refuse it
/// (tokens from an identity provider, a lifetime over `max_token_lifetime`).
pub fn run(
    api: &ApiArgs,
    secret: &[u8],
    max_token_lifetime: Duration,
    role: &str,
    member: Option<String>,
    store: Option<String>,
    hours: u64,
) -> anyhow::Result<ExitCode> {
    if let Some(url) = &api.oidc_jwks_url {
        anyhow::bail!(
            "tokens come from the identity provider (--oidc-jwks-url {url}): the server refuses HS256 tokens"
        );
    }
    let lifetime = Duration::from_secs(hours.saturating_mul(3_600));
    if lifetime > max_token_lifetime {
        anyhow::bail!(
            "--hours {hours} is over the maximum token lifetime of {} s (--max-token-lifetime-secs, \
             POINTSTREAM_MAX_TOKEN_LIFETIME_SECS): the server would refuse the token",
            max_token_lifetime.as_secs()
        );
    }
    println!("{}", config::dev_token(secret, role, member, store, lifetime)?);
    Ok(ExitCode::SUCCESS)
}
