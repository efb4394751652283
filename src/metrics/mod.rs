//! Metrics: the Prometheus registry and every instrument in it, the tower layer that measures
//! each gRPC call (`rpc`), and the `/metrics` endpoint on its own port (`endpoint`), which reads
//! the gauges from the engine when it is scraped.
//!
//! Labels are method names, status codes, outcomes and source codes: never a personal value,
//! never a set a client could grow (a path that is not a served method is counted as `other`).
//! Nothing reads the metrics back: they must not decide anything.

pub mod endpoint;
pub mod process;
pub mod rpc;

use crate::engine::{EngineHealth, EngineStats};
use crate::model::Decision;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use prost::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the call-duration buckets, in seconds: from a profile read served from the
/// cache (well under a millisecond) to a stream of several minutes.
const RPC_SECONDS_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Upper bounds of the batch-duration buckets, in seconds: one record to the largest batch.
const BATCH_SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label of calls to a path that is not a served method.
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodCodeLabels {
    service: String,
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// How many records of one `StreamRecords` batch ended each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestTally {
    pub created: u64,
    pub matched: u64,
    pub merged: u64,
    pub review: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

impl IngestTally {
    pub fn add(&mut self, decision: Decision) {
        match decision {
            Decision::Created => self.created += 1,
            Decision::Matched => self.matched += 1,
            Decision::Merged => self.merged += 1,
            Decision::Review => self.review += 1,
            Decision::Unchanged => self.unchanged += 1,
        }
    }

    fn by_outcome(&self) -> [(&'static str, u64); 6] {
        [
            ("created", self.created),
            ("matched", self.matched),
            ("merged", self.merged),
            ("review", self.review),
            ("unchanged", self.unchanged),
            ("rejected", self.rejected),
        ]
    }
}

/// How a `StreamRecords` batch was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    /// Durable and answered with one outcome per record.
    Acknowledged(IngestTally),
    /// Refused whole at admission (over a limit, or a source the writer may not write);
    /// nothing of it was applied.
    Refused,
    /// The write path could not take it (shutting down, or failed).
    Failed,
}

pub struct Metrics {
    /// What the service counts itself and the engine's health: answered even when the store
    /// cannot be read.
    registry: Registry,
    /// The figures read from the store at each scrape: left out of a scrape that cannot read it.
    store_registry: Registry,
    /// The process's own figures (`process.rs`), read from `/proc` at each scrape.
    process_registry: Registry,
    ingest_records: Family<OutcomeLabels, Counter>,
    ingest_batches: Family<ResultLabels, Counter>,
    ingest_batch_seconds: Histogram,
    rpc_requests: Family<MethodCodeLabels, Counter>,
    rpc_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    rpc_in_flight: Family<MethodLabels, Gauge>,
    records: Gauge,
    source_records: Family<SourceLabels, Gauge>,
    persons: Gauge,
    review_items: Gauge,
    index_lag: Gauge,
    store_bytes: Gauge,
    write_path_failed: Gauge,
    store_torn: Gauge,
    store_readable: Gauge,
    /// gRPC path (`/package.Service/Method`) -> labels, for every method served.
    methods: HashMap<String, MethodLabels>,
    /// One scrape at a time: a scrape sets the gauges, then encodes them.
    scrape: Mutex<()>,
    /// Whether the last scrape could read the store.
    store_was_readable: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("n_methods", &self.methods.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("a service descriptor set cannot be decoded: {0}")]
    Descriptor(#[from] prost::DecodeError),
}

fn rpc_histogram() -> Histogram {
    Histogram::new(RPC_SECONDS_BUCKETS)
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// The registry and its instruments. `descriptor_sets` are the encoded file descriptor sets
    /// of every served service: their methods are the only method labels.
    pub fn new(descriptor_sets: &[&[u8]]) -> Result<Metrics, MetricsError> {
        let mut methods = HashMap::new();
        for encoded in descriptor_sets {
            let set = prost_types::FileDescriptorSet::decode(*encoded)?;
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    let service_name = if package.is_empty() {
                        service.name().to_string()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    for method in &service.method {
                        let labels = MethodLabels {
                            service: service_name.clone(),
                            method: method.name().to_string(),
                        };
                        methods.insert(format!("/{service_name}/{}", method.name()), labels);
                    }
                }
            }
        }

        let mut registry = Registry::with_prefix("popmaster");
        let ingest_records = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ingest_records",
            "Records of StreamRecords batches by outcome: created, matched, merged, review, unchanged, rejected",
            ingest_records.clone(),
        );
        let ingest_batches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "ingest_batches",
            "StreamRecords batches by result: acknowledged (durable), refused (over a limit), failed (write path unavailable)",
            ingest_batches.clone(),
        );
        let ingest_batch_seconds = Histogram::new(BATCH_SECONDS_BUCKETS);
        registry.register_with_unit(
            "ingest_batch_duration",
            "Time from receiving an acknowledged batch to its answer: admission, queue, write-ahead log, apply",
            Unit::Seconds,
            ingest_batch_seconds.clone(),
        );
        let rpc_requests = Family::<MethodCodeLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "Finished gRPC calls by service, method and status code",
            rpc_requests.clone(),
        );
        let rpc_seconds = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(rpc_histogram);
        registry.register_with_unit(
            "rpc_duration",
            "Whole gRPC calls, from the request to the status (the end of the stream for streaming calls)",
            Unit::Seconds,
            rpc_seconds.clone(),
        );
        let rpc_in_flight = Family::<MethodLabels, Gauge>::default();
        registry.register(
            "rpc_in_flight",
            "gRPC calls started and not finished (open streams included)",
            rpc_in_flight.clone(),
        );
        let mut store_registry = Registry::with_prefix("popmaster");
        let records = Gauge::default();
        store_registry.register("records", "Records stored", records.clone());
        let source_records = Family::<SourceLabels, Gauge>::default();
        store_registry.register("source_records", "Records stored per source", source_records.clone());
        let persons = Gauge::default();
        store_registry.register("persons", "Persons", persons.clone());
        let review_items = Gauge::default();
        store_registry.register(
            "review_items",
            "Records with possible matches waiting for a steward (the review queue)",
            review_items.clone(),
        );
        let index_lag = Gauge::default();
        store_registry.register(
            "index_lag",
            "Change-feed entries the search index has not applied yet",
            index_lag.clone(),
        );
        let store_bytes = Gauge::default();
        store_registry.register_with_unit("store", "Size of the store on disk", Unit::Bytes, store_bytes.clone());
        let write_path_failed = Gauge::default();
        registry.register(
            "write_path_failed",
            "1 when the write path has failed and acknowledges nothing more until a restart",
            write_path_failed.clone(),
        );
        let store_torn = Gauge::default();
        registry.register(
            "store_torn",
            "1 when the store stopped part-way through a batch: it serves nothing until a restart completes the batch",
            store_torn.clone(),
        );
        let store_readable = Gauge::default();
        registry.register(
            "store_readable",
            "1 when this scrape read the store's figures (records, persons, review items, index lag, size); 0 leaves them out",
            store_readable.clone(),
        );
        // Without a prefix: the process metrics' names are the ones every client library uses.
        let mut process_registry = Registry::default();
        process_registry.register_collector(Box::new(process::ProcessCollector));
        Ok(Metrics {
            registry,
            store_registry,
            process_registry,
            ingest_records,
            ingest_batches,
            ingest_batch_seconds,
            rpc_requests,
            rpc_seconds,
            rpc_in_flight,
            records,
            source_records,
            persons,
            review_items,
            index_lag,
            store_bytes,
            write_path_failed,
            store_torn,
            store_readable,
            methods,
            scrape: Mutex::new(()),
            store_was_readable: AtomicBool::new(true),
        })
    }

    /// Counts one answered `StreamRecords` batch; `elapsed` runs from its receipt to its answer.
    pub fn count_batch(&self, end: BatchEnd, elapsed: Duration) {
        let result = match end {
            BatchEnd::Acknowledged(tally) => {
                for (outcome, n) in tally.by_outcome() {
                    if n > 0 {
                        self.ingest_records.get_or_create(&OutcomeLabels { outcome }).inc_by(n);
                    }
                }
                self.ingest_batch_seconds.observe(elapsed.as_secs_f64());
                "acknowledged"
            }
            BatchEnd::Refused => "refused",
            BatchEnd::Failed => "failed",
        };
        self.ingest_batches.get_or_create(&ResultLabels { result }).inc();
    }

    /// The labels of a gRPC path: its service and method, or `other` for a path that is not a
    /// served method.
    fn method_labels(&self, path: &str) -> MethodLabels {
        self.methods.get(path).cloned().unwrap_or_else(|| MethodLabels {
            service: OTHER.into(),
            method: OTHER.into(),
        })
    }

    /// Notes whether this scrape could read the store; true when that changed since the last.
    pub fn note_store_readable(&self, readable: bool) -> bool {
        self.store_was_readable.swap(readable, Ordering::Relaxed) != readable
    }

    /// Every metric in the Prometheus text format (0.0.4), the gauges set from `stats` first;
    /// without `stats` (the store could not be read) the store's figures are left out, and the
    /// service's own counters and health still answer.
    pub fn encode(&self, stats: Option<&EngineStats>, health: EngineHealth) -> String {
        let _one_scrape = self.scrape.lock().expect("lock poisoned");
        self.write_path_failed.set(i64::from(health.write_path_failed));
        self.store_torn.set(i64::from(health.store_torn));
        self.store_readable.set(i64::from(stats.is_some()));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        prometheus_text::encode(&mut text, &self.process_registry).expect("writing to a String cannot fail");
        if let Some(stats) = stats {
            self.records.set(gauge_value(stats.store.n_records));
            self.persons.set(gauge_value(stats.store.n_persons));
            self.review_items.set(gauge_value(stats.store.n_review_items));
            self.index_lag.set(gauge_value(stats.index_lag()));
            self.store_bytes.set(gauge_value(stats.store.size_on_disk));
            // A source whose last record was deleted disappears rather than staying at its old
            // count.
            self.source_records.clear();
            for (source, n_records) in &stats.store.records_by_source {
                self.source_records
                    .get_or_create(&SourceLabels {
                        source: source.to_string(),
                    })
                    .set(gauge_value(*n_records));
            }
            prometheus_text::encode(&mut text, &self.store_registry).expect("writing to a String cannot fail");
        }
        text
    }
}

/// The gRPC name of a status code, as the grpc-status header carries it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreStats;

    fn metrics() -> Metrics {
        Metrics::new(&[crate::pb::FILE_DESCRIPTOR_SET]).expect("descriptors decode")
    }

    fn stats() -> EngineStats {
        EngineStats {
            store: StoreStats {
                n_records: 5,
                n_persons: 3,
                n_review_items: 1,
                applied_sequence: 4,
                change_sequence: 9,
                size_on_disk: 4096,
                records_by_source: vec![(crate::model::SourceId::parse("D07").expect("well-formed"), 5)],
            },
            index_watermark: 7,
            index_persons: 3,
            ingest: Default::default(),
            read_ahead: Default::default(),
        }
    }

    #[track_caller]
    fn check_line(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }

    #[test]
    fn methods_come_from_the_descriptors_and_other_paths_are_other() {
        let metrics = metrics();
        let labels = metrics.method_labels("/popmaster.v1.ProfileService/GetProfile");
        assert_eq!(
            (labels.service.as_str(), labels.method.as_str()),
            ("popmaster.v1.ProfileService", "GetProfile")
        );
        let labels = metrics.method_labels("/popmaster.v1.ProfileService/GetProfile330106");
        assert_eq!((labels.service.as_str(), labels.method.as_str()), (OTHER, OTHER));
    }

    #[test]
    fn gauges_are_read_at_scrape_and_batches_counted() {
        let metrics = metrics();
        let tally = IngestTally {
            created: 2,
            rejected: 1,
            ..IngestTally::default()
        };
        metrics.count_batch(BatchEnd::Acknowledged(tally), Duration::from_millis(3));
        metrics.count_batch(BatchEnd::Refused, Duration::ZERO);
        let text = metrics.encode(Some(&stats()), EngineHealth::default());
        check_line(&text, "popmaster_records 5");
        check_line(&text, "popmaster_persons 3");
        check_line(&text, "popmaster_review_items 1");
        check_line(&text, "popmaster_index_lag 2");
        check_line(&text, "popmaster_store_bytes 4096");
        check_line(&text, "popmaster_write_path_failed 0");
        check_line(&text, "popmaster_source_records{source=\"D07\"} 5");
        check_line(&text, "popmaster_ingest_records_total{outcome=\"created\"} 2");
        check_line(&text, "popmaster_ingest_records_total{outcome=\"rejected\"} 1");
        check_line(&text, "popmaster_ingest_batches_total{result=\"acknowledged\"} 1");
        check_line(&text, "popmaster_ingest_batches_total{result=\"refused\"} 1");
        check_line(&text, "popmaster_ingest_batch_duration_seconds_count 1");
        check_line(&text, "popmaster_ingest_batch_duration_seconds_bucket{le=\"0.0025\"} 0");
        check_line(&text, "popmaster_ingest_batch_duration_seconds_bucket{le=\"0.005\"} 1");
        assert!(
            !text.contains("outcome=\"merged\""),
            "no series for an outcome never seen"
        );

        let mut later = stats();
        later.store.records_by_source.clear();
        let health = EngineHealth {
            write_path_failed: true,
            store_torn: false,
        };
        let text = metrics.encode(Some(&later), health);
        assert!(!text.contains("source=\"D07\""), "{text}");
        check_line(&text, "popmaster_write_path_failed 1");
        check_line(&text, "popmaster_store_torn 0");
        check_line(&text, "popmaster_store_readable 1");
        assert_eq!(text.matches("# TYPE popmaster_records gauge").count(), 1, "{text}");
    }

    /// A store that cannot be read (torn, say) still gets an answer: the health and the
    /// service's own counters, the store's figures left out rather than stale.
    #[test]
    fn a_scrape_without_the_store_reports_health_and_leaves_the_store_figures_out() {
        let metrics = metrics();
        metrics.count_batch(BatchEnd::Failed, Duration::ZERO);
        let _ = metrics.encode(Some(&stats()), EngineHealth::default());
        let health = EngineHealth {
            write_path_failed: true,
            store_torn: true,
        };
        assert!(metrics.note_store_readable(false), "a change");
        assert!(!metrics.note_store_readable(false), "no change");
        let text = metrics.encode(None, health);
        check_line(&text, "popmaster_write_path_failed 1");
        check_line(&text, "popmaster_store_torn 1");
        check_line(&text, "popmaster_store_readable 0");
        check_line(&text, "popmaster_ingest_batches_total{result=\"failed\"} 1");
        for figure in [
            "popmaster_records",
            "popmaster_persons",
            "popmaster_review_items",
            "popmaster_index_lag",
            "popmaster_store_bytes",
            "popmaster_source_records",
        ] {
            assert!(
                !text.lines().any(|line| line.starts_with(figure)),
                "{figure} in\n{text}"
            );
        }
    }

    #[test]
    fn code_names_are_the_grpc_names() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::from_i32(3)), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::from_i32(99)), "UNKNOWN");
    }
}
