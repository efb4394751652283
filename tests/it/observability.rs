//! Watching the service: GetStats (per-source counts, index lag), the `/metrics` endpoint
//! against a live server, and the logs of the real binary at debug level.

use crate::common::*;
use popmaster::config::Config;
use popmaster::pb;
use popmaster::pb::Decision;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// One HTTP/1.1 request to the metrics endpoint: status line, headers and body.
async fn http_get(addr: SocketAddr, method: &str, path: &str) -> (String, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to metrics");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers end");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_ascii_lowercase(), body.to_string())
}

/// Every sample of a scrape: `name{labels}` -> value.
async fn scrape(server: &TestServer) -> BTreeMap<String, f64> {
    let (status, headers, body) = http_get(server.metrics_addr, "GET", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "Prometheus text format: {headers}"
    );
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample: series and value");
            (series.to_string(), value.parse().expect("numeric sample"))
        })
        .collect()
}

#[track_caller]
fn check(samples: &BTreeMap<String, f64>, series: &str, expected: f64) {
    assert_eq!(samples.get(series).copied(), Some(expected), "{series} in {samples:#?}");
}

fn rpc(service: &str, method: &str, code: &str) -> String {
    format!("popmaster_rpc_requests_total{{service=\"popmaster.v1.{service}\",method=\"{method}\",code=\"{code}\"}}")
}

/// Streams `batches` and reads every answer, until the server ends the stream with its status.
async fn stream_to_the_end(server: &TestServer, batches: Vec<pb::RecordBatch>) -> Vec<pb::BatchOutcome> {
    let mut client = server.ingest_client().await;
    let mut answers = client
        .stream_records(tokio_stream::iter(batches))
        .await
        .expect("stream starts")
        .into_inner();
    let mut outcomes = Vec::new();
    while let Some(answer) = answers.message().await.expect("stream ends with OK") {
        outcomes.push(answer);
    }
    outcomes
}

#[tokio::test]
async fn metrics_count_ingest_outcomes_and_calls_by_status() {
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    assert!(
        !before
            .keys()
            .any(|series| series.starts_with("popmaster_ingest_records_total")),
        "nothing ingested yet: {before:#?}"
    );
    check(&before, "popmaster_records", 0.0);
    // The process's own figures, under the names every Prometheus client library uses.
    for series in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_resident_anonymous_memory_bytes",
        "process_resident_memory_max_bytes",
        "process_virtual_memory_bytes",
        "process_threads",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            before.get(series).is_some_and(|value| *value > 0.0),
            "{series} in {before:#?}"
        );
    }

    let records = vec![
        record(
            "D01",
            "m1",
            &[("id_number", &id_number("19700101", 1)), ("name", "欧阳娜")],
        ),
        record(
            "D01",
            "m2",
            &[("id_number", &id_number("19700101", 2)), ("name", "司徒雷")],
        ),
        record(
            "D07",
            "m3",
            &[("id_number", &id_number("19700101", 3)), ("name", "上官婉")],
        ),
        record(
            "D07",
            "m4",
            &[("id_number", &id_number("19700101", 1)), ("name", "欧阳娜")],
        ),
        record("D99", "m5", &[("name", "诸葛亮")]),
    ];
    let answers = stream_to_the_end(&server, vec![pb::RecordBatch { batch_id: 1, records }]).await;
    assert_eq!(
        decisions(&answers[0]),
        vec![
            Decision::Created,
            Decision::Created,
            Decision::Created,
            Decision::Matched,
            Decision::Rejected
        ]
    );
    // A batch over the limit is refused whole, and the stream ends with INVALID_ARGUMENT.
    let too_many = (0..10_001)
        .map(|n| record("D01", &format!("x{n}"), &[("name", "x")]))
        .collect();
    let mut client = server.ingest_client().await;
    let status = ingest(&mut client, too_many).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut profiles = server.profile_client().await;
    let person_id = answers[0].outcomes[0].person_id.clone();
    profiles
        .get_profile(pb::GetProfileRequest {
            person_id,
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("found");
    let status = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: "P0000000000000000".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("no such person");
    assert_eq!(status.code(), Code::NotFound);
    let status = profiles
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: "12345".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("not an ID number");
    assert_eq!(status.code(), Code::InvalidArgument);

    let after = scrape(&server).await;
    check(&after, "popmaster_ingest_records_total{outcome=\"created\"}", 3.0);
    check(&after, "popmaster_ingest_records_total{outcome=\"matched\"}", 1.0);
    check(&after, "popmaster_ingest_records_total{outcome=\"rejected\"}", 1.0);
    assert!(!after.contains_key("popmaster_ingest_records_total{outcome=\"merged\"}"));
    check(&after, "popmaster_ingest_batches_total{result=\"acknowledged\"}", 1.0);
    check(&after, "popmaster_ingest_batches_total{result=\"refused\"}", 1.0);
    check(&after, "popmaster_ingest_batch_duration_seconds_count", 1.0);
    check(&after, &rpc("IngestService", "StreamRecords", "OK"), 1.0);
    check(&after, &rpc("IngestService", "StreamRecords", "INVALID_ARGUMENT"), 1.0);
    check(&after, &rpc("ProfileService", "GetProfile", "OK"), 1.0);
    check(&after, &rpc("ProfileService", "GetProfile", "NOT_FOUND"), 1.0);
    check(
        &after,
        &rpc("ProfileService", "GetProfileByIdNumber", "INVALID_ARGUMENT"),
        1.0,
    );
    let get_profile = "service=\"popmaster.v1.ProfileService\",method=\"GetProfile\"";
    check(
        &after,
        &format!("popmaster_rpc_duration_seconds_count{{{get_profile}}}"),
        2.0,
    );
    check(
        &after,
        &format!("popmaster_rpc_duration_seconds_bucket{{{get_profile},le=\"+Inf\"}}"),
        2.0,
    );
    check(&after, &format!("popmaster_rpc_in_flight{{{get_profile}}}"), 0.0);
    let health_checks = after
        .get("popmaster_rpc_requests_total{service=\"grpc.health.v1.Health\",method=\"Check\",code=\"OK\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(health_checks >= 1.0, "the start-up health check is counted too");
    // The gauges are read from the store at the scrape.
    check(&after, "popmaster_records", 4.0);
    check(&after, "popmaster_persons", 3.0);
    check(&after, "popmaster_source_records{source=\"D01\"}", 2.0);
    check(&after, "popmaster_source_records{source=\"D07\"}", 2.0);
    check(&after, "popmaster_review_items", 0.0);
    check(&after, "popmaster_write_path_failed", 0.0);
    check(&after, "popmaster_store_torn", 0.0);
    check(&after, "popmaster_store_readable", 1.0);
    assert!(after["popmaster_store_bytes"] > 0.0);
    // The store grows as the audit entries of these calls (the stats call's own among them)
    // are written in the background, so the stats reading lies between the two scrapes
    // around it.
    let first = scrape(&server).await["popmaster_store_bytes"];
    let stats = stats(&server).await.store_bytes as f64;
    let last = scrape(&server).await["popmaster_store_bytes"];
    assert!(
        first <= stats && stats <= last,
        "store bytes: scrape {first}, stats {stats}, scrape {last}"
    );

    // An open stream is in flight; one the client walks away from ends CANCELLED.
    let mut watch = profiles
        .watch_changes(pb::WatchChangesRequest { from_sequence: 0 })
        .await
        .expect("watch starts")
        .into_inner();
    watch.message().await.expect("changes").expect("a first batch");
    let watch_in_flight = "popmaster_rpc_in_flight{service=\"popmaster.v1.ProfileService\",method=\"WatchChanges\"}";
    check(&scrape(&server).await, watch_in_flight, 1.0);
    drop(watch);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape(&server).await;
        if samples.get(&rpc("ProfileService", "WatchChanges", "CANCELLED")) == Some(&1.0) {
            check(&samples, watch_in_flight, 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned watch is not counted: {samples:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, _, _) = http_get(server.metrics_addr, "GET", "/").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = http_get(server.metrics_addr, "POST", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");

    let metrics_addr = server.metrics_addr;
    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(metrics_addr).await.is_err(),
        "the metrics endpoint closes with the server"
    );
}

#[tokio::test]
async fn stats_count_records_per_source_and_the_index_lag() {
    let server = TestServer::start().await;
    let records = vec![
        record(
            "D01",
            "s1",
            &[("id_number", &id_number("19800202", 1)), ("name", "林黛玉")],
        ),
        record(
            "D01",
            "s2",
            &[("id_number", &id_number("19800202", 2)), ("name", "薛宝钗")],
        ),
        record(
            "D07",
            "s3",
            &[("id_number", &id_number("19800202", 3)), ("name", "王熙凤")],
        ),
    ];
    let mut client = server.ingest_client().await;
    ingest(&mut client, records).await.expect("ingest");
    // A re-sent record counts once, a deleted one not at all.
    let resent = record(
        "D07",
        "s3",
        &[
            ("id_number", &id_number("19800202", 3)),
            ("name", "王熙凤"),
            ("gender", "女"),
        ],
    );
    ingest(&mut client, vec![resent]).await.expect("ingest");
    client
        .delete_record(pb::DeleteRecordRequest {
            source: "D01".into(),
            record_id: "s2".into(),
        })
        .await
        .expect("delete");

    let deadline = Instant::now() + Duration::from_secs(30);
    let caught_up = loop {
        let stats = stats(&server).await;
        assert_eq!(stats.index_lag, stats.change_sequence - stats.index_watermark);
        if stats.index_lag == 0 {
            break stats;
        }
        assert!(Instant::now() < deadline, "the index did not catch up: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sources: Vec<(&str, u64)> = caught_up
        .sources
        .iter()
        .map(|source| (source.source.as_str(), source.n_records))
        .collect();
    assert_eq!(sources, vec![("D01", 1), ("D07", 1)]);
    assert_eq!(caught_up.n_records, 2);
    assert!(caught_up.change_sequence > 0);

    // Without its index, the server rebuilds it from the store at start; until then the lag
    // is the whole feed, then none.
    let data_dir = server.stop().await.expect("its own data directory");
    std::fs::remove_dir_all(data_dir.path().join("data").join("index")).expect("remove the index");
    let mut config = Config::default();
    config.index.refresh_interval_ms = 3_600_000;
    let server = TestServer::start_in(data_dir, config).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let rebuilt = loop {
        let stats = stats(&server).await;
        assert_eq!(stats.change_sequence, caught_up.change_sequence);
        assert_eq!(stats.index_lag, stats.change_sequence - stats.index_watermark);
        if stats.index_lag == 0 {
            break stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the index was not rebuilt: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(rebuilt.index_persons, rebuilt.n_persons);
    let samples = scrape(&server).await;
    check(&samples, "popmaster_index_lag", 0.0);

    let output = popmaster(&server, &["stats"]).await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"index lag          0"), "{stdout}");
    assert!(lines.contains(&"records of D01     1"), "{stdout}");
    assert!(lines.contains(&"records of D07     1"), "{stdout}");
    server.stop().await;
}

/// The real binary with JSON logs at the most verbose level (`POPMASTER_LOG=trace`, which
/// holds every debug event too): every line is a JSON object, and no ID number, phone, name or
/// address that went through it (records, reads, a search, bad input) appears in its log, as
/// text or as bytes. sled logs its write batches at trace level; the server holds it at info.
#[tokio::test]
async fn debug_json_logs_carry_no_personal_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("server.log");
    let mut server =
        ServerProcess::spawn_with(&dir.path().join("data"), &log_path, "trace", &["--log-format", "json"]).await;
    let id_a = id_number("19750505", 11);
    let id_b = id_number("19750505", 22);
    let id_unknown = id_number("19750505", 33);
    let id_a_spaced = format!("{} {} {}", &id_a[..6], &id_a[6..14], &id_a[14..]);
    let names = ["慕容复", "段誉", "王语嫣"];
    let phones = ["13912345678", "+86 139-8765-4321", "13987654321"];
    let address = "杭州西湖区文三路88号";
    let bad_id = "3301061975050599";
    let personal: Vec<&str> = [id_a.as_str(), id_b.as_str(), id_unknown.as_str(), id_a_spaced.as_str()]
        .into_iter()
        .chain(names)
        .chain(phones)
        .chain([address, bad_id, "小慕容"])
        .collect();

    let channel = connect(&server.url).await.expect("connect");
    let mut ingest_client = pb::ingest_service_client::IngestServiceClient::new(channel.clone());
    let answer = ingest(
        &mut ingest_client,
        vec![
            record(
                "D01",
                "p1",
                &[
                    ("id_number", &id_a),
                    ("name", names[0]),
                    ("phone", phones[0]),
                    ("address", address),
                ],
            ),
            record(
                "D07",
                "p2",
                &[("id_number", &id_a_spaced), ("name", names[0]), ("phone", phones[1])],
            ),
            record("D05", "p3", &[("id_number", &id_b), ("name", names[1])]),
            // Bad input: an ID number that cannot be one, a tag outside the catalog, a malformed
            // source.
            record("D05", "p4", &[("id_number", bad_id), ("name", names[2])]),
            record("D05", "p5", &[("nickname", "小慕容"), ("name", names[2])]),
            record("Q5", "p6", &[("name", names[2]), ("phone", phones[2])]),
        ],
    )
    .await
    .expect("ingest");
    let rejected = decisions(&answer).iter().filter(|d| **d == Decision::Rejected).count();
    assert_eq!(rejected, 2, "{answer:?}");

    let mut profiles = pb::profile_service_client::ProfileServiceClient::new(channel);
    let found = profiles
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: id_a.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(profile_values(&found)["name"], names[0]);
    profiles
        .get_profile(pb::GetProfileRequest {
            person_id: found.person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("found");
    profiles
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: "D05".into(),
            record_id: "p3".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("found");
    let search = profiles
        .search_persons(pb::SearchPersonsRequest {
            name: names[0].into(),
            phone: phones[1].into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(search.persons[0].person_id, found.person_id);
    for (id_number, code) in [(id_unknown.as_str(), Code::NotFound), (bad_id, Code::InvalidArgument)] {
        let status = profiles
            .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
                id_number: id_number.into(),
                tag_mask: vec![],
                compact: false,
            })
            .await
            .expect_err("not found or invalid");
        assert_eq!(status.code(), code);
    }
    let status = profiles
        .search_persons(pb::SearchPersonsRequest {
            name: "不详".into(),
            ..Default::default()
        })
        .await
        .expect_err("nothing left to search by");
    assert_eq!(status.code(), Code::InvalidArgument);

    // SIGTERM: the log is complete once the server has exited.
    let pid = i32::try_from(server.child.id()).expect("pid fits");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let log = server.log();
    let mut n_lines = 0;
    let mut messages = Vec::new();
    for line in log.lines().filter(|line| !line.trim().is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        assert!(event["level"].is_string() && event["target"].is_string(), "{line}");
        messages.push((
            event["level"].as_str().unwrap_or_default().to_string(),
            event["fields"]["message"].as_str().unwrap_or_default().to_string(),
        ));
        n_lines += 1;
    }
    assert!(n_lines > 0, "the server logged nothing");
    assert!(
        messages
            .iter()
            .any(|(level, message)| level == "DEBUG" && message == "call finished"),
        "debug events are logged: {messages:?}"
    );
    assert!(
        log.contains("\"method\":\"GetProfileByIdNumber\"") && log.contains("\"code\":\"NOT_FOUND\""),
        "calls are logged with their method and code"
    );
    for value in personal {
        assert!(!log.contains(value), "the log holds a personal value {value:?}");
        // As a Debug-printed byte slice, the way a key-value store would print a key.
        let bytes = value
            .bytes()
            .map(|byte| byte.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            !log.contains(&bytes),
            "the log holds a personal value {value:?} as bytes"
        );
    }
}
