//! Records cleansed per second on one core, on realistic messy records from the seeded
//! synthetic population (full-width and traditional characters, legacy ID numbers, a dozen
//! date, phone and gender forms, abbreviated addresses). Run: `cargo bench --bench cleanse`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use popmaster::catalog::Catalog;
use popmaster::cleanse::cleanse_record;
use popmaster::model::RawRecord;
use popmaster::synth::{Generator, SynthConfig};
use std::time::Duration;

fn messy_records(n_persons: usize) -> Vec<RawRecord> {
    let catalog = Catalog::shipped();
    let config = SynthConfig {
        seed: 3,
        n_persons,
        error_rate: 0.2,
        ..SynthConfig::default()
    };
    Generator::new(config, &catalog)
        .map(|synth| synth.to_raw_record())
        .collect()
}

fn bench_cleanse(criterion: &mut Criterion) {
    let catalog = Catalog::shipped();
    let records = messy_records(3_000);
    let n_values: usize = records.iter().map(|record| record.tags.len()).sum();
    println!(
        "{} records, {:.1} tags per record on average",
        records.len(),
        n_values as f64 / records.len() as f64
    );
    let received_at = chrono::Utc::now().timestamp_millis();
    // Warm the shipped tables (catalog, divisions, conversion dictionaries) outside the timing.
    cleanse_record(records[0].clone(), received_at, &catalog);
    let mut group = criterion.benchmark_group("cleanse");
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(records.len() as u64));
    // The records are cloned outside the timing: the writer owns each record it cleanses.
    group.bench_function("synthetic_messy_records_one_core", |bencher| {
        bencher.iter_batched(
            || records.clone(),
            |records| {
                let mut n_findings = 0usize;
                for record in records {
                    n_findings += cleanse_record(record, received_at, &catalog).findings.len();
                }
                n_findings
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_cleanse);
criterion_main!(benches);
