//! The API server the `api` mode measures, in a process of its own: this
//! binary run again as `bench api-server`, wired as `pointstream serve` wires
//! it (every projector and the share distribution running, poem on a real
//! TCP port).
//!
//! A process of its own for two reasons: 10,000 subscribers are 10,000 client
//! sockets plus 10,000 server sockets, which do not fit in one process under a
//! 20,000 open-file limit; and the server's resident memory is then the
//! server's alone, without the clients' buffers.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use api::auth::{OidcConfig, TokenConfig};
use api::rate::RateLimit;
use api::server::HttpConfig;
use api::{ApiState, Limits};
use eventstore::{EventStore, EventStoreConfig};
use projections::ProjectorConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

/// What the server prints on stdout once it accepts connections (and so
/// does `bench peer-server`).
pub(crate) const LISTENING: &str = "listening on ";

/// The server's photo store: the S3 bucket when given, else a scratch directory.
pub struct Photos {
    /// S3 endpoint.
    pub s3_endpoint: Option<String>,
    /// S3 bucket.
    pub s3_bucket: Option<String>,
}

/// How the server checks its callers, besides the GraphQL limits.
pub struct Access {
    /// Requests per caller (`per_minute: 0`: no limit).
    pub rate_limit: RateLimit,
    /// Tokens checked against an identity provider's keys; without it,
    /// HS256 tokens signed with the server's secret.
    pub oidc: Option<Oidc>,
}

/// An identity provider, as `pointstream serve --oidc-jwks-url`,
/// `--oidc-issuer` and `--oidc-audience` name it.
pub struct Oidc {
    /// Where its keys are published.
    pub jwks_url: String,
    /// The `iss` every token must carry.
    pub issuer: Option<String>,
    /// The audience every token's `aud` must name.
    pub audience: Option<String>,
}

impl Access {
    /// The HTTP layer's configuration: `serve`'s defaults, with this
    /// access's rate limit and token check.
    fn http_config(self, secret: &str) -> anyhow::Result<HttpConfig> {
        let tokens = match self.oidc {
            None => TokenConfig::secret(secret.as_bytes().to_vec()),
            Some(oidc) => {
                let mut config = OidcConfig::new(&oidc.jwks_url)
                    .map_err(|e| anyhow::anyhow!("--oidc-jwks-url {}: {e}", oidc.jwks_url))?;
                config.issuer = oidc.issuer;
                config.audience = oidc.audience;
                TokenConfig::oidc(config)
            }
        };
        Ok(HttpConfig { tokens, rate_limit: self.rate_limit, ..HttpConfig::new(secret.as_bytes().to_vec()) })
    }
}

/// The server side: serves the API on `database_url` until stdin closes
/// (the benchmark closes it to stop the server, and so does its exit).
pub async fn serve(
    database_url: &str,
    secret: &str,
    config: EventStoreConfig,
    photos: Photos,
    inline: &[String],
    limits: Limits,
    access: Access,
) -> anyhow::Result<()> {
    let http = access.http_config(secret)?;
    crate::api_bench::raise_open_files_limit()?;
    let store = EventStore::open(database_url, config).await.context("the server cannot open the event store")?;
    projections::write_inline(&store, inline)?;
    let (stop, shutdown) = watch::channel(false);
    let running = projections::spawn_all(&store, &ProjectorConfig::default(), &shutdown);
    // `pointstream serve`'s defaults.
    let reads = api::replicas::Reads::primary(&store);
    let state = ApiState {
        store: store.clone(),
        read_timeout: Duration::from_secs(5),
        limits,
        tokens: None,
        redis: None,
        media: match photos.s3_bucket {
            Some(bucket) => media::MediaStore::S3(
                media::S3Store::connect(&media::S3Config {
                    bucket,
                    endpoint: photos.s3_endpoint,
                    region: Some("us-east-1".into()),
                    path_style: true,
                })
                .await,
            ),
            None => media::scratch::scratch_fs("http://127.0.0.1"),
        },
        photo_url_ttl: Duration::from_secs(900),
        projectors: running.statuses.clone(),
        notary_key: None,
        reads,
        links: None,
    };
    let app = api::server::app(api::build(state.clone()), state, http);
    let mut stopped = shutdown.clone();
    let (address, server) = api::server::bind("127.0.0.1:0".to_string(), |_| app, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    })
    .await
    .context("the server cannot listen on 127.0.0.1")?;
    let server = tokio::spawn(server);
    println!("{LISTENING}{address}");

    let mut rest = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut rest).await;
    stop.send_replace(true);
    server.await??;
    for task in running.tasks {
        task.await??;
    }
    Ok(())
}

/// The benchmark's handle on a running server process.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where it listens (`127.0.0.1:port`).
    pub address: String,
}

impl ServerProcess {
    /// Starts a server on `database_url` (its event store with `config`'s
    /// pool size and append scripts) and waits until it listens.
    pub async fn spawn(database_url: &str, secret: &str, config: &EventStoreConfig) -> anyhow::Result<Self> {
        Self::spawn_with(database_url, secret, config, &[]).await
    }

    /// [`Self::spawn`] with `extra` arguments (`--s3-endpoint`, `--s3-bucket`,
    /// `--inline-projections`, `--upload-memory-bytes`, `--stream-uploads`,
    /// `--rate-limit-per-minute`, `--rate-limit-burst`, `--oidc-jwks-url`,
    /// `--oidc-issuer`, `--oidc-audience`).
    pub async fn spawn_with(
        database_url: &str,
        secret: &str,
        config: &EventStoreConfig,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        Self::spawn_with_env(database_url, secret, config, extra, &[]).await
    }

    /// [`Self::spawn_with`] with extra environment variables `env` (the
    /// `OTEL_*` ones that turn traces on, say).
    pub async fn spawn_with_env(
        database_url: &str,
        secret: &str,
        config: &EventStoreConfig,
        extra: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut args: Vec<String> =
            ["api-server", "--database-url", database_url, "--secret", secret].into_iter().map(String::from).collect();
        args.extend(["--max-connections".to_string(), config.max_connections.to_string()]);
        args.extend(["--append-scripts".to_string(), config.append_scripts.to_string()]);
        args.extend_from_slice(extra);
        Self::spawn_command_with_env(&args, env).await
    }

    /// Starts this binary with `args` (a hidden server subcommand, such as
    /// `api-server` or `peer-server`, and its arguments) and waits until the
    /// server prints that it listens.
    pub async fn spawn_command(args: &[String]) -> anyhow::Result<Self> {
        Self::spawn_command_with_env(args, &[]).await
    }

    /// [`Self::spawn_command`] with extra environment variables `env`.
    async fn spawn_command_with_env(args: &[String], env: &[(String, String)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the bench binary to start the server")?;
        let mut child = Command::new(exe)
            .args(args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the server process")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line.strip_prefix(LISTENING) {
                    return anyhow::Ok(address.to_string());
                }
            }
            anyhow::bail!("the server process exited before it listened (its error is above)")
        })
        .await
        .context("the server did not listen within 60 s")??;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin, address })
    }

    /// The server's resident memory (`VmRSS`), in bytes.
    pub fn resident_bytes(&self) -> anyhow::Result<u64> {
        resident_bytes(self.pid()?)
    }

    /// The server's process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the server process has exited")
    }

    /// CPU time the server has used so far (user and system, all threads).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        crate::cpu::process_time(self.pid()?)
    }

    /// Files (sockets included) the server has open.
    pub fn open_files(&self) -> anyhow::Result<usize> {
        let pid = self.pid()?;
        let entries =
            std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("cannot list /proc/{pid}/fd"))?;
        Ok(entries.count())
    }

    /// Stops the server (closing its stdin) and waits for it to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "the server process exited with {status}");
            }
            Err(_) => {
                self.child.start_kill()?;
                anyhow::bail!("the server process did not stop within 30 s; killed it");
            }
        }
        Ok(())
    }
}

/// Process `pid`'s resident memory (`VmRSS`), in bytes.
pub(crate) fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kib * 1024)
}
