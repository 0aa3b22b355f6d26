//! Where a measurement's CPU time went: this process (the clients), the
//! server process, the database server, and the machine's idle time, read
//! from `/proc` before and after it.

use std::time::Duration;

use anyhow::Context;

/// Milliseconds per clock tick in `/proc` (USER_HZ: 100 a second on Linux
/// whatever the kernel's own tick).
const TICK_MS: u64 = 10;

/// `ticks` clock ticks as a duration.
fn ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks.saturating_mul(TICK_MS))
}

/// Field `index` of `fields` as a count of ticks; `None` if missing or not a number.
fn tick_field(fields: &[&str], index: usize) -> Option<u64> {
    fields.get(index).and_then(|v| v.parse::<u64>().ok())
}

/// CPU time (user and system, all threads) process `pid` has used so far.
pub fn process_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // After the command name (in parentheses, possibly with spaces) come the
    // state (field 3), ..., utime (14) and stime (15).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let (user, system) =
        tick_field(&fields, 11).zip(tick_field(&fields, 12)).context("no CPU times in /proc/<pid>/stat")?;
    Ok(ticks(user + system))
}

/// The machine's idle time so far, summed over its CPUs (`/proc/stat`: idle and iowait).
fn idle_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    // Every field keeps its place: a value that does not parse fails the
    // reading rather than shift the ones after it. Summed over the CPUs,
    // idle ticks pass 2^32 within months of uptime: counted in u64.
    let fields: Vec<&str> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| rest.split_whitespace().collect())
        .unwrap_or_default();
    let (idle, iowait) = tick_field(&fields, 3).zip(tick_field(&fields, 4)).context("no idle time in /proc/stat")?;
    Ok(ticks(idle + iowait))
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
pub struct Reading {
    clients: Duration,
    server: Duration,
    database: Duration,
    idle: Duration,
}

/// CPU time spent between two readings, or per operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
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

    /// Every process's CPU time and the machine's idle time so far.
    pub fn read(&self) -> anyhow::Result<Reading> {
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
    /// The CPU time spent from `self` to `after`.
    pub fn until(&self, after: &Reading) -> CpuTime {
        CpuTime {
            clients: after.clients.saturating_sub(self.clients),
            server: after.server.saturating_sub(self.server),
            database: after.database.saturating_sub(self.database),
            idle: after.idle.saturating_sub(self.idle),
        }
    }
}

impl CpuTime {
    /// Adds the time of `other`.
    pub fn add(&mut self, other: &CpuTime) {
        self.clients += other.clients;
        self.server += other.server;
        self.database += other.database;
        self.idle += other.idle;
    }

    /// This time spread over `operations` operations.
    pub fn per(&self, operations: f64) -> CpuTime {
        let per = |time: Duration| time.div_f64(operations.max(1.0));
        CpuTime {
            clients: per(self.clients),
            server: per(self.server),
            database: per(self.database),
            idle: per(self.idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_counts_past_u32_read_in_place() {
        let line = "8000000000 0 3 5000000000 7";
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(tick_field(&fields, 0), Some(8_000_000_000));
        assert_eq!(tick_field(&fields, 3).map(ticks), Some(Duration::from_millis(50_000_000_000)));
        assert_eq!(tick_field(&fields, 5), None);
    }

    #[test]
    fn this_process_and_the_machine_have_cpu_and_idle_times() {
        assert!(process_time(std::process::id()).is_ok());
        assert!(idle_time().is_ok());
    }
}
