//! Full profiles (~2,100 tags) stored and read through the engine: the write path (WAL
//! fdatasync, store transaction, survivorship over all of a person's records) and the read
//! path (one prefix scan). Run: `cargo bench --bench profile_store`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use popmaster::catalog::Catalog;
use popmaster::config::Config;
use popmaster::engine::Engine;
use popmaster::model::{PersonId, RawRecord, TagCode};
use popmaster::synth::{full_profile_records, Generator, SynthConfig};
use std::time::Duration;

const N_FULL_PERSONS: u32 = 100;

/// A full person's records (one per source, every tag of the catalog between them).
fn full_person_records(catalog: &Catalog, person_idx: u32, variant: u32) -> Vec<RawRecord> {
    full_profile_records(catalog, person_idx, variant)
        .iter()
        .map(|record| record.to_raw_record())
        .collect()
}

fn bench_profiles(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let catalog = Catalog::shipped();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let engine = Engine::open(&config, catalog.clone()).expect("engine opens");

    let mut person_ids: Vec<PersonId> = Vec::new();
    for person_idx in 0..N_FULL_PERSONS {
        let records = full_person_records(&catalog, person_idx, 0);
        let applied = runtime
            .block_on(engine.ingest(chrono::Utc::now().timestamp_millis(), records, vec![], None))
            .expect("ingest");
        person_ids.push(applied.placed[0].person_id.clone());
    }
    let sample = engine.get_profile(&person_ids[0], &[]).expect("read").expect("exists");
    let store_bytes = engine.stats().expect("stats").store.size_on_disk;
    println!(
        "full profile: {} tags from {} records; store on disk after {N_FULL_PERSONS} full persons: {} KiB",
        sample.tags.len(),
        sample.records.len(),
        store_bytes / 1024
    );

    // The answer of GetProfile for that profile, full and compact (each record named once).
    let stored = engine
        .get_stored_profile(&person_ids[0], &[])
        .expect("read")
        .expect("exists");
    let grant = popmaster::callers::ReaderGrant::everything();
    let encode = |compact: bool| {
        popmaster::api::encoded::profile(&grant, &catalog, &stored, compact)
            .expect("encodes")
            .0
    };
    println!(
        "GetProfile answer for it: {} bytes full, {} bytes compact",
        encode(false).as_bytes().len(),
        encode(true).as_bytes().len()
    );

    let mut group = criterion.benchmark_group("profile");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    group.bench_function("get_full_profile_2100_tags", |bencher| {
        bencher.iter(|| {
            next = (next + 1) % person_ids.len();
            let view = engine
                .get_profile(&person_ids[next], &[])
                .expect("read")
                .expect("exists");
            assert!(view.tags.len() > 2_000);
            view
        })
    });
    for (name, compact) in [
        ("encode_full_profile_answer", false),
        ("encode_compact_profile_answer", true),
    ] {
        group.bench_function(name, |bencher| bencher.iter(|| encode(compact)));
    }
    // What a client spends taking the same answers apart into `pb::Profile` (prost): on a
    // machine the clients share with the server, a bound on the decoded reads a second.
    for (name, compact) in [
        ("decode_full_profile_answer", false),
        ("decode_compact_profile_answer", true),
    ] {
        let answer = encode(compact);
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                let profile = <popmaster::pb::Profile as prost::Message>::decode(answer.as_bytes()).expect("decodes");
                assert!(profile.tags.len() > 2_000);
                profile
            })
        });
    }
    let mask = vec![TagCode::new("name"), TagCode::new("id_number"), TagCode::new("phone")];
    group.bench_function("get_profile_3_tag_mask", |bencher| {
        bencher.iter(|| {
            next = (next + 1) % person_ids.len();
            engine
                .get_profile(&person_ids[next], &mask)
                .expect("read")
                .expect("exists")
        })
    });
    let mut variant = 1u32;
    group.sample_size(30);
    group.bench_function("replace_one_record_of_full_person_durably", |bencher| {
        bencher.iter_batched(
            || {
                variant += 1;
                let person_idx = variant % N_FULL_PERSONS;
                let mut records = full_person_records(&catalog, person_idx, variant);
                records.truncate(1);
                records
            },
            |records| {
                runtime
                    .block_on(engine.ingest(chrono::Utc::now().timestamp_millis(), records, vec![], None))
                    .expect("ingest")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // A population larger than the benchmark consumes: every batch brings new records about
    // new and known residents, as a department's feed does, and no person grows without end.
    const BATCH_RECORDS: usize = 1_000;
    const N_BATCHES: usize = 150;
    let synthetic: Vec<RawRecord> = Generator::new(
        SynthConfig {
            seed: 11,
            n_persons: 60_000,
            ..SynthConfig::default()
        },
        &catalog,
    )
    .take(BATCH_RECORDS * N_BATCHES)
    .map(|synth| synth.to_raw_record())
    .collect();
    let mut batches = synthetic
        .chunks(BATCH_RECORDS)
        .map(<[RawRecord]>::to_vec)
        .collect::<Vec<_>>()
        .into_iter();
    let mut group = criterion.benchmark_group("ingest");
    group.measurement_time(Duration::from_secs(8));
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH_RECORDS as u64));
    group.bench_function("batch_of_1000_synthetic_records_durably", |bencher| {
        bencher.iter_batched(
            || {
                batches
                    .next()
                    .expect("the population outlasts the benchmark's iterations")
            },
            |records| {
                runtime
                    .block_on(engine.ingest(chrono::Utc::now().timestamp_millis(), records, vec![], None))
                    .expect("ingest")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    runtime.block_on(engine.shutdown());
}

criterion_group!(benches, bench_profiles);
criterion_main!(benches);
