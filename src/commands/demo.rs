//! `pointstream demo`: the demo data loaded; what it is and how it is
//! written are `crate::demo`'s.

use std::process::ExitCode;

use eventstore::EventStore;
use media::MediaStore;

/// Loads the demo data ([`crate::demo::load`]) and says what it holds.
pub async fn run(store: &EventStore, media: &MediaStore) -> anyhow::Result<ExitCode> {
    let summary = crate::demo::load(store, media).await?;
    println!("demo data loaded: {summary} (try `pointstream serve`)");
    Ok(ExitCode::SUCCESS)
}
