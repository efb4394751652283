//! Watching the service: GetStats (per-source counts, index lag).

use crate::common::*;
use popmaster::config::Config;
use popmaster::pb;
use std::time::{Duration, Instant};

/// Runs the `popmaster` client with `args` against `server` (off the runtime, which serves).
async fn popmaster(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"));
    command.args(args).args(["--server", &server.url()]);
    tokio::task::spawn_blocking(move || command.output().expect("popmaster runs"))
        .await
        .expect("client task")
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

    // Without its index, the server starts with a fresh one that has applied nothing; with a
    // refresh interval of an hour and no write to wake it, it stays there.
    let data_dir = server.stop().await;
    std::fs::remove_dir_all(data_dir.path().join("data").join("index")).expect("remove the index");
    let mut config = Config::default();
    config.index.refresh_interval_ms = 3_600_000;
    let server = TestServer::start_in(data_dir, config).await;
    let lagging = stats(&server).await;
    assert_eq!(lagging.index_watermark, 0);
    assert_eq!(lagging.change_sequence, caught_up.change_sequence);
    assert_eq!(lagging.index_lag, caught_up.change_sequence);

    let output = popmaster(&server, &["stats"]).await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.contains(&format!("index lag          {}", caught_up.change_sequence).as_str()),
        "{stdout}"
    );
    assert!(lines.contains(&"records of D01     1"), "{stdout}");
    assert!(lines.contains(&"records of D07     1"), "{stdout}");
    server.stop().await;
}
