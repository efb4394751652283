//! Operations through the real service: the profile export paging through a live service.

use crate::common::*;
use popmaster::config::Config;
use popmaster::pb;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use std::collections::{BTreeMap, BTreeSet};
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

/// Runs the `popmaster` binary with `args` (off the runtime, which serves).
async fn popmaster(args: Vec<String>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"));
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().expect("popmaster runs"))
        .await
        .expect("client task")
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
        .export_profiles(pb::ExportProfilesRequest { tag_mask: vec![] })
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
    let status = profiles
        .export_profiles(pb::ExportProfilesRequest {
            tag_mask: vec!["no_such_tag".into()],
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
    server.stop().await;
}
