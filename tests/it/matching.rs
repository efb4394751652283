//! The matcher through the real service: same-batch duplicates, merges, the ID-number rules,
//! review items, explanations, and training and installing the model.

use crate::common::*;
use popmaster::pb;
use std::collections::HashMap;

async fn explain(server: &TestServer, source: &str, record_id: &str) -> pb::RecordExplanation {
    server
        .profile_client()
        .await
        .explain_record(pb::ExplainRecordRequest {
            source: source.into(),
            record_id: record_id.into(),
        })
        .await
        .expect("explain")
        .into_inner()
}

fn person_of(rows: &[pb::MappingRow]) -> HashMap<String, String> {
    rows.iter()
        .map(|row| (format!("{}/{}", row.source, row.record_id), row.person_id.clone()))
        .collect()
}

#[tokio::test]
async fn duplicates_in_one_batch_become_one_person() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    // No ID number; the second copy is in traditional characters with another phone format.
    let answer = ingest(
        &mut ingest_client,
        vec![
            record(
                "D05",
                "a",
                &[
                    ("name", "欧阳震华"),
                    ("birth_date", "1988-03-14"),
                    ("phone", "13912345678"),
                ],
            ),
            record(
                "D09",
                "b",
                &[
                    ("name", "歐陽震華"),
                    ("birth_date", "1988年3月14日"),
                    ("phone", "+86 139 1234 5678"),
                ],
            ),
            record("D09", "c", &[("name", "李娜"), ("birth_date", "1990-01-02")]),
        ],
    )
    .await
    .expect("ingest");
    assert_eq!(
        decisions(&answer),
        [pb::Decision::Created, pb::Decision::Matched, pb::Decision::Created]
    );
    assert_eq!(answer.outcomes[0].person_id, answer.outcomes[1].person_id);
    assert_ne!(answer.outcomes[0].person_id, answer.outcomes[2].person_id);
    server.stop().await;
}

#[tokio::test]
async fn a_record_that_links_two_persons_merges_them() {
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
    let mut profiles = server.profile_client().await;
    let persons = person_of(&export(&mut profiles).await);
    assert_eq!(persons["D05/phone-only"], persons["D07/id-only"]);
    assert_eq!(persons["D09/both"], persons["D07/id-only"]);
    assert_eq!(stats(&server).await.n_persons, 1);
    let explanation = explain(&server, "D09", "both").await;
    assert_eq!(explanation.decision(), pb::Decision::Merged);
    assert_eq!(explanation.merged.len(), 1);
    // The merged-away id still answers, with the survivor's profile.
    let merged_away = explanation.merged[0].clone();
    assert_ne!(merged_away, persons["D09/both"]);
    let redirected = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: merged_away.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("an alias answers")
        .into_inner();
    assert_eq!(redirected.person_id, persons["D09/both"]);
    assert_eq!(redirected.redirected_from, merged_away);
    assert_eq!(redirected.n_records, 3);
    assert!(explanation.text.contains("ID number: the same"), "{}", explanation.text);
    assert!(explanation.text.contains("phone: the same"), "{}", explanation.text);
    server.stop().await;
}

#[tokio::test]
async fn different_valid_id_numbers_go_to_review_not_to_a_merge() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    // Twins: same name, birth date and phone, different valid ID numbers.
    let answer = ingest(
        &mut ingest_client,
        vec![
            record(
                "D01",
                "twin-1",
                &[
                    ("name", "王芳"),
                    ("id_number", &id_number("20010203", 12)),
                    ("phone", "13700001111"),
                ],
            ),
            record(
                "D01",
                "twin-2",
                &[
                    ("name", "王芳"),
                    ("id_number", &id_number("20010203", 14)),
                    ("phone", "13700001111"),
                ],
            ),
            // A duplicated ID number on a clearly different person.
            record(
                "D03",
                "other",
                &[
                    ("name", "赵建国"),
                    ("id_number", &id_number("20010203", 12)),
                    ("gender", "男"),
                ],
            ),
        ],
    )
    .await
    .expect("ingest");
    assert_eq!(
        decisions(&answer),
        [pb::Decision::Created, pb::Decision::Review, pb::Decision::Review]
    );
    let persons: std::collections::BTreeSet<&str> = answer
        .outcomes
        .iter()
        .map(|outcome| outcome.person_id.as_str())
        .collect();
    assert_eq!(persons.len(), 3, "nobody was merged");
    assert_eq!(stats(&server).await.n_review_items, 2);
    let explanation = explain(&server, "D01", "twin-2").await;
    assert_eq!(explanation.review_candidates.len(), 1);
    assert_eq!(explanation.review_candidates[0].person_id, answer.outcomes[0].person_id);
    assert!(
        explanation.review_candidates[0]
            .held_reason
            .contains("different valid ID numbers"),
        "{:?}",
        explanation.review_candidates[0]
    );
    server.stop().await;
}

#[tokio::test]
async fn explanations_answer_in_words_and_refuse_bad_requests() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let answer = ingest(
        &mut ingest_client,
        vec![
            record(
                "D04",
                "x1",
                &[("name", "张伟"), ("birth_date", "1979-11-30"), ("phone", "13655556666")],
            ),
            record(
                "D06",
                "x2",
                &[("name", "章伟"), ("birth_date", "1979-11-30"), ("phone", "13655556666")],
            ),
            record("D06", "x3", &[("name", "刘洋"), ("birth_date", "1966-06-06")]),
        ],
    )
    .await
    .expect("ingest");
    let mut profiles = server.profile_client().await;
    let explanation = explain(&server, "D06", "x2").await;
    assert_eq!(explanation.decision(), pb::Decision::Matched);
    assert!(
        explanation.text.contains("name: the same pinyin"),
        "{}",
        explanation.text
    );
    let candidate = &explanation.candidates[0];
    let total: f64 = candidate.comparisons.iter().map(|comparison| comparison.weight).sum();
    assert!((candidate.log_odds - (total + candidate.prior)).abs() < 1e-9);

    let pair = profiles
        .explain_pair(pb::ExplainPairRequest {
            person_a: answer.outcomes[0].person_id.clone(),
            person_b: answer.outcomes[2].person_id.clone(),
        })
        .await
        .expect("pair")
        .into_inner();
    assert!(pair.score.expect("score").probability < 0.01);
    assert!(pair.text.contains("name: different"), "{}", pair.text);

    let missing = profiles
        .explain_record(pb::ExplainRecordRequest {
            source: "D06".into(),
            record_id: "nope".into(),
        })
        .await
        .expect_err("unknown record");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let malformed = profiles
        .explain_record(pb::ExplainRecordRequest {
            source: "6".into(),
            record_id: "x2".into(),
        })
        .await
        .expect_err("bad source");
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    let unknown_person = profiles
        .explain_pair(pb::ExplainPairRequest {
            person_a: answer.outcomes[0].person_id.clone(),
            person_b: "P0000000000000000".into(),
        })
        .await
        .expect_err("unknown person");
    assert_eq!(unknown_person.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn the_model_is_trained_installed_and_used_without_restart() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let records = synthetic_records(11, 400);
    for chunk in records.chunks(500) {
        ingest(&mut ingest_client, chunk.to_vec()).await.expect("ingest");
    }
    let mut admin = server.admin_client().await;
    assert_eq!(
        admin
            .get_model(pb::GetModelRequest {})
            .await
            .expect("model")
            .into_inner()
            .version,
        0
    );
    let trained = admin
        .train_model(pb::TrainModelRequest {})
        .await
        .expect("train")
        .into_inner();
    assert_eq!(trained.version, 1);
    assert!(trained.n_candidate_pairs > 100, "{}", trained.n_candidate_pairs);
    assert!(trained.n_random_pairs > 10_000, "{}", trained.n_random_pairs);
    let id_exact = trained
        .levels
        .iter()
        .find(|level| level.feature == "ID number" && level.level == "the same")
        .expect("level");
    assert!(id_exact.weight > 10.0, "{id_exact:?}");

    // An operator tightens the match threshold and installs the edited model.
    let mut edited: serde_json::Value = serde_json::from_str(&trained.model_json).expect("model JSON");
    edited["match_probability"] = serde_json::json!(0.995);
    let installed = admin
        .install_model(pb::InstallModelRequest {
            model_json: edited.to_string(),
        })
        .await
        .expect("install")
        .into_inner();
    assert_eq!((installed.version, installed.match_probability), (2, 0.995));
    edited["review_probability"] = serde_json::json!(0.999);
    let refused = admin
        .install_model(pb::InstallModelRequest {
            model_json: edited.to_string(),
        })
        .await
        .expect_err("thresholds out of order");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("review <= match"), "{}", refused.message());
    let garbage = admin
        .install_model(pb::InstallModelRequest {
            model_json: "{\"version\": 3}".into(),
        })
        .await
        .expect_err("not a model");
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument);

    ingest(
        &mut ingest_client,
        vec![record(
            "D05",
            "after-install",
            &[("name", "孙悟空"), ("phone", "13012345678")],
        )],
    )
    .await
    .expect("ingest");
    let explanation = explain(&server, "D05", "after-install").await;
    assert_eq!(explanation.model_version, 2);
    assert_eq!(explanation.match_probability, 0.995);
    server.stop().await;
}

#[tokio::test]
async fn the_search_index_finds_what_no_exact_key_holds() {
    let mut config = popmaster::config::Config::default();
    config.index.fuzzy_candidates = 5;
    let server = TestServer::start_with(config).await;
    let mut ingest_client = server.ingest_client().await;
    ingest(
        &mut ingest_client,
        vec![record(
            "D05",
            "first",
            &[
                ("name", "欧阳震华"),
                ("birth_date", "1988-03-14"),
                ("phone", "13912345678"),
                ("address", "杭州西湖区文三路1号"),
            ],
        )],
    )
    .await
    .expect("ingest");
    // The index catches up with the store in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stats = stats(&server).await;
        if stats.index_persons == 1 && stats.index_watermark == stats.change_sequence {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the index did not catch up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A misspelt name (another pinyin), no birth date, another phone: no blocking key is
    // shared, but the index finds the person by the name's characters and the address.
    let answer = ingest(
        &mut ingest_client,
        vec![record(
            "D09",
            "second",
            &[
                ("name", "欧阳振革"),
                ("phone", "13700000000"),
                ("address", "杭州西湖区文三路1号"),
            ],
        )],
    )
    .await
    .expect("ingest");
    let explanation = explain(&server, "D09", "second").await;
    assert!(
        explanation.text.contains("1 more found by the search index"),
        "{}",
        explanation.text
    );
    assert_eq!(explanation.n_candidates, 1);
    assert!(explanation
        .text
        .contains("0 candidate persons found by the blocking keys"));
    let first_person = explain(&server, "D05", "first").await.person_id;
    assert_eq!(explanation.candidates[0].person_id, first_person);
    // Name nearly the same and the same street, but another phone: a steward decides.
    assert_eq!(decisions(&answer), [pb::Decision::Review]);
    assert_eq!(explanation.review_candidates[0].person_id, first_person);
    server.stop().await;
}
