//! A MariaDB server of the test's own: a fresh data directory made by
//! `mariadb-install-db`, `mariadbd` on a free loopback port, killed with
//! SIGKILL and started again on the same port and data directory (InnoDB
//! then recovers from its redo log, as after a crash). Root has no password
//! over TCP, as the code's default URL expects.
//!
//! The shared server of `scripts/test` (127.0.0.1:3306) is never touched:
//! killing it would fail every other test running at the time.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start (or a restart, with its crash recovery) may take on a
/// loaded machine before the test gives up.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// A private `mariadbd`; killed and its data directory removed when dropped.
pub struct MariaDb {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    server: PathBuf,
}

/// The first of `candidates` that exists, else the name looked up on `PATH`.
fn program(candidates: &[&str], name: &str) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
    })
}

/// Whether this process runs as root: `mariadbd` refuses to unless told
/// `--user=root`, and ignores the flag (with a warning) otherwise.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl MariaDb {
    /// Installs a fresh data directory and starts a server on a free port;
    /// `None` only when MySQL tests were opted out of locally
    /// (`POINTSTREAM_SKIP_MYSQL=1`, never in CI). Missing programs fail the
    /// test, saying what to install.
    pub fn start() -> Option<MariaDb> {
        if eventstore::scratch::mysql_skipped() {
            eprintln!("POINTSTREAM_SKIP_MYSQL=1: skipping a fault test (it runs a MariaDB of its own)");
            return None;
        }
        let missing = |what: &str| {
            panic!(
                "the fault tests run a private MariaDB and need {what}: install mariadb-server \
                 (or set POINTSTREAM_SKIP_MYSQL=1 locally)"
            )
        };
        let server = program(&["/usr/sbin/mariadbd", "/usr/libexec/mariadbd"], "mariadbd")
            .unwrap_or_else(|| missing("mariadbd"));
        let install = program(&["/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db"], "mariadb-install-db")
            .unwrap_or_else(|| missing("mariadb-install-db"));
        let dir = std::env::temp_dir().join(format!("pointstream-mariadb-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a directory for the private MariaDB");
        let mut command = Command::new(&install);
        // --no-defaults first: the machine's my.cnf (its user, log and
        // socket paths) must not apply to a server of the test's own.
        command.arg("--no-defaults");
        if running_as_root() {
            command.arg("--user=root");
        }
        let output = command
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
            .args(Self::sizes())
            .output()
            .unwrap_or_else(|e| panic!("{} runs: {e}", install.display()));
        assert!(
            output.status.success(),
            "{} failed ({}):\n{}\n{}",
            install.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
        let mut db = MariaDb { child: None, port, dir, server };
        db.launch();
        Some(db)
    }

    /// Small redo log and buffer pool: a test's data is small, and each
    /// test server is installed afresh.
    fn sizes() -> [&'static str; 2] {
        ["--innodb-log-file-size=16M", "--innodb-buffer-pool-size=64M"]
    }

    /// The server's URL (no database): root, no password, over TCP.
    pub fn server_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Starts `mariadbd` on the port and data directory, and waits until it
    /// greets clients.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "the private MariaDB is already running");
        let mut command = Command::new(&self.server);
        command.arg("--no-defaults");
        if running_as_root() {
            command.arg("--user=root");
        }
        let child = command
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--log-error={}", self.dir.join("error.log").display()))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve", "--max-connections=500"])
            // No host cache: the readiness probes (connections that read the
            // greeting and leave) must not get 127.0.0.1 blocked for
            // "many connection errors", the server under test with it.
            .arg("--host-cache-size=0")
            .args(Self::sizes())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.server.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while !self.greets() {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the private mariadbd exited ({status}) while starting; its log:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "the private mariadbd did not greet clients on port {} within {START_DEADLINE:?}; its log:\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a connection gets the server's handshake (protocol 10), not
    /// a refusal or an error packet: only then does it take queries.
    fn greets(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut start = [0u8; 5];
        stream.read_exact(&mut start).is_ok() && start[4] == 10
    }

    /// SIGKILL, then reap it: no shutdown, no flush beyond what each commit
    /// already made durable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL is delivered to mariadbd");
            child.wait().expect("mariadbd is reaped");
        }
    }

    /// Starts it again on the same port and data directory (crash recovery
    /// included) and waits until it greets clients.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The end of the server's error log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
