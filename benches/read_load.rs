//! Concurrent profile reads over gRPC against a running server: reads per second and latency
//! percentiles. `scripts/read-bench.sh` builds the data (1,000,000 records and residents with
//! full ~2,100-tag profiles), starts the server and runs this; by hand:
//!
//!     cargo bench --bench read_load -- --server http://127.0.0.1:50051 --persons ids.txt \
//!         [--clients 32] [--seconds 20] [--tags name,phone]
//!
//! `ids.txt` holds one person id a line; every client cycles through them from its own offset.

use clap::Parser;
use popmaster::pb;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    server: String,
    /// A file of person ids, one a line.
    #[arg(long)]
    persons: std::path::PathBuf,
    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// A tag mask (comma-separated); empty reads the whole profile.
    #[arg(long, default_value = "")]
    tags: String,
    /// Accepted for `cargo bench`, which passes it to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

async fn client_loop(
    channel: Channel,
    persons: std::sync::Arc<Vec<String>>,
    offset: usize,
    mask: Vec<String>,
    until: Instant,
) -> (Vec<u32>, u64, u64) {
    let mut client = ProfileServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut latencies = Vec::new();
    let mut n_tags = 0u64;
    let mut errors = 0u64;
    let mut next = offset;
    while Instant::now() < until {
        let person_id = persons[next % persons.len()].clone();
        next += 1;
        let started = Instant::now();
        let answer = client
            .get_profile(pb::GetProfileRequest {
                person_id,
                tag_mask: mask.clone(),
            })
            .await;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        match answer {
            Ok(profile) => {
                n_tags += profile.into_inner().tags.len() as u64;
                latencies.push(micros);
            }
            Err(_) => errors += 1,
        }
    }
    (latencies, n_tags, errors)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}

fn main() {
    let args = Args::parse();
    let persons: Vec<String> = std::fs::read_to_string(&args.persons)
        .expect("the persons file is readable")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    assert!(!persons.is_empty(), "the persons file lists no person");
    let persons = std::sync::Arc::new(persons);
    let mask: Vec<String> = args
        .tags
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(String::from)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..args.clients {
            channels.push(
                Channel::from_shared(args.server.clone())
                    .expect("a server URL")
                    .connect()
                    .await
                    .expect("the server answers"),
            );
        }
        // Warm-up: one pass over the persons, so the first reads of a cold cache do not count.
        let warm_until = Instant::now() + Duration::from_secs(2);
        client_loop(channels[0].clone(), persons.clone(), 0, mask.clone(), warm_until).await;
        let started = Instant::now();
        let until = started + Duration::from_secs(args.seconds);
        let tasks: Vec<_> = channels
            .into_iter()
            .enumerate()
            .map(|(idx, channel)| {
                let offset = idx * persons.len() / args.clients.max(1);
                tokio::spawn(client_loop(channel, persons.clone(), offset, mask.clone(), until))
            })
            .collect();
        let mut latencies = Vec::new();
        let (mut n_tags, mut errors) = (0u64, 0u64);
        for task in tasks {
            let (task_latencies, task_tags, task_errors) = task.await.expect("client task");
            latencies.extend(task_latencies);
            n_tags += task_tags;
            errors += task_errors;
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let n = latencies.len();
        println!(
            "GetProfile ({}): {} clients, {} reads in {:.1} s: {:.0} reads/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} tags a profile; {} errors",
            if mask.is_empty() { "whole profiles".to_string() } else { format!("mask {}", mask.join(",")) },
            args.clients,
            n,
            elapsed,
            n as f64 / elapsed,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            n_tags as f64 / n.max(1) as f64,
            errors
        );
    });
}
