//! Operations through the real service: a backup taken while another stream keeps ingesting,
//! restored offline and served again; damaged backups and used directories refused; the
//! profile export paging through a live service.

use crate::common::*;
use popmaster::catalog::Catalog;
use popmaster::config::Config;
use popmaster::pb;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use popmaster::synth::{Generator, SynthConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;

/// Records of persons no other record meets: a surname the generator never uses, a birth
/// date before any generated one, an ID number of their own.
fn isolated_record(n: u32) -> pb::Record {
    const GIVEN: [char; 20] = [
        '鼋', '鼍', '鳌', '夔', '饕', '餮', '麒', '麟', '鸾', '鹓', '鸑', '鷟', '犼', '狻', '猊', '貔', '貅', '獬',
        '豸', '螭',
    ];
    let name = format!("亓{}{}", GIVEN[(n % 20) as usize], GIVEN[(n / 20 % 20) as usize]);
    let birth = chrono::NaiveDate::from_ymd_opt(1912, 1, 1).expect("date") + chrono::Days::new(u64::from(n));
    let id = id_number(&birth.format("%Y%m%d").to_string(), n % 1000);
    record("D01", &format!("iso-{n}"), &[("name", &name), ("id_number", &id)])
}

fn synthetic(n_persons: usize, seed: u64) -> Vec<pb::Record> {
    let config = SynthConfig {
        seed,
        n_persons,
        ..SynthConfig::default()
    };
    Generator::new(config, &Catalog::shipped())
        .map(|synth| pb::Record {
            source: synth.record.source.clone(),
            record_id: synth.record.record_id.clone(),
            observed_at: synth.record.observed_at.clone().unwrap_or_default(),
            tags: synth.record.present_tags().into_iter().collect(),
        })
        .collect()
}

/// Sends `records` in batches on one stream; every record is admitted.
async fn ingest_all(server: &TestServer, records: Vec<pb::Record>) {
    let batches: Vec<pb::RecordBatch> = records
        .chunks(200)
        .enumerate()
        .map(|(batch_idx, chunk)| pb::RecordBatch {
            batch_id: batch_idx as u64,
            records: chunk.to_vec(),
        })
        .collect();
    let mut answers = server
        .ingest_client()
        .await
        .stream_records(tokio_stream::iter(batches))
        .await
        .expect("stream")
        .into_inner();
    while let Some(answer) = answers.message().await.expect("answer") {
        assert!(answer
            .outcomes
            .iter()
            .all(|outcome| outcome.decision != pb::Decision::Rejected as i32));
    }
}

fn mapping_of(rows: Vec<pb::MappingRow>) -> BTreeMap<(String, String), String> {
    rows.into_iter()
        .map(|row| ((row.source, row.record_id), row.person_id))
        .collect()
}

async fn run_backup(server: &TestServer, dir: &Path) -> Result<Vec<pb::BackupProgress>, tonic::Status> {
    let mut stream = server
        .admin_client()
        .await
        .backup(pb::BackupRequest {
            dir: dir.display().to_string(),
        })
        .await?
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    Ok(messages)
}

/// Runs the `popmaster` binary with `args` (off the runtime, which serves).
async fn popmaster(args: Vec<String>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"));
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().expect("popmaster runs"))
        .await
        .expect("client task")
}

async fn restore(backup_dir: &Path, data_dir: &Path) -> std::process::Output {
    popmaster(vec![
        "restore".into(),
        backup_dir.display().to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ])
    .await
}

/// The batches of a stream that keeps ingesting isolated persons until told to stop: each
/// acknowledged batch's sequence and record ids.
type Acked = Arc<Mutex<Vec<(u64, Vec<String>)>>>;

async fn keep_ingesting(url: String, stop: Arc<AtomicBool>, acked: Acked) {
    let channel = connect(&url).await.expect("connect");
    let mut client = popmaster::pb::ingest_service_client::IngestServiceClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let mut answers = client
        .stream_records(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("stream")
        .into_inner();
    let mut n = 0u32;
    for batch_id in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let records: Vec<pb::Record> = (0..10)
            .map(|_| {
                n += 1;
                isolated_record(n)
            })
            .collect();
        let record_ids = records.iter().map(|record| record.record_id.clone()).collect();
        sender.send(pb::RecordBatch { batch_id, records }).await.expect("send");
        let answer = answers.message().await.expect("answer").expect("one answer per batch");
        assert!(answer
            .outcomes
            .iter()
            .all(|o| o.decision == pb::Decision::Created as i32));
        acked.lock().expect("lock").push((answer.sequence, record_ids));
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A backup taken over gRPC while another stream keeps ingesting holds exactly the state at
/// its applied sequence: restored offline and served by a second server, every record maps to
/// the same person and every profile is the same; the batches acknowledged after the backup's
/// sequence are absent, the ones before present. The restored server goes on from the next
/// sequence and rebuilds its search index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_ingesting_restores_the_state_at_its_sequence() {
    let mut config = Config::default();
    // One key per snapshot read: the backup takes many reads, and commits land between them.
    config.backup.page_keys = 1;
    let server = TestServer::start_with(config).await;
    ingest_all(&server, synthetic(200, 11)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let ingesting = tokio::spawn(keep_ingesting(server.url(), Arc::clone(&stop), Arc::clone(&acked)));
    wait_for("batches before the backup", || acked.lock().expect("lock").len() >= 3).await;

    let temp = tempfile::tempdir().expect("temp dir");
    let backup_dir = temp.path().join("backup");
    let messages = run_backup(&server, &backup_dir).await.expect("backup");
    let manifest = messages
        .last()
        .and_then(|last| last.done.clone())
        .expect("the last message has the manifest");
    let n_acked_at_backup = acked.lock().expect("lock").len();
    wait_for("batches after the backup", || {
        acked.lock().expect("lock").len() >= n_acked_at_backup + 3
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    ingesting.await.expect("ingest task");
    eprintln!(
        "backup: {} keys in {} ms, {} commits meanwhile, longest commit wait {} µs",
        manifest.n_keys, manifest.elapsed_ms, manifest.n_commits_during, manifest.commit_wait_max_micros
    );

    assert!(
        manifest.n_commits_during > 0,
        "batches were committed while the backup was read"
    );
    let applied = manifest.applied_sequence;
    let acked = acked.lock().expect("lock").clone();
    let (before, after): (Vec<_>, Vec<_>) = acked.iter().partition(|(sequence, _)| *sequence <= applied);
    assert!(
        !before.is_empty() && !after.is_empty(),
        "the stream acknowledged batches on both sides of the backup"
    );
    let absent: BTreeSet<(String, String)> = after
        .iter()
        .flat_map(|(_, record_ids)| record_ids.iter().map(|id| ("D01".to_string(), id.clone())))
        .collect();

    // The original now: everything but the batches after the backup is as it was then, since
    // the concurrent stream's persons meet no one.
    let mut original_profiles = server.profile_client().await;
    let original_mapping = mapping_of(export(&mut original_profiles).await);
    let original = exported_profiles(&mut original_profiles, Default::default()).await;
    let expected_mapping: BTreeMap<_, _> = original_mapping
        .into_iter()
        .filter(|(key, _)| !absent.contains(key))
        .collect();
    let expected_persons: BTreeSet<&String> = expected_mapping.values().collect();
    let expected: BTreeMap<String, pb::Profile> = original
        .into_iter()
        .filter(|(person_id, _)| expected_persons.contains(person_id))
        .collect();
    assert_eq!(expected.len(), expected_persons.len());
    let original_stats = stats(&server).await;
    server.stop().await;

    let restored_dir = temp.path().join("restored");
    let output = restore(&backup_dir, &restored_dir).await;
    assert!(output.status.success(), "{output:?}");
    assert!(
        !restored_dir.join("wal").exists() && !restored_dir.join("index").exists(),
        "a restore leaves no log to replay and no index"
    );

    let restored = TestServer::start_on(&restored_dir, Config::default()).await;
    let restored_stats = stats(&restored).await;
    assert_eq!(restored_stats.applied_sequence, applied);
    assert_eq!(restored_stats.change_sequence, manifest.change_sequence);
    assert_eq!(restored_stats.n_records, manifest.n_records);
    assert_eq!(restored_stats.n_records as usize, expected_mapping.len());
    assert_eq!(restored_stats.n_persons as usize, expected.len());
    assert!(restored_stats.n_records < original_stats.n_records);

    let mut profiles = restored.profile_client().await;
    let restored_mapping = mapping_of(export(&mut profiles).await);
    assert_eq!(restored_mapping, expected_mapping, "every record in the same person");
    for key in &absent {
        assert!(
            !restored_mapping.contains_key(key),
            "batch after the backup is absent: {key:?}"
        );
    }
    for (_, record_ids) in &before {
        for record_id in record_ids {
            assert!(restored_mapping.contains_key(&("D01".to_string(), record_id.clone())));
        }
    }
    let restored_profiles = exported_profiles(&mut profiles, Default::default()).await;
    assert_eq!(
        restored_profiles, expected,
        "every profile the same, version and provenance included"
    );

    // The write path goes on after the backup's sequence.
    let answer = ingest(&mut restored.ingest_client().await, vec![isolated_record(9_999)])
        .await
        .expect("ingest");
    assert_eq!(answer.sequence, applied + 1);
    // The index was rebuilt from the change feed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = stats(&restored).await;
        if now.index_watermark == now.change_sequence && now.index_persons == now.n_persons {
            break;
        }
        assert!(Instant::now() < deadline, "the index did not catch up: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    restored.stop().await;
}

/// Used directories are refused before anything is written; a damaged backup is refused
/// with what is wrong, before anything is written; a clean copy restores.
#[tokio::test]
async fn damaged_backups_and_used_directories_are_refused() {
    let server = TestServer::start().await;
    ingest_all(&server, synthetic(30, 3)).await;
    let temp = tempfile::tempdir().expect("temp dir");
    let backup_dir = temp.path().join("backup");
    run_backup(&server, &backup_dir).await.expect("backup");

    let refused = |result: Result<Vec<pb::BackupProgress>, tonic::Status>| {
        let status = result.expect_err("refused");
        (status.code(), status.message().to_string())
    };
    let (code, message) = refused(run_backup(&server, &backup_dir).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(
        message.ends_with("already holds a backup; give a new directory"),
        "{message}"
    );
    let used = temp.path().join("used");
    std::fs::create_dir(&used).expect("mkdir");
    std::fs::write(used.join("notes.txt"), b"x").expect("write");
    let (code, message) = refused(run_backup(&server, &used).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(
        message.ends_with("is not empty; give a new or empty directory"),
        "{message}"
    );
    let (code, _) = refused(run_backup(&server, Path::new("relative/backup")).await);
    assert_eq!(code, Code::InvalidArgument);
    let (code, message) = refused(run_backup(&server, &server.data_dir().join("backup")).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("inside the data directory"), "{message}");
    server.stop().await;

    // A restore into a directory that holds anything is refused, and writes nothing there.
    let output = restore(&backup_dir, &used).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(std::fs::read_dir(&used).expect("list").count(), 1);

    // One flipped byte in the middle of the dump.
    let damaged = temp.path().join("damaged");
    std::fs::create_dir(&damaged).expect("mkdir");
    for name in [popmaster::backup::DUMP_FILE, popmaster::backup::MANIFEST_FILE] {
        std::fs::copy(backup_dir.join(name), damaged.join(name)).expect("copy");
    }
    let dump = damaged.join(popmaster::backup::DUMP_FILE);
    let mut bytes = std::fs::read(&dump).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&dump, &bytes).expect("write");
    let target = temp.path().join("from-damaged");
    let output = restore(&damaged, &target).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("store.dump is damaged at byte") && stderr.contains("the frame fails its checksum"),
        "{stderr}"
    );
    assert!(!target.exists(), "nothing written from a damaged backup");

    // A manifest that disagrees with its dump.
    bytes[middle] ^= 0x01;
    std::fs::write(&dump, &bytes).expect("write");
    let manifest_path = damaged.join(popmaster::backup::MANIFEST_FILE);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("read")).expect("JSON");
    let mut edited = manifest.clone();
    edited["applied_sequence"] = serde_json::json!(manifest["applied_sequence"].as_u64().expect("number") + 1);
    std::fs::write(&manifest_path, serde_json::to_vec(&edited).expect("JSON")).expect("write");
    let output = restore(&damaged, &target).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("store.dump does not match manifest.json"), "{stderr}");
    assert!(!target.exists(), "nothing written from a damaged backup");

    // Put right, it restores.
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).expect("JSON")).expect("write");
    let output = restore(&damaged, &target).await;
    assert!(output.status.success(), "{output:?}");
}

/// The profile export pages through a live service: a person merged away before its page is
/// read is left out, one merged away after its page was sent stays once, the survivor is
/// exported once with the records it took; a tag mask narrows every profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_exported_from_a_live_service() {
    let mut config = Config::default();
    config.export.page_persons = 2;
    config.export.buffer_chunks = 1;
    let server = TestServer::start_with(config).await;
    const N_PERSONS: u32 = 600;
    let records: Vec<pb::Record> = (0..N_PERSONS).map(isolated_record).collect();
    ingest_all(&server, records.clone()).await;
    let person_of = mapping_of(export(&mut server.profile_client().await).await);
    let mut persons: Vec<String> = person_of.values().cloned().collect();
    persons.sort();

    assert_eq!(persons.len(), N_PERSONS as usize);
    let record_of: BTreeMap<&String, &pb::Record> = records
        .iter()
        .map(|record| (&person_of[&("D01".to_string(), record.record_id.clone())], record))
        .collect();
    // The first and the second-to-last person get a second record, so each keeps its id in
    // the merges below.
    let (first, second) = (persons[0].clone(), persons[1].clone());
    let (second_last, last) = (persons[persons.len() - 2].clone(), persons[persons.len() - 1].clone());
    for (person_id, record_id) in [(&first, "twin-a"), (&second_last, "twin-b")] {
        let mut twin = record_of[person_id].clone();
        twin.source = "D05".into();
        twin.record_id = record_id.into();
        let answer = ingest(&mut server.ingest_client().await, vec![twin])
            .await
            .expect("ingest");
        assert_eq!(answer.outcomes[0].person_id, *person_id);
    }

    // A small flow-control window: the server can read only so far ahead of this client.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("url")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    let mut chunks = ProfileServiceClient::new(channel)
        .export_profiles(pb::ExportProfilesRequest::default())
        .await
        .expect("export starts")
        .into_inner();
    let first_chunk = chunks.message().await.expect("chunk").expect("a first chunk");
    let ids: Vec<&str> = first_chunk.profiles.iter().map(|p| p.person_id.as_str()).collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str()],
        "one page of two persons, in id order"
    );
    assert!(first_chunk.change_sequence >= u64::from(N_PERSONS));

    // Mid-export: the last person (not read yet) merges into the first (already sent), the
    // second (already sent) into the second-to-last (not read yet).
    let mut admin = server.admin_client().await;
    for (a, b, survivor) in [(&first, &last, &first), (&second, &second_last, &second_last)] {
        let merged = admin
            .merge(pb::MergeRequest {
                person_a: a.clone(),
                person_b: b.clone(),
                note: "export test".into(),
            })
            .await
            .expect("merge")
            .into_inner();
        assert_eq!(merged.person_id, *survivor);
    }

    let mut exported: BTreeMap<String, pb::Profile> = BTreeMap::new();
    let mut n_exported = 0;
    let mut chunk = Some(first_chunk);
    while let Some(current) = chunk {
        for profile in current.profiles {
            n_exported += 1;
            exported.insert(profile.person_id.clone(), profile);
        }
        chunk = chunks.message().await.expect("chunk");
    }
    assert_eq!(n_exported, exported.len(), "no person twice");
    assert_eq!(exported.len(), persons.len() - 1);
    assert!(!exported.contains_key(&last), "merged away before its page was read");
    assert_eq!(exported[&first].n_records, 2, "sent before the merge");
    assert_eq!(exported[&second].n_records, 1, "sent before the merge");
    assert_eq!(
        exported[&second_last].n_records, 3,
        "read after the merge, with the records it took"
    );

    // A tag mask, and an unknown tag.
    let mut profiles = server.profile_client().await;
    let mut masked = profiles
        .export_profiles(pb::ExportProfilesRequest {
            tag_mask: vec!["name".into(), "phone".into()],
            compact: false,
        })
        .await
        .expect("export starts")
        .into_inner();
    let mut n_masked = 0;
    while let Some(chunk) = masked.message().await.expect("chunk") {
        for profile in chunk.profiles {
            let tags: BTreeSet<&str> = profile.tags.iter().map(|tag| tag.tag.as_str()).collect();
            assert_eq!(tags, BTreeSet::from(["name"]), "{}", profile.person_id);
            n_masked += 1;
        }
    }
    // Both merged-away persons are gone now.
    assert_eq!(n_masked, persons.len() - 2);

    // Compact: the same profiles, each record named once, expanding to the full ones.
    let full = exported_profiles(&mut profiles, Default::default()).await;
    let mut compact = profiles
        .export_profiles(pb::ExportProfilesRequest {
            tag_mask: vec![],
            compact: true,
        })
        .await
        .expect("export starts")
        .into_inner();
    let mut n_compact = 0;
    while let Some(chunk) = compact.message().await.expect("chunk") {
        for profile in chunk.profiles {
            assert!(!profile.records.is_empty(), "a compact profile names its records");
            assert!(profile.tags.iter().all(|tag| tag.record > 0 && tag.source.is_empty()));
            let expanded = popmaster::api::convert::expand_compact_profile(profile);
            let whole = &full[&expanded.person_id];
            assert_eq!(expanded.tags, whole.tags, "{}", whole.person_id);
            assert_eq!(expanded.version, whole.version);
            n_compact += 1;
        }
    }
    assert_eq!(n_compact, full.len());
    let status = profiles
        .export_profiles(pb::ExportProfilesRequest {
            tag_mask: vec!["no_such_tag".into()],
            compact: false,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);

    // The command writes one profile a line, in the `get --json` form.
    let temp = tempfile::tempdir().expect("temp dir");
    let out = temp.path().join("profiles.jsonl");
    let output = popmaster(vec![
        "export".into(),
        "--profiles".into(),
        "--tags".into(),
        "name,id_number".into(),
        "--out".into(),
        out.display().to_string(),
        "--server".into(),
        server.url(),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&out).expect("read");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), persons.len() - 2);
    let survivor = lines
        .iter()
        .find(|line| line["person_id"] == second_last.as_str())
        .expect("the survivor");
    assert_eq!(survivor["n_records"], 3);
    let tags = survivor["tags"].as_object().expect("tags");
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["id_number", "name"]);
    for field in ["value", "source", "record_id", "observed_at"] {
        assert!(tags["name"][field].is_string(), "{field}");
    }
    assert!(survivor["version"].as_u64().expect("version") >= 2);
    // The export asks for compact profiles and expands them: each line is what `get --json`
    // prints for the person.
    let output = popmaster(vec![
        "get".into(),
        second_last.to_string(),
        "--tags".into(),
        "name,id_number".into(),
        "--json".into(),
        "--server".into(),
        server.url(),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(*survivor, got);
    server.stop().await;
}
