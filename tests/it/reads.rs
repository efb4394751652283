//! The read side of master profiles through the real service: many profiles at once, the
//! person of a record, the change feed (live, resumed, ended by shutdown) and person search.

use crate::common::*;
use popmaster::config::Config;
use popmaster::pb;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tonic::Code;

/// Two persons that a third record shows to be one: returns (survivor, merged-away id).
async fn merge_two_persons(server: &TestServer) -> (String, String) {
    let mut ingest_client = server.ingest_client().await;
    let id = id_number("19850607", 31);
    let first = ingest(
        &mut ingest_client,
        vec![
            record("D05", "phone-only", &[("name", "司马相如"), ("phone", "13800138000")]),
            record("D07", "id-only", &[("name", "司马相如"), ("id_number", &id)]),
        ],
    )
    .await
    .expect("ingest");
    assert_eq!(decisions(&first), [pb::Decision::Created, pb::Decision::Created]);
    let bridge = ingest(
        &mut ingest_client,
        vec![record(
            "D09",
            "both",
            &[("name", "司马相如"), ("id_number", &id), ("phone", "138-0013-8000")],
        )],
    )
    .await
    .expect("ingest");
    assert_eq!(decisions(&bridge), [pb::Decision::Merged]);
    let survivor = bridge.outcomes[0].person_id.clone();
    let merged_away = [&first.outcomes[0].person_id, &first.outcomes[1].person_id]
        .into_iter()
        .find(|person_id| **person_id != survivor)
        .expect("one of the two was merged away")
        .clone();
    (survivor, merged_away)
}

#[tokio::test]
async fn batch_get_and_get_by_record() {
    let server = TestServer::start().await;
    let (survivor, merged_away) = merge_two_persons(&server).await;
    let mut profiles = server.profile_client().await;

    let answer = profiles
        .batch_get_profiles(pb::BatchGetProfilesRequest {
            person_ids: vec![
                survivor.clone(),
                "P0000000000000000".into(),
                merged_away.clone(),
                survivor.clone(),
            ],
            tag_mask: vec!["name".into()],
            compact: false,
        })
        .await
        .expect("batch get")
        .into_inner();
    let found: Vec<(&str, &str)> = answer
        .profiles
        .iter()
        .map(|profile| (profile.person_id.as_str(), profile.redirected_from.as_str()))
        .collect();
    assert_eq!(
        found,
        [(survivor.as_str(), ""), (survivor.as_str(), merged_away.as_str())],
        "in the order asked, a repeated id once, the merged-away id redirected"
    );
    assert_eq!(answer.not_found, ["P0000000000000000"]);
    for profile in &answer.profiles {
        assert_eq!(profile.n_records, 3);
        assert_eq!(
            profile_values(profile),
            HashMap::from([("name".to_string(), "司马相如".to_string())])
        );
    }
    // Compact profiles, every tag: each expands to the full one.
    let batch = |compact| pb::BatchGetProfilesRequest {
        person_ids: vec![merged_away.clone(), "P0000000000000000".into(), survivor.clone()],
        tag_mask: vec![],
        compact,
    };
    let full = profiles
        .batch_get_profiles(batch(false))
        .await
        .expect("full")
        .into_inner();
    let compact = profiles
        .batch_get_profiles(batch(true))
        .await
        .expect("compact")
        .into_inner();
    assert_eq!(compact.not_found, full.not_found);
    assert_eq!(compact.profiles.len(), 2);
    for (compact, full) in compact.profiles.into_iter().zip(&full.profiles) {
        assert!(full.tags.len() >= 3, "{full:?}");
        assert!(compact.tags.iter().all(|tag| tag.source.is_empty() && tag.record > 0));
        assert_eq!(&popmaster::api::convert::expand_compact_profile(compact), full);
    }

    let by_record = profiles
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: "d05".into(),
            record_id: "phone-only".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("get by record")
        .into_inner();
    assert_eq!(by_record.person_id, survivor);
    assert!(by_record.redirected_from.is_empty());
    assert_eq!(profile_values(&by_record)["phone"], "13800138000");
    let compact_by_record = profiles
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: "D05".into(),
            record_id: "phone-only".into(),
            tag_mask: vec![],
            compact: true,
        })
        .await
        .expect("compact by record")
        .into_inner();
    assert!(compact_by_record
        .tags
        .iter()
        .all(|tag| tag.source.is_empty() && tag.record > 0));
    assert_eq!(
        popmaster::api::convert::expand_compact_profile(compact_by_record),
        by_record
    );

    // Bad input: each a specific status.
    let unknown_record = profiles
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: "D05".into(),
            record_id: "never-sent".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("unknown record");
    assert_eq!(unknown_record.code(), Code::NotFound);
    assert_eq!(unknown_record.message(), "record D05/never-sent is not stored");
    for (source, record_id, expected) in [
        ("D5", "phone-only", "source D5 is not a source code (expected D01..D63)"),
        ("D99", "phone-only", "source D99 is not in the catalog"),
        ("", "phone-only", "source is empty"),
        ("D05", "", "record_id is empty"),
    ] {
        let status = profiles
            .get_person_by_record(pb::GetPersonByRecordRequest {
                source: source.into(),
                record_id: record_id.into(),
                tag_mask: vec![],
                compact: false,
            })
            .await
            .expect_err("malformed");
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, expected));
    }
    let too_many = profiles
        .batch_get_profiles(pb::BatchGetProfilesRequest {
            person_ids: (0..1_001).map(|n| format!("P{n}")).collect(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("over the limit");
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert_eq!(
        too_many.message(),
        "person_ids has 1001 ids, more than the limit of 1000"
    );
    let empty = profiles
        .batch_get_profiles(pb::BatchGetProfilesRequest::default())
        .await
        .expect_err("no ids");
    assert_eq!(
        (empty.code(), empty.message()),
        (Code::InvalidArgument, "person_ids is empty")
    );
    let bad_mask = profiles
        .batch_get_profiles(pb::BatchGetProfilesRequest {
            person_ids: vec![survivor.clone()],
            tag_mask: vec!["shoe_size".into()],
            compact: false,
        })
        .await
        .expect_err("unknown tag");
    assert_eq!(bad_mask.code(), Code::InvalidArgument);
    server.stop().await;
}

/// Reads changes from a watch stream until `n` have come.
async fn next_changes(stream: &mut tonic::Streaming<pb::ChangeBatch>, n: usize) -> Vec<pb::PersonChange> {
    let mut changes = Vec::new();
    while changes.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("changes arrive")
            .expect("the stream is healthy")
            .expect("the stream is open");
        assert!(!batch.changes.is_empty(), "no empty batches");
        changes.extend(batch.changes);
    }
    assert_eq!(changes.len(), n, "no more changes than expected");
    changes
}

/// With `feed.changes_kept`, the feed keeps its newest changes once the index has applied
/// them: a watch from a deleted change is refused with what to do instead, a watch from 0
/// starts at the oldest change kept, and search still finds a person whose change was deleted.
#[tokio::test]
async fn a_trimmed_feed_refuses_deleted_changes_and_serves_the_rest() {
    let mut config = Config::default();
    config.feed.changes_kept = 3;
    config.index.refresh_interval_ms = 20;
    let server = TestServer::start_with(config).await;
    let mut ingest_client = server.ingest_client().await;
    let names = [
        "司马相如",
        "卓文君",
        "王昭君",
        "李太白",
        "杜子美",
        "苏东坡",
        "辛弃疾",
        "陆放翁",
    ];
    let phones: Vec<String> = (0..names.len()).map(|n| format!("1390013{n:04}")).collect();
    let records = names
        .iter()
        .zip(&phones)
        .enumerate()
        .map(|(n, (name, phone))| record("D05", &format!("r{n}"), &[("name", name), ("phone", phone)]))
        .collect();
    let outcome = ingest(&mut ingest_client, records).await.expect("ingest");
    assert_eq!(decisions(&outcome), [pb::Decision::Created; 8]);

    // Eight persons, changes 1 to 8: once the index has them, 6 to 8 are kept.
    let mut profiles = server.profile_client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match profiles
            .watch_changes(pb::WatchChangesRequest { from_sequence: 1 })
            .await
        {
            Err(status) => break status,
            Ok(_) => {
                assert!(Instant::now() < deadline, "the feed was never trimmed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(refused.code(), Code::OutOfRange);
    for words in ["keeps changes from sequence 6", "ExportProfiles"] {
        assert!(refused.message().contains(words), "{}", refused.message());
    }
    let mut from_oldest = profiles
        .watch_changes(pb::WatchChangesRequest { from_sequence: 0 })
        .await
        .expect("watch from the oldest change kept")
        .into_inner();
    let kept = next_changes(&mut from_oldest, 3).await;
    assert_eq!(kept.iter().map(|c| c.sequence).collect::<Vec<_>>(), [6, 7, 8]);
    for change in &kept {
        assert_eq!(change.kind(), pb::ChangeKind::Created);
        assert!(outcome.outcomes.iter().any(|o| o.person_id == change.person_id));
    }

    let found = profiles
        .search_persons(pb::SearchPersonsRequest {
            name: names[0].into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert!(
        found
            .persons
            .iter()
            .any(|person| person.person_id == outcome.outcomes[0].person_id),
        "{found:?}"
    );
    server.stop().await;
}

fn kinds(changes: &[pb::PersonChange]) -> BTreeMap<String, (pb::ChangeKind, u64)> {
    changes
        .iter()
        .map(|change| (change.person_id.clone(), (change.kind(), change.version)))
        .collect()
}

#[tokio::test]
async fn watch_follows_resumes_and_ends_on_shutdown() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let id = id_number("19850607", 31);
    let first = ingest(
        &mut ingest_client,
        vec![
            record("D05", "phone-only", &[("name", "司马相如"), ("phone", "13800138000")]),
            record("D07", "id-only", &[("name", "司马相如"), ("id_number", &id)]),
        ],
    )
    .await
    .expect("ingest");
    let mut profiles = server.profile_client().await;
    let mut live = profiles
        .watch_changes(pb::WatchChangesRequest { from_sequence: 0 })
        .await
        .expect("watch")
        .into_inner();
    let created = next_changes(&mut live, 2).await;
    assert_eq!(created.iter().map(|c| c.sequence).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        kinds(&created),
        first
            .outcomes
            .iter()
            .map(|outcome| (outcome.person_id.clone(), (pb::ChangeKind::Created, 1)))
            .collect()
    );

    // Ingested after the stream opened: the bridge merges the two persons.
    let bridge = ingest(
        &mut ingest_client,
        vec![record(
            "D09",
            "both",
            &[("name", "司马相如"), ("id_number", &id), ("phone", "138-0013-8000")],
        )],
    )
    .await
    .expect("ingest");
    let survivor = bridge.outcomes[0].person_id.clone();
    let merged_away = first
        .outcomes
        .iter()
        .map(|outcome| outcome.person_id.clone())
        .find(|person_id| *person_id != survivor)
        .expect("one was merged away");
    let merge = next_changes(&mut live, 2).await;
    assert_eq!(merge.iter().map(|c| c.sequence).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(
        kinds(&merge),
        BTreeMap::from([
            (survivor.clone(), (pb::ChangeKind::Updated, 2)),
            (merged_away.clone(), (pb::ChangeKind::Merged, 2)),
        ])
    );
    assert!(merge
        .iter()
        .any(|change| change.person_id == merged_away && change.merged_into == survivor));

    // Resumed from a sequence: everything from there on, then live again.
    let mut resumed = profiles
        .watch_changes(pb::WatchChangesRequest { from_sequence: 4 })
        .await
        .expect("watch")
        .into_inner();
    let rest = next_changes(&mut resumed, 1).await;
    assert_eq!(rest, merge[1..]);
    ingest(
        &mut ingest_client,
        vec![record("D05", "other", &[("name", "卓文君"), ("phone", "13900139000")])],
    )
    .await
    .expect("ingest");
    for stream in [&mut live, &mut resumed] {
        let created = next_changes(stream, 1).await;
        assert_eq!((created[0].sequence, created[0].kind()), (5, pb::ChangeKind::Created));
    }

    // One past the end is where the next change will be; beyond it is out of range.
    let mut at_end = profiles
        .watch_changes(pb::WatchChangesRequest { from_sequence: 6 })
        .await
        .expect("watch from the next sequence")
        .into_inner();
    let beyond = profiles
        .watch_changes(pb::WatchChangesRequest { from_sequence: 7 })
        .await
        .expect_err("beyond the end");
    assert_eq!(beyond.code(), Code::OutOfRange);
    assert!(beyond.message().contains("last sequence 5"), "{}", beyond.message());

    // Shutdown ends open streams cleanly and is not held by them.
    let started = Instant::now();
    let stopping = tokio::spawn(server.stop());
    for stream in [&mut live, &mut resumed, &mut at_end] {
        let end = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the stream ends");
        assert!(matches!(end, Ok(None)), "a clean end of stream, not {end:?}");
    }
    stopping.await.expect("server stops");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the shutdown waited for the watch streams ({:?})",
        started.elapsed()
    );
}

/// A client that does not read its watch stream holds neither the writer nor other clients;
/// when it reads again, it gets every change, in order, from the store.
#[tokio::test]
async fn a_slow_watcher_does_not_hold_the_writer() {
    let mut config = popmaster::config::Config::default();
    // One change per message and one message buffered: the transport's window fills after a
    // few thousand changes.
    config.server.watch_batch_changes_max = 1;
    config.server.watch_buffer_batches = 1;
    let server = TestServer::start_with(config).await;
    let mut profiles = server.profile_client().await;
    let mut stalled = profiles
        .watch_changes(pb::WatchChangesRequest { from_sequence: 1 })
        .await
        .expect("watch")
        .into_inner();
    let mut ingest_client = server.ingest_client().await;
    let n_batches = 4;
    let n_per_batch = 1_000;
    for batch_idx in 0..n_batches {
        let records = (0..n_per_batch)
            .map(|n| {
                let phone = format!("139{:08}", batch_idx * n_per_batch + n);
                record(
                    "D05",
                    &format!("s{batch_idx}-{n}"),
                    &[("name", "赵敏"), ("phone", &phone)],
                )
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(60), ingest(&mut ingest_client, records))
            .await
            .expect("the writer is not held by the stalled watcher")
            .expect("ingest");
    }
    let n_changes = n_batches * n_per_batch;
    assert_eq!(stats(&server).await.change_sequence, n_changes as u64);
    let changes = next_changes(&mut stalled, n_changes).await;
    let sequences: Vec<u64> = changes.iter().map(|change| change.sequence).collect();
    assert_eq!(sequences, (1..=n_changes as u64).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn search_ranks_the_right_person_first() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let answer = ingest(
        &mut ingest_client,
        vec![
            record(
                "D05",
                "target",
                &[
                    ("name", "欧阳震华"),
                    ("birth_date", "1988-03-14"),
                    ("phone", "13912345678"),
                    ("address", "浙江省杭州市西湖区文三路100号"),
                ],
            ),
            // Namesakes: a shorter name born the same day (a possible match for review), one
            // character off born another day.
            record(
                "D07",
                "short",
                &[
                    ("name", "欧阳震"),
                    ("birth_date", "1988-03-14"),
                    ("phone", "13600000000"),
                ],
            ),
            record(
                "D09",
                "other",
                &[
                    ("name", "欧阳正华"),
                    ("birth_date", "1979-11-02"),
                    ("phone", "13700000002"),
                    ("address", "浙江省宁波市海曙区中山路5号"),
                ],
            ),
        ],
    )
    .await
    .expect("ingest");
    let persons: std::collections::BTreeSet<&str> = answer.outcomes.iter().map(|o| o.person_id.as_str()).collect();
    assert_eq!(persons.len(), 3, "three persons: {answer:?}");
    let target = answer.outcomes[0].person_id.clone();
    wait_for_index(&server).await;
    let mut profiles = server.profile_client().await;

    // Traditional characters, full-width digits, a date in words, a phone with country code.
    let found = profiles
        .search_persons(pb::SearchPersonsRequest {
            name: "歐陽震華".into(),
            birth_date: "１９８８年３月１４日".into(),
            phone: "+86 139-1234-5678".into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.persons[0].person_id, target);
    assert!(found.persons[0].probability > 0.99, "{found:?}");
    assert_eq!(
        found.persons[0].explanation,
        "name: the same; birth date: the same; phone: the same"
    );
    assert!(found.persons.len() >= 2, "the namesake is a candidate too: {found:?}");
    assert!(found.persons[1].probability < found.persons[0].probability);

    // A misspelled name alone (鎮 for 震, traditional): the index finds the persons named like
    // it (the exact keys could find one at most), and the model puts the same pinyin first.
    let found = profiles
        .search_persons(pb::SearchPersonsRequest {
            name: "歐陽鎮華".into(),
            top_k: 2,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.persons.len(), 2, "{found:?}");
    assert_eq!(found.persons[0].person_id, target);
    assert_eq!(found.persons[0].explanation, "name: the same pinyin");
    assert!(found.n_candidates >= 3, "{found:?}");

    for (request, expected) in [
        (
            pb::SearchPersonsRequest::default(),
            "give at least one of name, id_number, birth_date, gender, phone, address",
        ),
        (
            pb::SearchPersonsRequest {
                name: "不详".into(),
                ..Default::default()
            },
            "no attribute is left after cleansing: each was empty, a placeholder such as 不详, or refused",
        ),
        (
            pb::SearchPersonsRequest {
                name: "欧阳震华".into(),
                top_k: 101,
                ..Default::default()
            },
            "top_k 101 is more than the limit of 100",
        ),
    ] {
        let status = profiles.search_persons(request).await.expect_err("bad search");
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, expected));
    }
    server.stop().await;
}

#[tokio::test]
async fn client_commands_get_search_and_watch() {
    let server = TestServer::start().await;
    let (survivor, merged_away) = merge_two_persons(&server).await;

    let output = popmaster(&server, &["get", "--record", "D07", "id-only", "--json"]).await;
    assert!(output.status.success(), "{output:?}");
    let profile: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(profile["person_id"], survivor.as_str());

    let output = popmaster(
        &server,
        &["get", &survivor, &merged_away, "P0000000000000000", "--json"],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(answer["profiles"][1]["redirected_from"], merged_away.as_str());
    assert_eq!(answer["not_found"], serde_json::json!(["P0000000000000000"]));

    let output = popmaster(
        &server,
        &["search", "--name", "司馬相如", "--phone", "138 0013 8000", "--top", "1"],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first = stdout.lines().next().expect("one line");
    assert!(
        first.contains(&survivor) && first.contains("name: the same; phone: the same"),
        "{stdout}"
    );
    let output = popmaster(&server, &["search", "--top", "1"]).await;
    assert!(!output.status.success(), "no attribute: refused before calling");

    let output = popmaster(&server, &["get", "--record", "D5", "x"]).await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("InvalidArgument"),
        "{output:?}"
    );

    // `watch` prints one line per change; a reader that stops early ends it quietly.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"))
        .args(["watch", "--from", "3", "--server", &server.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("popmaster watch starts");
    let stdout = watch.stdout.take().expect("stdout");
    let first_line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).expect("a line");
        line
    })
    .await
    .expect("reader task");
    let fields: Vec<&str> = first_line.split_whitespace().collect();
    assert_eq!(
        fields,
        ["3", merged_away.as_str(), "2", "merged", "into", survivor.as_str()],
        "the merged-away person"
    );
    // The next change finds the pipe closed.
    let mut ingest_client = server.ingest_client().await;
    ingest(
        &mut ingest_client,
        vec![record("D05", "later", &[("name", "卓文君"), ("phone", "13900139000")])],
    )
    .await
    .expect("ingest");
    let output = tokio::task::spawn_blocking(move || watch.wait_with_output().expect("watch ends"))
        .await
        .expect("wait task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim().is_empty(), "no panic, no broken-pipe error: {stderr}");
    server.stop().await;
}

/// A batch whose profiles would not fit in one message is refused whole, saying what to do;
/// a smaller one is answered.
#[tokio::test]
async fn a_batch_over_the_message_size_is_refused() {
    let mut config = Config::default();
    config.limits.message_bytes_max = 1024;
    let server = TestServer::start_with(config).await;
    let mut ingest_client = server.ingest_client().await;
    // In batches of 5: a message of more would pass the 1,024 bytes too.
    let mut person_ids: Vec<String> = Vec::new();
    for first in (0..30).step_by(5) {
        let records = (first..first + 5)
            .map(|n| {
                let id = id_number("19900101", n);
                record(
                    "D05",
                    &format!("r{n}"),
                    &[("name", "欧阳修远"), ("id_number", &id), ("phone", "13900139000")],
                )
            })
            .collect();
        let answer = ingest(&mut ingest_client, records).await.expect("ingest");
        person_ids.extend(answer.outcomes.iter().map(|outcome| outcome.person_id.clone()));
    }
    let mut profiles = server.profile_client().await;
    let request = |person_ids: &[String]| pb::BatchGetProfilesRequest {
        person_ids: person_ids.to_vec(),
        tag_mask: vec![],
        compact: false,
    };
    let status = profiles
        .batch_get_profiles(request(&person_ids))
        .await
        .expect_err("over the message size");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status
            .message()
            .contains("limits.message_bytes_max (1024 bytes); ask for fewer persons"),
        "{}",
        status.message()
    );
    let two = profiles
        .batch_get_profiles(request(&person_ids[..2]))
        .await
        .expect("two fit")
        .into_inner();
    assert_eq!(two.profiles.len(), 2);
    // For a client that takes gzip the limit is on the compressed answer: five profiles that
    // do not fit as they are fit compressed.
    let mut gzip_client = profiles
        .clone()
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let five = gzip_client
        .batch_get_profiles(request(&person_ids[..5]))
        .await
        .expect("five fit compressed")
        .into_inner();
    assert!(five.encode_to_vec().len() > 1024, "five do not fit as they are");
    assert_eq!(five.profiles.len(), 5);
    // Built uncompressed, the answer may take four times the limit and no more: all the
    // profiles pass that, and are refused before the answer is built whole.
    assert!(
        profiles
            .batch_get_profiles(request(&person_ids[..1]))
            .await
            .expect("one")
            .into_inner()
            .encode_to_vec()
            .len()
            * person_ids.len()
            > 4 * 1024
    );
    let status = gzip_client
        .batch_get_profiles(request(&person_ids))
        .await
        .expect_err("over four times the limit before compression");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "the profiles of these {} persons take more than 4096 bytes before compression (4 times \
             limits.message_bytes_max, the most a compressed answer is built to); ask for fewer persons",
            person_ids.len()
        )),
        "{}",
        status.message()
    );
    server.stop().await;
}
