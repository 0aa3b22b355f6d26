//! Where a measurement's CPU time went: this process (the clients), the
//! server process, the database server, and the machine's idle time, read
//! from `/proc` before and after it.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Clock ticks per second in `/proc` (USER_HZ: 100 on Linux whatever the kernel's own tick).
const TICK: Duration = Duration::from_millis(10);

/// CPU time (user and system, all threads) process `pid` has used so far.
pub fn process_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // After the command name (in parentheses, possibly with spaces) come the
    // state (field 3), ..., utime (14) and stime (15).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<u32>().ok());
    let (user, system) = ticks(11).zip(ticks(12)).context("no CPU times in /proc/<pid>/stat")?;
    Ok(TICK * (user + system))
}

/// The machine's idle time so far, summed over its CPUs (`/proc/stat`: idle and iowait).
fn idle_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let fields: Vec<u32> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| rest.split_whitespace().filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    let (idle, iowait) = fields.get(3).zip(fields.get(4)).context("no idle time in /proc/stat")?;
    Ok(TICK * (idle + iowait))
}

/// The pid of the process named `name` (as in `/proc/<pid>/comm`), if one runs here.
fn find_process(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (comm.trim_end() == name).then_some(pid)
    })
}

/// The processes a measurement's CPU time is split over.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    server: Option<u32>,
    database: Option<u32>,
}

/// A reading of every [`Meter`] process's CPU time and of the machine's idle time.
#[derive(Debug, Clone, Copy)]
struct Reading {
    clients: Duration,
    server: Duration,
    database: Duration,
    idle: Duration,
}

/// CPU time per operation between two readings.
#[derive(Debug, Clone, Copy)]
pub struct PerOp {
    pub clients: Duration,
    pub server: Duration,
    pub database: Duration,
    pub idle: Duration,
}

impl Meter {
    /// This process, the server process `server` (if any), and a MariaDB or
    /// MySQL server running on this machine (if any).
    pub fn new(server: Option<u32>) -> Self {
        Self { server, database: find_process("mariadbd").or_else(|| find_process("mysqld")) }
    }

    /// Runs `measurement`, which answers with its rate (operations per
    /// second) first, and splits the CPU time meanwhile per operation.
    pub async fn around<T>(
        &self,
        measurement: impl Future<Output = anyhow::Result<(f64, T, T)>>,
    ) -> anyhow::Result<((f64, T, T), PerOp)> {
        let (before, started) = (self.read()?, Instant::now());
        let measured = measurement.await?;
        let operations = measured.0 * started.elapsed().as_secs_f64();
        Ok((measured, before.per_op(&self.read()?, operations)))
    }

    fn read(&self) -> anyhow::Result<Reading> {
        let of = |pid: Option<u32>| pid.map_or(Ok(Duration::ZERO), process_time);
        Ok(Reading {
            clients: process_time(std::process::id())?,
            server: of(self.server)?,
            database: of(self.database)?,
            idle: idle_time()?,
        })
    }
}

impl Reading {
    /// CPU time per operation from `self` to `after`, over `operations` operations.
    fn per_op(&self, after: &Reading, operations: f64) -> PerOp {
        let per = |from: Duration, to: Duration| to.saturating_sub(from).div_f64(operations.max(1.0));
        PerOp {
            clients: per(self.clients, after.clients),
            server: per(self.server, after.server),
            database: per(self.database, after.database),
            idle: per(self.idle, after.idle),
        }
    }
}
