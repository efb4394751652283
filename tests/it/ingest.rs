//! Ingest through the real gRPC stream: decisions, ID-number normalization, idempotency,
//! replacement, rejections and limits.

use crate::common::*;
use popmaster::config::Config;
use popmaster::pb;
use popmaster::pb::Decision;

/// The same resident in the forms departments send: 18 digits with lower-case x, full-width,
/// with spaces, and the legacy 15 digits. All must land on one person.
#[tokio::test]
async fn id_number_forms_join_one_person() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let id = (0..1000)
        .map(|n| id_number("19650304", n))
        .find(|id| id.ends_with('X'))
        .expect("some sequence has check digit X");
    let lower_x = id.to_lowercase();
    let full_width: String = id
        .chars()
        .map(|c| char::from_u32(c as u32 + 0xFEE0).expect("full-width form"))
        .collect();
    let spaced = format!("{} {} {}", &id[..6], &id[6..14], &id[14..]);
    let legacy = format!("{}{}", &id[..6], &id[8..17]);
    let answer = ingest(
        &mut ingest_client,
        vec![
            record("D01", "a", &[("id_number", &id), ("name", "陈建国"), ("gender", "男")]),
            record("D07", "b", &[("id_number", &lower_x), ("name", "陳建國")]),
            record("D03", "c", &[("id_number", &full_width)]),
            record("D05", "d", &[("id_number", &spaced)]),
            record("D04", "e", &[("id_number", &legacy), ("phone", "13800001234")]),
        ],
    )
    .await
    .expect("ingest");
    assert!(answer.durable);
    assert_eq!(
        decisions(&answer),
        vec![
            Decision::Created,
            Decision::Matched,
            Decision::Matched,
            Decision::Matched,
            Decision::Matched
        ]
    );
    let person_ids: std::collections::BTreeSet<&str> = answer
        .outcomes
        .iter()
        .map(|outcome| outcome.person_id.as_str())
        .collect();
    assert_eq!(person_ids.len(), 1, "one person: {person_ids:?}");

    let mut profiles = server.profile_client().await;
    let profile = profiles
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: legacy.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("found by the legacy number")
        .into_inner();
    assert_eq!(profile.n_records, 5);
    let values = profile_values(&profile);
    // Public security (D01) is the most authoritative source for the name.
    assert_eq!(values["name"], "陈建国");
    assert_eq!(values["id_number"], id);
    assert_eq!(values["phone"], "13800001234");
    let name = profile.tags.iter().find(|tag| tag.tag == "name").expect("name tag");
    assert_eq!((name.source.as_str(), name.record_id.as_str()), ("D01", "a"));
    server.stop().await;
}

#[tokio::test]
async fn records_without_a_usable_id_number_are_persons_of_their_own() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let answer = ingest(
        &mut ingest_client,
        vec![
            record("D01", "1", &[("name", "王芳")]),
            record("D02", "2", &[("name", "王芳")]),
            record("D03", "3", &[("name", "王芳"), ("id_number", "330106196503040001")]),
        ],
    )
    .await
    .expect("ingest");
    assert_eq!(decisions(&answer), vec![Decision::Created; 3]);
    let person_ids: std::collections::BTreeSet<&str> = answer.outcomes.iter().map(|o| o.person_id.as_str()).collect();
    assert_eq!(person_ids.len(), 3);
    server.stop().await;
}

/// Sending the same (source, record_id) again: unchanged if the content is the same,
/// replaced (and the profile follows) if it is new.
#[tokio::test]
async fn resend_is_idempotent_and_new_content_replaces() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let id = id_number("19800101", 7);
    let first = vec![record(
        "D07",
        "r1",
        &[
            ("id_number", &id),
            ("phone", "13800000001"),
            ("d07.vehicle_plate", "浙A12345"),
        ],
    )];
    let created = ingest(&mut ingest_client, first.clone()).await.expect("ingest");
    assert_eq!(decisions(&created), vec![Decision::Created]);
    let again = ingest(&mut ingest_client, first).await.expect("ingest");
    assert_eq!(decisions(&again), vec![Decision::Unchanged]);
    assert_eq!(again.outcomes[0].person_id, created.outcomes[0].person_id);

    let replaced = ingest(
        &mut ingest_client,
        vec![record("D07", "r1", &[("id_number", &id), ("phone", "13900000002")])],
    )
    .await
    .expect("ingest");
    assert_eq!(decisions(&replaced), vec![Decision::Matched]);
    assert_eq!(replaced.outcomes[0].person_id, created.outcomes[0].person_id);

    let mut profiles = server.profile_client().await;
    let profile = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: created.outcomes[0].person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("profile")
        .into_inner();
    let values = profile_values(&profile);
    assert_eq!(values["phone"], "13900000002");
    assert!(
        !values.contains_key("d07.vehicle_plate"),
        "a tag the new version lacks is gone"
    );
    assert_eq!(profile.n_records, 1);
    let stats = stats(&server).await;
    assert_eq!((stats.n_records, stats.n_persons), (1, 1));
    let cost = stats.ingest_cost.expect("the write path's cost");
    assert!(
        cost.reads_read_ahead + cost.reads_by_writer > 0,
        "the writer's store reads are counted: {cost:?}"
    );
    let printed = popmaster(&server, &["stats"]).await;
    assert!(printed.status.success());
    assert!(
        String::from_utf8_lossy(&printed.stdout).contains("writer reads       "),
        "popmaster stats prints them"
    );
    server.stop().await;
}

/// A record whose ID number changes leaves its old person; the old person keeps the rest.
#[tokio::test]
async fn a_changed_id_number_moves_the_record() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let (old_id, new_id) = (id_number("19700101", 1), id_number("19710101", 2));
    let answer = ingest(
        &mut ingest_client,
        vec![
            record("D01", "a", &[("id_number", &old_id), ("name", "李娜")]),
            record("D02", "b", &[("id_number", &old_id), ("name", "李娜")]),
        ],
    )
    .await
    .expect("ingest");
    let old_person = answer.outcomes[0].person_id.clone();
    assert_eq!(answer.outcomes[1].person_id, old_person);
    let moved = ingest(
        &mut ingest_client,
        vec![record("D02", "b", &[("id_number", &new_id), ("name", "李娜")])],
    )
    .await
    .expect("ingest");
    assert_eq!(decisions(&moved), vec![Decision::Created]);
    assert_ne!(moved.outcomes[0].person_id, old_person);

    let mut profiles = server.profile_client().await;
    let old = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: old_person.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("old person remains")
        .into_inner();
    assert_eq!(old.n_records, 1);
    let by_new = profiles
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: new_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("new number found")
        .into_inner();
    assert_eq!(by_new.person_id, moved.outcomes[0].person_id);

    // Moving the last record away deletes the person and frees its number.
    ingest(
        &mut ingest_client,
        vec![record("D01", "a", &[("id_number", &new_id), ("name", "李娜")])],
    )
    .await
    .expect("ingest");
    let gone = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: old_person,
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("old person is gone");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let freed = profiles
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: old_id,
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("old number is free");
    assert_eq!(freed.code(), tonic::Code::NotFound);
    server.stop().await;
}

/// Bad records are rejected one by one with a reason naming the source or tag; the good
/// records of the same batch are stored.
#[tokio::test]
async fn rejections_are_specific_and_never_block_the_rest() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let answer = ingest(
        &mut ingest_client,
        vec![
            record("D99", "1", &[("name", "张伟")]),
            record("D07", "2", &[("nickname", "小张")]),
            record("D07", "3", &[("d01.used_name", "张三")]),
            record("D07", "4", &[("name", ""), ("phone", "")]),
            record("D07", "5", &[("name", "张伟")]),
        ],
    )
    .await
    .expect("ingest");
    let reasons: Vec<(&str, &str)> = answer
        .outcomes
        .iter()
        .map(|o| (o.reason_code.as_str(), o.reason.as_str()))
        .collect();
    assert_eq!(reasons[0].0, "unknown_source");
    assert!(reasons[0].1.contains("D99"), "{reasons:?}");
    assert_eq!(reasons[1].0, "unknown_tag");
    assert!(reasons[1].1.contains("nickname"), "{reasons:?}");
    assert_eq!(reasons[2].0, "foreign_tag");
    assert!(
        reasons[2].1.contains("d01.used_name") && reasons[2].1.contains("D01"),
        "{reasons:?}"
    );
    assert_eq!(reasons[3].0, "no_tags");
    assert_eq!(decisions(&answer)[4], Decision::Created);
    assert_eq!(answer.outcomes[1].record_id, "2", "rejections say which record");
    let stats = stats(&server).await;
    assert_eq!(stats.n_records, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole() {
    let mut config = Config::default();
    config.limits.batch_records_max = 3;
    let server = TestServer::start_with(config).await;
    let mut ingest_client = server.ingest_client().await;
    let records = (0..4)
        .map(|n| record("D07", &n.to_string(), &[("name", "张伟")]))
        .collect();
    let status = ingest(&mut ingest_client, records).await.expect_err("too many records");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("limit of 3"), "{}", status.message());
    let stats = stats(&server).await;
    assert_eq!(stats.n_records, 0, "nothing of the batch was applied");
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused() {
    let mut config = Config::default();
    config.limits.message_bytes_max = 64 * 1024;
    let server = TestServer::start_with(config).await;
    let mut ingest_client = server.ingest_client().await;
    let records = (0..200)
        .map(|n| record("D07", &n.to_string(), &[("name", &"张".repeat(200))]))
        .collect();
    let status = ingest(&mut ingest_client, records)
        .await
        .expect_err("message too large");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    server.stop().await;
}

/// Several batches on one stream are answered in order, each with its batch id.
#[tokio::test]
async fn batches_on_one_stream_are_answered_in_order() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let batches: Vec<pb::RecordBatch> = (0..20u64)
        .map(|batch_id| pb::RecordBatch {
            batch_id,
            records: (0..25)
                .map(|n| {
                    record(
                        "D05",
                        &format!("{batch_id}-{n}"),
                        &[("id_number", &id_number("19900101", (n % 5) as u32))],
                    )
                })
                .collect(),
        })
        .collect();
    let mut answers = ingest_client
        .stream_records(tokio_stream::iter(batches))
        .await
        .expect("stream")
        .into_inner();
    let mut batch_ids = Vec::new();
    while let Some(answer) = answers.message().await.expect("answer") {
        assert!(answer.durable);
        assert_eq!(answer.outcomes.len(), 25);
        batch_ids.push(answer.batch_id);
    }
    assert_eq!(batch_ids, (0..20).collect::<Vec<_>>());
    let stats = stats(&server).await;
    assert_eq!((stats.n_records, stats.n_persons), (500, 5));
    server.stop().await;
}

/// With less free disk than `storage.min_free_bytes`, every write is refused with a clear
/// status and nothing is applied; reads go on.
#[tokio::test]
async fn writes_are_refused_while_the_disk_is_nearly_full() {
    let mut config = popmaster::config::Config::default();
    config.storage.min_free_bytes = u64::MAX;
    let server = TestServer::start_with(config).await;
    let mut client = server.ingest_client().await;
    let status = ingest(
        &mut client,
        vec![record("D01", "r1", &[("name", "张伟"), ("birth_date", "1980-01-02")])],
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().starts_with("the data directory's disk has ")
            && status.message().ends_with(
                " bytes free, below storage.min_free_bytes (18446744073709551615); writes are refused until space is freed (reads go on)"
            ),
        "{}",
        status.message()
    );
    let stats = stats(&server).await;
    assert_eq!((stats.n_records, stats.applied_sequence), (0, 0));
    let status = server
        .admin_client()
        .await
        .merge(popmaster::pb::MergeRequest {
            person_a: "P1".into(),
            person_b: "P2".into(),
            note: String::new(),
        })
        .await
        .expect_err("refused");
    assert!(
        matches!(status.code(), tonic::Code::ResourceExhausted | tonic::Code::NotFound),
        "{status:?}"
    );
    server.stop().await;
}

/// A gzip bomb: a message that is small compressed (under the limit) and far over it once
/// decompressed. The server refuses it while decompressing, without taking its size in memory
/// (its peak resident memory barely moves), applies nothing of it, and goes on serving.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_gzip_bomb_is_refused_without_being_decompressed_whole() {
    use tonic::codec::CompressionEncoding;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("popmaster.toml");
    std::fs::write(&config_path, "[limits]\nmessage_bytes_max = 65536\n").expect("config");
    let config_arg = config_path.display().to_string();
    let server = ServerProcess::spawn_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        "info",
        &["--config", config_arg.as_str()],
    )
    .await;
    let peak_resident_kib = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    };
    let channel = connect(&server.url).await.expect("connect");
    let mut client = popmaster::pb::ingest_service_client::IngestServiceClient::new(channel)
        .send_compressed(CompressionEncoding::Gzip);
    // Warm the server up with a batch of its own first, and let the index take it in, so
    // the peak measures the bomb alone; then reset the peak.
    let normal = vec![record("D07", "before", &[("name", "张三")])];
    ingest(&mut client, normal).await.expect("a normal batch");
    index_caught_up(&server.url).await;
    std::fs::write(format!("/proc/{}/clear_refs", server.child.id()), "5").expect("reset the peak");
    let peak_before = peak_resident_kib(server.child.id());

    // 48 MiB of one letter: about 48 KiB compressed, under the 64 KiB limit, so it passes
    // the check of the compressed length and is refused while being decompressed.
    let bomb = vec![record("D07", "bomb", &[("name", &"a".repeat(48 << 20))])];
    let status = ingest(&mut client, bomb).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("while decompressing"), "{status:?}");
    let grown_kib = peak_resident_kib(server.child.id()).saturating_sub(peak_before);
    assert!(grown_kib < 16 << 10, "the peak grew by {grown_kib} KiB");

    // The service goes on: a normal batch is stored, the bomb is not.
    let after = vec![record("D07", "after", &[("name", "李四")])];
    ingest(&mut client, after).await.expect("a normal batch after");
    let stats =
        popmaster::pb::admin_service_client::AdminServiceClient::new(connect(&server.url).await.expect("connect"))
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("stats")
            .into_inner();
    assert_eq!(stats.n_records, 2);
    server.kill_9();
}
