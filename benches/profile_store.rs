//! Full profiles (~2,100 tags) stored and read through the engine: the write path (WAL
//! fdatasync, store transaction, survivorship over all of a person's records) and the read
//! path (one prefix scan). Run: `cargo bench --bench profile_store`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use popmaster::catalog::{Catalog, ValueType};
use popmaster::cleanse::id_number::check_digit;
use popmaster::config::Config;
use popmaster::engine::Engine;
use popmaster::model::{PersonId, RawRecord, RecordKey, SourceId, TagCode};
use popmaster::synth::{Generator, SynthConfig};
use std::collections::BTreeMap;
use std::time::Duration;

const N_FULL_PERSONS: u32 = 100;

fn id_number(n: u32) -> String {
    let first17 = format!("3301061980{:02}{:02}{:03}", 1 + n % 12, 1 + n / 12 % 28, n % 1000);
    let digits: &[u8; 17] = first17.as_bytes().try_into().expect("17 digits");
    format!("{first17}{}", char::from(check_digit(digits)))
}

/// A value its tag's type accepts, so cleansing keeps every tag.
fn value_for(value_type: ValueType, label: &str, person_idx: u32, variant: u32) -> String {
    match value_type {
        ValueType::Integer => format!("{}", person_idx * 10 + variant % 10),
        ValueType::Decimal => format!("{person_idx}.{}", variant % 10),
        ValueType::Boolean => if variant.is_multiple_of(2) { "true" } else { "false" }.to_string(),
        ValueType::Date => format!(
            "20{:02}-0{}-1{}",
            10 + variant % 10,
            1 + person_idx % 9,
            person_idx % 10
        ),
        ValueType::Phone => format!("139{person_idx:04}{:04}", variant % 10_000),
        ValueType::Gender => "女".to_string(),
        ValueType::IdNumber => id_number(person_idx + 5_000),
        ValueType::Address => "浙江省杭州市西湖区文三路1号".to_string(),
        ValueType::Name => "王芳".to_string(),
        _ => format!("{label}-{person_idx}-{variant}"),
    }
}

/// One record per source, each carrying every tag that source owns plus identity tags: the
/// person's profile ends up with every tag of the catalog.
fn full_person_records(catalog: &Catalog, person_idx: u32, variant: u32) -> Vec<RawRecord> {
    catalog
        .sources()
        .map(|source| {
            let source_id = SourceId::parse(&source.code).expect("catalog codes are well-formed");
            let mut tags: BTreeMap<TagCode, String> = catalog
                .tags()
                .iter()
                .filter(|tag| tag.owner_source == source.code)
                .map(|tag| {
                    (
                        TagCode::new(&tag.code),
                        value_for(tag.value_type, &tag.label, person_idx, variant),
                    )
                })
                .collect();
            tags.insert(TagCode::new("id_number"), id_number(person_idx));
            tags.insert(TagCode::new("name"), "欧阳文静".into());
            tags.insert(TagCode::new("phone"), format!("138{person_idx:08}"));
            tags.insert(TagCode::new("address"), "浙江省杭州市西湖区文三路1号".into());
            tags.insert(TagCode::new("hukou_address"), "浙江省杭州市西湖区文三路1号".into());
            tags.insert(TagCode::new("ethnicity"), "汉族".into());
            tags.insert(TagCode::new("gender"), "女".into());
            tags.insert(TagCode::new("birth_date"), "1980-01-01".into());
            tags.insert(TagCode::new("other_id"), format!("E{person_idx:08}"));
            RawRecord {
                key: RecordKey {
                    source: source_id,
                    record_id: format!("full-{person_idx}"),
                },
                observed_at: Some(1_600_000_000_000 + i64::from(variant)),
                tags,
            }
        })
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
            .block_on(engine.ingest(chrono::Utc::now().timestamp_millis(), records, vec![]))
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
                    .block_on(engine.ingest(chrono::Utc::now().timestamp_millis(), records, vec![]))
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
                    .block_on(engine.ingest(chrono::Utc::now().timestamp_millis(), records, vec![]))
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
