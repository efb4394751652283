//! Re-resolution of every person after a model change, against a live server: splits and
//! merges with history entries, and steward decisions that stand.

use crate::common::*;
use popmaster::pb;
use popmaster::pb::reevaluate_change::Kind;

const SOURCE: &str = "D05";

async fn person_of(server: &TestServer, record_id: &str) -> String {
    server
        .profile_client()
        .await
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: SOURCE.into(),
            record_id: record_id.into(),
            tag_mask: vec!["name".into()],
            compact: false,
        })
        .await
        .expect("person of record")
        .into_inner()
        .person_id
}

/// Installs the current model with other thresholds.
async fn install_thresholds(server: &TestServer, match_probability: f64, review_probability: f64) {
    let mut admin = server.admin_client().await;
    let current = admin
        .get_model(pb::GetModelRequest {})
        .await
        .expect("model")
        .into_inner();
    let mut model: serde_json::Value = serde_json::from_str(&current.model_json).expect("model JSON");
    model["match_probability"] = match_probability.into();
    model["review_probability"] = review_probability.into();
    admin
        .install_model(pb::InstallModelRequest {
            model_json: model.to_string(),
        })
        .await
        .expect("install");
}

async fn reevaluate(server: &TestServer) -> (Vec<pb::ReevaluateProgress>, pb::ReevaluateProgress) {
    let stream = server
        .admin_client()
        .await
        .reevaluate(pb::ReevaluateRequest {})
        .await
        .expect("re-resolution starts")
        .into_inner();
    let messages = all_messages(stream).await;
    let last = messages.last().cloned().expect("a last message");
    assert!(last.done, "{last:?}");
    (messages, last)
}

async fn history_causes(server: &TestServer, person_id: &str) -> Vec<(String, String)> {
    let history = server
        .profile_client()
        .await
        .get_profile_history(pb::GetProfileHistoryRequest {
            person_id: person_id.into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    history
        .entries
        .iter()
        .flat_map(|entry| entry.events.iter())
        .map(|event| (format!("{:?}", event.kind()), event.cause.clone()))
        .collect()
}

#[tokio::test]
async fn reevaluate_splits_and_merges_with_the_new_model_and_keeps_steward_decisions() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let rec = |id: &str, tags: &[(&str, &str)]| record(SOURCE, id, tags);
    ingest(
        &mut ingest_client,
        vec![
            // One person from two records that agree on name and birth date only.
            rec(
                "d1",
                &[("name", "李娜"), ("birth_date", "1985-03-04"), ("phone", "13800000003")],
            ),
            rec(
                "d2",
                &[
                    ("name", "李娜"),
                    ("birth_date", "1985-03-04"),
                    ("address", "浙江省杭州市西湖区文三路1号"),
                ],
            ),
            // Two persons sharing a phone, with other names and birth dates (a household).
            rec(
                "b1",
                &[("name", "周杰"), ("birth_date", "1990-05-06"), ("phone", "13900000002")],
            ),
            rec(
                "c1",
                &[("name", "吴敏"), ("birth_date", "2001-07-08"), ("phone", "13900000002")],
            ),
            // Two different people a steward will merge.
            rec(
                "e1",
                &[("name", "孙丽"), ("birth_date", "1960-01-01"), ("phone", "13700000001")],
            ),
            rec(
                "e2",
                &[("name", "钱军"), ("birth_date", "1970-02-02"), ("phone", "13700000009")],
            ),
            // Like b1 and c1; a steward will say they differ.
            rec(
                "f1",
                &[("name", "赵强"), ("birth_date", "1975-02-03"), ("phone", "13600000005")],
            ),
            rec(
                "f2",
                &[("name", "冯刚"), ("birth_date", "1999-04-05"), ("phone", "13600000005")],
            ),
        ],
    )
    .await
    .expect("ingest");
    let d = person_of(&server, "d1").await;
    assert_eq!(person_of(&server, "d2").await, d, "d1 and d2 start as one person");
    let (b, c) = (person_of(&server, "b1").await, person_of(&server, "c1").await);
    assert_ne!(b, c, "b1 and c1 start apart");
    let (f1, f2) = (person_of(&server, "f1").await, person_of(&server, "f2").await);
    assert_ne!(f1, f2);

    // How strongly d2 joined d1, and how strongly b and c match.
    let mut profiles = server.profile_client().await;
    let explained = profiles
        .explain_record(pb::ExplainRecordRequest {
            source: SOURCE.into(),
            record_id: "d2".into(),
        })
        .await
        .expect("explain")
        .into_inner();
    let p_join = explained.candidates[0].probability;
    let pair = |a: &str, b: &str| pb::ExplainPairRequest {
        person_a: a.into(),
        person_b: b.into(),
    };
    let mut pair_probability = async |a: &str, b: &str| -> f64 {
        let explained = profiles.explain_pair(pair(a, b)).await.expect("pair").into_inner();
        explained.score.expect("a score").probability
    };
    let p_bc = pair_probability(&b, &c).await;
    let p_f = pair_probability(&f1, &f2).await;
    assert!(p_bc < p_join && p_join < 1.0, "p_bc {p_bc}, p_join {p_join}");

    // Steward decisions: e1 and e2 are one person, f1 and f2 are two.
    let mut admin = server.admin_client().await;
    let (e1, e2) = (person_of(&server, "e1").await, person_of(&server, "e2").await);
    admin
        .merge(pb::MergeRequest {
            person_a: e1,
            person_b: e2,
            note: "same resident, name changed".into(),
        })
        .await
        .expect("merge");
    // "Different": a steward's unmerge holds the two apart.
    admin
        .merge(pb::MergeRequest {
            person_a: f1.clone(),
            person_b: f2.clone(),
            note: "probe".into(),
        })
        .await
        .expect("merge");
    let merged = person_of(&server, "f1").await;
    admin
        .unmerge(pb::UnmergeRequest {
            person_id: merged,
            records: vec![pb::RecordRef {
                source: SOURCE.into(),
                record_id: "f2".into(),
                observed_at: String::new(),
            }],
            note: "a lodger, not family".into(),
        })
        .await
        .expect("unmerge");
    assert_ne!(person_of(&server, "f1").await, person_of(&server, "f2").await);

    // A stricter model: d2 no longer matches d1, and the steward's merge stands.
    install_thresholds(&server, (p_join + 1.0) / 2.0, (p_join + 1.0) / 2.0).await;
    let (messages, last) = reevaluate(&server).await;
    let before = stats(&server).await;
    assert_eq!(last.persons_done, last.persons_total);
    assert!(last.n_splits >= 1, "{last:?}");
    let split_reported: Vec<&pb::ReevaluateChange> = messages
        .iter()
        .flat_map(|message| message.changes.iter())
        .filter(|change| change.kind() == Kind::Split)
        .collect();
    assert_eq!(split_reported.len() as u64, last.n_splits);
    let (d1_now, d2_now) = (person_of(&server, "d1").await, person_of(&server, "d2").await);
    assert_ne!(d1_now, d2_now, "the stricter model split d1 and d2");
    assert!(split_reported
        .iter()
        .any(|change| change.person_id == d1_now || change.person_id == d2_now));
    assert_eq!(
        person_of(&server, "e1").await,
        person_of(&server, "e2").await,
        "the steward's merge stands"
    );
    let causes = history_causes(&server, &d).await;
    assert!(
        causes.contains(&("SplitOff".to_string(), "reevaluation".to_string())),
        "{causes:?}"
    );

    // A looser model: b and c now match and merge; f1 and f2 stay apart as the steward said,
    // even though they score like b and c.
    let loose = p_bc.min(p_f) / 2.0;
    install_thresholds(&server, loose, loose / 2.0).await;
    let (_, last) = reevaluate(&server).await;
    assert!(last.n_merges >= 1, "{last:?}");
    assert_eq!(
        person_of(&server, "b1").await,
        person_of(&server, "c1").await,
        "b and c merged"
    );
    assert_ne!(
        person_of(&server, "f1").await,
        person_of(&server, "f2").await,
        "persons a steward held apart stay apart"
    );
    let survivor = person_of(&server, "b1").await;
    let causes = history_causes(&server, &survivor).await;
    assert!(
        causes.contains(&("Absorbed".to_string(), "reevaluation".to_string())),
        "{causes:?}"
    );
    let after = stats(&server).await;
    assert_eq!(after.n_records, before.n_records, "no record lost or added");

    // The operator's command, with the changes written to a file.
    let dir = tempfile::tempdir().expect("temp dir");
    let changes_path = dir.path().join("changes.txt");
    let changes_arg = changes_path.to_str().expect("a UTF-8 temp path");
    let output = popmaster(&server, &["admin", "reevaluate", "--changes", changes_arg]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Nothing is left to change under the same model.
    assert!(
        stdout.contains(" persons in ") && stdout.ends_with(": 0 split off, 0 merged\n"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&changes_path).expect("changes file"), "");
    server.stop().await;
}
