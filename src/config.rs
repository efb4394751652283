//! Settings: read once at start from an optional TOML file, then environment and flags
//! (applied by `cli`), validated into `Config`, and passed explicitly. No globals.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// A directory holding `sources.csv` and `tags.csv`; empty uses the shipped catalog.
    pub catalog_dir: Option<PathBuf>,
    pub limits: LimitsConfig,
    pub storage: StorageConfig,
    pub wal: WalConfig,
    pub index: IndexConfig,
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub backup: BackupConfig,
    pub export: ExportConfig,
    pub feed: FeedConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub audit: AuditConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("popmaster-data"),
            listen: "127.0.0.1:50051".parse().expect("valid literal address"),
            catalog_dir: None,
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            wal: WalConfig::default(),
            index: IndexConfig::default(),
            server: ServerConfig::default(),
            metrics: MetricsConfig::default(),
            backup: BackupConfig::default(),
            export: ExportConfig::default(),
            feed: FeedConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

/// TLS of the gRPC port (rustls): the server's certificate and key, and for mutual TLS the CA
/// that client certificates must chain to. All absent: plain text.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// The server's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM); when set, every client must present a certificate they signed.
    pub client_ca_file: Option<PathBuf>,
}

/// Who may call: the callers file and how it is reloaded, and the per-caller limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The callers file (TOML: each caller's id, token hashes and roles). Absent: the open
    /// mode, allowed on a loopback address only.
    pub callers_file: Option<PathBuf>,
    /// How often the callers file is checked for a change (it is also reread on SIGHUP).
    pub reload_interval_ms: u64,
    /// The longest `x-purpose` a reader may state.
    pub purpose_bytes_max: usize,
    /// A caller's average calls a second (token bucket), unless its entry says otherwise.
    pub calls_per_second: f64,
    /// Calls a caller's bucket holds for a burst, unless its entry says otherwise.
    pub calls_burst: u32,
    /// Calls of one caller open at once (streams until they end), unless its entry says
    /// otherwise.
    pub concurrent_calls_max: u32,
    /// Refusals audited one by one, a second on average (token bucket), of calls without a valid
    /// token (anyone who reaches the port can make them), and of each caller's calls over its
    /// limits. Beyond it they are counted, and the next entry written says how many were left out.
    pub refusal_audit_per_second: f64,
    /// Such refusals audited one by one in a burst.
    pub refusal_audit_burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            callers_file: None,
            reload_interval_ms: 2_000,
            purpose_bytes_max: 256,
            calls_per_second: 1_000.0,
            calls_burst: 2_000,
            concurrent_calls_max: 64,
            refusal_audit_per_second: 10.0,
            refusal_audit_burst: 100,
        }
    }
}

/// How long the audit log keeps its entries. The monthly share counters are kept whatever
/// the retention.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Entries older than this many days are deleted, with their index keys. 0: kept forever.
    pub retention_days: u32,
    /// How often entries past the retention are looked for (also once at start).
    pub prune_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 3 * 365,
            prune_interval_ms: 3_600_000,
        }
    }
}

impl AuditConfig {
    pub fn prune_interval(&self) -> Duration {
        Duration::from_millis(self.prune_interval_ms)
    }
}

/// What one record, batch and message may hold. Every bound here is enforced at the edge.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub batch_records_max: usize,
    pub tags_per_record_max: usize,
    pub value_bytes_max: usize,
    pub record_id_bytes_max: usize,
    pub message_bytes_max: usize,
    /// Person ids one `BatchGetProfiles` call may ask for.
    pub batch_get_persons_max: usize,
    /// The most persons one `SearchPersons` call may return (its `top_k`).
    pub search_results_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            batch_records_max: 10_000,
            tags_per_record_max: 256,
            value_bytes_max: 2_048,
            record_id_bytes_max: 128,
            message_bytes_max: 16 * 1024 * 1024,
            batch_get_persons_max: 1_000,
            search_results_max: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub cache_capacity_bytes: u64,
    /// Below this many free bytes on the data directory's file system, every write (ingest,
    /// steward actions, models, re-resolution) is refused until space is freed: sled 0.34.7
    /// can leave a store it cannot open again when a write meets a full disk. 0: no check.
    pub min_free_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_capacity_bytes: 512 * 1024 * 1024,
            min_free_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes_max: u64,
    /// Batches waiting for the writer; senders wait when it is full (backpressure).
    pub queue_batches_max: usize,
    /// Records one group commit (one fdatasync) may cover.
    pub group_records_max: usize,
    /// Checkpoint (store fsync, WAL trim) after this many milliseconds with new writes.
    pub checkpoint_interval_ms: u64,
    /// The most the store reads done ahead of the writer (by a second thread, for the batches
    /// after the one being applied) may hold; 0 turns reading ahead off.
    pub read_ahead_bytes_max: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes_max: 64 * 1024 * 1024,
            queue_batches_max: 64,
            group_records_max: 20_000,
            checkpoint_interval_ms: 30_000,
            read_ahead_bytes_max: 64 * 1024 * 1024,
        }
    }
}

impl WalConfig {
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    pub writer_memory_bytes: usize,
    /// How often the index catches up with the change feed: at once when the store has
    /// changed and the last round is an interval old, else when it is; so under a steady load
    /// one round an interval (one commit, one new segment, for each `changes_per_round_max`
    /// changes).
    pub refresh_interval_ms: u64,
    pub changes_per_round_max: usize,
    /// How many persons the matcher asks the index for when the exact keys find no possible
    /// match for a record (fuzzy candidates: name n-grams and pinyin, address words). 0, the
    /// default, matches with the exact keys only: a search costs about a millisecond, which
    /// cuts ingest to a third (see the README).
    pub fuzzy_candidates: usize,
    /// Indexing threads of a rebuild (at start, or `RebuildIndex`), 1 to 8.
    pub rebuild_threads: usize,
    /// Memory a rebuild's indexing threads share; each needs at least 15 MB.
    pub rebuild_memory_bytes: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            writer_memory_bytes: 64 * 1024 * 1024,
            refresh_interval_ms: 1_000,
            changes_per_round_max: 50_000,
            fuzzy_candidates: 0,
            rebuild_threads: 2,
            rebuild_memory_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// On SIGINT/SIGTERM, how long in-flight calls may take before the server stops anyway.
    pub shutdown_grace_ms: u64,
    pub concurrent_streams_max: usize,
    /// A stream that sends nothing for this long is closed.
    pub stream_idle_timeout_ms: u64,
    /// How long an ingest or profile call may take to answer (a stream: to open), unless the
    /// caller's `grpc-timeout` is shorter; 0: no bound of the server's.
    pub call_deadline_ms: u64,
    /// The same for admin calls (training a model on a large store takes long); 0: none.
    pub admin_call_deadline_ms: u64,
    /// Concurrent `WatchChanges` streams.
    pub watch_streams_max: usize,
    /// Changes per message of a `WatchChanges` stream (one read of the change feed).
    pub watch_batch_changes_max: usize,
    /// Messages a `WatchChanges` stream holds for a slow client; when they are full the stream
    /// stops reading the feed until the client catches up (the writer never waits).
    pub watch_buffer_batches: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_grace_ms: 10_000,
            concurrent_streams_max: 256,
            stream_idle_timeout_ms: 300_000,
            call_deadline_ms: 30_000,
            admin_call_deadline_ms: 0,
            watch_streams_max: 256,
            watch_batch_changes_max: 1_000,
            watch_buffer_batches: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where the Prometheus endpoint (`/metrics`, plain HTTP) listens, or `off`.
    pub listen: MetricsListen,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            // Loopback, like the gRPC default: exposing it is a deliberate choice. 9464 is the
            // port Prometheus exporters of OpenTelemetry use.
            listen: MetricsListen::On("127.0.0.1:9464".parse().expect("valid literal address")),
        }
    }
}

/// Backups of the running service (`AdminService.Backup`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Keys one read of the store's snapshot takes; commits wait for at most one such read.
    pub page_keys: usize,
    /// Bytes of values the snapshot may keep for keys written during the backup; beyond it,
    /// commits wait for the backup to pass those keys (ingest slows to the backup's pace).
    pub preimage_bytes_max: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            page_keys: 1_024,
            preimage_bytes_max: 256 * 1024 * 1024,
        }
    }
}

/// Where the metrics endpoint listens: `HOST:PORT` (port 0 takes a free port, logged at start),
/// or `off` for no endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    Off,
    On(SocketAddr),
}

impl std::str::FromStr for MetricsListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(MetricsListen::Off);
        }
        text.trim()
            .parse()
            .map(MetricsListen::On)
            .map_err(|_| format!("{text:?} is neither HOST:PORT nor \"off\""))
    }
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Off => f.write_str("off"),
            MetricsListen::On(addr) => addr.fmt(f),
        }
    }
}

/// Exports of profiles (`ProfileService.ExportProfiles`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Persons one read of an export takes (one message, or more for large profiles).
    pub page_persons: usize,
    /// Messages an export stream holds for a slow client before it stops reading the store.
    pub buffer_chunks: usize,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            page_persons: 256,
            buffer_chunks: 4,
        }
    }
}

/// The change feed (`o/` keys: `WatchChanges`, and what the index follows).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// The newest changes kept; older ones are deleted once the index has applied them. 0:
    /// every change is kept. A watcher asking for a deleted change is refused (`OUT_OF_RANGE`)
    /// and reads the profiles again with `ExportProfiles`.
    pub changes_kept: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            // About 100 bytes a change: some 10 GB of feed, weeks of changes at the province's
            // scale.
            changes_kept: 100_000_000,
        }
    }
}

impl<'de> Deserialize<'de> for MetricsListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting {setting}: {message}")]
    Invalid { setting: &'static str, message: String },
}

impl Config {
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    /// Checks what serde cannot: bounds that must be positive and fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.batch_records_max", self.limits.batch_records_max),
            ("limits.tags_per_record_max", self.limits.tags_per_record_max),
            ("limits.value_bytes_max", self.limits.value_bytes_max),
            ("limits.record_id_bytes_max", self.limits.record_id_bytes_max),
            ("wal.queue_batches_max", self.wal.queue_batches_max),
            ("wal.group_records_max", self.wal.group_records_max),
            ("server.concurrent_streams_max", self.server.concurrent_streams_max),
            ("limits.batch_get_persons_max", self.limits.batch_get_persons_max),
            ("limits.search_results_max", self.limits.search_results_max),
            ("server.watch_streams_max", self.server.watch_streams_max),
            ("server.watch_batch_changes_max", self.server.watch_batch_changes_max),
            ("server.watch_buffer_batches", self.server.watch_buffer_batches),
            ("backup.page_keys", self.backup.page_keys),
            ("export.page_persons", self.export.page_persons),
            ("export.buffer_chunks", self.export.buffer_chunks),
            ("auth.purpose_bytes_max", self.auth.purpose_bytes_max),
            ("auth.calls_burst", self.auth.calls_burst as usize),
            ("auth.concurrent_calls_max", self.auth.concurrent_calls_max as usize),
            ("auth.refusal_audit_burst", self.auth.refusal_audit_burst as usize),
            ("auth.reload_interval_ms", self.auth.reload_interval_ms as usize),
            ("audit.prune_interval_ms", self.audit.prune_interval_ms as usize),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    message: "must be at least 1".into(),
                });
            }
        }
        // A record's values are stored one key each; keep each far below sled's blob path.
        if self.limits.value_bytes_max > 16 * 1024 {
            return Err(ConfigError::Invalid {
                setting: "limits.value_bytes_max",
                message: "must be at most 16384 (larger values would reach sled's unsynced blob files)".into(),
            });
        }
        if self.index.fuzzy_candidates > 100 {
            return Err(ConfigError::Invalid {
                setting: "index.fuzzy_candidates",
                message:
                    "must be at most 100 (each candidate is read and scored for every record the keys cannot place)"
                        .into(),
            });
        }
        if !(1..=8).contains(&self.index.rebuild_threads) {
            return Err(ConfigError::Invalid {
                setting: "index.rebuild_threads",
                message: "must be between 1 and 8".into(),
            });
        }
        if self.index.rebuild_memory_bytes / self.index.rebuild_threads < 15_000_000 {
            return Err(ConfigError::Invalid {
                setting: "index.rebuild_memory_bytes",
                message: "must give each rebuild thread at least 15 MB".into(),
            });
        }
        if self.limits.search_results_max > 1_000 {
            return Err(ConfigError::Invalid {
                setting: "limits.search_results_max",
                message: "must be at most 1000 (each result is a candidate read and scored)".into(),
            });
        }
        if self.server.watch_batch_changes_max > 100_000 {
            return Err(ConfigError::Invalid {
                setting: "server.watch_batch_changes_max",
                message: "must be at most 100000 (a message of more changes could pass limits.message_bytes_max)"
                    .into(),
            });
        }
        if self.backup.page_keys > 100_000 {
            return Err(ConfigError::Invalid {
                setting: "backup.page_keys",
                message: "must be at most 100000 (commits wait for one page read)".into(),
            });
        }
        if self.export.page_persons > 10_000 {
            return Err(ConfigError::Invalid {
                setting: "export.page_persons",
                message: "must be at most 10000 (a page of persons is read at once)".into(),
            });
        }
        for (setting, rate) in [
            ("auth.calls_per_second", self.auth.calls_per_second),
            ("auth.refusal_audit_per_second", self.auth.refusal_audit_per_second),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::Invalid {
                    setting,
                    message: "must be a positive number".into(),
                });
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid {
                setting: "tls.cert_file",
                message: "tls.cert_file and tls.key_file go together".into(),
            });
        }
        if self.tls.client_ca_file.is_some() && self.tls.cert_file.is_none() {
            return Err(ConfigError::Invalid {
                setting: "tls.client_ca_file",
                message: "mutual TLS needs the server's own tls.cert_file and tls.key_file".into(),
            });
        }
        if self.audit.retention_days > 36_500 {
            return Err(ConfigError::Invalid {
                setting: "audit.retention_days",
                message: "must be at most 36500 (a hundred years); 0 keeps entries forever".into(),
            });
        }
        if self.limits.batch_records_max > 1 << 20 {
            return Err(ConfigError::Invalid {
                setting: "limits.batch_records_max",
                message: "must be at most 1048576".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_equals_defaults() {
        assert_eq!(Config::from_toml("").expect("parses"), Config::default());
        Config::default().validate().expect("defaults are valid");
    }

    #[test]
    fn partial_file_overrides_only_what_it_names() {
        let config = Config::from_toml("listen = \"0.0.0.0:6000\"\n[limits]\nbatch_records_max = 5\n").expect("parses");
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.limits.batch_records_max, 5);
        assert_eq!(config.limits.value_bytes_max, LimitsConfig::default().value_bytes_max);
    }

    #[test]
    fn unknown_and_invalid_settings_are_named() {
        let error = Config::from_toml("[limits]\nbatch_size = 5\n").expect_err("unknown field");
        assert!(error.contains("batch_size"), "{error}");
        let mut config = Config::default();
        config.limits.batch_records_max = 0;
        let error = config.validate().expect_err("zero");
        assert!(error.to_string().contains("limits.batch_records_max"), "{error}");
        let mut config = Config::default();
        config.index.fuzzy_candidates = 101;
        let error = config.validate().expect_err("too many");
        assert!(error.to_string().contains("index.fuzzy_candidates"), "{error}");
        let mut config = Config::default();
        config.limits.search_results_max = 1_001;
        let error = config.validate().expect_err("too many");
        assert!(error.to_string().contains("limits.search_results_max"), "{error}");
        let mut config = Config::default();
        config.server.watch_batch_changes_max = 100_001;
        let error = config.validate().expect_err("too many");
        assert!(error.to_string().contains("server.watch_batch_changes_max"), "{error}");
        let mut config = Config::default();
        config.server.watch_buffer_batches = 0;
        let error = config.validate().expect_err("zero");
        assert!(error.to_string().contains("server.watch_buffer_batches"), "{error}");
        let mut config = Config::default();
        config.backup.page_keys = 0;
        let error = config.validate().expect_err("zero");
        assert!(error.to_string().contains("backup.page_keys"), "{error}");
        let mut config = Config::default();
        config.export.page_persons = 10_001;
        let error = config.validate().expect_err("too many");
        assert!(error.to_string().contains("export.page_persons"), "{error}");
        let mut config = Config::default();
        config.tls.cert_file = Some(PathBuf::from("server.pem"));
        let error = config.validate().expect_err("no key");
        assert!(
            error.to_string().contains("tls.cert_file and tls.key_file go together"),
            "{error}"
        );
        let mut config = Config::default();
        config.tls.client_ca_file = Some(PathBuf::from("ca.pem"));
        let error = config.validate().expect_err("no server certificate");
        assert!(error.to_string().contains("tls.client_ca_file"), "{error}");
        let mut config = Config::default();
        config.auth.calls_per_second = 0.0;
        let error = config.validate().expect_err("no calls");
        assert!(error.to_string().contains("auth.calls_per_second"), "{error}");
        let parsed = Config::from_toml("[index]\nfuzzy_candidates = 5\n").expect("parses");
        assert_eq!(parsed.index.fuzzy_candidates, 5);
    }

    #[test]
    fn the_readme_settings_are_known_and_the_defaults() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Configuration").expect("a configuration section")..];
        let start = section.find("```toml\n").expect("a TOML block") + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").expect("the block ends")];
        let parsed = Config::from_toml(block).expect("the README's settings parse");
        assert_eq!(parsed, Config::default(), "the README's settings are the defaults");
    }

    #[test]
    fn audit_retention_is_three_years_unless_said() {
        assert_eq!(Config::default().audit.retention_days, 1_095);
        assert_eq!(Config::default().audit.prune_interval(), Duration::from_secs(3_600));
        let parsed = Config::from_toml("[audit]\nretention_days = 0\n").expect("parses");
        assert_eq!(parsed.audit.retention_days, 0);
        parsed.validate().expect("0 keeps everything");
        let mut config = Config::default();
        config.audit.prune_interval_ms = 0;
        let error = config.validate().expect_err("zero");
        assert!(error.to_string().contains("audit.prune_interval_ms"), "{error}");
        let mut config = Config::default();
        config.audit.retention_days = 36_501;
        let error = config.validate().expect_err("too long");
        assert!(error.to_string().contains("audit.retention_days"), "{error}");
        let error = Config::from_toml("[audit]\nretention = 5\n").expect_err("unknown field");
        assert!(error.contains("retention"), "{error}");
    }

    #[test]
    fn metrics_listen_is_an_address_or_off() {
        let parsed = Config::from_toml("[metrics]\nlisten = \"0.0.0.0:9100\"\n").expect("parses");
        assert_eq!(
            parsed.metrics.listen,
            MetricsListen::On("0.0.0.0:9100".parse().expect("address"))
        );
        let parsed = Config::from_toml("[metrics]\nlisten = \"off\"\n").expect("parses");
        assert_eq!(parsed.metrics.listen, MetricsListen::Off);
        let error = Config::from_toml("[metrics]\nlisten = \"9100\"\n").expect_err("no host");
        assert!(error.contains("neither HOST:PORT nor \"off\""), "{error}");
        assert_eq!("OFF".parse::<MetricsListen>(), Ok(MetricsListen::Off));
        assert_eq!(MetricsConfig::default().listen.to_string(), "127.0.0.1:9464");
    }
}
