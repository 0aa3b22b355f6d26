//! An S3-protocol server of the test's own: `s3s-fs` (the server
//! `scripts/test` installs and runs) on a free loopback port over a
//! temporary directory, killed with SIGKILL and started again on the same
//! port and directory. The shared server that `POINTSTREAM_TEST_S3_ENDPOINT`
//! names is never stopped: other tests use it meanwhile.
//!
//! S3 tests are opted out of as everywhere else: `POINTSTREAM_SKIP_S3=1`,
//! locally only. Otherwise a missing S3 setup fails the test, saying what is
//! missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket the server under test writes to.
pub const BUCKET: &str = "pointstream-faults";

/// A private `s3s-fs`; killed and its directory removed when dropped.
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    program: PathBuf,
    access_key: String,
    secret_key: String,
}

/// `s3s-fs`: where `scripts/test` installs it, or on `PATH`.
fn s3s_fs() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let installed = home.map(|home| home.join(".cache/pointstream/s3s/bin/s3s-fs"));
    installed.filter(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| PathBuf::from(dir).join("s3s-fs"))
            .find(|p| p.is_file())
    })
}

impl S3Server {
    /// Starts one with the bucket [`BUCKET`]; `None` only when S3 tests
    /// were opted out of.
    pub fn start() -> Option<S3Server> {
        if media::scratch::s3_skipped() {
            eprintln!("POINTSTREAM_SKIP_S3=1: skipping the S3 fault test");
            return None;
        }
        // Configured as for every S3 test (scripts/test does it); the
        // private server takes the same credentials.
        media::scratch::s3_endpoint().unwrap_or_else(|e| panic!("{e}"));
        let credential = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: the S3 tests need AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (scripts/test sets them)")
            })
        };
        let (access_key, secret_key) = (credential("AWS_ACCESS_KEY_ID"), credential("AWS_SECRET_ACCESS_KEY"));
        let program = s3s_fs().unwrap_or_else(|| {
            panic!(
                "the S3 fault test stops an S3 server of its own and needs s3s-fs: run scripts/test once (it installs \
                 s3s-fs 0.14.1 into ~/.cache/pointstream/s3s), or put s3s-fs on PATH"
            )
        });
        let dir = std::env::temp_dir().join(format!("pointstream-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join(BUCKET)).expect("the private S3 server's directory and bucket");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
        let mut server = S3Server { child: None, port, dir, program, access_key, secret_key };
        server.launch();
        Some(server)
    }

    /// The endpoint the server under test is given.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "the private s3s-fs is already running");
        let child = Command::new(&self.program)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key, "--secret-key", &self.secret_key])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the private s3s-fs does not listen on port {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL is delivered to s3s-fs");
            child.wait().expect("s3s-fs is reaped");
        }
    }

    /// Starts it again on the same port and directory; waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Where the bucket is, as the store configuration names it.
    pub fn config(&self) -> media::S3Config {
        media::S3Config {
            bucket: BUCKET.to_string(),
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".to_string()),
            path_style: true,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
