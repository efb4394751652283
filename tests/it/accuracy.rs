//! Accuracy through the real service: FEBRL 3 goes in over gRPC as one source, the mapping
//! comes back from the export RPC, and the accuracy library scores it against the true pairs.
//! These records carry no resident ID number, so every link is the matcher's work with its
//! shipped defaults; the floors below catch a regression, the README has the measured figures.

use crate::common::*;
use popmaster::accuracy::{evaluate, read_febrl, Mapping, PairTask, RecordRef, Truth};
use popmaster::pb;
use std::path::PathBuf;

/// Statistics bureau: its only required tag is `name`, which FEBRL records carry.
const FEBRL_SOURCE: &str = "D15";
const BATCH_RECORDS: usize = 1_000;

fn febrl_file(name: &str) -> std::fs::File {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/febrl").join(name);
    std::fs::File::open(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn febrl3_is_scored_over_every_true_pair() {
    let server = TestServer::start().await;
    let records: Vec<pb::Record> = read_febrl(febrl_file("febrl3.csv"), FEBRL_SOURCE)
        .expect("FEBRL header")
        .map(|record| {
            let record = record.expect("FEBRL row");
            pb::Record {
                source: record.source.clone(),
                record_id: record.record_id.clone(),
                observed_at: String::new(),
                tags: record.present_tags().into_iter().collect(),
            }
        })
        .collect();
    assert_eq!(records.len(), 5_000);
    let mut ingest_client = server.ingest_client().await;
    for batch in records.chunks(BATCH_RECORDS) {
        let answer = ingest(&mut ingest_client, batch.to_vec())
            .await
            .expect("batch accepted");
        let rejected = decisions(&answer)
            .into_iter()
            .filter(|decision| *decision == pb::Decision::Rejected)
            .count();
        assert_eq!(rejected, 0, "every FEBRL record is admissible");
    }

    let rows = export(&mut server.profile_client().await).await;
    assert_eq!(rows.len(), 5_000);
    let mapping = Mapping::from_rows(
        rows.into_iter()
            .map(|row| (RecordRef::new(row.source, row.record_id), row.person_id)),
    );
    let task = PairTask::Dedupe {
        source: FEBRL_SOURCE.to_string(),
    };
    let truth = Truth::read_pairs(febrl_file("febrl3_true_pairs.csv"), task).expect("true pairs");
    let evaluation = evaluate(&mapping, &truth, None).expect("evaluates");
    let counts = evaluation.overall;
    assert_eq!(counts.n_true_pairs, 6_538);
    assert_eq!(counts.n_records, 5_000);
    assert_eq!(evaluation.n_truth_records_unmapped, 0);
    let precision = counts.precision().expect("the matcher links FEBRL duplicates");
    assert!(
        precision >= 0.999,
        "precision {precision} ({} false of {} predicted pairs)",
        counts.false_positives(),
        counts.n_predicted_pairs
    );
    let recall = counts.recall().expect("there are true pairs");
    assert!(
        recall >= 0.99,
        "recall {recall} ({} pairs missed)",
        counts.false_negatives()
    );
    server.stop().await;
}
