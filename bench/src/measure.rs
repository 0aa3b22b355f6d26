//! Timing helpers: closed-loop throughput and latency percentiles.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Runs `concurrency` workers, each calling `op(worker, i)` for i = 0, 1, ...
/// until `duration` has passed; returns completed operations per second.
pub async fn throughput<F, Fut>(concurrency: usize, duration: Duration, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    op(worker, done).await?;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// [`throughput`], with the median and 99th percentile latency of one operation.
pub async fn throughput_and_latency<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<(f64, Duration, Duration)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (op, recorded) = (Arc::new(op), samples.clone());
    let rate = throughput(concurrency, duration, move |worker, i| {
        let (op, samples) = (op.clone(), recorded.clone());
        async move {
            let started = Instant::now();
            op(worker, i).await?;
            samples.lock().unwrap_or_else(PoisonError::into_inner).push(started.elapsed());
            Ok(())
        }
    })
    .await?;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    anyhow::ensure!(!samples.is_empty(), "no operation completed in {duration:?}");
    let (p50, p99) = percentiles(samples);
    Ok((rate, p50, p99))
}

/// Calls `op(worker, i)` for i = 0..`rounds` on each of `concurrency`
/// workers, unmeasured: what runs before a measurement of a steady state
/// (caches filled, a server's memory of the rows it writes), which then
/// goes on from i = `rounds`.
pub async fn warm_up<F, Fut>(concurrency: usize, rounds: u64, op: &Arc<F>) -> anyhow::Result<()>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..rounds {
                    op(worker, i).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

/// Median and 99th percentile of `samples`.
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Times `count` sequential calls of `op(i)`.
pub async fn latencies<F, Fut>(count: u64, mut op: F) -> anyhow::Result<(Duration, Duration)>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(count as usize);
    for i in 0..count {
        let started = Instant::now();
        op(i).await?;
        samples.push(started.elapsed());
    }
    Ok(percentiles(samples))
}

/// A duration in milliseconds with two decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1_000.0)
}

/// Running totals (sum in seconds, count) of one histogram in a server's
/// Prometheus text, over the series whose labels contain `label` (all series
/// when empty).
pub fn histogram_totals(metrics: &str, name: &str, label: &str) -> Option<(f64, f64)> {
    Some((
        series_total(metrics, &format!("{name}_sum"), label)?,
        series_total(metrics, &format!("{name}_count"), label)?,
    ))
}

/// The sum of the samples of series `name` whose labels include `label` in
/// Prometheus text `metrics`; `None` if there is none.
pub fn series_total(metrics: &str, name: &str, label: &str) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>())
}

/// The mean of a histogram's observations between two readings of
/// [`histogram_totals`], if any were made.
pub fn mean_between(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<Duration> {
    let ((sum0, count0), (sum1, count1)) = (before.unwrap_or_default(), after?);
    (count1 > count0).then(|| Duration::from_secs_f64((sum1 - sum0) / (count1 - count0)))
}

/// The server's group commits between two readings of its metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupCommits {
    /// Appended as one script.
    pub scripts: f64,
    /// Appended statement by statement.
    pub statements: f64,
    /// Scripts rolled back (their batches then went statement by statement).
    pub rolled_back: f64,
}

impl GroupCommits {
    pub fn between(before: &str, after: &str) -> Self {
        let delta = |name: &str, label: &str| {
            series_total(after, name, label).unwrap_or(0.0) - series_total(before, name, label).unwrap_or(0.0)
        };
        let commits = eventstore::writer::GROUP_COMMITS;
        GroupCommits {
            scripts: delta(commits, "path=\"script\""),
            statements: delta(commits, "path=\"statements\""),
            rolled_back: delta(eventstore::writer::SCRIPTS_ROLLED_BACK, ""),
        }
    }

    /// "N as one script, M statement by statement (K scripts rolled back)".
    pub fn describe(&self) -> String {
        format!(
            "{:.0} as one script, {:.0} statement by statement ({:.0} scripts rolled back)",
            self.scripts, self.statements, self.rolled_back
        )
    }
}
