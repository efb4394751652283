//! The test server and small helpers shared by the integration tests.

use popmaster::catalog::Catalog;
use popmaster::cleanse::id_number::check_digit;
use popmaster::config::Config;
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;
use popmaster::pb::ingest_service_client::IngestServiceClient;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// The server in this process: a data directory (its own temp dir, or the caller's),
/// 127.0.0.1:0 for gRPC and for the metrics endpoint, `popmaster::serve`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    data_dir: PathBuf,
    temp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), popmaster::server::ServeError>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Config::default()).await
    }

    /// A fresh data directory; the index refreshes every 50 ms.
    pub async fn start_with(mut config: Config) -> TestServer {
        config.index.refresh_interval_ms = 50;
        TestServer::start_in(tempfile::tempdir().expect("temp dir"), config).await
    }

    /// On `data_dir` (which `stop` gives back), with `config` as it is.
    pub async fn start_in(data_dir: tempfile::TempDir, config: Config) -> TestServer {
        TestServer::launch(data_dir.path().join("data"), Some(data_dir), config).await
    }

    /// On a data directory the caller owns (a restored one, say); the index refreshes every
    /// 50 ms.
    pub async fn start_on(data_dir: &Path, mut config: Config) -> TestServer {
        config.index.refresh_interval_ms = 50;
        TestServer::launch(data_dir.to_path_buf(), None, config).await
    }

    async fn launch(data_dir: PathBuf, temp: Option<tempfile::TempDir>, mut config: Config) -> TestServer {
        config.data_dir = data_dir.clone();
        // A TLS server does not answer plain-text health checks: its test waits for it itself.
        let plain_text = config.tls.cert_file.is_none();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics_addr = metrics_listener.local_addr().expect("local addr");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(popmaster::serve(
            config,
            Catalog::shipped(),
            listener,
            Some(metrics_listener),
            async {
                let _ = stop.await;
            },
        ));
        let server = TestServer {
            addr,
            metrics_addr,
            data_dir,
            temp,
            shutdown: Some(shutdown),
            task: Some(task),
        };
        if plain_text {
            wait_until_serving(&server.url()).await;
        }
        server
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.url()).await.expect("connect to test server")
    }

    pub async fn ingest_client(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel().await)
    }

    pub async fn profile_client(&self) -> ProfileServiceClient<Channel> {
        ProfileServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    pub async fn admin_client(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Shuts the server down in order; returns its own temp dir (none for a directory the
    /// caller owns), to start again on it.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ends cleanly");
        }
        self.temp.take()
    }
}

pub async fn connect(url: &str) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("valid url")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// Polls grpc.health.v1 until the ingest service reports SERVING.
pub async fn wait_until_serving(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = connect(url).await {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let request = tonic_health::pb::HealthCheckRequest {
                service: "popmaster.v1.IngestService".into(),
            };
            if let Ok(response) = health.check(request).await {
                if response.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "server at {url} did not start serving in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the index has applied every change of the feed and holds one document for
/// each person of the store; the stats that say so.
pub async fn index_caught_up(url: &str) -> pb::Stats {
    let channel = connect(url).await.expect("connect");
    let mut admin = pb::admin_service_client::AdminServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = admin
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("stats")
            .into_inner();
        if stats.index_watermark == stats.change_sequence && stats.index_persons == stats.n_persons {
            return stats;
        }
        assert!(Instant::now() < deadline, "the index did not catch up: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The profiles `request` exports, keyed by person id (each id once).
pub async fn exported_profiles(
    client: &mut ProfileServiceClient<tonic::transport::Channel>,
    request: pb::ExportProfilesRequest,
) -> BTreeMap<String, pb::Profile> {
    let mut chunks = client
        .export_profiles(request)
        .await
        .expect("export starts")
        .into_inner();
    let mut profiles = BTreeMap::new();
    while let Some(chunk) = chunks.message().await.expect("export chunk") {
        for profile in chunk.profiles {
            let person_id = profile.person_id.clone();
            assert!(profiles.insert(person_id, profile).is_none(), "a person exported twice");
        }
    }
    profiles
}

/// The persons the store at `url` holds, with their versions, from an export of every
/// profile (narrowed to one tag).
pub async fn stored_persons(url: &str) -> BTreeMap<String, u64> {
    let mut client =
        ProfileServiceClient::new(connect(url).await.expect("connect")).max_decoding_message_size(64 * 1024 * 1024);
    let request = pb::ExportProfilesRequest {
        tag_mask: vec!["name".into()],
        compact: true,
    };
    exported_profiles(&mut client, request)
        .await
        .into_iter()
        .map(|(person_id, profile)| (person_id, profile.version))
        .collect()
}

/// Checks the candidate index the server left in `data_dir` (stopped since) against `stored`,
/// the persons its store held and their versions: each stored person indexed once, at its
/// version, and no other. What `index_caught_up` checks only counts.
pub fn assert_index_holds_each_person_once(data_dir: &Path, stored: &BTreeMap<String, u64>) {
    let home = popmaster_index::IndexHome::open(&data_dir.join("index")).expect("index home");
    let index = popmaster_index::CandidateIndex::open(&home.current_dir(), &popmaster_index::IndexConfig::default())
        .expect("the index opens");
    let documents = index.documents().expect("documents");
    let n_documents = documents.len();
    let indexed: BTreeMap<String, u64> = documents.into_iter().collect();
    assert_eq!(n_documents, indexed.len(), "a person indexed twice");
    let missing: Vec<&String> = stored.keys().filter(|id| !indexed.contains_key(*id)).take(5).collect();
    let extra: Vec<&String> = indexed.keys().filter(|id| !stored.contains_key(*id)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the index differs from the store: not indexed {missing:?}, indexed and not stored {extra:?}"
    );
    let stale: Vec<(&String, u64, u64)> = stored
        .iter()
        .filter(|(id, version)| indexed[*id] != **version)
        .map(|(id, version)| (id, indexed[id], *version))
        .take(5)
        .collect();
    assert!(
        stale.is_empty(),
        "indexed at another version than stored (id, indexed, stored): {stale:?}"
    );
}

/// A seeded synthetic population (`popmaster::synth`) as records to send.
pub fn synthetic_records(seed: u64, n_persons: usize) -> Vec<pb::Record> {
    let config = popmaster::synth::SynthConfig {
        seed,
        n_persons,
        ..popmaster::synth::SynthConfig::default()
    };
    popmaster::synth::Generator::new(config, &Catalog::shipped())
        .map(|synth| {
            let raw = synth.to_raw_record();
            pb::Record {
                source: raw.key.source.to_string(),
                record_id: raw.key.record_id,
                observed_at: String::new(),
                tags: raw
                    .tags
                    .into_iter()
                    .map(|(tag, value)| (tag.to_string(), value))
                    .collect(),
            }
        })
        .collect()
}

pub fn record(source: &str, record_id: &str, tags: &[(&str, &str)]) -> pb::Record {
    pb::Record {
        source: source.into(),
        record_id: record_id.into(),
        observed_at: String::new(),
        tags: tags
            .iter()
            .map(|(tag, value)| (tag.to_string(), value.to_string()))
            .collect(),
    }
}

/// A valid synthetic resident ID number: region 330106, the given birth date, sequence `n`.
pub fn id_number(birth_yyyymmdd: &str, n: u32) -> String {
    let first17 = format!("330106{birth_yyyymmdd}{:03}", n % 1000);
    let bytes: &[u8; 17] = first17.as_bytes().try_into().expect("17 digits");
    format!("{first17}{}", char::from(check_digit(bytes)))
}

/// Sends one batch on a fresh stream and returns its answer.
pub async fn ingest(
    client: &mut IngestServiceClient<Channel>,
    records: Vec<pb::Record>,
) -> Result<pb::BatchOutcome, tonic::Status> {
    let batch = pb::RecordBatch { batch_id: 1, records };
    let mut answers = client
        .stream_records(tokio_stream::iter(vec![batch]))
        .await?
        .into_inner();
    let answer = answers.message().await?.expect("one answer per batch");
    Ok(answer)
}

pub fn decisions(outcome: &pb::BatchOutcome) -> Vec<pb::Decision> {
    outcome
        .outcomes
        .iter()
        .map(|o| pb::Decision::try_from(o.decision).expect("known decision"))
        .collect()
}

pub async fn stats(server: &TestServer) -> pb::Stats {
    server
        .admin_client()
        .await
        .get_stats(pb::GetStatsRequest {})
        .await
        .expect("stats")
        .into_inner()
}

/// Runs the `popmaster` client with `args` against `server` (off the runtime, which serves).
pub async fn popmaster(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"));
    command.args(args).args(["--server", &server.url()]);
    tokio::task::spawn_blocking(move || command.output().expect("popmaster runs"))
        .await
        .expect("client task")
}

/// Every message of a server stream, to its end.
pub async fn all_messages<T>(mut stream: tonic::Streaming<T>) -> Vec<T> {
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.expect("a stream message") {
        messages.push(message);
    }
    messages
}

/// Waits until the search index has caught up with the store.
pub async fn wait_for_index(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = stats(server).await;
        if stats.index_watermark == stats.change_sequence {
            return;
        }
        assert!(Instant::now() < deadline, "index did not catch up: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole record -> person mapping.
pub async fn export(client: &mut ProfileServiceClient<Channel>) -> Vec<pb::MappingRow> {
    let mut chunks = client
        .export_mapping(pb::ExportMappingRequest {})
        .await
        .expect("export starts")
        .into_inner();
    let mut rows = Vec::new();
    while let Some(chunk) = chunks.message().await.expect("export chunk") {
        rows.extend(chunk.rows);
    }
    rows
}

pub fn profile_values(profile: &pb::Profile) -> HashMap<String, String> {
    profile
        .tags
        .iter()
        .map(|tag| (tag.tag.clone(), tag.value.clone()))
        .collect()
}

/// The `popmaster` binary as a child process, for tests that kill or signal it.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub log_path: PathBuf,
}

impl ServerProcess {
    pub async fn spawn(data_dir: &Path, log_path: &Path) -> ServerProcess {
        ServerProcess::spawn_with(data_dir, log_path, "info", &[]).await
    }

    /// With the log filter `log` (`POPMASTER_LOG`) and more `serve` arguments.
    pub async fn spawn_with(data_dir: &Path, log_path: &Path, log_filter: &str, args: &[&str]) -> ServerProcess {
        let server = ServerProcess::start(data_dir, log_path, log_filter, args, &[]);
        wait_until_serving(&server.url).await;
        server
    }

    /// Starts the process, with `envs` added to its environment, and returns at once, before
    /// it serves (it may be opening the store, replaying its log or failing to start).
    pub fn start(
        data_dir: &Path,
        log_path: &Path,
        log_filter: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> ServerProcess {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
            probe.local_addr().expect("probe addr").port()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_popmaster"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // Any free port: several servers run at once, and these tests do not scrape.
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env("POPMASTER_LOG", log_filter)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn popmaster serve");
        let url = format!("http://127.0.0.1:{port}");
        ServerProcess {
            child,
            url,
            log_path: log_path.to_path_buf(),
        }
    }

    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// A test that fails before it stops its server must not leave the process running.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
