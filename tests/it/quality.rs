//! Cleansing through the real service: stored records keep raw and standardized values and
//! their findings; the quality report counts rules per source, refusals included.

use crate::common::*;
use popmaster::pb;
use std::collections::HashMap;

fn counts(report: &pb::QualityReport) -> HashMap<String, u64> {
    report
        .rules
        .iter()
        .map(|rule| (rule.rule_id.clone(), rule.count))
        .collect()
}

#[tokio::test]
async fn quality_report_counts_rules_per_source() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let answer = ingest(
        &mut ingest_client,
        vec![
            record(
                "D07",
                "q1",
                &[
                    ("name", "張偉"),
                    ("id_number", "330106900102177"),
                    ("phone", "+86 138-0000-1234"),
                ],
            ),
            record(
                "D07",
                "q2",
                &[
                    ("name", "李娜"),
                    ("id_number", "330106199001021771"),
                    ("birth_date", "1990/1/2"),
                ],
            ),
            record("D07", "q3", &[("nickname", "小李")]),
            record("D05", "q4", &[("name", "王芳"), ("gender", "F")]),
        ],
    )
    .await
    .expect("ingest");
    assert_eq!(answer.outcomes[2].reason_code, "unknown_tag");

    let mut admin = server.admin_client().await;
    let d07 = admin
        .get_quality_report(pb::GetQualityReportRequest { source: "D07".into() })
        .await
        .expect("report")
        .into_inner();
    assert_eq!((d07.n_records, d07.n_rejected), (2, 1));
    let d07_counts = counts(&d07);
    assert_eq!(d07_counts["NOR-008"], 1, "legacy ID number upgraded");
    assert_eq!(d07_counts["NOR-003"], 1, "traditional name simplified");
    assert_eq!(d07_counts["ACC-002"], 1, "check digit failed");
    assert_eq!(d07_counts["NOR-019"], 1, "unknown tag refused");
    assert_eq!(d07_counts["NOR-009"], 1, "date standardized");
    assert!(d07.rules.len() >= 37, "every rule is listed");

    let all = admin
        .get_quality_report(pb::GetQualityReportRequest { source: String::new() })
        .await
        .expect("report")
        .into_inner();
    assert_eq!((all.n_records, all.n_rejected), (3, 1));
    assert_eq!(counts(&all)["NOR-012"], 1, "gender code standardized (D05)");

    let refused = admin
        .get_quality_report(pb::GetQualityReportRequest { source: "D99".into() })
        .await
        .expect_err("not a catalog source");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // The profile shows standardized values.
    let mut profiles = server.profile_client().await;
    let profile = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: answer.outcomes[0].person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("profile")
        .into_inner();
    let values = profile_values(&profile);
    assert_eq!(values["name"], "张伟");
    assert_eq!(values["phone"], "13800001234");
    assert_eq!(values["id_number"], "33010619900102177X");
    assert_eq!(values["birth_date"], "1990-01-02", "derived from the ID number");
    assert_eq!(values["gender"], "男", "derived from the ID number");
    server.stop().await;
}
