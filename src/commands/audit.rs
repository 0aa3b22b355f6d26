//! `pointstream audit verify`: every hash chain recomputed and the log
//! replayed in memory against every read model.

use std::process::ExitCode;

use eventstore::EventStore;

/// Prints the audit's report (as JSON with `json`, else its problems and a
/// summary line); exits 1 when the audit finds a problem.
pub async fn verify(store: EventStore, json: bool) -> anyhow::Result<ExitCode> {
    let report = projections::audit(&store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let problems = report.problems();
        for problem in &problems {
            println!("{problem}");
        }
        println!(
            "{} events in {} streams checked, {} read models compared, {} problems",
            report.chain.events,
            report.chain.streams,
            report.projections.len(),
            problems.len()
        );
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
