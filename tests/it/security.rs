//! Access control through the real server: bearer tokens (missing, invalid, revoked, rotated),
//! the roles each call needs, writers confined to their sources, readers confined to their tags
//! and stated purposes, masking of what a reader is not cleared for, and the refusal to run
//! open on a non-loopback address. Every refusal asserts its exact status, and that nothing
//! leaked or changed.

use crate::common::*;
use popmaster::callers::{hash_token, to_hex};
use popmaster::config::Config;
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;
use popmaster::pb::ingest_service_client::IngestServiceClient;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

/// Sends a token and a purpose with every call.
#[derive(Clone)]
pub struct Credentials {
    token: Option<String>,
    purpose: Option<String>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ASCII token");
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(purpose) = &self.purpose {
            let value = MetadataValue::try_from(purpose.as_str()).expect("ASCII purpose");
            request.metadata_mut().insert("x-purpose", value);
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Credentials>;

/// The callers of these tests: two source writers, a reader under L3 (masked above L2), a
/// cleared reader, a steward, an operator, an operator limited to 5 calls a second and a reader
/// limited to 2 open calls. Each token is `token-<id>`.
pub fn callers_toml(portal_token: &str) -> String {
    let hash = |token: &str| to_hex(&hash_token(token));
    format!(
        r#"
[[caller]]
id = "etl-d07"
tokens_sha256 = ["{d07}"]
writer = ["D07"]

[[caller]]
id = "etl-d08"
tokens_sha256 = ["{d08}"]
writer = ["D08"]

[[caller]]
id = "portal"
tokens_sha256 = ["{portal}"]
[caller.reader]
sensitivity_max = "L3"

[[caller]]
id = "police"
tokens_sha256 = ["{police}"]
[caller.reader]
sensitivity_max = "L4"
unmasked_max = "L4"

[[caller]]
id = "steward"
tokens_sha256 = ["{steward}"]
steward = true

[[caller]]
id = "ops"
tokens_sha256 = ["{ops}"]
operator = true

[[caller]]
id = "flood"
tokens_sha256 = ["{flood}"]
operator = true
calls_per_second = 5.0
calls_burst = 5

[[caller]]
id = "streamer"
tokens_sha256 = ["{streamer}"]
concurrent_calls_max = 2
[caller.reader]
sensitivity_max = "L1"
"#,
        d07 = hash("token-etl-d07"),
        d08 = hash("token-etl-d08"),
        portal = hash(portal_token),
        police = hash("token-police"),
        steward = hash("token-steward"),
        ops = hash("token-ops"),
        flood = hash("token-flood"),
        streamer = hash("token-streamer"),
    )
}

/// A server with a callers file (reread every 100 ms).
pub struct SecureServer {
    pub server: TestServer,
    pub callers_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SecureServer {
    pub async fn start() -> SecureServer {
        SecureServer::start_with(Config::default()).await
    }

    pub async fn start_with(mut config: Config) -> SecureServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let callers_path = dir.path().join("callers.toml");
        std::fs::write(&callers_path, callers_toml("token-portal")).expect("write callers");
        config.auth.callers_file = Some(callers_path.clone());
        config.auth.reload_interval_ms = 100;
        let server = TestServer::start_with(config).await;
        SecureServer {
            server,
            callers_path,
            _dir: dir,
        }
    }

    async fn authed(&self, token: Option<&str>, purpose: Option<&str>) -> Authed {
        InterceptedService::new(
            self.server.channel().await,
            Credentials {
                token: token.map(String::from),
                purpose: purpose.map(String::from),
            },
        )
    }

    pub async fn ingest(&self, token: Option<&str>) -> IngestServiceClient<Authed> {
        IngestServiceClient::new(self.authed(token, None).await)
    }

    pub async fn profiles(&self, token: Option<&str>, purpose: Option<&str>) -> ProfileServiceClient<Authed> {
        ProfileServiceClient::new(self.authed(token, purpose).await)
    }

    pub async fn admin(&self, token: Option<&str>) -> AdminServiceClient<Authed> {
        AdminServiceClient::new(self.authed(token, None).await)
    }

    pub async fn n_records(&self) -> u64 {
        self.admin(Some("token-ops"))
            .await
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("stats")
            .into_inner()
            .n_records
    }
}

/// Sends one batch on a fresh stream; the status if the stream ends with one.
pub async fn send_batch(
    client: &mut IngestServiceClient<Authed>,
    records: Vec<pb::Record>,
) -> Result<pb::BatchOutcome, tonic::Status> {
    let batch = pb::RecordBatch { batch_id: 7, records };
    let mut answers = client
        .stream_records(tokio_stream::iter(vec![batch]))
        .await?
        .into_inner();
    match answers.message().await? {
        Some(answer) => Ok(answer),
        None => Err(tonic::Status::unknown("the stream ended without an answer")),
    }
}

#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, message: &str) {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), status.message()), (code, message), "{status:?}");
}

pub const NAME: &str = "张三明";
pub const PHONE: &str = "13800001234";

pub fn resident_id_number() -> String {
    id_number("19900102", 123)
}

/// One resident from D07, with every identity tag and a department tag.
pub fn resident(record_id: &str) -> pb::Record {
    record(
        "D07",
        record_id,
        &[
            ("name", NAME),
            ("id_number", &resident_id_number()),
            ("phone", "138-0000-1234"),
            ("gender", "男"),
            ("birth_date", "1990-01-02"),
            ("address", "浙江省杭州市西湖区文三路1号"),
        ],
    )
}

/// Loads the resident as its writer; returns the person id.
pub async fn load_resident(secure: &SecureServer) -> String {
    let outcome = send_batch(&mut secure.ingest(Some("token-etl-d07")).await, vec![resident("r1")])
        .await
        .expect("the writer of D07 writes D07");
    assert_eq!(decisions(&outcome), [pb::Decision::Created]);
    outcome.outcomes[0].person_id.clone()
}

/// Which of the personal values appear anywhere in an encoded answer.
pub fn leaked(message: &impl Message) -> Vec<&'static str> {
    let bytes = message.encode_to_vec();
    let id_number = resident_id_number();
    let secrets: [(&'static str, &[u8]); 4] = [
        ("name", NAME.as_bytes()),
        ("phone", PHONE.as_bytes()),
        ("id_number", id_number.as_bytes()),
        ("birth date", b"19900102"),
    ];
    secrets
        .into_iter()
        .filter(|(_, secret)| bytes.windows(secret.len()).any(|window| window == *secret))
        .map(|(what, _)| what)
        .collect()
}

#[tokio::test]
async fn missing_invalid_and_malformed_tokens_are_unauthenticated_and_health_stays_open() {
    let secure = SecureServer::start().await;
    // The helper itself waits on health without a token: it is open.
    wait_until_serving(&secure.server.url()).await;

    let request = || pb::GetProfileRequest {
        person_id: "P1".into(),
        tag_mask: vec![],
        compact: false,
    };
    assert_status(
        secure.profiles(None, Some("case-1")).await.get_profile(request()).await,
        Code::Unauthenticated,
        "no bearer token: send the header authorization: Bearer <token>",
    );
    assert_status(
        secure
            .profiles(Some("token-nobody"), Some("case-1"))
            .await
            .get_profile(request())
            .await,
        Code::Unauthenticated,
        "the bearer token is not valid (unknown or revoked)",
    );
    let mut malformed =
        ProfileServiceClient::with_interceptor(secure.server.channel().await, |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", MetadataValue::from_static("Basic dG9rZW4tb3Bz"));
            Ok(request)
        });
    assert_status(
        malformed.get_profile(request()).await,
        Code::Unauthenticated,
        "the authorization header is not \"Bearer <token>\"",
    );
    // A stream without a token stores nothing.
    assert_status(
        send_batch(&mut secure.ingest(None).await, vec![resident("r1")]).await,
        Code::Unauthenticated,
        "no bearer token: send the header authorization: Bearer <token>",
    );
    assert_status(
        send_batch(&mut secure.ingest(Some("token-nobody")).await, vec![resident("r1")]).await,
        Code::Unauthenticated,
        "the bearer token is not valid (unknown or revoked)",
    );
    assert_eq!(secure.n_records().await, 0);
    secure.server.stop().await;
}

#[tokio::test]
async fn each_role_reaches_only_its_calls() {
    let secure = SecureServer::start().await;
    let person_id = load_resident(&secure).await;

    // A reader may not steward, operate or write.
    assert_status(
        secure
            .admin(Some("token-portal"))
            .await
            .merge(pb::MergeRequest {
                person_a: person_id.clone(),
                person_b: "P2".into(),
                note: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "caller portal may not call AdminService/Merge: it needs the steward role",
    );
    assert_status(
        send_batch(&mut secure.ingest(Some("token-portal")).await, vec![resident("r2")]).await,
        Code::PermissionDenied,
        "caller portal may not call IngestService/StreamRecords: it needs the writer role",
    );
    // A writer may not read; a steward may not operate; an operator may not steward.
    assert_status(
        secure
            .profiles(Some("token-etl-d07"), Some("case-1"))
            .await
            .get_profile(pb::GetProfileRequest {
                person_id: person_id.clone(),
                tag_mask: vec![],
                compact: false,
            })
            .await,
        Code::PermissionDenied,
        "caller etl-d07 may not call ProfileService/GetProfile: it needs the reader role",
    );
    assert_status(
        secure
            .admin(Some("token-steward"))
            .await
            .get_stats(pb::GetStatsRequest {})
            .await,
        Code::PermissionDenied,
        "caller steward may not call AdminService/GetStats: it needs the operator role",
    );
    assert_status(
        secure
            .admin(Some("token-ops"))
            .await
            .list_review_items(pb::ListReviewItemsRequest::default())
            .await,
        Code::PermissionDenied,
        "caller ops may not call AdminService/ListReviewItems: it needs the steward role",
    );
    // A reader must say why.
    assert_status(
        secure
            .profiles(Some("token-police"), None)
            .await
            .get_profile(pb::GetProfileRequest {
                person_id: person_id.clone(),
                tag_mask: vec![],
                compact: false,
            })
            .await,
        Code::PermissionDenied,
        "caller police must state the purpose of ProfileService/GetProfile in the x-purpose header",
    );
    // What each role may do, it does.
    secure
        .admin(Some("token-steward"))
        .await
        .list_review_items(pb::ListReviewItemsRequest::default())
        .await
        .expect("a steward lists the review queue");
    secure
        .profiles(Some("token-steward"), None)
        .await
        .get_profile_history(pb::GetProfileHistoryRequest {
            person_id: person_id.clone(),
            ..Default::default()
        })
        .await
        .expect("a steward reads histories");
    secure
        .admin(Some("token-etl-d07"))
        .await
        .get_catalog(pb::GetCatalogRequest {})
        .await
        .expect("any caller reads the catalog");
    assert_eq!(secure.n_records().await, 1, "the refused batch stored nothing");
    secure.server.stop().await;
}

#[tokio::test]
async fn a_writer_writes_and_deletes_only_its_own_sources_records() {
    let secure = SecureServer::start().await;
    let mut d07 = secure.ingest(Some("token-etl-d07")).await;
    let mixed = vec![
        resident("r1"),
        record("D08", "x1", &[("name", "李四"), ("phone", "13900001111")]),
    ];
    assert_status(
        send_batch(&mut d07, mixed).await,
        Code::PermissionDenied,
        "caller etl-d07 may not write records of source D08 (batch 7, record 1); it writes D07; nothing was applied",
    );
    assert_eq!(
        secure.n_records().await,
        0,
        "not even the D07 record of the refused batch"
    );

    let mut d08 = secure.ingest(Some("token-etl-d08")).await;
    let outcome = send_batch(
        &mut d08,
        vec![record("D08", "x1", &[("name", "李四"), ("phone", "13900001111")])],
    )
    .await
    .expect("the writer of D08 writes D08");
    assert_eq!(decisions(&outcome), [pb::Decision::Created]);

    assert_status(
        d07.delete_record(pb::DeleteRecordRequest {
            source: "D08".into(),
            record_id: "x1".into(),
        })
        .await,
        Code::PermissionDenied,
        "caller etl-d07 may not write records of source D08 (DeleteRecord, record 0); it writes D07; nothing was applied",
    );
    let still_there = secure
        .profiles(Some("token-police"), Some("case-2"))
        .await
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: "D08".into(),
            record_id: "x1".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("the record was not deleted")
        .into_inner();
    assert_eq!(still_there.person_id, outcome.outcomes[0].person_id);
    d08.delete_record(pb::DeleteRecordRequest {
        source: "D08".into(),
        record_id: "x1".into(),
    })
    .await
    .expect("its own writer deletes it");
    assert_eq!(secure.n_records().await, 0);
    secure.server.stop().await;
}

/// Rewrites the callers file and waits until `token` gets `expected` from GetCatalog.
async fn wait_for_token(secure: &SecureServer, token: &str, expected: Code) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = secure
            .admin(Some(token))
            .await
            .get_catalog(pb::GetCatalogRequest {})
            .await;
        let code = answer.map_or_else(|status| status.code(), |_| Code::Ok);
        if code == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "token still answers {code:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

#[tokio::test]
async fn tokens_rotate_and_revoke_without_a_restart_and_a_bad_file_keeps_the_callers() {
    let secure = SecureServer::start().await;
    wait_for_token(&secure, "token-portal", Code::Ok).await;

    // Rotation: the portal's token is replaced; the old one is refused from the next reload.
    write_atomically(&secure.callers_path, &callers_toml("token-portal-2"));
    wait_for_token(&secure, "token-portal-2", Code::Ok).await;
    wait_for_token(&secure, "token-portal", Code::Unauthenticated).await;

    // A broken file is refused: the callers loaded before stay in force.
    write_atomically(&secure.callers_path, "[[caller]]\nid = \"broken\"\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_token(&secure, "token-portal-2", Code::Ok).await;
    wait_for_token(&secure, "token-portal", Code::Unauthenticated).await;

    // Revocation: a file without the portal.
    let without_portal: String = callers_toml("token-portal-2")
        .split("[[caller]]")
        .filter(|section| !section.contains("\"portal\""))
        .collect::<Vec<_>>()
        .join("[[caller]]");
    write_atomically(&secure.callers_path, &without_portal);
    wait_for_token(&secure, "token-portal-2", Code::Unauthenticated).await;
    wait_for_token(&secure, "token-ops", Code::Ok).await;
    secure.server.stop().await;
}

#[tokio::test]
async fn a_non_loopback_address_without_callers_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    // Bound to every interface, never connected to: the server must refuse before serving.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let error = popmaster::serve(config, popmaster::catalog::Catalog::shipped(), listener, None, async {})
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(message.starts_with("refusing to serve 0.0.0.0:"), "{message}");
    assert!(message.contains("Set auth.callers_file"), "{message}");
    assert!(!dir.path().join("data").exists(), "no store was opened");
}

#[tokio::test]
async fn readers_get_only_their_tags_and_masked_values_unless_cleared() {
    let secure = SecureServer::start().await;
    let person_id = load_resident(&secure).await;
    let mut portal = secure.profiles(Some("token-portal"), Some("one-id-card/case-7")).await;
    let mut police = secure.profiles(Some("token-police"), Some("investigation-12")).await;

    // Under L3, masked above L2: no id_number (L4); name, phone, birth date, address masked.
    let profile = portal
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("portal reads")
        .into_inner();
    let values = profile_values(&profile);
    assert_eq!(values.get("id_number"), None);
    assert_eq!(values.get("name").map(String::as_str), Some("张*明"));
    assert_eq!(values.get("phone").map(String::as_str), Some("138****1234"));
    assert_eq!(values.get("birth_date").map(String::as_str), Some("1990-**-**"));
    assert_eq!(values.get("gender").map(String::as_str), Some("男"));
    let address = values.get("address").expect("address");
    assert!(address.ends_with("******") && !address.contains("文三路"), "{address}");
    assert_eq!(leaked(&profile), Vec::<&str>::new());

    // Asking for a tag beyond the grant is refused whole.
    assert_status(
        portal
            .get_profile(pb::GetProfileRequest {
                person_id: person_id.clone(),
                tag_mask: vec!["name".into(), "id_number".into()],
                compact: false,
            })
            .await,
        Code::PermissionDenied,
        "caller portal may not read tag id_number",
    );

    // The cleared reader sees every value whole.
    let full = police
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("police reads")
        .into_inner();
    let full_values = profile_values(&full);
    assert_eq!(full_values.get("id_number"), Some(&resident_id_number()));
    assert_eq!(full_values.get("name").map(String::as_str), Some(NAME));
    assert_eq!(full_values.get("phone").map(String::as_str), Some(PHONE));

    // A lookup by ID number is a read of it: not for a reader without the tag.
    assert_status(
        portal
            .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
                id_number: resident_id_number(),
                tag_mask: vec![],
                compact: false,
            })
            .await,
        Code::PermissionDenied,
        "caller portal may not look a person up by id_number: it may not read tag id_number",
    );
    let by_id_number = police
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: resident_id_number(),
            tag_mask: vec!["name".into(), "phone".into()],
            compact: false,
        })
        .await
        .expect("by ID number")
        .into_inner();
    assert_eq!(by_id_number.person_id, person_id);

    // Every other read of a profile obeys the same grant.
    let by_record = portal
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: "D07".into(),
            record_id: "r1".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("by record")
        .into_inner();
    assert_eq!(profile_values(&by_record), values);
    let batch = portal
        .batch_get_profiles(pb::BatchGetProfilesRequest {
            person_ids: vec![person_id.clone()],
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(profile_values(&batch.profiles[0]), values);
    assert_eq!(leaked(&batch), Vec::<&str>::new());
    let mut chunks = portal
        .export_profiles(pb::ExportProfilesRequest::default())
        .await
        .expect("export")
        .into_inner();
    let mut exported = Vec::new();
    while let Some(chunk) = chunks.message().await.expect("chunk") {
        assert_eq!(leaked(&chunk), Vec::<&str>::new());
        exported.extend(chunk.profiles);
    }
    assert_eq!(exported.len(), 1);
    assert_eq!(profile_values(&exported[0]), values);
    assert_status(
        portal
            .export_profiles(pb::ExportProfilesRequest {
                tag_mask: vec!["id_number".into()],
                compact: false,
            })
            .await,
        Code::PermissionDenied,
        "caller portal may not read tag id_number",
    );

    // Lineage: a forbidden tag is refused, a masked one is masked in every value it shows.
    assert_status(
        portal
            .get_tag_lineage(pb::GetTagLineageRequest {
                person_id: person_id.clone(),
                tag: "id_number".into(),
            })
            .await,
        Code::PermissionDenied,
        "caller portal may not read tag id_number",
    );
    let lineage = portal
        .get_tag_lineage(pb::GetTagLineageRequest {
            person_id: person_id.clone(),
            tag: "phone".into(),
        })
        .await
        .expect("lineage")
        .into_inner();
    assert_eq!(
        lineage.winner.as_ref().map(|winner| winner.value.as_str()),
        Some("138****1234")
    );
    assert_eq!(lineage.contributions[0].raw, "138******1234");
    assert_eq!(leaked(&lineage), Vec::<&str>::new());

    // History: only the tag names the reader may read.
    let history = portal
        .get_profile_history(pb::GetProfileHistoryRequest {
            person_id: person_id.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let changed = &history.entries[0].changed_tags;
    assert!(changed.contains(&"phone".to_string()), "{changed:?}");
    assert!(!changed.contains(&"id_number".to_string()), "{changed:?}");

    // Search: not by an attribute the reader may not read; by the others, the person only.
    assert_status(
        portal
            .search_persons(pb::SearchPersonsRequest {
                id_number: resident_id_number(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "caller portal may not search by id_number: it may not read tag id_number",
    );
    let found = portal
        .search_persons(pb::SearchPersonsRequest {
            name: NAME.into(),
            phone: PHONE.into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.persons[0].person_id, person_id);
    assert_eq!(leaked(&found), Vec::<&str>::new());
    secure.server.stop().await;
}

/// Runs the `popmaster` client against `server` with `env` (off the runtime, which serves).
pub async fn popmaster(server: &TestServer, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"));
    command
        .args(args)
        .args(["--server", &server.url()])
        .env_remove("POPMASTER_TOKEN")
        .env_remove("POPMASTER_PURPOSE");
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::task::spawn_blocking(move || command.output().expect("popmaster runs"))
        .await
        .expect("client task")
}

#[tokio::test]
async fn the_client_commands_send_the_token_and_the_purpose() {
    let secure = SecureServer::start().await;
    let person_id = load_resident(&secure).await;

    let output = popmaster(&secure.server, &["get", &person_id, "--json"], &[]).await;
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Unauthenticated: no bearer token"), "{stderr}");

    let output = popmaster(
        &secure.server,
        &["get", &person_id, "--json", "--token", "token-portal"],
        &[],
    )
    .await;
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must state the purpose"), "{stderr}");

    let output = popmaster(
        &secure.server,
        &["get", &person_id, "--json"],
        &[
            ("POPMASTER_TOKEN", "token-portal"),
            ("POPMASTER_PURPOSE", "one-id-card/case-7"),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("138****1234"), "{stdout}");
    assert!(!stdout.contains(PHONE) && !stdout.contains(NAME), "{stdout}");
    assert!(!stdout.contains(&resident_id_number()), "{stdout}");
    secure.server.stop().await;
}

#[test]
fn popmaster_token_makes_a_token_whose_hash_it_prints() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"))
        .arg("token")
        .output()
        .expect("popmaster token runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_string())
            .expect("field printed")
    };
    let (token, hash) = (field("token:"), field("tokens_sha256:"));
    assert_eq!(token.len(), 64);
    assert_eq!(hash, to_hex(&hash_token(&token)));

    let mut hashing = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"))
        .args(["token", "--hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("popmaster token --hash runs");
    std::io::Write::write_all(
        &mut hashing.stdin.take().expect("stdin"),
        format!("{token}\n").as_bytes(),
    )
    .expect("write the token");
    let output = hashing.wait_with_output().expect("hash printed");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), hash);
}

#[tokio::test]
async fn reads_changes_and_refusals_are_audited_and_shares_counted() {
    let secure = SecureServer::start().await;
    let started = chrono::Utc::now();
    let person_id = load_resident(&secure).await;
    let mut portal = secure.profiles(Some("token-portal"), Some("one-id-card/case-7")).await;
    let profile = portal
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("portal reads")
        .into_inner();
    assert_status(
        portal
            .get_profile(pb::GetProfileRequest {
                person_id: person_id.clone(),
                tag_mask: vec!["id_number".into()],
                compact: false,
            })
            .await,
        Code::PermissionDenied,
        "caller portal may not read tag id_number",
    );
    assert_status(
        secure
            .profiles(None, Some("curious"))
            .await
            .get_profile(pb::GetProfileRequest {
                person_id: person_id.clone(),
                tag_mask: vec![],
                compact: false,
            })
            .await,
        Code::Unauthenticated,
        "no bearer token: send the header authorization: Bearer <token>",
    );
    let mut ops = secure.admin(Some("token-ops")).await;
    let query = |caller: &str, person: &str| pb::QueryAuditRequest {
        caller: caller.into(),
        person_id: person.into(),
        ..Default::default()
    };

    // By person: the ingest that created it, and the read that shared it.
    let by_person = ops
        .query_audit(query("", &person_id))
        .await
        .expect("query")
        .into_inner();
    let summary: Vec<(&str, &str, &str, u64)> = by_person
        .entries
        .iter()
        .map(|entry| {
            (
                entry.caller.as_str(),
                entry.action.as_str(),
                entry.outcome.as_str(),
                entry.shares,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("etl-d07", "IngestService/StreamRecords", "OK", 0),
            ("portal", "ProfileService/GetProfile", "OK", 1),
        ]
    );
    let read = &by_person.entries[1];
    assert_eq!(read.purpose, "one-id-card/case-7");
    assert_eq!(read.person_ids, std::slice::from_ref(&person_id));
    let mut returned: Vec<String> = profile.tags.iter().map(|tag| tag.tag.clone()).collect();
    returned.sort();
    assert_eq!(read.tags, returned);
    assert!(!read.tags.contains(&"id_number".to_string()));
    assert_eq!(leaked(&by_person), Vec::<&str>::new());

    // By caller: the refusal is there with its reason.
    let by_portal = ops.query_audit(query("portal", "")).await.expect("query").into_inner();
    let outcomes: Vec<&str> = by_portal.entries.iter().map(|entry| entry.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["OK", "PERMISSION_DENIED: caller portal may not read tag id_number"]
    );
    let unauthenticated = ops
        .query_audit(query("unauthenticated", ""))
        .await
        .expect("query")
        .into_inner();
    assert_eq!(unauthenticated.entries.len(), 1);
    assert_eq!(
        unauthenticated.entries[0].outcome,
        "UNAUTHENTICATED: no bearer token: send the header authorization: Bearer <token>"
    );
    assert_eq!(unauthenticated.entries[0].purpose, "curious");

    // By time: nothing before the test began.
    let before = ops
        .query_audit(pb::QueryAuditRequest {
            to: (started - chrono::Duration::seconds(1)).to_rfc3339(),
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(before.entries.len(), 0);
    // Paged: one entry at a time, each page's token leading to the next.
    let mut page_token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = ops
            .query_audit(pb::QueryAuditRequest {
                caller: "portal".into(),
                page_size: 1,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        paged.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(paged.len(), 2);

    // The month's shares: one profile to the portal.
    let month = popmaster::store::month_of(chrono::Utc::now().timestamp_millis());
    let shares = ops
        .get_share_counts(pb::GetShareCountsRequest { month: month.clone() })
        .await
        .expect("shares")
        .into_inner();
    let counts: Vec<(&str, &str, u64, u64)> = shares
        .counts
        .iter()
        .map(|count| {
            (
                count.month.as_str(),
                count.caller.as_str(),
                count.n_shares,
                count.n_calls,
            )
        })
        .collect();
    assert_eq!(counts, [(month.as_str(), "portal", 1, 1)]);

    // Only operators read the audit log.
    assert_status(
        secure
            .admin(Some("token-steward"))
            .await
            .query_audit(query("", ""))
            .await,
        Code::PermissionDenied,
        "caller steward may not call AdminService/QueryAudit: it needs the operator role",
    );
    assert_status(
        ops.query_audit(pb::QueryAuditRequest {
            from: "yesterday".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "from is not an RFC 3339 time such as 2026-11-01T00:00:00+08:00",
    );

    // The command line prints the same.
    let output = popmaster(
        &secure.server,
        &["audit", "query", "--caller", "portal"],
        &[("POPMASTER_TOKEN", "token-ops")],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.contains("PERMISSION_DENIED: caller portal may not read tag id_number"),
        "{stdout}"
    );
    let output = popmaster(
        &secure.server,
        &["audit", "shares", "--month", &month],
        &[("POPMASTER_TOKEN", "token-ops")],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == [month.as_str(), "portal", "1", "1"]),
        "{stdout}"
    );

    // An export leaves an entry a chunk, naming the persons it shared and their tags.
    let mut chunks = portal
        .export_profiles(pb::ExportProfilesRequest::default())
        .await
        .expect("export")
        .into_inner();
    let mut n_exported = 0;
    while let Some(chunk) = chunks.message().await.expect("chunk") {
        n_exported += chunk.profiles.len();
    }
    assert_eq!(n_exported, 1);
    let entries = ops
        .query_audit(query("", &person_id))
        .await
        .expect("query")
        .into_inner()
        .entries;
    let export = entries
        .iter()
        .find(|entry| entry.action == "ProfileService/ExportProfiles")
        .expect("the export's entry");
    assert_eq!(
        (export.caller.as_str(), export.shares, export.detail.as_str()),
        ("portal", 1, "export chunk")
    );
    assert_eq!(export.person_ids, std::slice::from_ref(&person_id));
    assert_eq!(export.tags, returned);
    secure.server.stop().await;
}

#[tokio::test]
async fn audit_entries_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let callers_path = dir.path().join("callers.toml");
    std::fs::write(&callers_path, callers_toml("token-portal")).expect("write callers");
    let mut config = Config::default();
    config.auth.callers_file = Some(callers_path);
    let data = tempfile::tempdir().expect("data dir");
    let server = TestServer::start_in(data, config.clone()).await;
    let secure = SecureServer {
        server,
        callers_path: dir.path().join("callers.toml"),
        _dir: tempfile::tempdir().expect("spare"),
    };
    let person_id = load_resident(&secure).await;
    secure
        .profiles(Some("token-police"), Some("investigation-12"))
        .await
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("police reads");
    let data = secure.server.stop().await.expect("own data dir");
    let server = TestServer::start_in(data, config).await;
    let secure = SecureServer {
        server,
        callers_path: dir.path().join("callers.toml"),
        _dir: tempfile::tempdir().expect("spare"),
    };
    let entries = secure
        .admin(Some("token-ops"))
        .await
        .query_audit(pb::QueryAuditRequest {
            person_id: person_id.clone(),
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner()
        .entries;
    let callers: Vec<&str> = entries.iter().map(|entry| entry.caller.as_str()).collect();
    assert_eq!(callers, ["etl-d07", "police"]);
    secure.server.stop().await;
}

/// Every page of an audit query, `page_size` entries each, following the tokens.
async fn audit_pages(
    ops: &mut AdminServiceClient<Authed>,
    request: pb::QueryAuditRequest,
    page_size: u32,
) -> Vec<pb::AuditEntry> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ops
            .query_audit(pb::QueryAuditRequest {
                page_size,
                page_token: page_token.clone(),
                ..request.clone()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.entries.len() <= page_size as usize);
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

/// The audit log's retention and its index through the real server: entries older than
/// `audit.retention_days` (written into the store before the start, four years back) are
/// pruned at start with their index keys, the younger ones and every share counter stay; a
/// query by caller, by person, or both, pages through exactly their entries; a page token of
/// another query is refused.
#[tokio::test]
async fn old_audit_entries_are_pruned_and_queries_by_caller_and_person_are_exact() {
    let data = tempfile::tempdir().expect("data dir");
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    let old = |at: i64, caller: &str| popmaster::store::AuditRecord {
        at,
        caller: caller.into(),
        purpose: "case-old".into(),
        action: "ProfileService/GetProfile".into(),
        outcome: "OK".into(),
        persons: vec!["P-OLD".into()],
        tags: vec!["name".to_string()].into(),
        shares: 1,
        detail: String::new(),
    };
    let four_years_ago = now - 4 * 365 * day;
    {
        let store =
            popmaster::store::Store::open_sled(&data.path().join("data").join("store"), 1 << 24).expect("store");
        let records: Vec<_> = (0..5)
            .map(|idx| old(four_years_ago + idx, if idx % 2 == 0 { "portal" } else { "police" }))
            .chain([old(now - 1_000 * day, "portal")])
            .collect();
        store.append_audit(0, &records).expect("append");
        store.checkpoint().expect("checkpoint");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let callers_path = dir.path().join("callers.toml");
    std::fs::write(&callers_path, callers_toml("token-portal")).expect("write callers");
    let mut config = Config::default();
    config.auth.callers_file = Some(callers_path.clone());
    config.audit.retention_days = 1_095;
    let server = TestServer::start_in(data, config).await;
    let secure = SecureServer {
        server,
        callers_path,
        _dir: dir,
    };
    let mut ops = secure.admin(Some("token-ops")).await;
    let by_old_person = pb::QueryAuditRequest {
        person_id: "P-OLD".into(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = audit_pages(&mut ops, by_old_person.clone(), 100).await;
        if entries.len() == 1 {
            assert_eq!(entries[0].caller, "portal");
            break;
        }
        assert!(Instant::now() < deadline, "old entries were not pruned: {entries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_month = popmaster::store::month_of(four_years_ago);
    let old_counts = ops
        .get_share_counts(pb::GetShareCountsRequest { month: old_month })
        .await
        .expect("shares")
        .into_inner()
        .counts;
    let old_counts: Vec<(&str, u64)> = old_counts
        .iter()
        .map(|count| (count.caller.as_str(), count.n_shares))
        .collect();
    assert_eq!(
        old_counts,
        [("police", 2), ("portal", 3)],
        "share counters outlive their entries"
    );

    let person_id = load_resident(&secure).await;
    let mut portal = secure.profiles(Some("token-portal"), Some("one-id-card/case-7")).await;
    let mut police = secure.profiles(Some("token-police"), Some("investigation-12")).await;
    let read = || pb::GetProfileRequest {
        person_id: person_id.clone(),
        tag_mask: vec![],
        compact: false,
    };
    for n in 0..12 {
        if n % 2 == 0 || n > 8 {
            portal.get_profile(read()).await.expect("portal reads");
        } else {
            police.get_profile(read()).await.expect("police reads");
        }
    }
    let summary = |entries: &[pb::AuditEntry]| -> Vec<(String, Vec<String>)> {
        entries
            .iter()
            .map(|entry| (entry.caller.clone(), entry.person_ids.clone()))
            .collect()
    };
    let portal_reads = vec![("portal".to_string(), vec![person_id.clone()]); 8];
    let police_reads = vec![("police".to_string(), vec![person_id.clone()]); 4];

    let by_portal = pb::QueryAuditRequest {
        caller: "portal".into(),
        ..Default::default()
    };
    let mut expected = vec![("portal".to_string(), vec!["P-OLD".to_string()])];
    expected.extend(portal_reads.clone());
    for page_size in [1, 3, 100] {
        let entries = audit_pages(&mut ops, by_portal.clone(), page_size).await;
        assert_eq!(summary(&entries), expected, "pages of {page_size}");
    }
    let by_person = pb::QueryAuditRequest {
        person_id: person_id.clone(),
        ..Default::default()
    };
    let entries = audit_pages(&mut ops, by_person.clone(), 5).await;
    assert_eq!(entries.len(), 1 + 12);
    assert_eq!(
        (entries[0].caller.as_str(), entries[0].action.as_str()),
        ("etl-d07", "IngestService/StreamRecords")
    );
    assert!(entries.windows(2).all(|pair| pair[0].at <= pair[1].at), "oldest first");
    let by_police_and_person = pb::QueryAuditRequest {
        caller: "police".into(),
        ..by_person.clone()
    };
    let entries = audit_pages(&mut ops, by_police_and_person.clone(), 3).await;
    assert_eq!(summary(&entries), police_reads);
    assert!(entries.iter().all(|entry| entry.purpose == "investigation-12"));

    // A token names a place in one query's keys: another query refuses it.
    let first = ops
        .query_audit(pb::QueryAuditRequest {
            page_size: 2,
            ..by_portal.clone()
        })
        .await
        .expect("page")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    for other in [
        pb::QueryAuditRequest {
            caller: "police".into(),
            ..Default::default()
        },
        by_person.clone(),
        pb::QueryAuditRequest::default(),
    ] {
        assert_status(
            ops.query_audit(pb::QueryAuditRequest {
                page_token: first.next_page_token.clone(),
                ..other
            })
            .await,
            Code::InvalidArgument,
            "page_token is not one this service gave for this query",
        );
    }
    secure.server.stop().await;
}

#[tokio::test]
async fn a_flooding_caller_is_shed_while_another_is_served() {
    let secure = SecureServer::start().await;
    let mut flood = secure.admin(Some("token-flood")).await;
    let mut calm = secure.admin(Some("token-ops")).await;
    let mut n_served = 0;
    let mut refusals = Vec::new();
    let started = Instant::now();
    for _ in 0..40 {
        match flood.get_catalog(pb::GetCatalogRequest {}).await {
            Ok(_) => n_served += 1,
            Err(status) => refusals.push((status.code(), status.message().to_string())),
        }
        // The other caller is served throughout.
        calm.get_stats(pb::GetStatsRequest {})
            .await
            .expect("the calm caller is served");
    }
    // The burst of 5, and what the bucket refilled at 5 a second while the loop ran.
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=5 + refilled).contains(&n_served),
        "{n_served} served, {refilled} refilled"
    );
    assert!(!refusals.is_empty(), "the flood was never refused");
    assert_eq!(refusals.len(), 40 - n_served);
    assert_eq!(
        refusals[0],
        (
            Code::ResourceExhausted,
            "caller flood is over its rate limit of 5 calls a second (burst 5); retry later".to_string()
        )
    );
    // The bucket refills: a second later the caller is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    flood.get_catalog(pb::GetCatalogRequest {}).await.expect("refilled");
    // Refusals are audited.
    let audited = calm
        .query_audit(pb::QueryAuditRequest {
            caller: "flood".into(),
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner();
    let n_refused = audited
        .entries
        .iter()
        .filter(|entry| {
            entry
                .outcome
                .starts_with("RESOURCE_EXHAUSTED: caller flood is over its rate limit")
        })
        .count();
    assert_eq!(n_refused, refusals.len());
    secure.server.stop().await;
}

#[tokio::test]
async fn a_caller_holds_at_most_its_open_calls_and_gets_them_back_when_streams_end() {
    let secure = SecureServer::start().await;
    let mut streamer = secure.profiles(Some("token-streamer"), Some("feed-follower")).await;
    let first = streamer
        .watch_changes(pb::WatchChangesRequest { from_sequence: 1 })
        .await
        .expect("first stream")
        .into_inner();
    let second = streamer
        .watch_changes(pb::WatchChangesRequest { from_sequence: 1 })
        .await
        .expect("second stream")
        .into_inner();
    assert_status(
        streamer
            .watch_changes(pb::WatchChangesRequest { from_sequence: 1 })
            .await,
        Code::ResourceExhausted,
        "caller streamer has 2 calls open, its limit; retry when one has ended",
    );
    // Another caller is not held by it.
    secure
        .profiles(Some("token-police"), Some("case-3"))
        .await
        .watch_changes(pb::WatchChangesRequest { from_sequence: 1 })
        .await
        .expect("another caller opens a stream");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match streamer
            .watch_changes(pb::WatchChangesRequest { from_sequence: 1 })
            .await
        {
            Ok(_) => break,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        assert!(Instant::now() < deadline, "the ended stream's call was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    secure.server.stop().await;
}

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, made for
/// one test and written as PEM files.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write PEM");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "popmaster test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
        write("ca.pem", ca.pem());
        for (name, names, usage) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["etl-d07".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("signed");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        TestPki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read PEM")
    }

    /// A channel to `addr` over TLS trusting the test CA, with the client certificate or not.
    async fn channel(
        &self,
        addr: std::net::SocketAddr,
        with_client_cert: bool,
    ) -> Result<Channel, tonic::transport::Error> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.read("ca.pem")));
        if with_client_cert {
            tls = tls.identity(Identity::from_pem(self.read("client.pem"), self.read("client.key")));
        }
        Endpoint::from_shared(format!("https://{addr}"))
            .expect("url")
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
    }
}

/// A health check over `channel`: serving or not (any failure).
async fn serving(channel: Result<Channel, tonic::transport::Error>) -> bool {
    let Ok(channel) = channel else {
        return false;
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "popmaster.v1.IngestService".into(),
    };
    health.check(request).await.is_ok_and(|answer| {
        answer.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    })
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_of_the_ca() {
    let pki = TestPki::new();
    let mut config = Config::default();
    config.tls.cert_file = Some(pki.path("server.pem"));
    config.tls.key_file = Some(pki.path("server.key"));
    config.tls.client_ca_file = Some(pki.path("ca.pem"));
    let secure = SecureServer::start_with(config).await;
    let addr = secure.server.addr;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !serving(pki.channel(addr, true).await).await {
        assert!(Instant::now() < deadline, "the TLS server did not start serving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // With a client certificate and a token: served, and the token still decides the role.
    let channel = pki.channel(addr, true).await.expect("TLS channel");
    let credentials = |token: &str| Credentials {
        token: Some(token.into()),
        purpose: None,
    };
    let mut ops = AdminServiceClient::new(InterceptedService::new(channel.clone(), credentials("token-ops")));
    ops.get_stats(pb::GetStatsRequest {})
        .await
        .expect("an operator over mutual TLS");
    let mut writer = AdminServiceClient::new(InterceptedService::new(channel, credentials("token-etl-d07")));
    assert_status(
        writer.get_stats(pb::GetStatsRequest {}).await,
        Code::PermissionDenied,
        "caller etl-d07 may not call AdminService/GetStats: it needs the operator role",
    );

    // Without a client certificate, or in plain text, nothing is served, health included.
    assert!(
        !serving(pki.channel(addr, false).await).await,
        "served without a client certificate"
    );
    assert!(
        !serving(connect(&secure.server.url()).await).await,
        "served in plain text"
    );

    // The command line connects with --tls-ca, --tls-cert and --tls-key.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_popmaster"));
    command
        .args(["stats", "--server", &format!("https://{addr}")])
        .arg("--tls-ca")
        .arg(pki.path("ca.pem"))
        .arg("--tls-cert")
        .arg(pki.path("client.pem"))
        .arg("--tls-key")
        .arg(pki.path("client.key"))
        .env("POPMASTER_TOKEN", "token-ops")
        .env_remove("POPMASTER_PURPOSE");
    let output = tokio::task::spawn_blocking(move || command.output().expect("popmaster runs"))
        .await
        .expect("client task");
    assert!(output.status.success(), "{output:?}");
    secure.server.stop().await;
}

#[tokio::test]
async fn server_tls_without_client_certificates_encrypts_for_every_client() {
    let pki = TestPki::new();
    let mut config = Config::default();
    config.tls.cert_file = Some(pki.path("server.pem"));
    config.tls.key_file = Some(pki.path("server.key"));
    let secure = SecureServer::start_with(config).await;
    let addr = secure.server.addr;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !serving(pki.channel(addr, false).await).await {
        assert!(Instant::now() < deadline, "the TLS server did not start serving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !serving(connect(&secure.server.url()).await).await,
        "served in plain text"
    );
    let channel = pki.channel(addr, false).await.expect("TLS channel");
    let mut anonymous = AdminServiceClient::new(channel);
    assert_status(
        anonymous.get_stats(pb::GetStatsRequest {}).await,
        Code::Unauthenticated,
        "no bearer token: send the header authorization: Bearer <token>",
    );
    secure.server.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_input_from_a_writer_is_refused_with_its_status_and_nothing_applied() {
    let mut config = Config::default();
    config.limits.batch_records_max = 3;
    config.limits.message_bytes_max = 64 * 1024;
    config.limits.tags_per_record_max = 8;
    config.limits.value_bytes_max = 64;
    let secure = SecureServer::start_with(config).await;
    let mut writer = secure.ingest(Some("token-etl-d07")).await;

    let too_many: Vec<pb::Record> = (0..4).map(|idx| resident(&format!("r{idx}"))).collect();
    assert_status(
        send_batch(&mut writer, too_many).await,
        Code::InvalidArgument,
        "batch 7 has 4 records, more than the limit of 3",
    );
    let huge = record("D07", "big", &[("name", &"张".repeat(30_000))]);
    let status = send_batch(&mut writer, vec![huge]).await.expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(!status.message().contains('张'), "{}", status.message());
    assert_eq!(
        secure.n_records().await,
        0,
        "nothing of the refused batches was applied"
    );

    // Per record: too many tags, a value too long; the good record of the batch is stored.
    let many_tags: Vec<(String, String)> = (0..9).map(|idx| (format!("t{idx}"), "v".to_string())).collect();
    let many_tags: Vec<(&str, &str)> = many_tags
        .iter()
        .map(|(tag, value)| (tag.as_str(), value.as_str()))
        .collect();
    let outcome = send_batch(
        &mut writer,
        vec![
            record("D07", "many", &many_tags),
            record("D07", "long", &[("name", NAME), ("address", &"路".repeat(30))]),
            resident("good"),
        ],
    )
    .await
    .expect("answered");
    let codes: Vec<&str> = outcome.outcomes.iter().map(|o| o.reason_code.as_str()).collect();
    assert_eq!(codes, ["too_many_tags", "value_too_long", ""]);
    for rejected in &outcome.outcomes[..2] {
        assert!(
            !rejected.reason.contains(NAME) && !rejected.reason.contains('路'),
            "{}",
            rejected.reason
        );
    }
    assert_eq!(secure.n_records().await, 1);
    secure.server.stop().await;
}

#[tokio::test]
async fn sighup_rereads_the_callers_file_and_the_log_holds_no_personal_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let callers_path = dir.path().join("callers.toml");
    std::fs::write(&callers_path, callers_toml("token-portal")).expect("write callers");
    // Reread only on SIGHUP: an hour between checks.
    let config_path = dir.path().join("popmaster.toml");
    std::fs::write(
        &config_path,
        format!(
            "[auth]\ncallers_file = {:?}\nreload_interval_ms = 3600000\n",
            callers_path.display().to_string()
        ),
    )
    .expect("write config");
    let process = ServerProcess::spawn_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        "debug",
        &["--config", config_path.to_str().expect("UTF-8 path")],
    )
    .await;
    let channel = connect(&process.url).await.expect("connect");
    let client = |token: &str, purpose: Option<&str>| {
        InterceptedService::new(
            channel.clone(),
            Credentials {
                token: Some(token.into()),
                purpose: purpose.map(String::from),
            },
        )
    };

    // Personal values go in and out; none of them may reach the log.
    let outcome = send_batch(
        &mut IngestServiceClient::new(client("token-etl-d07", None)),
        vec![resident("r1")],
    )
    .await
    .expect("ingest");
    let person_id = outcome.outcomes[0].person_id.clone();
    let mut police = ProfileServiceClient::new(client("token-police", Some("case-9")));
    police
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("read");
    police
        .search_persons(pb::SearchPersonsRequest {
            name: NAME.into(),
            phone: PHONE.into(),
            ..Default::default()
        })
        .await
        .expect("search");
    let _ = ProfileServiceClient::new(client("token-portal", Some("case-9")))
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: resident_id_number(),
            tag_mask: vec!["id_number".into()],
            compact: false,
        })
        .await
        .expect_err("not the portal's tag");

    let catalog = |token: &str| {
        let mut admin = AdminServiceClient::new(client(token, None));
        async move { admin.get_catalog(pb::GetCatalogRequest {}).await.map(|_| ()) }
    };
    assert_eq!(
        catalog("token-portal-2").await.expect_err("unknown").code(),
        Code::Unauthenticated
    );
    write_atomically(&callers_path, &callers_toml("token-portal-2"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        catalog("token-portal-2")
            .await
            .expect_err("not reread without the signal")
            .code(),
        Code::Unauthenticated
    );
    // SAFETY: kill(2) with the pid of the child this test started.
    let sent = unsafe { libc::kill(process.child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(sent, 0, "SIGHUP sent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while catalog("token-portal-2").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the callers: {}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        catalog("token-portal").await.expect_err("revoked").code(),
        Code::Unauthenticated
    );

    let log = process.log();
    assert!(log.contains("SIGHUP: rereading the callers file"), "{log}");
    for (what, value) in [
        ("name", NAME.to_string()),
        ("phone", PHONE.to_string()),
        ("ID number", resident_id_number()),
        ("token", "token-portal".to_string()),
    ] {
        assert!(!log.contains(&value), "the log holds a {what}");
    }
    process.kill_9();
}

#[tokio::test]
async fn the_open_mode_warns_loudly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let process = ServerProcess::spawn(&dir.path().join("data"), &dir.path().join("server.log")).await;
    let log = process.log();
    assert!(log.contains("AUTHENTICATION IS OFF"), "{log}");
    process.kill_9();
}
