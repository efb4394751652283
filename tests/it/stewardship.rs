//! Stewardship through the real service: deletion and splitting, merge and unmerge (and the
//! matcher respecting them), the review queue, history and lineage, and the errors of each.

use crate::common::*;
use popmaster::pb;
use tonic::Code;

fn record_ref(source: &str, record_id: &str) -> pb::RecordRef {
    pb::RecordRef {
        source: source.into(),
        record_id: record_id.into(),
        observed_at: String::new(),
    }
}

async fn history(server: &TestServer, person_id: &str) -> pb::ProfileHistory {
    server
        .profile_client()
        .await
        .get_profile_history(pb::GetProfileHistoryRequest {
            person_id: person_id.into(),
            from_version: 0,
            page_size: 0,
        })
        .await
        .expect("history")
        .into_inner()
}

async fn n_records(server: &TestServer, person_id: &str) -> u32 {
    server
        .profile_client()
        .await
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("profile")
        .into_inner()
        .n_records
}

fn kinds(entry: &pb::HistoryEntry) -> Vec<pb::person_event::Kind> {
    entry
        .events
        .iter()
        .map(|event| pb::person_event::Kind::try_from(event.kind).expect("known kind"))
        .collect()
}

/// r1 and r3 meet only through r2: r1 -ID number- r2 -phone- r3. Returns their person.
async fn bridged(server: &TestServer, id: &str) -> String {
    let answer = ingest(
        &mut server.ingest_client().await,
        vec![
            record("D01", "r1", &[("name", "王小明"), ("id_number", id)]),
            record(
                "D05",
                "r2",
                &[("name", "王小明"), ("id_number", id), ("phone", "13812345678")],
            ),
            record("D07", "r3", &[("name", "王小明"), ("phone", "13812345678")]),
        ],
    )
    .await
    .expect("ingest");
    let person = answer.outcomes[0].person_id.clone();
    assert!(answer.outcomes.iter().all(|outcome| outcome.person_id == person));
    person
}

#[tokio::test]
async fn deleting_the_only_bridge_splits_the_person() {
    let server = TestServer::start().await;
    let person = bridged(&server, &id_number("19800101", 7)).await;
    let deleted = server
        .ingest_client()
        .await
        .delete_record(pb::DeleteRecordRequest {
            source: "D05".into(),
            record_id: "r2".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.person_id, person, "the earliest group keeps the id");
    assert_eq!(deleted.new_person_ids.len(), 1);
    assert_eq!(n_records(&server, &person).await, 1);
    assert_eq!(n_records(&server, &deleted.new_person_ids[0]).await, 1);
    let last = history(&server, &person).await.entries.pop().expect("entries");
    assert_eq!(
        kinds(&last),
        [pb::person_event::Kind::RecordRemoved, pb::person_event::Kind::SplitOff]
    );
    assert_eq!(last.events[0].cause, "deletion");
    let split = history(&server, &deleted.new_person_ids[0]).await;
    assert_eq!(split.entries[0].kind, "split");
    assert_eq!(stats(&server).await.n_records, 2);
    // The record is gone: deleting it again is NOT_FOUND, and so is a record never sent.
    let mut ingest_client = server.ingest_client().await;
    for (source, record_id) in [("D05", "r2"), ("D05", "never")] {
        let status = ingest_client
            .delete_record(pb::DeleteRecordRequest {
                source: source.into(),
                record_id: record_id.into(),
            })
            .await
            .expect_err("gone");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let status = ingest_client
        .delete_record(pb::DeleteRecordRequest {
            source: "X5".into(),
            record_id: "r1".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn an_unmerge_is_remembered_by_the_matcher() {
    let server = TestServer::start().await;
    let id = id_number("19800101", 9);
    let person = bridged(&server, &id).await;
    let mut admin = server.admin_client().await;
    let unmerged = admin
        .unmerge(pb::UnmergeRequest {
            person_id: person.clone(),
            records: vec![record_ref("D07", "r3")],
            note: "a relative's phone".into(),
        })
        .await
        .expect("unmerge")
        .into_inner();
    assert_eq!(unmerged.person_id, person);
    let moved = unmerged.new_person_ids[0].clone();
    // A record matching both joins one of them and does not merge them.
    let answer = ingest(
        &mut server.ingest_client().await,
        vec![record(
            "D09",
            "r4",
            &[("name", "王小明"), ("id_number", &id), ("phone", "13812345678")],
        )],
    )
    .await
    .expect("ingest");
    assert_eq!(answer.outcomes[0].person_id, person);
    assert_eq!(n_records(&server, &moved).await, 1, "r3 stays apart");
    let moved_history = history(&server, &moved).await;
    assert_eq!(moved_history.entries[0].kind, "split");
    let held = moved_history.entries[0]
        .events
        .iter()
        .find(|event| event.kind == pb::person_event::Kind::HeldApart as i32)
        .expect("held apart");
    assert_eq!(
        (held.person_id.as_str(), held.note.as_str()),
        (person.as_str(), "a relative's phone")
    );
    // Errors: every record, a record of another person, no record, an unknown person.
    for (person_id, records, code) in [
        (person.clone(), vec![], Code::InvalidArgument),
        (person.clone(), vec![record_ref("D07", "r3")], Code::InvalidArgument),
        (moved.clone(), vec![record_ref("D07", "r3")], Code::InvalidArgument),
        (
            "PNOSUCHPERSON".to_string(),
            vec![record_ref("D01", "r1")],
            Code::NotFound,
        ),
    ] {
        let status = admin
            .unmerge(pb::UnmergeRequest {
                person_id,
                records,
                note: String::new(),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_steward_merge_with_history_and_lineage() {
    let server = TestServer::start().await;
    let answer = ingest(
        &mut server.ingest_client().await,
        vec![
            record("D03", "a1", &[("name", "李四"), ("phone", "13900000001")]),
            record("D03", "a2", &[("name", "李四"), ("phone", "13900000001")]),
            record("D08", "b1", &[("name", "李四"), ("phone", "13700000002")]),
        ],
    )
    .await
    .expect("ingest");
    let (a, b) = (
        answer.outcomes[0].person_id.clone(),
        answer.outcomes[2].person_id.clone(),
    );
    assert_ne!(a, b);
    let mut admin = server.admin_client().await;
    let merged = admin
        .merge(pb::MergeRequest {
            person_a: b.clone(),
            person_b: a.clone(),
            note: "same resident, new phone".into(),
        })
        .await
        .expect("merge")
        .into_inner();
    assert_eq!(merged.person_id, a, "the person with more records keeps its id");
    let profile = server
        .profile_client()
        .await
        .get_profile(pb::GetProfileRequest {
            person_id: b.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("redirects")
        .into_inner();
    assert_eq!(
        (profile.person_id.as_str(), profile.redirected_from.as_str()),
        (a.as_str(), b.as_str())
    );
    // Both histories tell it; the merged id's history ends with the merge.
    let b_history = history(&server, &b).await;
    let last = b_history.entries.last().expect("entries");
    assert_eq!(last.kind, "merged_into");
    assert_eq!(last.events[0].person_id, a);
    assert_eq!(
        (last.events[0].cause.as_str(), last.events[0].note.as_str()),
        ("steward", "same resident, new phone")
    );
    let a_history = history(&server, &a).await;
    assert_eq!(a_history.entries[0].kind, "created");
    let absorbed = a_history.entries.last().expect("entries");
    assert!(kinds(absorbed).contains(&pb::person_event::Kind::Absorbed));
    // The first version lists the tags it brought.
    assert!(a_history.entries[0].changed_tags.contains(&"phone".to_string()));
    assert!(a_history.entries[0].changed_tags.contains(&"name".to_string()));
    // Paging: one version at a time reaches the same entries.
    let mut paged = Vec::new();
    let mut from_version = 0;
    loop {
        let page = server
            .profile_client()
            .await
            .get_profile_history(pb::GetProfileHistoryRequest {
                person_id: a.clone(),
                from_version,
                page_size: 1,
            })
            .await
            .expect("page")
            .into_inner();
        paged.extend(page.entries);
        if page.next_version == 0 {
            break;
        }
        from_version = page.next_version;
    }
    assert_eq!(paged, a_history.entries);
    // Lineage: both phones, where each came from, and the winner.
    let lineage = server
        .profile_client()
        .await
        .get_tag_lineage(pb::GetTagLineageRequest {
            person_id: b.clone(),
            tag: "phone".into(),
        })
        .await
        .expect("lineage")
        .into_inner();
    assert_eq!(lineage.person_id, a, "followed to the survivor");
    assert_eq!(lineage.rule, "most_recent");
    assert_eq!(lineage.contributions.len(), 3);
    assert_eq!(lineage.contributions.iter().filter(|c| c.winner).count(), 1);
    let values: Vec<(&str, u32)> = lineage.values.iter().map(|v| (v.value.as_str(), v.n_records)).collect();
    assert!(
        values.contains(&("13900000001", 2)) && values.contains(&("13700000002", 1)),
        "{values:?}"
    );
    // Errors: merging a person with itself (or with its own alias), unknown persons and tags.
    let status = admin
        .merge(pb::MergeRequest {
            person_a: a.clone(),
            person_b: b.clone(),
            note: String::new(),
        })
        .await
        .expect_err("one person already");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = admin
        .merge(pb::MergeRequest {
            person_a: a.clone(),
            person_b: "PNOSUCHPERSON".into(),
            note: String::new(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = server
        .profile_client()
        .await
        .get_tag_lineage(pb::GetTagLineageRequest {
            person_id: a.clone(),
            tag: "no_such_tag".into(),
        })
        .await
        .expect_err("unknown tag");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = server
        .profile_client()
        .await
        .get_profile_history(pb::GetProfileHistoryRequest {
            person_id: "PNOSUCHPERSON".into(),
            from_version: 0,
            page_size: 0,
        })
        .await
        .expect_err("unknown person");
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn the_review_queue_is_listed_and_settled() {
    let server = TestServer::start().await;
    // The same rare name and gender, nothing else: possible matches, not sure ones.
    ingest(
        &mut server.ingest_client().await,
        vec![
            record("D02", "x1", &[("name", "欧阳娜娜"), ("gender", "女")]),
            record("D04", "x2", &[("name", "欧阳娜娜"), ("gender", "女")]),
        ],
    )
    .await
    .expect("ingest");
    let mut admin = server.admin_client().await;
    let page = admin
        .list_review_items(pb::ListReviewItemsRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.n_open, 1);
    let item = &page.items[0];
    assert_eq!(item.record, Some(record_ref("D04", "x2")));
    assert!(item.best_probability >= 0.5 && item.best_probability < 0.99);
    assert!(!item.text.is_empty() && !item.candidates[0].comparisons.is_empty());
    let candidate = item.candidates[0].person_id.clone();
    // "Different": no merge, the item is gone, and a later look-alike does not raise the pair.
    let settled = admin
        .resolve_review_item(pb::ResolveReviewItemRequest {
            record: Some(record_ref("D04", "x2")),
            candidate_person_id: candidate.clone(),
            same: false,
            note: "mother and daughter".into(),
        })
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(settled.person_id, item.person_id);
    assert_eq!(stats(&server).await.n_review_items, 0);
    let status = admin
        .resolve_review_item(pb::ResolveReviewItemRequest {
            record: Some(record_ref("D04", "x2")),
            candidate_person_id: candidate.clone(),
            same: true,
            note: String::new(),
        })
        .await
        .expect_err("settled already");
    assert_eq!(status.code(), Code::NotFound);
    // A third look-alike: a review item again, now settled as the same person.
    ingest(
        &mut server.ingest_client().await,
        vec![record(
            "D06",
            "x3",
            &[("name", "欧阳娜娜"), ("gender", "女"), ("phone", "13611112222")],
        )],
    )
    .await
    .expect("ingest");
    let page = admin
        .list_review_items(pb::ListReviewItemsRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    let item = page
        .items
        .iter()
        .find(|item| item.record == Some(record_ref("D06", "x3")))
        .expect("x3 waits");
    let other = item.candidates[0].person_id.clone();
    let status = admin
        .resolve_review_item(pb::ResolveReviewItemRequest {
            record: Some(record_ref("D06", "x3")),
            candidate_person_id: "PNOTACANDIDATE".into(),
            same: true,
            note: String::new(),
        })
        .await
        .expect_err("not a candidate");
    assert_eq!(status.code(), Code::InvalidArgument);
    let merged = admin
        .resolve_review_item(pb::ResolveReviewItemRequest {
            record: Some(record_ref("D06", "x3")),
            candidate_person_id: other.clone(),
            same: true,
            note: "same phone at the clinic".into(),
        })
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(n_records(&server, &merged.person_id).await, 2);
    let status = admin
        .list_review_items(pb::ListReviewItemsRequest {
            page_size: 1,
            page_token: "not hex".into(),
        })
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await;
}
