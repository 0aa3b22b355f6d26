//! Timing helpers: closed-loop throughput and latency percentiles.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::cpu::{CpuTime, Meter};

/// Runs `concurrency` workers, each calling `op(worker, i)` for i = 0, 1, ...
/// until `duration` has passed; returns completed operations per second.
pub async fn throughput<F, Fut>(concurrency: usize, duration: Duration, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    Ok(closed_loop(concurrency, duration, op, false).await?.rate())
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
    closed_loop(concurrency, duration, op, true).await?.summary()
}

/// What workers in a closed loop did: operations per worker, the time they
/// took, and (if timed) each operation's latency.
#[derive(Debug, Default)]
pub(crate) struct Loop {
    pub(crate) per_worker: Vec<u64>,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl Loop {
    pub(crate) fn operations(&self) -> u64 {
        self.per_worker.iter().sum()
    }

    /// Operations per second.
    pub(crate) fn rate(&self) -> f64 {
        self.operations() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Adds `other`, run after `self` by the same workers.
    pub(crate) fn extend(&mut self, other: Loop) {
        self.per_worker.resize(self.per_worker.len().max(other.per_worker.len()), 0);
        for (done, more) in self.per_worker.iter_mut().zip(other.per_worker) {
            *done += more;
        }
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    /// The rate, the median and the 99th percentile latency.
    pub(crate) fn summary(self) -> anyhow::Result<(f64, Duration, Duration)> {
        anyhow::ensure!(!self.latencies.is_empty(), "no operation completed in {:?}", self.elapsed);
        let rate = self.rate();
        let (p50, p99) = percentiles(self.latencies);
        Ok((rate, p50, p99))
    }
}

/// Runs `concurrency` workers, each calling `op(worker, i)` for i = 0, 1, ...
/// until `duration` has passed, timing each call if `timed`.
pub(crate) async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
    timed: bool,
) -> anyhow::Result<Loop>
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
                let (mut done, mut latencies) = (0u64, Vec::new());
                while Instant::now() < deadline {
                    let started = Instant::now();
                    op(worker, done).await?;
                    if timed {
                        latencies.push(started.elapsed());
                    }
                    done += 1;
                }
                anyhow::Ok((done, latencies))
            })
        })
        .collect();
    let mut measured = Loop::default();
    for worker in workers {
        let (done, latencies) = worker.await??;
        measured.per_worker.push(done);
        measured.latencies.extend(latencies);
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}

/// One operation of an [`interleave`]d measurement: `op(worker, i)`.
pub type Op = Arc<dyn Fn(usize, u64) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// What [`interleave`] measures, each with its own workers and processes.
pub struct Contender {
    pub op: Op,
    pub concurrency: usize,
    pub meter: Meter,
    /// The first `i` of each worker (the operations before it warmed up).
    pub from: u64,
}

/// One contender's figures over all its slices.
pub struct Interleaved {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// CPU time per operation.
    pub cpu: CpuTime,
    /// The rate in each slice, in order.
    pub slices: Vec<f64>,
}

/// Measures `contenders` in turns of `slice` each, `slices` turns apiece,
/// in the order 1..n, then n..1, then 1..n again: on a machine whose speed
/// drifts, every contender runs in the same stretches of time, so ratios of
/// their figures compare like with like. Worker `w` of a contender goes on
/// numbering its operations from where its last slice stopped.
pub async fn interleave(contenders: &[Contender], slices: usize, slice: Duration) -> anyhow::Result<Vec<Interleaved>> {
    /// One contender's turns so far.
    #[derive(Default)]
    struct Turns {
        done: Loop,
        cpu: CpuTime,
        rates: Vec<f64>,
    }
    let mut turns: Vec<Turns> = contenders.iter().map(|_| Turns::default()).collect();
    for turn in 0..slices {
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        if turn % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let (contender, turns) = (&contenders[k], &mut turns[k]);
            let from: Vec<u64> = (0..contender.concurrency)
                .map(|w| contender.from + turns.done.per_worker.get(w).copied().unwrap_or(0))
                .collect();
            let op = contender.op.clone();
            let before = contender.meter.read()?;
            let measured = closed_loop(contender.concurrency, slice, move |w, i| op(w, from[w] + i), true).await?;
            turns.cpu.add(&before.until(&contender.meter.read()?));
            turns.rates.push(measured.rate());
            turns.done.extend(measured);
        }
    }
    turns
        .into_iter()
        .map(|Turns { done, cpu, rates }| {
            let operations = done.operations() as f64;
            let (rate, p50, p99) = done.summary()?;
            Ok(Interleaved { rate, p50, p99, cpu: cpu.per(operations), slices: rates })
        })
        .collect()
}

/// Calls `op(worker, i)` for i = 0..`rounds` on each of `concurrency`
/// workers, unmeasured: what runs before a measurement of a steady state
/// (caches filled, a server's memory of the rows it writes), which then
/// goes on from i = `rounds`.
pub async fn warm_up<F, Fut>(concurrency: usize, rounds: u64, op: &Arc<F>) -> anyhow::Result<()>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + ?Sized + 'static,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn contenders_take_turns_and_go_on_numbering_where_they_stopped() {
        let calls: Arc<Mutex<Vec<(usize, usize, u64)>>> = Arc::default();
        let contender = |k: usize| {
            let calls = calls.clone();
            let op: Op = Arc::new(move |w, i| {
                let calls = calls.clone();
                Box::pin(async move {
                    calls.lock().unwrap().push((k, w, i));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok(())
                })
            });
            Contender { op, concurrency: 2, meter: Meter::new(None), from: 100 }
        };
        let slice = Duration::from_millis(30);
        let run = Instant::now();
        let figures = interleave(&[contender(0), contender(1), contender(2)], 4, slice).await.unwrap();
        let run = run.elapsed().as_secs_f64();
        let calls = calls.lock().unwrap().clone();

        // Turns in the order 0 1 2, 2 1 0, 0 1 2, 2 1 0.
        let mut turns: Vec<usize> = calls.iter().map(|&(k, _, _)| k).collect();
        turns.dedup();
        assert_eq!(turns, [0, 1, 2, 1, 0, 1, 2, 1, 0], "consecutive turns of one contender run together");
        // Each worker of each contender numbers its calls 100, 101, ... across its turns.
        for k in 0..3 {
            for w in 0..2 {
                let numbers: Vec<u64> = calls.iter().filter(|c| c.0 == k && c.1 == w).map(|c| c.2).collect();
                assert_eq!(numbers, (100..100 + numbers.len() as u64).collect::<Vec<_>>(), "contender {k}, worker {w}");
            }
        }
        // The rate is over the contender's own four turns, not over the whole
        // run's time: the times the three rates imply are each at least four
        // slices (a turn lasts at least its slice), and together no more than
        // the run, which holds all twelve turns one after another.
        let slice = slice.as_secs_f64();
        let mut owns = Vec::new();
        for (k, figure) in figures.iter().enumerate() {
            let done = calls.iter().filter(|c| c.0 == k).count() as f64;
            assert_eq!(figure.slices.len(), 4);
            let own = done / figure.rate;
            assert!(
                own >= 4.0 * slice - 1e-9 && own <= run - 8.0 * slice + 1e-9,
                "contender {k}: {}/s for {done} calls is over {own:.3} s; its turns are 4 x {slice} s of a {run:.3} s run",
                figure.rate
            );
            owns.push(own);
        }
        let total: f64 = owns.iter().sum();
        assert!(total <= run + 1e-9, "the contenders' times {owns:?} overlap: {total:.3} s in a {run:.3} s run");
    }
}
