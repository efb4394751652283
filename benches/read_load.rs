//! Concurrent profile reads over gRPC against a running server: reads per second and latency
//! percentiles. `scripts/read-bench.sh` builds the data (1,000,000 records and residents with
//! full ~2,100-tag profiles), starts the server and runs this; by hand:
//!
//!     cargo bench --bench read_load -- --server http://127.0.0.1:50051 --persons ids.txt \
//!         [--clients 32] [--seconds 20] [--tags name,phone] [--forward] [--compact] [--canned]
//!
//! With `--forward` each client takes a profile as a gateway that passes it on would: it
//! checks the person id and counts the tags, keeping each tag as its bytes (no copy), instead
//! of decoding all five strings of every tag. On a machine shared with the server that leaves
//! the cores to the server, so the figure is the server's.
//!
//! `ids.txt` holds one person id a line; every client cycles through them from its own offset.
//! With `--search records.jsonl` the clients call SearchPersons instead, with the name and
//! birth date of every 20th record that has both (as a clerk would type them).
//!
//! With `--canned` the clients measure the transport alone: the first person's answer is
//! fetched from `--server` once, as bytes, and a child process of this program serves exactly
//! those bytes to every GetProfile (popmaster's own transport set-up, with no store, no
//! encoding and no audit), and the same clients call it. That is the most any server could
//! answer on this machine with these clients.

use clap::Parser;
use popmaster::pb;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[arg(long, required_unless_present = "serve_canned")]
    server: Option<String>,
    /// A file of person ids, one a line.
    #[arg(long, required_unless_present_any = ["search", "serve_canned"])]
    persons: Option<std::path::PathBuf>,
    /// Interchange records (JSONL) whose names and birth dates become SearchPersons queries.
    #[arg(long)]
    search: Option<std::path::PathBuf>,
    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// A tag mask (comma-separated); empty reads the whole profile.
    #[arg(long, default_value = "")]
    tags: String,
    /// Take each profile as its tags' bytes, as a forwarding gateway would, not decoded.
    #[arg(long)]
    forward: bool,
    /// Ask for compact profiles (each record named once, the values pointing at it).
    #[arg(long)]
    compact: bool,
    /// Serve the first person's answer, fetched once, from a process that does nothing else,
    /// and call that instead: the transport's own bound.
    #[arg(long, conflicts_with = "search")]
    canned: bool,
    /// The child's side of `--canned`: serve the GetProfile answer in this file on a loopback
    /// port, printed on the first line of standard output, until killed.
    #[arg(long, hide = true)]
    serve_canned: Option<std::path::PathBuf>,
    /// Accepted for `cargo bench`, which passes it to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What the clients ask: profiles by id, or searches by name and birth date.
#[derive(Clone)]
enum Work {
    Profiles {
        persons: Vec<String>,
        mask: Vec<String>,
        forward: bool,
        compact: bool,
    },
    Searches(Vec<(String, String)>),
}

impl Work {
    fn len(&self) -> usize {
        match self {
            Work::Profiles { persons, .. } => persons.len(),
            Work::Searches(queries) => queries.len(),
        }
    }
}

/// `pb::Profile` as a forwarding gateway takes it: each tag kept as its encoded bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedProfile {
    #[prost(string, tag = "1")]
    person_id: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    tags: Vec<bytes::Bytes>,
}

async fn forwarded_profile(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: pb::GetProfileRequest,
) -> Result<usize, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let asked = request.person_id.clone();
    let path = http::uri::PathAndQuery::from_static(GET_PROFILE);
    let codec = tonic_prost::ProstCodec::<pb::GetProfileRequest, ForwardedProfile>::default();
    let profile = grpc
        .unary(tonic::Request::new(request), path, codec)
        .await?
        .into_inner();
    if profile.person_id != asked {
        return Err(tonic::Status::data_loss("the profile of another person"));
    }
    Ok(profile.tags.len())
}

/// Calls until `until`; returns the latencies (µs), the items returned (tags or persons) and
/// the errors.
async fn client_loop(
    channel: Channel,
    work: std::sync::Arc<Work>,
    offset: usize,
    until: Instant,
) -> (Vec<u32>, u64, u64) {
    let mut forwarding = tonic::client::Grpc::new(channel.clone()).max_decoding_message_size(64 << 20);
    let mut client = ProfileServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut latencies = Vec::new();
    let mut n_items = 0u64;
    let mut errors = 0u64;
    let mut next = offset;
    while Instant::now() < until {
        let idx = next % work.len();
        next += 1;
        let started = Instant::now();
        let items = match work.as_ref() {
            Work::Profiles {
                persons,
                mask,
                forward: true,
                compact,
            } => {
                let request = pb::GetProfileRequest {
                    person_id: persons[idx].clone(),
                    tag_mask: mask.clone(),
                    compact: *compact,
                };
                forwarded_profile(&mut forwarding, request).await
            }
            Work::Profiles {
                persons, mask, compact, ..
            } => client
                .get_profile(pb::GetProfileRequest {
                    person_id: persons[idx].clone(),
                    tag_mask: mask.clone(),
                    compact: *compact,
                })
                .await
                .map(|profile| profile.into_inner().tags.len()),
            Work::Searches(queries) => client
                .search_persons(pb::SearchPersonsRequest {
                    name: queries[idx].0.clone(),
                    birth_date: queries[idx].1.clone(),
                    ..Default::default()
                })
                .await
                .map(|found| found.into_inner().persons.len()),
        };
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        match items {
            Ok(items) => {
                n_items += items as u64;
                latencies.push(micros);
            }
            Err(_) => errors += 1,
        }
    }
    (latencies, n_items, errors)
}

/// Name and birth date of every 20th record that has both.
fn search_queries(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .expect("the records file is readable")
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|record| {
            let tags = record.get("tags")?;
            let name = tags.get("name")?.as_str()?.to_string();
            let birth_date = tags.get("birth_date")?.as_str()?.to_string();
            Some((name, birth_date))
        })
        .step_by(20)
        .collect()
}

/// The server's answer to one GetProfile, as bytes: decoded and encoded again by prost, which
/// gives the bytes the server sent (a property test holds its encoding equal to prost's).
async fn fetch_answer(server: &str, request: pb::GetProfileRequest) -> bytes::Bytes {
    let channel = Channel::from_shared(server.to_string())
        .expect("a server URL")
        .connect()
        .await
        .expect("the server answers");
    let profile = ProfileServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .get_profile(request)
        .await
        .expect("the server answers GetProfile")
        .into_inner();
    bytes::Bytes::from(prost::Message::encode_to_vec(&profile))
}

const GET_PROFILE: &str = "/popmaster.v1.ProfileService/GetProfile";

/// `ProfileService` answering every GetProfile with the same bytes, and nothing else.
#[derive(Clone)]
struct CannedProfiles(bytes::Bytes);

struct CannedAnswer(bytes::Bytes);

impl tonic::server::UnaryService<pb::GetProfileRequest> for CannedAnswer {
    type Response = bytes::Bytes;
    type Future = std::future::Ready<Result<tonic::Response<bytes::Bytes>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<pb::GetProfileRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.0.clone())))
    }
}

impl tonic::server::NamedService for CannedProfiles {
    const NAME: &'static str = "popmaster.v1.ProfileService";
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for CannedProfiles {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let answer = CannedAnswer(self.0.clone());
        Box::pin(async move {
            if request.uri().path() != GET_PROFILE {
                return Ok(tonic::Status::unimplemented("only GetProfile is served here").into_http());
            }
            let codec = popmaster::api::encoded::EncodedCodec::<pb::GetProfileRequest, bytes::Bytes>::default();
            Ok(tonic::server::Grpc::new(codec).unary(answer, request).await)
        })
    }
}

/// The child of `--canned`: serves the answer through popmaster's own transport set-up
/// (`server::transport_builder`, `server::accepted_without_nagle`) until it is killed.
fn serve_canned(answer_file: &std::path::Path) {
    let answer = bytes::Bytes::from(std::fs::read(answer_file).expect("the answer file is readable"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        println!("{}", listener.local_addr().expect("bound").port());
        popmaster::server::transport_builder()
            .add_service(CannedProfiles(answer))
            .serve_with_incoming(popmaster::server::accepted_without_nagle(listener))
            .await
            .expect("serves");
    });
}

/// The child process of `--canned`, killed when dropped (a panicking run leaves no server).
struct CannedServer(std::process::Child);

impl Drop for CannedServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve_canned` in a child process with the answer to `request`; returns the child
/// and its URL.
fn start_canned_server(server: &str, request: pb::GetProfileRequest) -> (CannedServer, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answer = runtime.block_on(fetch_answer(server, request));
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), &answer).expect("the answer is written");
    let mut child = CannedServer(
        std::process::Command::new(std::env::current_exe().expect("this program"))
            .arg("--serve-canned")
            .arg(file.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the canned server starts"),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().expect("piped")),
        &mut port,
    )
    .expect("the canned server prints its port");
    let port: u16 = port.trim().parse().expect("a port");
    println!("canned answer: {} bytes, served on port {port}", answer.len());
    (child, format!("http://127.0.0.1:{port}"))
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
    if let Some(answer_file) = &args.serve_canned {
        serve_canned(answer_file);
        return;
    }
    let mut server = args.server.clone().expect("clap requires --server");
    let mask: Vec<String> = args
        .tags
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(String::from)
        .collect();
    let work = match (&args.search, &args.persons) {
        (Some(records), _) => Work::Searches(search_queries(records)),
        (None, Some(persons)) => Work::Profiles {
            persons: std::fs::read_to_string(persons)
                .expect("the persons file is readable")
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(String::from)
                .collect(),
            mask: mask.clone(),
            forward: args.forward,
            compact: args.compact,
        },
        (None, None) => unreachable!("clap requires one"),
    };
    assert!(work.len() > 0, "nothing to ask for");
    // The transport alone: one person's answer, served by a process that does nothing else.
    let mut canned = None;
    let work = match work {
        Work::Profiles {
            persons,
            mask,
            forward,
            compact,
        } if args.canned => {
            let request = pb::GetProfileRequest {
                person_id: persons[0].clone(),
                tag_mask: mask.clone(),
                compact,
            };
            let (child, url) = start_canned_server(&server, request);
            canned = Some(child);
            server = url;
            Work::Profiles {
                persons: vec![persons[0].clone()],
                mask,
                forward,
                compact,
            }
        }
        work => work,
    };
    let label = match &work {
        Work::Searches(_) => "SearchPersons (name and birth date)".to_string(),
        Work::Profiles { .. } if mask.is_empty() => "GetProfile (whole profiles)".to_string(),
        Work::Profiles { .. } => format!("GetProfile (mask {})", mask.join(",")),
    };
    let label = if args.forward && !matches!(work, Work::Searches(_)) {
        format!("{label}, forwarded")
    } else {
        label
    };
    let label = if args.compact && !matches!(work, Work::Searches(_)) {
        format!("{label}, compact")
    } else {
        label
    };
    let label = if canned.is_some() {
        format!("{label}, canned answer (transport alone)")
    } else {
        label
    };
    let items = if matches!(work, Work::Searches(_)) {
        "persons an answer"
    } else {
        "tags a profile"
    };
    let work = std::sync::Arc::new(work);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..args.clients {
            channels.push(
                Channel::from_shared(server.clone())
                    .expect("a server URL")
                    .connect()
                    .await
                    .expect("the server answers"),
            );
        }
        // Warm-up: one pass over the persons, so the first reads of a cold cache do not count.
        let warm_until = Instant::now() + Duration::from_secs(2);
        client_loop(channels[0].clone(), work.clone(), 0, warm_until).await;
        let started = Instant::now();
        let until = started + Duration::from_secs(args.seconds);
        let tasks: Vec<_> = channels
            .into_iter()
            .enumerate()
            .map(|(idx, channel)| {
                let offset = idx * work.len() / args.clients.max(1);
                tokio::spawn(client_loop(channel, work.clone(), offset, until))
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
            "{label}: {} clients, {} calls in {:.1} s: {:.0} calls/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.1} {items}; {} errors",
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
    drop(canned);
}
