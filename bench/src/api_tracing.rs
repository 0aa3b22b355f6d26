//! `bench api --parts tracing`: what traces cost. Two servers, each a `bench
//! api-server` process on a database of its own: "on" exports every span of
//! every request (sampler always on) over OTLP/HTTP to a sink in this
//! process, which answers 200 and counts what it got; "off" has no OTLP
//! endpoint, so no OpenTelemetry layer at all. `earnPoints` on each, in
//! turns, so that both sides of the ratio run in the same stretches of a
//! machine whose speed drifts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use api::auth::{Claims, Role, mint, now_seconds};
use eventstore::EventStore;
use poem::{EndpointExt, Route, handler, post};

use crate::api_bench::{Earners, caught_up, connect_all, earn_op};
use crate::api_server::ServerProcess;
use crate::cpu::Meter;
use crate::measure::{Contender, Interleaved, interleave, ms, warm_up};
use crate::pointstream::register;
use crate::raw_http::RawHttp;
use crate::run::Scratch;

/// The target: earns with traces exported at no less than this share of the rate without.
const TARGET: f64 = 0.9;

/// What the sink received: export requests and their bytes.
#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

#[handler]
fn sink(received: poem::web::Data<&Arc<Received>>, body: Vec<u8>) -> poem::Response {
    received.requests.fetch_add(1, Ordering::Relaxed);
    received.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    // An empty ExportTraceServiceResponse is zero bytes of protobuf.
    poem::Response::builder().content_type("application/x-protobuf").body(Vec::<u8>::new())
}

/// A trivial OTLP/HTTP trace receiver on a free loopback port: its base URL
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`), what it counts, and its task.
async fn start_sink() -> anyhow::Result<(String, Arc<Received>, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let received = Arc::new(Received::default());
    let endpoint = Route::new().at("/v1/traces", post(sink)).data(received.clone());
    let (address, server) = api::server::bind("127.0.0.1:0".into(), |_| endpoint, std::future::pending())
        .await
        .context("the OTLP sink cannot listen on 127.0.0.1")?;
    Ok((format!("http://{address}"), received, tokio::spawn(server)))
}

pub async fn run(server: &str, options: &crate::api_bench::Options) -> anyhow::Result<()> {
    Scratch::around_all(server, ["api_traced", "api_sampled", "api_untraced"], |[on, sampled, off]| async move {
        Box::pin(measure(&on, &sampled, &off, options)).await
    })
    .await
}

/// Share of traces a sampled server keeps (`parentbased_traceidratio`).
const SAMPLED: f64 = 0.1;

async fn measure(
    on_url: &str,
    sampled_url: &str,
    off_url: &str,
    options: &crate::api_bench::Options,
) -> anyhow::Result<()> {
    let concurrency = options.concurrency.max(1);
    let earners = Earners { concurrency, per_worker: (options.members / concurrency).max(1) };
    let config = earners.store_config(options.append_scripts);
    let members = earners.members();
    for url in [on_url, sampled_url, off_url] {
        register(&EventStore::open(url, config.clone()).await?, &members).await?;
    }
    let (endpoint, received, sink_task) = start_sink().await?;
    let (sampled_endpoint, sampled_received, sampled_sink_task) = start_sink().await?;
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let env = |endpoint: &str, sampler: &str, ratio: Option<f64>| {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), endpoint.to_string()),
            ("OTEL_TRACES_SAMPLER".to_string(), sampler.to_string()),
        ];
        if let Some(ratio) = ratio {
            env.push(("OTEL_TRACES_SAMPLER_ARG".to_string(), ratio.to_string()));
        }
        env
    };
    let on = ServerProcess::spawn_with_env(on_url, &secret, &config, &[], &env(&endpoint, "always_on", None)).await?;
    let sampled_env = env(&sampled_endpoint, "parentbased_traceidratio", Some(SAMPLED));
    let sampled = ServerProcess::spawn_with_env(sampled_url, &secret, &config, &[], &sampled_env).await?;
    let off = ServerProcess::spawn(off_url, &secret, &config).await?;
    let claims = Claims {
        sub: "till".into(),
        role: Role::Staff,
        member: None,
        store: Some("cafe".into()),
        exp: now_seconds() + 3_600,
    };
    let staff = mint(secret.as_bytes(), &claims)?;
    let counted =
        |received: &Received| (received.requests.load(Ordering::Relaxed), received.bytes.load(Ordering::Relaxed));
    let measured = async {
        // The registrations' events, projected by the servers before the first earn reads a balance.
        for url in [on_url, sampled_url, off_url] {
            caught_up(url).await?;
        }
        let mut contenders = Vec::new();
        for (side, prefix) in [(&on, "on"), (&sampled, "sm"), (&off, "off")] {
            let clients = connect_all(concurrency, || RawHttp::connect(&side.address)).await?;
            let op = earn_op(&clients, &staff, earners, prefix);
            let rounds = earners.warm_up_rounds();
            warm_up(concurrency, rounds, &op).await?;
            contenders.push(Contender { op, concurrency, meter: Meter::new(Some(side.pid()?)), from: rounds });
        }
        let before = [counted(&received), counted(&sampled_received)];
        let slice = Duration::from_secs(options.seconds.max(1));
        let figures = interleave(&contenders, 6, slice).await?;
        // What the last turns' spans weigh arrives within the batch delay (5 s by default).
        tokio::time::sleep(Duration::from_secs(6)).await;
        let after = [counted(&received), counted(&sampled_received)];
        let exported: Vec<(u64, u64)> =
            before.iter().zip(after).map(|(before, after)| (after.0 - before.0, after.1 - before.1)).collect();
        anyhow::Ok((figures, exported))
    }
    .await;
    let stopped = [on.stop().await, sampled.stop().await, off.stop().await];
    sink_task.abort();
    sampled_sink_task.abort();
    let (figures, exported) = measured?;
    stopped.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let [traced, sampled, untraced] = <[Interleaved; 3]>::try_from(figures)
        .map_err(|figures| anyhow::anyhow!("{} figures measured, not 3", figures.len()))?;
    anyhow::ensure!(exported[0].0 > 0, "the traced server exported nothing to {endpoint}");
    anyhow::ensure!(exported[1].0 > 0, "the sampled server exported nothing to {sampled_endpoint}");

    let seconds = 6.0 * options.seconds.max(1) as f64;
    println!("## Traces: `earnPoints` with spans exported over OTLP, against traces off (MySQL, one run)");
    println!();
    println!(
        "{concurrency} clients, {} members, 6 turns of {} s per side, in turns; every span: \
         OTEL_TRACES_SAMPLER=always_on; sampled: parentbased_traceidratio at {SAMPLED}; both OTLP/HTTP protobuf \
         to a sink in the bench process answering 200; off: no OTLP endpoint.",
        members.len(),
        options.seconds.max(1)
    );
    println!();
    println!("| traces | earns/s | p50 | p99 | server CPU per earn | exported | ratio to off (≥ {TARGET}) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let exports = [Some(exported[0]), Some(exported[1]), None];
    for ((name, figure), export) in
        [("every span", &traced), ("sampled", &sampled), ("off", &untraced)].into_iter().zip(exports)
    {
        let export = match export {
            Some((requests, bytes)) => format!(
                "{requests} exports, {:.1} MiB, {:.0} bytes per earn",
                bytes as f64 / (1 << 20) as f64,
                bytes as f64 / (figure.rate * seconds).max(1.0)
            ),
            None => "–".to_string(),
        };
        let ratio = figure.rate / untraced.rate;
        println!(
            "| {name} | {:.0} | {} | {} | {} | {export} | {ratio:.3} {} |",
            figure.rate,
            ms(figure.p50),
            ms(figure.p99),
            ms(figure.cpu.server),
            if ratio >= TARGET { "met" } else { "not met" }
        );
    }
    Ok(())
}
