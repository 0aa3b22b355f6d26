//! Photo uploads: 1 MiB photos through the GraphQL endpoint (multipart
//! `createPost`, checked, hashed and stored in S3 by the server) next to
//! aws-sdk-s3 `PutObject` of the same bytes to the same S3 server in the same
//! run; and the server's memory while 32 clients upload 5 MiB, then 10 MiB
//! photos at once (a server that held whole uploads would need what is in
//! flight; a streaming one holds a few buffers per upload, and the
//! allocator's retained memory lifts later rounds whatever their size).
//!
//! The S3 server is `POINTSTREAM_TEST_S3_ENDPOINT` when set, else an s3s-fs
//! (as `scripts/test` installs it) started on a free port for the run, its
//! objects kept under `--s3-data` (memory by default: an S3 service does not
//! write to the database's disk).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use api::auth::{Claims, Role};
use aws_sdk_s3::primitives::ByteStream;
use eventstore::{EventStore, EventStoreConfig};
use media::{S3Config, S3Store};
use tokio::process::{Child, Command};

use crate::api_server::ServerProcess;
use crate::measure::{histogram_totals, mean_between, ms, throughput_and_latency};
use crate::pointstream::register;
use crate::run::Scratch;

/// What to measure.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrency levels for the throughput figures.
    #[arg(long, value_delimiter = ',', default_value = "2,8,32")]
    pub concurrency: Vec<usize>,
    /// Concurrent uploads for the memory figure.
    #[arg(long, default_value_t = 32)]
    pub memory_concurrency: usize,
    /// Photo sizes (MiB, at most the server's 10 MiB limit) for the memory
    /// figure, uploaded in this order by one server.
    #[arg(long, value_delimiter = ',', default_value = "5,10")]
    pub memory_mib: Vec<usize>,
    /// As `pointstream serve --upload-memory-bytes` (0: every upload to a temporary file).
    #[arg(long, default_value_t = api::Limits::default().upload_memory_bytes)]
    pub upload_memory_bytes: usize,
    /// As `pointstream serve --stream-uploads` (false: each photo put once it is all in).
    #[arg(long, default_value_t = api::Limits::default().stream_uploads, action = clap::ArgAction::Set)]
    pub stream_uploads: bool,
    /// As `pointstream serve --append-scripts`, for every event store of the run.
    #[arg(long, default_value_t = eventstore::EventStoreConfig::default().append_scripts, action = clap::ArgAction::Set)]
    pub append_scripts: bool,
    /// Where the run's own s3s-fs keeps its objects. By default memory
    /// (`/dev/shm`), as an S3 service's disks are not the database's: on the
    /// database's disk, the photos' writes hold up every commit's flush.
    #[arg(long, default_value = "/dev/shm")]
    pub s3_data: std::path::PathBuf,
}

const MIB: usize = 1 << 20;
/// Alternating rounds of (a) and (b) per concurrency level.
const ROUNDS: usize = 6;
const JPEG: &[u8] = include_bytes!("../../tests/fixtures/photo.jpg");

/// A JPEG of `size` bytes: a real one, padded (the server checks the first bytes).
fn photo_of(size: usize) -> bytes::Bytes {
    let mut bytes = JPEG.to_vec();
    bytes.resize(size, 0x5a);
    bytes.into()
}

/// An S3 server for the run: the configured one, or an s3s-fs of its own.
struct S3Server {
    endpoint: String,
    child: Option<Child>,
    dir: Option<std::path::PathBuf>,
}

impl S3Server {
    /// The configured one, or an s3s-fs keeping its objects under `data`.
    async fn start(data: &std::path::Path) -> anyhow::Result<S3Server> {
        if let Ok(endpoint) = std::env::var("POINTSTREAM_TEST_S3_ENDPOINT") {
            return Ok(S3Server { endpoint, child: None, dir: None });
        }
        let home = std::env::var("HOME").unwrap_or_default();
        let binary = std::path::PathBuf::from(home).join(".cache/pointstream/s3s/bin/s3s-fs");
        anyhow::ensure!(
            binary.exists(),
            "no S3 server: set POINTSTREAM_TEST_S3_ENDPOINT, or install s3s-fs as scripts/test does \
             (cargo install s3s-fs@0.14.1 --features binary --locked --root ~/.cache/pointstream/s3s)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = data.join(format!("pointstream-bench-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {} for s3s-fs", dir.display()))?;
        // SAFETY: set before any other thread reads the environment's AWS variables.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "pointstream-bench");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "pointstream-bench-secret");
        }
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "pointstream-bench", "--secret-key", "pointstream-bench-secret"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "s3s-fs did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(S3Server { endpoint: format!("http://127.0.0.1:{port}"), child: Some(child), dir: Some(dir) })
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A `createPost` with one photo, as a GraphQL multipart request.
fn upload_form(id: &str, photo: bytes::Bytes) -> anyhow::Result<reqwest::multipart::Form> {
    let query = "mutation($id: String!, $p: [Upload!]!) { createPost(id: $id, author: \"m00000\", store: \"cafe\", \
                 body: \"bench\", photos: $p) { position } }";
    let operations = serde_json::json!({ "query": query, "variables": { "id": id, "p": [null] } });
    let part = reqwest::multipart::Part::bytes(photo.to_vec()).file_name("photo.jpg").mime_str("image/jpeg")?;
    Ok(reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", r#"{"0":["variables.p.0"]}"#)
        .part("0", part))
}

async fn upload(http: &reqwest::Client, url: &str, token: &str, id: &str, photo: bytes::Bytes) -> anyhow::Result<()> {
    let response = http.post(url).bearer_auth(token).multipart(upload_form(id, photo)?).send().await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("the answer is not JSON")?;
    anyhow::ensure!(status.is_success() && body.get("errors").is_none(), "upload refused: HTTP {status}: {body}");
    Ok(())
}

/// The server's peak resident memory while `concurrency` clients each
/// upload one photo of `mib` MiB at once (posts `{tag}-{i}`).
async fn peak_memory(
    server: &Arc<ServerProcess>,
    http: &reqwest::Client,
    url: &Arc<String>,
    token: &Arc<String>,
    concurrency: usize,
    mib: usize,
    tag: &str,
) -> anyhow::Result<u64> {
    let photo = photo_of(mib * MIB);
    let peak = Arc::new(AtomicU64::new(server.resident_bytes()?));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (server, peak, sampling) = (server.clone(), peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(now) = server.resident_bytes() {
                    peak.fetch_max(now, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let uploads: Vec<_> = (0..concurrency)
        .map(|i| {
            let (http, url, token, photo) = (http.clone(), url.clone(), token.clone(), photo.clone());
            let id = format!("{tag}-{i}");
            tokio::spawn(async move { upload(&http, &url, &token, &id, photo).await })
        })
        .collect();
    for task in uploads {
        task.await??;
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    Ok(peak.load(Ordering::Relaxed))
}

pub async fn run(mysql: &str, options: &Options) -> anyhow::Result<()> {
    Scratch::around(mysql, "media", |url| async move { measure(&url, options).await }).await
}

async fn measure(database_url: &str, options: &Options) -> anyhow::Result<()> {
    let s3 = S3Server::start(&options.s3_data).await?;
    let bucket = format!("pointstream-bench-{}", uuid::Uuid::new_v4().simple());
    let config = S3Config {
        bucket: bucket.clone(),
        endpoint: Some(s3.endpoint.clone()),
        region: Some("us-east-1".into()),
        path_style: true,
    };
    let direct = S3Store::connect(&config).await;
    direct.client().create_bucket().bucket(&bucket).send().await.context("cannot create the bench bucket")?;

    let most = options.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let store_config = EventStoreConfig {
        max_connections: most as u32 + 4,
        append_scripts: options.append_scripts,
        ..EventStoreConfig::default()
    };
    let store = EventStore::open(database_url, store_config.clone()).await?;
    register(&store, &["m00000".to_string()]).await?;

    let secret = uuid::Uuid::new_v4().simple().to_string();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3_600;
    let claims = Claims { sub: "bench".into(), role: Role::Admin, member: None, store: None, exp };
    let token = Arc::new(api::auth::mint(secret.as_bytes(), &claims)?);
    let extra = [
        "--s3-endpoint".to_string(),
        s3.endpoint.clone(),
        "--s3-bucket".to_string(),
        bucket.clone(),
        "--upload-memory-bytes".to_string(),
        options.upload_memory_bytes.to_string(),
        "--stream-uploads".to_string(),
        options.stream_uploads.to_string(),
    ];
    let server = Arc::new(ServerProcess::spawn_with(database_url, &secret, &store_config, &extra).await?);
    let url = Arc::new(format!("http://{}/graphql", server.address));
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let duration = Duration::from_secs(options.seconds);

    // Memory first, while the server's memory is that of a fresh process.
    let before = server.resident_bytes()?;
    let mut peaks = Vec::with_capacity(options.memory_mib.len());
    for (round, &mib) in options.memory_mib.iter().enumerate() {
        let tag = format!("big-{round}");
        let peak = peak_memory(&server, &http, &url, &token, options.memory_concurrency, mib, &tag).await?;
        peaks.push((mib, peak));
    }

    let photo = photo_of(MIB);
    let metrics_url = format!("http://{}/metrics", server.address);
    let mut rows = Vec::new();
    let mut inside = Vec::new();
    for (level, &concurrency) in options.concurrency.iter().enumerate() {
        let concurrency = concurrency.max(1);
        let before = Stages::read(&http, &metrics_url).await?;
        let cpu_before = server.cpu_time()?;
        // (a) and (b) take turns in short rounds, each starting every other
        // pair, so a drift of the machine or of the S3 server (which slows as
        // its directory fills) weighs on both alike.
        let mut pairs = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let tag = format!("{level}-{round}");
            let slice = duration / ROUNDS as u32;
            let measure_direct = || put_directly(&direct, &bucket, &photo, concurrency, slice, &tag);
            let measure_api = || put_through_api(&http, &url, &token, &photo, concurrency, slice, &tag);
            let pair = if round % 2 == 0 {
                let a = measure_direct().await?;
                (a, measure_api().await?)
            } else {
                let b = measure_api().await?;
                (measure_direct().await?, b)
            };
            pairs.push(pair);
        }
        rows.push((concurrency, Rounds::of(pairs)));
        let after = Stages::read(&http, &metrics_url).await?;
        // The server is idle during (a): its CPU time over the level is (b)'s.
        let cpu = server.cpu_time()?.saturating_sub(cpu_before);
        let uploads = after.0[0].map_or(0.0, |(_, n1)| n1 - before.0[0].map_or(0.0, |(_, n0)| n0));
        let cpu_per_upload = (uploads > 0.0).then(|| cpu.div_f64(uploads));
        inside.push((concurrency, before.means_until(&after), cpu_per_upload));
    }
    let metrics = http.get(&metrics_url).send().await?.error_for_status()?.text().await?;
    let puts = |from: &str| histogram_totals(&metrics, "pointstream_photo_put_seconds", from).map_or(0.0, |(_, n)| n);
    let put_counts = (puts("from=\"arrival\""), puts("from=\"file\""));
    let commits = crate::measure::GroupCommits::between("", &metrics);
    let server = Arc::into_inner(server).context("the server handle is still shared")?;
    server.stop().await?;

    let mib = |bytes: u64| bytes as f64 / MIB as f64;
    let s3_server = match &s3.dir {
        Some(dir) => format!("s3s-fs at {}, its objects under {}", s3.endpoint, dir.display()),
        None => format!("{} (`POINTSTREAM_TEST_S3_ENDPOINT`)", s3.endpoint),
    };
    println!("## media (1 MiB photos, {} s per figure; S3: {s3_server})", options.seconds);
    println!();
    println!("(a) aws-sdk-s3 PutObject, direct; (b) GraphQL createPost with the same bytes as its photo");
    println!();
    println!(
        "The server holds a request's uploads in memory up to {} bytes (`--upload-memory-bytes`; 0: every upload \
         goes through a temporary file).",
        options.upload_memory_bytes
    );
    println!();
    println!(
        "A request's only photo {} (`--stream-uploads {}`); of the (b) uploads, {} were put while they arrived \
         and {} once they were all in. The server's group commits (every command of the run, `--append-scripts \
         {}`): {}.",
        if options.stream_uploads { "goes on to S3 while it arrives" } else { "is put once it is all in" },
        options.stream_uploads,
        put_counts.0,
        put_counts.1,
        options.append_scripts,
        commits.describe(),
    );
    println!();
    println!(
        "(a) and (b) alternate in {ROUNDS} rounds of {:.1} s at each concurrency; rates are the rounds' means, \
         latencies the median of the rounds' p50 and p99, and the last column the lowest and highest ratio of one round.",
        options.seconds as f64 / ROUNDS as f64
    );
    println!();
    println!(
        "| concurrency | (a) uploads/s | (a) p50 / p99 | (b) uploads/s | (b) p50 / p99 | (b)/(a) | rounds' (b)/(a) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (concurrency, r) in &rows {
        println!(
            "| {concurrency} | {:.1} | {} / {} | {:.1} | {} / {} | {:.2} | {:.2}–{:.2} |",
            r.direct.0,
            ms(r.direct.1),
            ms(r.direct.2),
            r.through_api.0,
            ms(r.through_api.1),
            ms(r.through_api.2),
            r.through_api.0 / r.direct.0,
            r.lowest,
            r.highest,
        );
    }
    println!();
    println!("target (b)/(a) >= 0.7");
    println!();
    println!(
        "Where (b)'s time goes inside the server: means per upload over each concurrency's (b) rounds, from its \
         `/metrics` (the request, from reading its body to its answer; receiving the multipart body into memory or a \
         temporary file, scanned on the way; the photo's put into S3; the command; the wait for the posts read \
         model; the rest: GraphQL, the check and reading the post back), and the server process's CPU time \
         (user and system) over the level per (b) upload."
    );
    println!();
    println!(
        "| concurrency | (a) p50 | request | receive | photo put | command | read wait | rest | server CPU per upload |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ((concurrency, means, cpu), (_, r)) in inside.iter().zip(&rows) {
        let cpu = cpu.map_or_else(|| "–".to_string(), ms);
        println!("| {concurrency} | {} | {} | {cpu} |", ms(r.direct.1), means.cells());
    }
    println!();
    println!(
        "Server memory (VmRSS) during {} concurrent uploads, one size after the other: {:.1} MiB before;",
        options.memory_concurrency,
        mib(before),
    );
    println!();
    println!("| photo size | uploads in flight | peak | more than before |");
    println!("|---|---|---|---|");
    for (size, peak) in peaks {
        println!(
            "| {size} MiB | {} MiB | {:.1} MiB | {:.1} MiB |",
            options.memory_concurrency * size,
            mib(peak),
            mib(peak.saturating_sub(before)),
        );
    }
    Ok(())
}

/// The server's histograms that split a `createPost` with a photo, as
/// running totals (seconds, count).
struct Stages([Option<(f64, f64)>; 5]);

impl Stages {
    /// Name and label filter of each histogram, in the table's order.
    const HISTOGRAMS: [(&'static str, &'static str); 5] = [
        ("pointstream_graphql_request_seconds", ""),
        ("pointstream_upload_receive_seconds", ""),
        ("pointstream_photo_put_seconds", ""),
        ("pointstream_command_seconds", "command=\"create_post\""),
        ("pointstream_read_wait_seconds", "projection=\"posts\""),
    ];

    async fn read(http: &reqwest::Client, url: &str) -> anyhow::Result<Stages> {
        let text = http.get(url).send().await?.error_for_status()?.text().await?;
        Ok(Stages(Self::HISTOGRAMS.map(|(name, label)| histogram_totals(&text, name, label))))
    }

    /// The mean of each between this reading and `later`.
    fn means_until(&self, later: &Stages) -> StageMeans {
        StageMeans(std::array::from_fn(|i| mean_between(self.0[i], later.0[i])))
    }
}

/// Each stage's mean per upload ([`Stages::HISTOGRAMS`]' order).
struct StageMeans([Option<Duration>; 5]);

impl StageMeans {
    /// The cells of one row: each stage, then what the stages leave of the request.
    fn cells(&self) -> String {
        let shown = |d: Option<Duration>| d.map_or_else(|| "–".to_string(), ms);
        let [request, stages @ ..] = self.0;
        let rest = request.map(|request| stages.iter().flatten().fold(request, |left, d| left.saturating_sub(*d)));
        let mut cells: Vec<String> = self.0.iter().copied().map(shown).collect();
        cells.push(shown(rest));
        cells.join(" | ")
    }
}

/// One figure: uploads per second, p50 and p99.
type Figure = (f64, Duration, Duration);

/// (a) direct `PutObject`s of `photo` for `duration`.
async fn put_directly(
    direct: &S3Store,
    bucket: &str,
    photo: &bytes::Bytes,
    concurrency: usize,
    duration: Duration,
    tag: &str,
) -> anyhow::Result<Figure> {
    let (client, bucket, bytes, tag) = (direct.client().clone(), bucket.to_string(), photo.clone(), tag.to_string());
    throughput_and_latency(concurrency, duration, move |w, i| {
        let (client, bucket, bytes) = (client.clone(), bucket.clone(), bytes.clone());
        let key = format!("direct/{tag}-{w}-{i}.jpg");
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_type("image/jpeg")
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
            Ok(())
        }
    })
    .await
}

/// (b) `createPost`s with `photo` through the API for `duration`.
async fn put_through_api(
    http: &reqwest::Client,
    url: &Arc<String>,
    token: &Arc<String>,
    photo: &bytes::Bytes,
    concurrency: usize,
    duration: Duration,
    tag: &str,
) -> anyhow::Result<Figure> {
    let (http, url, token, bytes, tag) = (http.clone(), url.clone(), token.clone(), photo.clone(), tag.to_string());
    throughput_and_latency(concurrency, duration, move |w, i| {
        let (http, url, token, bytes) = (http.clone(), url.clone(), token.clone(), bytes.clone());
        let key = format!("p{tag}-{w}-{i}");
        async move { upload(&http, &url, &token, &key, bytes).await }
    })
    .await
}

/// The alternating rounds of one concurrency level, summed up.
struct Rounds {
    direct: Figure,
    through_api: Figure,
    lowest: f64,
    highest: f64,
}

impl Rounds {
    fn of(pairs: Vec<(Figure, Figure)>) -> Rounds {
        let summary = |figures: Vec<Figure>| -> Figure {
            let mean = figures.iter().map(|f| f.0).sum::<f64>() / figures.len().max(1) as f64;
            let median = |mut values: Vec<Duration>| {
                values.sort_unstable();
                values.get(values.len() / 2).copied().unwrap_or_default()
            };
            (mean, median(figures.iter().map(|f| f.1).collect()), median(figures.iter().map(|f| f.2).collect()))
        };
        let ratios: Vec<f64> = pairs.iter().map(|(a, b)| b.0 / a.0).collect();
        Rounds {
            lowest: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            highest: ratios.iter().copied().fold(0.0, f64::max),
            direct: summary(pairs.iter().map(|p| p.0).collect()),
            through_api: summary(pairs.into_iter().map(|p| p.1).collect()),
        }
    }
}
