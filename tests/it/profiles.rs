//! Reads through the real gRPC services: profiles, masks, errors, export, health, reflection.

use crate::common::*;
use popmaster::catalog::Catalog;
use popmaster::pb;
use popmaster::synth::{Generator, SynthConfig};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

#[tokio::test]
async fn tag_masks_and_lookup_errors() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let id = id_number("19881212", 3);
    let answer = ingest(
        &mut ingest_client,
        vec![record(
            "D01",
            "m1",
            &[
                ("id_number", &id),
                ("name", "赵敏"),
                ("phone", "13700000000"),
                ("ethnicity", "汉族"),
            ],
        )],
    )
    .await
    .expect("ingest");
    let person_id = answer.outcomes[0].person_id.clone();
    let mut profiles = server.profile_client().await;
    let masked = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec!["name".into(), "phone".into()],
            compact: false,
        })
        .await
        .expect("profile")
        .into_inner();
    let tags: BTreeSet<String> = masked.tags.iter().map(|tag| tag.tag.clone()).collect();
    assert_eq!(tags, BTreeSet::from(["name".to_string(), "phone".to_string()]));

    let unknown = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec!["shoe_size".into()],
            compact: false,
        })
        .await
        .expect_err("unknown tag in mask");
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(unknown.message().contains("shoe_size"));

    let missing = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: "P0000000000000000".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("no such person");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let empty = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: String::new(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("empty id");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);

    let bad_number = format!("{}0", &id[..17]);
    let invalid = profiles
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: bad_number.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect_err("bad check digit");
    if !id.ends_with('0') {
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
        assert!(invalid.message().contains("check digit"), "{}", invalid.message());
        assert!(!invalid.message().contains(&bad_number[..10]), "no ID digits in errors");
    }
    server.stop().await;
}

/// Synthetic population in, mapping out: every stored record appears exactly once, and
/// records sharing a valid ID number share a person.
#[tokio::test]
async fn export_maps_every_record() {
    let server = TestServer::start().await;
    let catalog = Catalog::shipped();
    let config = SynthConfig {
        seed: 7,
        n_persons: 600,
        ..SynthConfig::default()
    };
    let records: Vec<pb::Record> = Generator::new(config, &catalog)
        .map(|synth| pb::Record {
            source: synth.record.source.clone(),
            record_id: synth.record.record_id.clone(),
            observed_at: synth.record.observed_at.clone().unwrap_or_default(),
            tags: synth.record.present_tags().into_iter().collect(),
        })
        .collect();
    let n_sent = records.len();
    let batches: Vec<pb::RecordBatch> = records
        .chunks(250)
        .enumerate()
        .map(|(batch_idx, chunk)| pb::RecordBatch {
            batch_id: batch_idx as u64,
            records: chunk.to_vec(),
        })
        .collect();
    let mut ingest_client = server.ingest_client().await;
    let mut answers = ingest_client
        .stream_records(tokio_stream::iter(batches))
        .await
        .expect("stream")
        .into_inner();
    let mut n_stored = 0;
    while let Some(answer) = answers.message().await.expect("answer") {
        n_stored += answer
            .outcomes
            .iter()
            .filter(|o| o.decision != pb::Decision::Rejected as i32)
            .count();
    }
    assert_eq!(n_stored, n_sent, "the generator only writes admissible records");

    let rows = export(&mut server.profile_client().await).await;
    assert_eq!(rows.len(), n_sent);
    let keys: BTreeSet<(String, String)> = rows
        .iter()
        .map(|row| (row.source.clone(), row.record_id.clone()))
        .collect();
    assert_eq!(keys.len(), n_sent, "each record exactly once");

    // Records whose ID numbers normalize to the same valid number share one person.
    let person_of: BTreeMap<(String, String), String> = rows
        .into_iter()
        .map(|row| ((row.source, row.record_id), row.person_id))
        .collect();
    let mut persons_of_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for synth in Generator::new(
        SynthConfig {
            seed: 7,
            n_persons: 600,
            ..SynthConfig::default()
        },
        &catalog,
    ) {
        let key = (synth.record.source.clone(), synth.record.record_id.clone());
        let tags = synth.record.present_tags();
        if let Some(Ok(id)) = tags
            .get("id_number")
            .map(|raw| popmaster::cleanse::id_number::normalize_id_number(raw))
        {
            persons_of_id.entry(id).or_default().insert(person_of[&key].clone());
        }
    }
    assert!(persons_of_id.len() > 300);
    assert!(persons_of_id.values().all(|persons| persons.len() == 1));
    server.stop().await;
}

#[tokio::test]
async fn health_reflection_and_catalog() {
    let server = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in [
        "popmaster.v1.IngestService",
        "popmaster.v1.ProfileService",
        "popmaster.v1.AdminService",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.message().await.expect("answer").expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|service| service.name).collect();
    for expected in [
        "popmaster.v1.IngestService",
        "popmaster.v1.ProfileService",
        "popmaster.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(expected), "{expected} missing from {names:?}");
    }

    let catalog = server
        .admin_client()
        .await
        .get_catalog(pb::GetCatalogRequest {})
        .await
        .expect("catalog")
        .into_inner();
    assert_eq!(catalog.sources.len(), 63);
    assert!(catalog.tags.len() > 2_000);
    server.stop().await;
}

/// The derived index follows the store's change feed.
#[tokio::test]
async fn the_index_catches_up_with_the_store() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let records = (0..30u32)
        .map(|n| {
            record(
                "D01",
                &format!("x{n}"),
                &[("id_number", &id_number("19750505", n % 10)), ("name", "周杰")],
            )
        })
        .collect();
    ingest(&mut ingest_client, records).await.expect("ingest");
    assert_eq!(index_caught_up(&server.url()).await.index_persons, 10);
    server.stop().await;
}

/// GetProfile and GetProfileByIdNumber send profiles encoded straight from the store; the
/// other reads build the message. A client sees the same profile either way, gzip or not.
#[tokio::test]
async fn every_profile_read_gives_the_same_profile() {
    let server = TestServer::start().await;
    let mut ingest_client = server.ingest_client().await;
    let id = id_number("19750304", 8);
    let answer = ingest(
        &mut ingest_client,
        vec![
            record(
                "D01",
                "r1",
                &[("id_number", &id), ("name", "钱多多"), ("phone", "13911112222")],
            ),
            record("D07", "r2", &[("id_number", &id), ("name", "錢多多"), ("gender", "女")]),
        ],
    )
    .await
    .expect("ingest");
    let person_id = answer.outcomes[0].person_id.clone();
    let mut profiles = server.profile_client().await;
    let by_id = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("by person id")
        .into_inner();
    assert_eq!(by_id.person_id, person_id);
    assert_eq!(by_id.n_records, 2);
    assert_eq!(by_id.records.len(), 2);
    assert!(by_id.version >= 1);
    assert!(by_id
        .tags
        .iter()
        .any(|tag| tag.tag == "phone" && tag.value == "13911112222"));
    assert!(
        by_id.tags.windows(2).all(|pair| pair[0].tag < pair[1].tag),
        "in tag order"
    );
    let by_number = profiles
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: id.clone(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("by ID number")
        .into_inner();
    assert_eq!(by_number, by_id);
    let by_record = profiles
        .get_person_by_record(pb::GetPersonByRecordRequest {
            source: "D07".into(),
            record_id: "r2".into(),
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("by record")
        .into_inner();
    assert_eq!(by_record, by_id);
    let batch = profiles
        .batch_get_profiles(pb::BatchGetProfilesRequest {
            person_ids: vec![person_id.clone()],
            tag_mask: vec![],
            compact: false,
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(batch.profiles, vec![by_id.clone()]);

    // Compact: each record once, the values pointing at it; expanded, the same profile.
    let compact = profiles
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec![],
            compact: true,
        })
        .await
        .expect("compact")
        .into_inner();
    assert!(compact
        .tags
        .iter()
        .all(|tag| tag.record > 0 && tag.source.is_empty() && tag.record_id.is_empty()));
    // Each record a value names carries the time (here every value comes from D01's record:
    // public security wins every canonical tag; D07's record names none and has no time).
    for tag in &compact.tags {
        assert!(
            !compact.records[tag.record as usize - 1].observed_at.is_empty(),
            "{compact:#?}"
        );
    }
    assert!(compact.encoded_len() < by_id.encoded_len());
    assert_eq!(popmaster::api::convert::expand_compact_profile(compact.clone()), by_id);
    let compact_by_number = profiles
        .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
            id_number: id.clone(),
            tag_mask: vec![],
            compact: true,
        })
        .await
        .expect("compact by ID number")
        .into_inner();
    assert_eq!(compact_by_number, compact);

    let mut gzip = server
        .profile_client()
        .await
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let compressed = gzip
        .get_profile(pb::GetProfileRequest {
            person_id: person_id.clone(),
            tag_mask: vec!["name".into()],
            compact: false,
        })
        .await
        .expect("gzip")
        .into_inner();
    assert_eq!(compressed.tags.len(), 1);
    assert_eq!(
        compressed.tags[0],
        by_id.tags.iter().find(|tag| tag.tag == "name").expect("name").clone()
    );
    server.stop().await;
}
