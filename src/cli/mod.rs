//! The command line: `popmaster serve` runs the service; `generate`, `rules`, `febrl-to-jsonl`,
//! `accuracy`, `restore` and `token` work locally; every other subcommand is a gRPC client of a running
//! server (`--server`, environment `POPMASTER_SERVER`).

mod accuracy;
mod audit;
mod client;
mod matching;
mod operations;
mod reads;
mod rebuild;
mod steward;

use anyhow::Context;
use clap::{Parser, Subcommand};
use popmaster::config::{Config, MetricsListen};
use std::path::PathBuf;
use std::process::ExitCode;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

#[derive(Parser)]
#[command(
    name = "popmaster",
    version,
    about = "Population master-data entity-resolution service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Address of a running popmaster server.
    #[arg(long, env = "POPMASTER_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,
    /// The bearer token of this caller (prefer the environment: a flag shows in `ps`).
    #[arg(long, env = "POPMASTER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Why profiles are read, e.g. a case number (sent as x-purpose, or x-purpose-bin when it is
    /// not ASCII; readers must state one).
    #[arg(long, env = "POPMASTER_PURPOSE", global = true)]
    pub purpose: Option<String>,
    /// The CA certificate (PEM) the server's TLS certificate must chain to (an https:// server).
    #[arg(long, env = "POPMASTER_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for a server that asks for mutual TLS.
    #[arg(long, env = "POPMASTER_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, env = "POPMASTER_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Stream a JSONL file of records (the interchange format) into the server.
    Load(client::LoadArgs),
    /// Print profiles: of one or several person ids, by resident ID number, or by record.
    Get(client::GetArgs),
    /// Find the persons most like some identity attributes, ranked by the match model.
    Search(reads::SearchArgs),
    /// Print the change feed of persons, one line per change, until interrupted.
    Watch(reads::WatchArgs),
    /// Write the record -> person mapping of every stored record as CSV, or every profile as
    /// JSONL.
    Export(client::ExportArgs),
    /// Restore a backup into a new data directory (offline: no server runs on it yet).
    Restore(operations::RestoreArgs),
    /// Print record, person and index counts.
    Stats(client::StatsArgs),
    /// Write a synthetic population in the interchange format (seeded, deterministic).
    Generate(client::GenerateArgs),
    /// Print the cleansing rule catalog.
    Rules(client::RulesArgs),
    /// Print how often each cleansing rule fired, for one source or for all.
    Quality(client::QualityArgs),
    /// Explain why a record is in its person: candidates, feature levels, weights, total.
    Explain(matching::ExplainArgs),
    /// Compare two persons with the current match model.
    ExplainPair(matching::ExplainPairArgs),
    /// Every change of a person: records added and removed, merges, splits, steward decisions.
    History(steward::HistoryArgs),
    /// Where one tag of a profile came from: the winner and why, every record carrying it.
    Lineage(steward::LineageArgs),
    /// The review queue: list possible matches, settle them as the same or different persons.
    #[command(subcommand)]
    Review(steward::ReviewCommand),
    /// Join two persons (a steward's decision, kept in both histories).
    Merge(steward::MergeArgs),
    /// Move records out of a person into a new one; the matcher will not join them again.
    Unmerge(steward::UnmergeArgs),
    /// Delete a record; its person splits if the record was the only link between its records.
    Delete(steward::DeleteArgs),
    /// The audit log (who read or changed what, when and why) and the monthly share counts.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Make a new bearer token and print it with its SHA-256 (what the callers file holds),
    /// or print the SHA-256 of a token read from standard input.
    Token(client::TokenArgs),
    /// Operator commands.
    #[command(subcommand)]
    Admin(matching::AdminCommand),
    /// Convert a FEBRL-format CSV into interchange records of one source (JSONL).
    FebrlToJsonl(accuracy::FebrlToJsonlArgs),
    /// Score an exported mapping against ground truth: pairwise precision, recall and F1.
    Accuracy(accuracy::AccuracyArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML settings file; flags and environment override it.
    #[arg(long, env = "POPMASTER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (sled store, write-ahead log, index).
    #[arg(long, env = "POPMASTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT.
    #[arg(long, env = "POPMASTER_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Directory with sources.csv and tags.csv replacing the shipped catalog.
    #[arg(long, env = "POPMASTER_CATALOG_DIR")]
    catalog_dir: Option<PathBuf>,
    /// Where the Prometheus endpoint (/metrics) listens, HOST:PORT, or `off`.
    #[arg(long, env = "POPMASTER_METRICS_LISTEN")]
    metrics_listen: Option<MetricsListen>,
    /// Log format: text lines, or one JSON object a line.
    #[arg(long, env = "POPMASTER_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // Rust ignores SIGPIPE, so printing to a closed pipe (`popmaster rules | head`) panics.
        // A client command piped into another should end quietly the way Unix tools do. The
        // server keeps the ignored signal: a client gone away is an error to handle, not a
        // reason to die.
        // SAFETY: called before any other thread exists; SIG_DFL is a valid action.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Load(args) => client::load(args).await,
            Command::Get(args) => client::get(args).await,
            Command::Search(args) => reads::search(args).await,
            Command::Watch(args) => reads::watch(args).await,
            Command::Export(args) => client::export(args).await,
            Command::Restore(args) => operations::restore(args),
            Command::Stats(args) => client::stats(args).await,
            Command::Generate(args) => client::generate(args),
            Command::Rules(args) => client::rules(args),
            Command::Quality(args) => client::quality(args).await,
            Command::Explain(args) => matching::explain(args).await,
            Command::ExplainPair(args) => matching::explain_pair(args).await,
            Command::History(args) => steward::history(args).await,
            Command::Lineage(args) => steward::lineage(args).await,
            Command::Review(command) => steward::review(command).await,
            Command::Merge(args) => steward::merge(args).await,
            Command::Unmerge(args) => steward::unmerge(args).await,
            Command::Delete(args) => steward::delete(args).await,
            Command::Admin(command) => matching::admin(command).await,
            Command::Token(args) => client::token(args),
            Command::Audit(command) => audit::audit(command).await,
            Command::FebrlToJsonl(args) => accuracy::febrl_to_jsonl(args),
            Command::Accuracy(args) => accuracy::accuracy(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter from `POPMASTER_LOG` (default `info`), with sled held at `info` whatever it
/// says: sled logs its keys and write batches at trace level (and may print a tree node at
/// debug), and the store's keys and values hold ID numbers, phones and names.
fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    let filter = spec
        .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    filter.add_directive("sled=info".parse().expect("a valid directive"))
}

fn init_logging(format: LogFormat) {
    let filter = log_filter(std::env::var("POPMASTER_LOG").ok().as_deref());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let mut config = match &args.config {
        Some(path) => Config::from_toml_file(path)?,
        None => Config::default(),
    };
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(catalog_dir) = args.catalog_dir {
        config.catalog_dir = Some(catalog_dir);
    }
    if let Some(metrics_listen) = args.metrics_listen {
        config.metrics.listen = metrics_listen;
    }
    config.validate()?;
    let catalog = match &config.catalog_dir {
        Some(dir) => popmaster::catalog::Catalog::load_dir(dir)?,
        None => popmaster::catalog::Catalog::shipped(),
    };
    tracing::info!(
        n_sources = catalog.sources().count(),
        n_tags = catalog.tags().len(),
        "catalog loaded"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let metrics_listener = match config.metrics.listen {
        MetricsListen::Off => None,
        MetricsListen::On(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr} (set --metrics-listen, or off)"))?,
        ),
    };
    popmaster::serve(
        config,
        catalog,
        listener,
        metrics_listener,
        popmaster::server::termination_signal(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[track_caller]
    fn check(spec: Option<&str>, expected: &str) {
        assert_eq!(log_filter(spec).to_string(), expected);
    }

    #[test]
    fn sled_never_logs_below_info() {
        check(None, "sled=info,info");
        check(Some("debug"), "sled=info,debug");
        check(Some("trace,sled=trace"), "sled=info,trace");
        check(Some("popmaster=debug,sled=debug"), "popmaster=debug,sled=info");
        check(Some("not a filter=="), "sled=info,info");
    }
}
