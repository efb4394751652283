//! kill -9 during streaming ingest: several concurrent streams, the server SIGKILLed at
//! random points at least ten times and restarted, clients resending what was not
//! acknowledged; and again with its restarts killed while they recover, aborted at named crash
//! points, and killed during the index's merges. Every acknowledged record must be stored
//! exactly once, at its latest version.

use crate::common::*;
use popmaster::pb;
use popmaster::pb::ingest_service_client::IngestServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const N_STREAMS: usize = 4;
const N_KILLS: usize = 12;
const BATCHES_PER_STREAM: usize = 150;
const RECORDS_PER_BATCH: usize = 40;

/// One stream's workload: batches in order; about 10% of records update an earlier record of
/// the same stream with new content.
fn workload(stream_idx: usize, n_batches: usize, rng: &mut StdRng) -> Vec<pb::RecordBatch> {
    let source = ["D01", "D03", "D05", "D07"][stream_idx];
    let mut n_keys = 0u32;
    (0..n_batches)
        .map(|batch_idx| {
            let records = (0..RECORDS_PER_BATCH)
                .map(|record_idx| {
                    let is_update = n_keys > 0 && rng.gen_bool(0.1);
                    let key_idx = if is_update {
                        rng.gen_range(0..n_keys)
                    } else {
                        n_keys += 1;
                        n_keys - 1
                    };
                    // Each key has its own ID number, so its person holds it alone and the
                    // profile shows exactly the latest version of the record.
                    let birth = format!("19{:02}01{:02}", 40 + stream_idx, 1 + key_idx / 1000);
                    let id = id_number(&birth, key_idx % 1000);
                    let version_tag = format!("v{batch_idx}-{record_idx}");
                    record(
                        source,
                        &format!("k{key_idx}"),
                        &[("id_number", &id), ("name", "测试"), ("address", &version_tag)],
                    )
                })
                .collect();
            pb::RecordBatch {
                batch_id: batch_idx as u64,
                records,
            }
        })
        .collect()
}

/// Sends batches from `acked` onward on one stream until done or the stream fails; advances
/// `acked` for every answered batch.
async fn run_stream(url: String, batches: Arc<Vec<pb::RecordBatch>>, acked: Arc<AtomicUsize>) {
    let Ok(channel) = connect(&url).await else {
        return;
    };
    let mut client = IngestServiceClient::new(channel);
    let from = acked.load(Ordering::SeqCst);
    if from == batches.len() {
        return;
    }
    let outgoing: Vec<pb::RecordBatch> = batches[from..].to_vec();
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for batch in outgoing {
            if sender.send(batch).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let Ok(response) = client
        .stream_records(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
    else {
        return;
    };
    let mut answers = response.into_inner();
    while let Ok(Some(answer)) = answers.message().await {
        let expected = acked.load(Ordering::SeqCst);
        assert_eq!(answer.batch_id as usize, expected, "answers arrive in order");
        assert!(answer.durable);
        assert!(answer
            .outcomes
            .iter()
            .all(|o| o.decision != pb::Decision::Rejected as i32));
        acked.store(expected + 1, Ordering::SeqCst);
    }
}

/// The random source of a crash test: seeded from `CRASH_SEED`, or `default`; the seed is
/// printed so that a failing run can be repeated.
fn seeded(test: &str, default: u64) -> StdRng {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("{test} seed {seed} (rerun with CRASH_SEED={seed})");
    StdRng::seed_from_u64(seed)
}

/// `N_STREAMS` streams' batches, and how many of each were acknowledged.
struct Streams {
    workloads: Vec<Arc<Vec<pb::RecordBatch>>>,
    cursors: Vec<Arc<AtomicUsize>>,
}

impl Streams {
    fn new(n_batches: usize, rng: &mut StdRng) -> Streams {
        Streams {
            workloads: (0..N_STREAMS)
                .map(|stream_idx| Arc::new(workload(stream_idx, n_batches, rng)))
                .collect(),
            cursors: (0..N_STREAMS).map(|_| Arc::new(AtomicUsize::new(0))).collect(),
        }
    }

    /// Starts every stream at its first batch not acknowledged.
    fn send(&self, url: &str) -> Vec<tokio::task::JoinHandle<()>> {
        self.workloads
            .iter()
            .zip(&self.cursors)
            .map(|(batches, cursor)| tokio::spawn(run_stream(url.to_string(), Arc::clone(batches), Arc::clone(cursor))))
            .collect()
    }

    async fn join(clients: Vec<tokio::task::JoinHandle<()>>) {
        for client in clients {
            client.await.expect("client task");
        }
    }

    fn acknowledged(&self) -> Vec<usize> {
        self.cursors
            .iter()
            .map(|cursor| cursor.load(Ordering::SeqCst))
            .collect()
    }

    fn all_done(&self) -> bool {
        self.acknowledged()
            .into_iter()
            .zip(&self.workloads)
            .all(|(acknowledged, batches)| acknowledged == batches.len())
    }

    /// `finish`, then the checks every crash test ends with: every acknowledged record stored
    /// once at its latest version (the profiles of at most `profiles_checked_max` looked at),
    /// the index caught up and, once the server is stopped, holding each stored person once at
    /// its version; and no panic in the server's log.
    async fn finish_and_check(
        &self,
        data_dir: &std::path::Path,
        log_path: &std::path::Path,
        args: &[&str],
        profiles_checked_max: usize,
    ) {
        let server = self.finish(data_dir, log_path, args).await;
        verify(&server.url, &self.workloads, profiles_checked_max).await;
        index_caught_up(&server.url).await;
        let stored = stored_persons(&server.url).await;
        assert!(!server.log().contains("panicked"), "no panic in the server log");
        server.kill_9();
        assert_index_holds_each_person_once(data_dir, &stored);
    }

    /// Starts the server undisturbed (again, if a stream fails) until every batch is
    /// acknowledged, and returns it running.
    async fn finish(&self, data_dir: &std::path::Path, log_path: &std::path::Path, args: &[&str]) -> ServerProcess {
        loop {
            let server = ServerProcess::spawn_with(data_dir, log_path, "info", args).await;
            Streams::join(self.send(&server.url)).await;
            if self.all_done() {
                return server;
            }
            server.kill_9();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    let mut rng = seeded("crash test", 0x5EED);
    let streams = Streams::new(BATCHES_PER_STREAM, &mut rng);
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");

    let mut n_kills = 0;
    let mut n_kills_mid_ingest = 0;
    while n_kills < N_KILLS {
        let server = ServerProcess::spawn(&data_dir, &log_path).await;
        let clients = streams.send(&server.url);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..700))).await;
        let before = streams.acknowledged();
        server.kill_9();
        n_kills += 1;
        Streams::join(clients).await;
        if !streams.all_done() {
            n_kills_mid_ingest += 1;
        }
        eprintln!("kill {n_kills}: acknowledged batches per stream {before:?}");
    }
    streams.finish_and_check(&data_dir, &log_path, &[], usize::MAX).await;
    assert!(n_kills >= 10);
    assert!(
        n_kills_mid_ingest >= 10,
        "only {n_kills_mid_ingest} kills landed while records were streaming"
    );
    let log = std::fs::read_to_string(&log_path).expect("server log");
    eprintln!(
        "restarts that replayed the write-ahead log: {}",
        log.matches("replayed the write-ahead log").count()
    );
}

/// Every record the clients sent is stored exactly once, one person per ID number, and the
/// profiles of up to `profiles_checked_max` of them (spread over all) show its latest version.
async fn verify(url: &str, workloads: &[Arc<Vec<pb::RecordBatch>>], profiles_checked_max: usize) {
    // The model: the latest version of every record the clients sent (all were acknowledged).
    let mut model: BTreeMap<(String, String), pb::Record> = BTreeMap::new();
    for batches in workloads {
        for batch in batches.iter() {
            for record in &batch.records {
                model.insert((record.source.clone(), record.record_id.clone()), record.clone());
            }
        }
    }
    let channel = connect(url).await.expect("connect");
    let mut profiles = popmaster::pb::profile_service_client::ProfileServiceClient::new(channel.clone());
    let rows = export(&mut profiles).await;
    assert_eq!(rows.len(), model.len(), "every acknowledged record stored exactly once");
    let stored: BTreeMap<(String, String), String> = rows
        .into_iter()
        .map(|row| ((row.source, row.record_id), row.person_id))
        .collect();
    assert_eq!(stored.len(), model.len(), "no record twice");
    let stats = popmaster::pb::admin_service_client::AdminServiceClient::new(channel)
        .get_stats(pb::GetStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.n_records as usize, model.len());
    assert_eq!(stats.n_persons as usize, model.len(), "one person per ID number");
    let step = model.len().div_ceil(profiles_checked_max.max(1));
    for (key, record) in model.iter().step_by(step.max(1)) {
        let person_id = stored.get(key).expect("acknowledged record is stored");
        let profile = profiles
            .get_profile(pb::GetProfileRequest {
                person_id: person_id.clone(),
                tag_mask: vec!["address".into()],
                compact: false,
            })
            .await
            .expect("profile")
            .into_inner();
        let values = profile_values(&profile);
        assert_eq!(
            values.get("address"),
            record.tags.get("address"),
            "latest version of {key:?}"
        );
    }
}

/// A change's audit entry is written in the change's own store transaction, so an
/// acknowledged batch and a steward's merge keep their entries through kill -9 (the store's
/// checkpoint never ran; both come back from the write-ahead log), and so do reads answered
/// just before the kill (from the audit journal).
#[tokio::test]
async fn a_changes_audit_entry_survives_kill_9_with_the_change() {
    use crate::security::{callers_toml, resident};
    use popmaster::pb::admin_service_client::AdminServiceClient;
    use popmaster::pb::profile_service_client::ProfileServiceClient;
    use tonic::metadata::MetadataValue;

    let dir = tempfile::tempdir().expect("temp dir");
    let callers_path = dir.path().join("callers.toml");
    std::fs::write(&callers_path, callers_toml("token-portal")).expect("callers");
    let config_path = dir.path().join("popmaster.toml");
    std::fs::write(
        &config_path,
        format!("[auth]\ncallers_file = {:?}\n", callers_path.display().to_string()),
    )
    .expect("config");
    let config_arg = config_path.display().to_string();
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    // A caller's token, and the purpose its reads state.
    let as_caller = |token: &'static str, purpose: Option<&'static str>| {
        move |mut request: tonic::Request<()>| {
            let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii");
            request.metadata_mut().insert("authorization", value);
            if let Some(purpose) = purpose {
                request
                    .metadata_mut()
                    .insert("x-purpose", MetadataValue::from_static(purpose));
            }
            Ok(request)
        }
    };

    let server = ServerProcess::spawn_with(&data_dir, &log_path, "info", &["--config", &config_arg]).await;
    let channel = connect(&server.url).await.expect("connect");
    let mut writer = IngestServiceClient::with_interceptor(channel.clone(), as_caller("token-etl-d07", None));
    // Two residents: the steward then says they are one.
    let other = record(
        "D07",
        "r2",
        &[("name", "李四"), ("birth_date", "1985-03-04"), ("gender", "女")],
    );
    let batch = pb::RecordBatch {
        batch_id: 41,
        records: vec![resident("r1"), other],
    };
    let outcome = writer
        .stream_records(tokio_stream::iter(vec![batch]))
        .await
        .expect("stream")
        .into_inner()
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let persons: std::collections::BTreeSet<String> = outcome
        .outcomes
        .iter()
        .map(|outcome| outcome.person_id.clone())
        .collect();
    let persons: Vec<String> = persons.into_iter().collect();
    let mut steward = AdminServiceClient::with_interceptor(channel.clone(), as_caller("token-steward", None));
    assert_eq!(persons.len(), 2, "{outcome:?}");
    let merged = steward
        .merge(pb::MergeRequest {
            person_a: persons[0].clone(),
            person_b: persons[1].clone(),
            note: "one resident".into(),
        })
        .await
        .expect("merge")
        .into_inner();
    // Reads, answered only once their entries are in the audit journal: killed right after,
    // before any checkpoint or flush of the store, the entries are still there.
    let mut portal = ProfileServiceClient::with_interceptor(channel.clone(), as_caller("token-portal", Some("case-7")));
    const N_READS: usize = 20;
    for _ in 0..N_READS {
        portal
            .get_profile(pb::GetProfileRequest {
                person_id: merged.person_id.clone(),
                tag_mask: vec![],
                compact: false,
            })
            .await
            .expect("read");
    }
    server.kill_9();

    let server = ServerProcess::spawn_with(&data_dir, &log_path, "info", &["--config", &config_arg]).await;
    let channel = connect(&server.url).await.expect("connect");
    let mut ops = AdminServiceClient::with_interceptor(channel, as_caller("token-ops", None));
    let entries = |caller: &str| pb::QueryAuditRequest {
        caller: caller.into(),
        ..Default::default()
    };
    let batch_entries = ops
        .query_audit(entries("etl-d07"))
        .await
        .expect("query")
        .into_inner()
        .entries;
    let batch_entry = batch_entries
        .iter()
        .find(|entry| entry.detail.starts_with("batch 41: 2 records; sequence "))
        .unwrap_or_else(|| panic!("the batch's entry survived: {batch_entries:?}"));
    assert_eq!(batch_entry.outcome, "OK");
    assert_eq!(
        batch_entry.detail,
        format!("batch 41: 2 records; sequence {}", outcome.sequence)
    );
    for person in &persons {
        assert!(batch_entry.person_ids.contains(person), "{batch_entry:?}");
    }
    let steward_entries = ops
        .query_audit(entries("steward"))
        .await
        .expect("query")
        .into_inner()
        .entries;
    let merge_entry = steward_entries
        .iter()
        .find(|entry| entry.action == "AdminService/Merge")
        .unwrap_or_else(|| panic!("the merge's entry survived: {steward_entries:?}"));
    assert!(
        merge_entry.detail.ends_with(&format!("; sequence {}", merged.sequence)),
        "{merge_entry:?}"
    );
    for person in &persons {
        assert!(merge_entry.person_ids.contains(person), "{merge_entry:?}");
    }
    let reads = ops
        .query_audit(entries("portal"))
        .await
        .expect("query")
        .into_inner()
        .entries;
    let n_reads = reads
        .iter()
        .filter(|entry| entry.action == "ProfileService/GetProfile" && entry.purpose == "case-7")
        .count();
    assert_eq!(n_reads, N_READS, "every answered read kept its entry: {reads:?}");
    assert!(!server.log().contains("panicked"));
    server.kill_9();
}

/// Kills that must land inside a recovery phase.
const RECOVERY_KILLS: usize = 10;
/// Rounds of ingest, kill and killed restarts before the test gives up on reaching them.
const RECOVERY_ROUNDS_MAX: usize = 40;
/// Restarts killed at random points after each kill during ingest.
const RESTARTS_PER_ROUND: usize = 4;

/// The phases of a start that recover from a stop, as the log shows them begin and end.
const RECOVERY_PHASES: [(&str, &str, &str); 3] = [
    (
        "redo log",
        "applying again the batches a stop cut short",
        "applied again the batches a stop cut short",
    ),
    (
        "write-ahead log replay",
        "replaying the write-ahead log",
        "replayed the write-ahead log",
    ),
    (
        "index catch-up",
        "candidate index catching up with the change feed",
        "candidate index caught up with the change feed",
    ),
];

/// The recovery phase one start's log shows begun and not ended, if any.
fn phase_cut_short(log: &str) -> Option<&'static str> {
    RECOVERY_PHASES
        .iter()
        .find(|(_, begun, ended)| log.contains(begun) && !log.contains(ended))
        .map(|(phase, ..)| *phase)
}

/// What the log file holds from byte `from` on.
fn log_since(path: &std::path::Path, from: u64) -> String {
    let log = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&log[(from as usize).min(log.len())..]).into_owned()
}

/// kill -9 while the server recovers: after each kill during streaming ingest, the restarts
/// are killed at random points of their start and of the index's catch-up after it, until at
/// least `RECOVERY_KILLS` kills have landed inside a recovery phase (applying the redo log
/// again, replaying the write-ahead log, the index catching up; each logs its start and its
/// end). Then the server starts undisturbed and the clients send what was not acknowledged:
/// every acknowledged record is stored exactly once at its latest version, the index catches
/// up with the store, and no start panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_recovery_lose_nothing() {
    let mut rng = seeded("recovery crash test", 0xDEC0DE);
    let streams = Streams::new(BATCHES_PER_STREAM, &mut rng);
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");

    let mut kills_in: BTreeMap<&str, usize> = BTreeMap::new();
    let mut round = 0;
    while kills_in.values().sum::<usize>() < RECOVERY_KILLS {
        round += 1;
        assert!(
            round <= RECOVERY_ROUNDS_MAX,
            "only {kills_in:?} kills landed inside a recovery in {RECOVERY_ROUNDS_MAX} rounds"
        );
        // A start left undisturbed (it finishes what the last kill cut short), how long it
        // takes, and a kill while batches stream in.
        let started = std::time::Instant::now();
        let server = ServerProcess::spawn(&data_dir, &log_path).await;
        let start_takes = started.elapsed();
        let clients = streams.send(&server.url);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..600))).await;
        server.kill_9();
        Streams::join(clients).await;
        // Restarts killed at random points, up to twice as long as a start takes, until one
        // recovers completely.
        let window_ms = (start_takes.as_millis() as u64).max(100) * 2;
        for _ in 0..RESTARTS_PER_ROUND {
            let log_from = std::fs::metadata(&log_path).map_or(0, |meta| meta.len());
            let server = ServerProcess::start(&data_dir, &log_path, "info", &[], &[]);
            let at = rng.gen_range(0..window_ms);
            tokio::time::sleep(Duration::from_millis(at)).await;
            server.kill_9();
            let log = log_since(&log_path, log_from);
            assert!(!log.contains("panicked"), "a start panicked:\n{log}");
            match phase_cut_short(&log) {
                Some(phase) => {
                    *kills_in.entry(phase).or_default() += 1;
                    eprintln!("round {round}: killed {at} ms after the start, during the {phase}");
                }
                None if log.contains("popmaster serving")
                    && (!log.contains(RECOVERY_PHASES[2].1) || log.contains(RECOVERY_PHASES[2].2)) =>
                {
                    eprintln!("round {round}: killed {at} ms after the start, recovered and serving");
                    break;
                }
                None => eprintln!("round {round}: killed {at} ms after the start, before any recovery phase"),
            }
        }
    }
    eprintln!("kills inside a recovery phase: {kills_in:?} in {round} rounds");

    streams.finish_and_check(&data_dir, &log_path, &[], usize::MAX).await;
}

/// Aborts at each crash point, and the streams' batches per point.
const ABORTS_PER_POINT: usize = 5;
const CRASH_POINT_BATCHES: usize = 60;

/// Aborts at enumerated crash points (`popmaster::crash_point`, compiled into debug builds):
/// for each point of the write path, the checkpoint and the index, the server is aborted there
/// five times, each at a random count of reaching it, while four streams send batches; after
/// each abort it restarts and the clients resend what was not acknowledged. Every acknowledged
/// record is stored exactly once at its latest version, the index catches up with the store,
/// and every listed point is reached.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_at_every_crash_point_lose_nothing() {
    use popmaster::crash_point;
    let mut rng = seeded("crash point test", 0xAB0A7);
    let dir = tempfile::tempdir().expect("temp dir");
    // Frequent checkpoints and index rounds, so that each point is met often.
    let config_path = dir.path().join("popmaster.toml");
    std::fs::write(
        &config_path,
        "[wal]\ncheckpoint_interval_ms = 150\n[index]\nrefresh_interval_ms = 150\n",
    )
    .expect("config");
    let config_arg = config_path.display().to_string();
    let args = ["--config", config_arg.as_str()];
    for point in crash_point::POINTS {
        let data_dir = dir.path().join(point);
        let log_path = dir.path().join(format!("{point}.log"));
        let streams = Streams::new(CRASH_POINT_BATCHES, &mut rng);
        for abort in 1..=ABORTS_PER_POINT {
            let n = rng.gen_range(1..=2);
            let armed = format!("{point}:{n}");
            let log_from = std::fs::metadata(&log_path).map_or(0, |meta| meta.len());
            let mut server =
                ServerProcess::start(&data_dir, &log_path, "info", &args, &[(crash_point::VARIABLE, &armed)]);
            // Send until the process ends; a stream it cuts off is sent again from the first
            // batch not acknowledged.
            loop {
                if server.child.try_wait().expect("process status").is_some() {
                    break;
                }
                assert!(
                    !streams.all_done(),
                    "every batch was acknowledged and the server was never aborted at {armed}"
                );
                Streams::join(streams.send(&server.url)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let log = log_since(&log_path, log_from);
            assert!(
                log.contains(&format!("crash point {point} reached")),
                "the server ended without reaching {armed}:\n{log}"
            );
            assert!(!log.contains("panicked"), "a start panicked:\n{log}");
            eprintln!(
                "{point}: abort {abort} at the {n}th time, acknowledged batches per stream {:?}",
                streams.acknowledged()
            );
        }
        streams.finish_and_check(&data_dir, &log_path, &args, 300).await;
    }
}

/// Kills during an index merge the test aims at and needs at least, and the batches each
/// stream has for them.
const MERGE_KILLS: usize = 5;
const MERGE_KILLS_MIN: usize = 3;
const MERGE_KILL_BATCHES: usize = 120;

/// Kills the server while tantivy merges index segments, which no crash point reaches: the
/// merges run on tantivy's own threads (`merge_thread_*`). The index commits every 50 ms, so
/// small segments pile up and are merged often; the test reads the process's threads from
/// `/proc` while four streams send and, once a batch of the run is acknowledged, kills it as
/// soon as a merge thread is running (or has just finished: an idle worker spins a moment),
/// five times (at least three before the batches run out), restarting it after each. Then the clients resend what was not acknowledged, and
/// every acknowledged record is stored exactly once at its latest version, the index opens and
/// catches up, and it names each stored person once, at its stored version.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_index_merges_lose_nothing() {
    let mut rng = seeded("index merge crash test", 0x3E46E);
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let config_path = dir.path().join("popmaster.toml");
    std::fs::write(&config_path, "[index]\nrefresh_interval_ms = 50\n").expect("config");
    let config_arg = config_path.display().to_string();
    let args = ["--config", config_arg.as_str()];
    let streams = Streams::new(MERGE_KILL_BATCHES, &mut rng);
    let mut kills = 0;
    let mut round = 0;
    while kills < MERGE_KILLS && !streams.all_done() {
        round += 1;
        let log_from = std::fs::metadata(&log_path).map_or(0, |meta| meta.len());
        let server = ServerProcess::spawn_with(&data_dir, &log_path, "info", &args).await;
        let acknowledged_before: usize = streams.acknowledged().iter().sum();
        let clients = streams.send(&server.url);
        let pid = server.child.id();
        // Merges come every few hundred milliseconds: a run that sees none for 5 s is
        // killed anyway, before it has sent much of what the next runs need.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut merge_threads = Vec::new();
        // A merge while the streams send: after this run's first acknowledged batch (the
        // merges of the start itself are the recovery test's).
        let merging = loop {
            let sending = streams.acknowledged().iter().sum::<usize>() > acknowledged_before;
            if sending {
                if merge_threads.is_empty() {
                    merge_threads = merge_thread_stats(pid);
                }
                if merge_threads.iter().any(|stat| running(stat)) {
                    break true;
                }
            }
            if std::time::Instant::now() > deadline || clients.iter().all(|client| client.is_finished()) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        server.kill_9();
        Streams::join(clients).await;
        let log = log_since(&log_path, log_from);
        assert!(!log.contains("panicked"), "a run panicked:\n{log}");
        if merging {
            kills += 1;
        }
        eprintln!(
            "round {round}: killed {}, acknowledged batches per stream {:?}",
            if merging {
                "during a merge"
            } else {
                "with no merge seen"
            },
            streams.acknowledged()
        );
    }

    assert!(
        kills >= MERGE_KILLS_MIN,
        "only {kills} kills landed during a merge in {round} rounds before every batch was acknowledged"
    );

    streams.finish_and_check(&data_dir, &log_path, &args, 300).await;
}

/// The `stat` files of tantivy's merge threads of process `pid` (none before it starts them).
#[cfg(target_os = "linux")]
fn merge_thread_stats(pid: u32) -> Vec<std::path::PathBuf> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.starts_with("merge_thread"))
        })
        .map(|task| task.path().join("stat"))
        .collect()
}

/// Whether the thread whose `stat` file this is is running (state `R`).
#[cfg(target_os = "linux")]
fn running(stat: &std::path::Path) -> bool {
    // `pid (comm) state ...`: the state follows the last parenthesis.
    std::fs::read_to_string(stat)
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('R')))
}

/// A batch that fails part-way into sled (an I/O error there, armed at the crash point
/// `store-half-applied` in its `fail` mode) leaves the store torn, and the running service
/// says so everywhere: the batch is answered `UNAVAILABLE`, reads are refused rather than shown
/// half a batch, every health status is `NOT_SERVING`, and the metrics endpoint reports
/// `popmaster_store_torn 1`. The next start completes the batch from the redo log and serves
/// it whole.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_part_way_tears_the_store_until_a_restart() {
    use tonic::Code;
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let records: Vec<pb::Record> = (0..8)
        .map(|n| {
            record(
                "D07",
                &format!("torn-{n}"),
                &[("id_number", &id_number("19800101", n)), ("name", "测试")],
            )
        })
        .collect();

    let server = ServerProcess::start(
        &data_dir,
        &log_path,
        "info",
        &[],
        &[(popmaster::crash_point::VARIABLE, "store-half-applied:1:fail")],
    );
    wait_until_serving(&server.url).await;
    let channel = connect(&server.url).await.expect("connect");
    let mut ingest_client = IngestServiceClient::new(channel.clone());
    let status = ingest(&mut ingest_client, records.clone())
        .await
        .expect_err("the batch fails part-way");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let mut profiles = popmaster::pb::profile_service_client::ProfileServiceClient::new(channel.clone());
    let status = profiles
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: "D07".into(),
            record_id: "torn-0".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("a torn store serves nothing");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("stopped part-way through a batch"),
        "{status:?}"
    );

    // The health service follows the engine once a second.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for service in ["", "popmaster.v1.IngestService", "popmaster.v1.ProfileService"] {
        loop {
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health")
                .into_inner();
            if answer.status == not_serving {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{service:?} still serving");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let metrics = scrape_metrics(&server.log()).await;
    assert!(
        metrics.lines().any(|line| line == "popmaster_store_torn 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|line| line == "popmaster_store_readable 0"),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(|line| line.starts_with("popmaster_records ")),
        "the store's figures are left out: {metrics}"
    );
    // A later batch is refused too.
    let later = vec![record("D07", "later", &[("name", "测试")])];
    let status = ingest(&mut ingest_client, later).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    server.kill_9();

    // Restarted without the failure, the service completes the batch from the redo log.
    let log_from = std::fs::metadata(&log_path).map_or(0, |meta| meta.len());
    let server = ServerProcess::spawn_with(&data_dir, &log_path, "info", &[]).await;
    let log = log_since(&log_path, log_from);
    assert!(
        log.contains("applying again the batches a stop cut short (redo log)"),
        "{log}"
    );
    let mut profiles =
        popmaster::pb::profile_service_client::ProfileServiceClient::new(connect(&server.url).await.expect("connect"));
    let rows = export(&mut profiles).await;
    let stored: Vec<&str> = rows.iter().map(|row| row.record_id.as_str()).collect();
    let mut expected: Vec<String> = (0..8).map(|n| format!("torn-{n}")).collect();
    expected.sort();
    let mut stored: Vec<String> = stored.into_iter().map(str::to_string).collect();
    stored.sort();
    assert_eq!(stored, expected, "the whole batch, from the redo log");
    let metrics = scrape_metrics(&server.log()).await;
    assert!(
        metrics.lines().any(|line| line == "popmaster_store_torn 0"),
        "{metrics}"
    );
    server.kill_9();
}

/// The metrics endpoint's text, at the address the server's log gives.
async fn scrape_metrics(log: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = log
        .lines()
        .rev()
        .find(|line| line.contains("metrics endpoint serving /metrics"))
        .and_then(|line| line.split("listen=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the log names the metrics address")
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect to metrics");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}
