//! What the edge does with time and with strangers, through the real server: calls end at
//! their deadline with DEADLINE_EXCEEDED (and a call already late does nothing), refusals of
//! calls without a token are audited at a bounded rate with the rest counted, and a purpose in
//! Chinese reaches the audit log through binary metadata.

use crate::common::{ingest, synthetic_records, TestServer};
use crate::security::{assert_status, load_resident, popmaster, SecureServer};
use popmaster::config::Config;
use popmaster::pb;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::Code;

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

async fn audit_of(secure: &SecureServer, caller: &str) -> Vec<pb::AuditEntry> {
    secure
        .admin(Some("token-ops"))
        .await
        .query_audit(pb::QueryAuditRequest {
            caller: caller.into(),
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner()
        .entries
}

/// Waits for the audit log to hold `n` entries of `caller` (a late call's entry is written
/// after its answer).
async fn wait_for_audit(secure: &SecureServer, caller: &str, n: usize) -> Vec<pb::AuditEntry> {
    let started = Instant::now();
    loop {
        let entries = audit_of(secure, caller).await;
        if entries.len() >= n || started.elapsed() > Duration::from_secs(10) {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server answers at once a call that reaches it within 5 ms of its deadline, without
/// running it; the caller hears it unless its own timer (tonic's client keeps one) fires first
/// on a busy machine, so each call is tried a few times.
const ALREADY_LATE: Duration = Duration::from_millis(5);
const TRIES: usize = 20;

#[tokio::test]
async fn a_call_past_its_deadline_does_nothing_and_is_answered_deadline_exceeded() {
    let secure = SecureServer::start().await;
    let person_id = load_resident(&secure).await;

    let mut portal = secure.profiles(Some("token-portal"), Some("case-9")).await;
    let mut late_reads = 0;
    let mut reached = false;
    for _ in 0..TRIES {
        let late = portal
            .get_profile(with_timeout(
                pb::GetProfileRequest {
                    person_id: person_id.clone(),
                    tag_mask: vec![],
                    compact: false,
                },
                ALREADY_LATE,
            ))
            .await
            .expect_err("late");
        late_reads += 1;
        if late.code() == Code::DeadlineExceeded {
            assert!(
                late.message().contains("the caller's deadline (grpc-timeout 5 ms)"),
                "{}",
                late.message()
            );
            reached = true;
            break;
        }
        assert_eq!(late.code(), Code::Cancelled, "{late:?}");
    }
    assert!(reached, "no late read reached the server in {TRIES} tries");

    // A deletion that arrives late is not applied.
    let mut writer = secure.ingest(Some("token-etl-d07")).await;
    let mut late_deletes = 0;
    let mut reached = false;
    for _ in 0..TRIES {
        let late = writer
            .delete_record(with_timeout(
                pb::DeleteRecordRequest {
                    source: "D07".into(),
                    record_id: "r1".into(),
                },
                ALREADY_LATE,
            ))
            .await
            .expect_err("late");
        late_deletes += 1;
        if late.code() == Code::DeadlineExceeded {
            reached = true;
            break;
        }
        assert_eq!(late.code(), Code::Cancelled, "{late:?}");
    }
    assert!(reached, "no late deletion reached the server in {TRIES} tries");
    assert_eq!(secure.n_records().await, 1);

    // Each try that reached the server is in the audit log as it ended (a try its client
    // cancelled first may never have reached it), and a call in time is served as before.
    let entries = wait_for_audit(&secure, "portal", 1).await;
    assert!((1..=late_reads).contains(&entries.len()), "{entries:?}");
    for entry in &entries {
        assert!(entry.outcome.starts_with("DEADLINE_EXCEEDED: "), "{entry:?}");
    }
    // The batch that loaded the resident (its stream's opening and the batch), then deletions.
    let entries = wait_for_audit(&secure, "etl-d07", 3).await;
    let deletes: Vec<&pb::AuditEntry> = entries
        .iter()
        .filter(|entry| entry.action == "IngestService/DeleteRecord")
        .collect();
    assert!((1..=late_deletes).contains(&deletes.len()), "{entries:?}");
    for entry in deletes {
        assert!(entry.outcome.starts_with("DEADLINE_EXCEEDED: "), "{entry:?}");
    }
    let profile = portal
        .get_profile(with_timeout(
            pb::GetProfileRequest {
                person_id: person_id.clone(),
                tag_mask: vec![],
                compact: false,
            },
            Duration::from_secs(10),
        ))
        .await
        .expect("in time")
        .into_inner();
    assert_eq!(profile.person_id, person_id);
    secure.server.stop().await;
}

#[tokio::test]
async fn a_call_slower_than_the_servers_bound_is_answered_deadline_exceeded() {
    let mut config = Config::default();
    config.server.admin_call_deadline_ms = 1;
    let server = TestServer::start_with(config).await;
    ingest(&mut server.ingest_client().await, synthetic_records(5, 300))
        .await
        .expect("loaded");
    let slow = server
        .admin_client()
        .await
        .train_model(pb::TrainModelRequest {})
        .await
        .expect_err("training takes longer than 1 ms");
    assert_eq!(slow.code(), Code::DeadlineExceeded, "{slow:?}");
    assert!(
        slow.message().contains("the server's bound of 1 ms"),
        "{}",
        slow.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stream_ends_with_deadline_exceeded_at_the_callers_deadline() {
    let server = TestServer::start().await;
    let mut client = server.profile_client().await;
    let started = Instant::now();
    let mut changes = client
        .watch_changes(with_timeout(
            pb::WatchChangesRequest { from_sequence: 0 },
            Duration::from_millis(500),
        ))
        .await
        .expect("the stream opens")
        .into_inner();
    let ended = loop {
        match changes.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn refusals_without_a_token_are_audited_at_a_bounded_rate_and_the_rest_counted() {
    let mut config = Config::default();
    config.auth.refusal_audit_per_second = 2.0;
    config.auth.refusal_audit_burst = 3;
    let secure = SecureServer::start_with(config).await;
    let stranger = secure.profiles(None, None).await;
    let refuse = |mut stranger: ProfileServiceClient<crate::security::Authed>| async move {
        assert_status(
            stranger
                .get_profile(pb::GetProfileRequest {
                    person_id: "P0".into(),
                    tag_mask: vec![],
                    compact: false,
                })
                .await,
            Code::Unauthenticated,
            "no bearer token: send the header authorization: Bearer <token>",
        );
    };
    let flood_started = Instant::now();
    for _ in 0..40 {
        refuse(stranger.clone()).await;
    }
    let flood_seconds = flood_started.elapsed().as_secs_f64();
    // Enough time for the bucket to hold one more entry, which counts the ones left out.
    tokio::time::sleep(Duration::from_millis(700)).await;
    refuse(stranger).await;
    // A caller with a token is served and audited meanwhile.
    let mut portal = secure.profiles(Some("token-portal"), Some("case-1")).await;
    assert_status(
        portal
            .get_profile(pb::GetProfileRequest {
                person_id: "P0".into(),
                tag_mask: vec![],
                compact: false,
            })
            .await,
        Code::NotFound,
        "person P0 not found",
    );

    let entries = audit_of(&secure, "unauthenticated").await;
    // The burst of 3, what the rate refilled during the flood, and the one after the pause.
    let most = 3 + (2.0 * flood_seconds).ceil() as usize + 1;
    assert!(
        (4..=most).contains(&entries.len()),
        "{} entries, at most {most}",
        entries.len()
    );
    let left_out: u64 = entries
        .iter()
        .filter_map(|entry| {
            let (count, _) = entry.detail.split_once("; ")?.1.split_once(' ')?;
            count.parse::<u64>().ok()
        })
        .sum();
    assert_eq!(entries.len() as u64 + left_out, 41, "{entries:?}");
    for entry in &entries {
        assert!(entry.detail.starts_with("peer 127.0.0.1:"), "{entry:?}");
    }
    assert!(
        entries
            .last()
            .expect("one")
            .detail
            .ends_with("earlier refusals without a valid token were not audited one by one"),
        "{entries:?}"
    );
    assert_eq!(audit_of(&secure, "portal").await.len(), 1);
    secure.server.stop().await;
}

#[tokio::test]
async fn a_purpose_in_chinese_is_stated_as_binary_metadata() {
    let secure = SecureServer::start().await;
    let person_id = load_resident(&secure).await;
    let channel = secure.server.channel().await;
    let mut reader = ProfileServiceClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
        let metadata = request.metadata_mut();
        metadata.insert(
            "authorization",
            MetadataValue::try_from("Bearer token-portal").expect("ascii"),
        );
        metadata.insert_bin(
            "x-purpose-bin",
            MetadataValue::from_bytes("社保待遇资格认证".as_bytes()),
        );
        Ok(request)
    });
    reader
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("served");

    // The command line sends a purpose that is not ASCII the same way.
    let output = popmaster(
        &secure.server,
        &["get", &person_id, "--json"],
        &[
            ("POPMASTER_TOKEN", "token-portal"),
            ("POPMASTER_PURPOSE", "户籍核验 2026-118"),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");

    let purposes: Vec<String> = audit_of(&secure, "portal")
        .await
        .into_iter()
        .map(|entry| entry.purpose)
        .collect();
    assert_eq!(purposes, ["社保待遇资格认证", "户籍核验 2026-118"]);
    secure.server.stop().await;
}
