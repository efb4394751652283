//! SIGTERM: the server stops accepting, finishes in-flight work, flushes and exits 0; what it
//! acknowledged is there after a restart, without replaying the write-ahead log.

use crate::common::*;
use popmaster::pb;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let mut server = ServerProcess::spawn(&data_dir, &log_path).await;
    let channel = connect(&server.url).await.expect("connect");
    let mut ingest_client = pb::ingest_service_client::IngestServiceClient::new(channel);
    let records = (0..200u32)
        .map(|n| {
            record(
                "D01",
                &format!("s{n}"),
                &[("id_number", &id_number("19600606", n % 50)), ("name", "孙丽")],
            )
        })
        .collect();
    ingest(&mut ingest_client, records).await.expect("ingest");

    let pid = i32::try_from(server.child.id()).expect("pid fits");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let log = server.log();
    assert!(log.contains("shutdown complete"), "{log}");

    let server = ServerProcess::spawn(&data_dir, &log_path).await;
    assert!(
        !server.log().contains("replayed the write-ahead log"),
        "a clean shutdown needs no replay"
    );
    let channel = connect(&server.url).await.expect("connect");
    let stats = pb::admin_service_client::AdminServiceClient::new(channel)
        .get_stats(pb::GetStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!((stats.n_records, stats.n_persons), (200, 50));
    assert_eq!(stats.index_persons, 50, "the index was committed at shutdown");
    server.kill_9();
}

/// A client command piped into a reader that stops early ends quietly, as Unix tools do.
#[test]
fn client_commands_end_quietly_on_a_closed_pipe() {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"))
        .args(["generate", "--persons", "5000", "--out", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("popmaster starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let output = child.wait_with_output().expect("popmaster ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim().is_empty(), "no panic, no broken-pipe error: {stderr}");
}
