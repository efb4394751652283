//! The candidate index rebuilt over gRPC while the service serves, and rebuilt at start when
//! it is missing, damaged or of another format.

use crate::common::*;
use popmaster::pb;
use popmaster::pb::ingest_service_client::IngestServiceClient;
use popmaster::pb::rebuild_index_progress::Phase;
use std::time::{Duration, Instant};

/// Runs `RebuildIndex` to the end and returns every progress message.
async fn rebuild(server: &TestServer) -> Vec<pb::RebuildIndexProgress> {
    let stream = server
        .admin_client()
        .await
        .rebuild_index(pb::RebuildIndexRequest {})
        .await
        .expect("rebuild starts")
        .into_inner();
    all_messages(stream).await
}

/// A name-only search (found through the index's n-grams and pinyin) and a name and birth
/// date search for each of the first `n` records.
async fn search_all(server: &TestServer, records: &[pb::Record], n: usize) -> Vec<Vec<(String, u64)>> {
    let mut profiles = server.profile_client().await;
    let mut answers = Vec::new();
    for record in records.iter().filter(|record| record.tags.contains_key("name")).take(n) {
        let name = record.tags["name"].clone();
        let birth_date = record.tags.get("birth_date").cloned().unwrap_or_default();
        for request in [
            pb::SearchPersonsRequest {
                name: name.clone(),
                top_k: 10,
                ..Default::default()
            },
            pb::SearchPersonsRequest {
                name,
                birth_date,
                top_k: 10,
                ..Default::default()
            },
        ] {
            let found = profiles.search_persons(request).await.expect("search").into_inner();
            answers.push(
                found
                    .persons
                    .into_iter()
                    .map(|person| (person.person_id, person.probability.to_bits()))
                    .collect(),
            );
        }
    }
    answers
}

#[tokio::test]
async fn rebuild_index_answers_as_before_and_takes_in_what_arrives_meanwhile() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let first = synthetic_records(21, 300);
    for chunk in first.chunks(300) {
        ingest(&mut ingest_client, chunk.to_vec()).await.expect("ingest");
    }
    wait_for_index(&server).await;
    let before = search_all(&server, &first, 40).await;

    let progress = rebuild(&server).await;
    let stats_after = stats(&server).await;
    let phases: Vec<Phase> = progress.iter().map(|message| message.phase()).collect();
    assert_eq!(phases.first(), Some(&Phase::Scanning), "{phases:?}");
    assert!(phases.contains(&Phase::CatchingUp), "{phases:?}");
    let done = progress.last().expect("a last message");
    assert_eq!(done.phase(), Phase::Done);
    assert_eq!(done.persons_done, stats_after.n_persons);
    assert_eq!(done.persons_total, stats_after.n_persons);
    assert_eq!(done.index_watermark, stats_after.change_sequence);
    assert_eq!(stats_after.index_persons, stats_after.n_persons);
    assert_eq!(
        search_all(&server, &first, 40).await,
        before,
        "the rebuilt index answers alike"
    );

    // Ingest goes on during a rebuild, and what it brings reaches the new index.
    let late = synthetic_records(22, 200);
    let ingesting = async {
        let mut client: IngestServiceClient<_> = server.ingest_client().await;
        for chunk in late.chunks(50) {
            ingest(&mut client, chunk.to_vec())
                .await
                .expect("ingest during the rebuild");
        }
    };
    let (progress, ()) = tokio::join!(rebuild(&server), ingesting);
    assert_eq!(progress.last().map(|message| message.phase()), Some(Phase::Done));
    wait_for_index(&server).await;
    let stats_late = stats(&server).await;
    assert!(stats_late.n_persons > stats_after.n_persons);
    assert_eq!(stats_late.index_persons, stats_late.n_persons);

    // The operator's command.
    let output = popmaster(&server, &["admin", "rebuild-index"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with(&format!("rebuilt the index: {} persons in ", stats_late.n_persons)),
        "{stdout}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_missing_damaged_or_old_format_index_is_rebuilt_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let server = ServerProcess::spawn(&data_dir, &dir.path().join("first.log")).await;
    let mut ingest_client = IngestServiceClient::new(connect(&server.url).await.expect("connect"));
    for chunk in synthetic_records(23, 200).chunks(200) {
        ingest(&mut ingest_client, chunk.to_vec()).await.expect("ingest");
    }
    let n_persons = index_caught_up(&server.url).await.n_persons;
    assert!(n_persons > 100);
    server.kill_9();

    let current = || -> std::path::PathBuf {
        let name = std::fs::read_to_string(data_dir.join("index/CURRENT")).expect("the generation file");
        data_dir.join("index").join(name.trim())
    };
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let damages: [(&str, Damage, &str); 3] = [
        (
            "missing",
            Box::new(|| std::fs::remove_dir_all(data_dir.join("index")).expect("remove the index")),
            "candidate index is empty; building it from the store's persons",
        ),
        (
            "damaged",
            Box::new(|| std::fs::write(current().join("meta.json"), b"{ not json").expect("damage")),
            "candidate index is unusable; rebuilding it from the store",
        ),
        (
            "old-format",
            Box::new(|| std::fs::write(current().join("popmaster-index.format"), b"1\n").expect("old format")),
            "candidate index has format version 1, this build expects",
        ),
    ];
    for (name, damage, expected_log) in damages {
        damage();
        let log_path = dir.path().join(format!("{name}.log"));
        let server = ServerProcess::spawn(&data_dir, &log_path).await;
        let stats = index_caught_up(&server.url).await;
        let (index_persons, persons) = (stats.index_persons, stats.n_persons);
        assert_eq!((index_persons, persons), (n_persons, n_persons), "{name}");
        // The last line is logged just after the new index is swapped in.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log().contains("candidate index built from the store") {
            assert!(Instant::now() < deadline, "{name}: {}", server.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = server.log();
        assert!(log.contains(expected_log), "{name}: {log}");
        server.kill_9();
    }
}

/// Waits until the change feed no longer holds the change `from_sequence`.
async fn wait_for_trimmed_feed(server: &TestServer, from_sequence: u64) {
    let mut profiles = server.profile_client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match profiles.watch_changes(pb::WatchChangesRequest { from_sequence }).await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
                return;
            }
            Ok(_) => {
                assert!(Instant::now() < deadline, "change {from_sequence} was never trimmed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// An index older than the change feed's oldest change (one put back from an earlier copy)
/// cannot catch up from the feed: it is rebuilt from the store's persons.
#[tokio::test]
async fn an_index_behind_a_trimmed_feed_is_rebuilt_from_the_store() {
    let mut config = popmaster::config::Config::default();
    config.feed.changes_kept = 3;
    config.index.refresh_interval_ms = 20;
    let records = synthetic_records(29, 40);
    let (first, second) = records.split_at(records.len() / 2);

    let server = TestServer::start_in(tempfile::tempdir().expect("temp dir"), config.clone()).await;
    ingest(&mut server.ingest_client().await, first.to_vec())
        .await
        .expect("ingest");
    let first_stats = index_caught_up(&server.url()).await;
    wait_for_trimmed_feed(&server, 1).await;
    let dir = server.stop().await.expect("the server's own directory");
    let index_dir = dir.path().join("data/index");
    let old_index = dir.path().join("old-index");
    copy_dir(&index_dir, &old_index);

    let server = TestServer::start_in(dir, config.clone()).await;
    ingest(&mut server.ingest_client().await, second.to_vec())
        .await
        .expect("ingest");
    let stats = index_caught_up(&server.url()).await;
    let n_persons = stats.n_persons;
    assert!(stats.change_sequence > first_stats.change_sequence + 2 * 3, "{stats:?}");
    // What the old index has not applied is gone from the feed.
    wait_for_trimmed_feed(&server, first_stats.index_watermark + 1).await;
    let dir = server.stop().await.expect("the server's own directory");
    std::fs::remove_dir_all(&index_dir).expect("remove the index");
    copy_dir(&old_index, &index_dir);

    let server = TestServer::start_in(dir, config).await;
    let stats = index_caught_up(&server.url()).await;
    let (index_persons, persons) = (stats.index_persons, stats.n_persons);
    assert_eq!((index_persons, persons), (n_persons, n_persons));
    server.stop().await;
}
