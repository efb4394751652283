//! Client subcommands: each talks gRPC to a running server, except `generate`, which writes a
//! synthetic population locally.

use super::ServerArgs;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use popmaster::catalog::Catalog;
use popmaster::interchange::{parse_line, InterchangeRecord};
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;
use popmaster::pb::ingest_service_client::IngestServiceClient;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use popmaster::synth::{Generator, SynthConfig};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, Binary, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

/// Batches a load keeps in flight on its stream.
const LOAD_BATCHES_IN_FLIGHT: usize = 8;
/// The largest message the client accepts (a full profile is far smaller).
pub(super) const CLIENT_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A connection that sends this caller's token and purpose with every call.
pub(super) type Connection = InterceptedService<Channel, Credentials>;

/// The `authorization` and `x-purpose` (or, for a purpose that is not ASCII, `x-purpose-bin`)
/// headers of every call.
#[derive(Clone)]
pub(super) struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
    purpose: Option<Purpose>,
}

#[derive(Clone)]
enum Purpose {
    Ascii(MetadataValue<Ascii>),
    Binary(MetadataValue<Binary>),
}

impl Purpose {
    fn new(text: &str) -> anyhow::Result<Purpose> {
        if text.chars().any(char::is_control) {
            bail!("the purpose (--purpose, POPMASTER_PURPOSE) must not hold control characters");
        }
        Ok(match MetadataValue::try_from(text) {
            Ok(ascii) if text.is_ascii() => Purpose::Ascii(ascii),
            _ => Purpose::Binary(MetadataValue::from_bytes(text.as_bytes())),
        })
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(authorization) = &self.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        match &self.purpose {
            Some(Purpose::Ascii(purpose)) => {
                request.metadata_mut().insert("x-purpose", purpose.clone());
            }
            Some(Purpose::Binary(purpose)) => {
                request.metadata_mut().insert_bin("x-purpose-bin", purpose.clone());
            }
            None => {}
        }
        Ok(request)
    }
}

pub(super) async fn connect(server: &ServerArgs) -> anyhow::Result<Connection> {
    let authorization = server
        .token
        .as_deref()
        .map(|token| {
            MetadataValue::try_from(format!("Bearer {}", token.trim()))
                .map_err(|_| anyhow::anyhow!("the token (--token, POPMASTER_TOKEN) must be printable ASCII"))
        })
        .transpose()?;
    let purpose = server
        .purpose
        .as_deref()
        .map(|purpose| Purpose::new(purpose.trim()))
        .transpose()?;
    let mut endpoint = tonic::transport::Endpoint::from_shared(server.server.clone())
        .with_context(|| format!("{} is not a server address like http://127.0.0.1:50051", server.server))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if let Some(tls) = client_tls(server)? {
        endpoint = endpoint
            .tls_config(tls)
            .context("cannot set up TLS for the connection")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach a popmaster server at {}", server.server))?;
    Ok(InterceptedService::new(channel, Credentials { authorization, purpose }))
}

/// The TLS settings of `--tls-ca`, `--tls-cert` and `--tls-key`; `None` without a CA.
fn client_tls(server: &ServerArgs) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    let read = |path: &std::path::Path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    let Some(ca) = &server.tls_ca else {
        if server.tls_cert.is_some() {
            bail!("--tls-cert needs --tls-ca, the CA the server's certificate chains to");
        }
        return Ok(None);
    };
    let mut tls =
        tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// Read a token from standard input and print its SHA-256 only.
    #[arg(long)]
    hash: bool,
}

/// A new token (32 random bytes from the operating system, hex) and its hash, or the hash of a
/// given token.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    use rand::RngCore;
    if args.hash {
        let mut token = String::new();
        std::io::stdin()
            .read_line(&mut token)
            .context("cannot read the token from standard input")?;
        let token = token.trim();
        if token.is_empty() {
            bail!("no token on standard input");
        }
        println!("{}", popmaster::callers::to_hex(&popmaster::callers::hash_token(token)));
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = popmaster::callers::to_hex(&bytes);
    println!("token:         {token}");
    println!(
        "tokens_sha256: {}",
        popmaster::callers::to_hex(&popmaster::callers::hash_token(&token))
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// JSONL file, one record a line; `-` reads standard input.
    file: PathBuf,
    /// Records per batch.
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// Print every rejected record with its line number (otherwise the first 20).
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// What a load saw, for the summary.
#[derive(Default)]
struct LoadSummary {
    n_lines_malformed: u64,
    by_decision: BTreeMap<&'static str, u64>,
    rejected_by_reason: BTreeMap<String, u64>,
}

fn decision_name(decision: i32) -> &'static str {
    match pb::Decision::try_from(decision).unwrap_or(pb::Decision::Unspecified) {
        pb::Decision::Created => "created",
        pb::Decision::Matched => "matched",
        pb::Decision::Merged => "merged",
        pb::Decision::Review => "review",
        pb::Decision::Rejected => "rejected",
        pb::Decision::Unchanged => "unchanged",
        pb::Decision::Unspecified => "unspecified",
    }
}

pub async fn load(args: LoadArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let channel = connect(&args.server).await?;
    let mut client = IngestServiceClient::new(channel).max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
    let (reader, total_bytes): (Box<dyn BufRead + Send>, Option<u64>) = if args.file.as_os_str() == "-" {
        (Box::new(BufReader::new(std::io::stdin())), None)
    } else {
        let file = std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
        let len = file.metadata().ok().map(|meta| meta.len());
        (Box::new(BufReader::new(file)), len)
    };
    let progress = match total_bytes {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::no_length(),
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );

    let (sender, receiver) = tokio::sync::mpsc::channel::<pb::RecordBatch>(LOAD_BATCHES_IN_FLIGHT);
    let mut responses = client
        .stream_records(ReceiverStream::new(receiver))
        .await
        .context("the server refused the ingest stream")?
        .into_inner();

    // Read and send on a blocking thread; it reports malformed lines and each batch's lines.
    let batch_size = args.batch_size;
    let reader_progress = progress.clone();
    let (lines_sender, mut lines_receiver) = tokio::sync::mpsc::unbounded_channel::<(u64, Vec<u64>)>();
    let reader_task = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut n_malformed = 0u64;
        let mut batch = Vec::with_capacity(batch_size);
        let mut batch_lines = Vec::with_capacity(batch_size);
        let mut batch_id = 0u64;
        let flush = |batch: &mut Vec<pb::Record>, batch_lines: &mut Vec<u64>, batch_id: &mut u64| -> bool {
            *batch_id += 1;
            let _ = lines_sender.send((*batch_id, std::mem::take(batch_lines)));
            sender
                .blocking_send(pb::RecordBatch {
                    batch_id: *batch_id,
                    records: std::mem::take(batch),
                })
                .is_ok()
        };
        for (line_idx, line) in reader.lines().enumerate() {
            let line_number = line_idx as u64 + 1;
            let line = line.with_context(|| format!("cannot read line {line_number}"))?;
            reader_progress.inc(line.len() as u64 + 1);
            match parse_line(&line, line_number) {
                Ok(Some(record)) => {
                    batch.push(to_pb(record));
                    batch_lines.push(line_number);
                }
                Ok(None) => {}
                Err(error) => {
                    n_malformed += 1;
                    reader_progress.suspend(|| eprintln!("skipped {error}"));
                }
            }
            if batch.len() == batch_size && !flush(&mut batch, &mut batch_lines, &mut batch_id) {
                return Ok(n_malformed);
            }
        }
        if !batch.is_empty() {
            flush(&mut batch, &mut batch_lines, &mut batch_id);
        }
        Ok(n_malformed)
    });

    let mut summary = LoadSummary::default();
    let mut lines_of_batch: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut n_rejections_printed = 0;
    while let Some(answer) = responses.message().await.context("the ingest stream failed")? {
        while let Ok((batch_id, lines)) = lines_receiver.try_recv() {
            lines_of_batch.insert(batch_id, lines);
        }
        let lines = lines_of_batch.remove(&answer.batch_id).unwrap_or_default();
        for outcome in answer.outcomes {
            let name = decision_name(outcome.decision);
            *summary.by_decision.entry(name).or_default() += 1;
            if outcome.decision == pb::Decision::Rejected as i32 {
                *summary
                    .rejected_by_reason
                    .entry(outcome.reason_code.clone())
                    .or_default() += 1;
                if args.verbose || n_rejections_printed < 20 {
                    n_rejections_printed += 1;
                    let line = lines.get(outcome.record_index as usize).copied().unwrap_or(0);
                    progress.suspend(|| eprintln!("rejected line {line}: {}", outcome.reason));
                }
            }
        }
        progress.set_message(format!(
            "{} records answered",
            summary.by_decision.values().sum::<u64>()
        ));
    }
    summary.n_lines_malformed = reader_task.await.expect("reader task panicked")?;
    progress.finish_and_clear();
    print_summary(&summary);
    Ok(())
}

fn print_summary(summary: &LoadSummary) {
    let n_answered: u64 = summary.by_decision.values().sum();
    println!("records answered: {n_answered}");
    for (decision, count) in &summary.by_decision {
        println!("  {decision:<10} {count}");
    }
    for (reason, count) in &summary.rejected_by_reason {
        println!("  rejected because {reason}: {count}");
    }
    println!("malformed lines skipped: {}", summary.n_lines_malformed);
}

fn to_pb(record: InterchangeRecord) -> pb::Record {
    let source = record.source.clone();
    let record_id = record.record_id.clone();
    let observed_at = record.observed_at.clone().unwrap_or_default();
    pb::Record {
        source,
        record_id,
        observed_at,
        tags: record.present_tags().into_iter().collect(),
    }
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// One person id, or several (one call for all of them).
    #[arg(required_unless_present_any = ["id_number", "record"], conflicts_with_all = ["id_number", "record"])]
    person_ids: Vec<String>,
    /// Look the person up by resident ID number (any form: 15 or 18 digits, full-width, x).
    #[arg(long, conflicts_with = "record")]
    id_number: Option<String>,
    /// Look up the person a record belongs to.
    #[arg(long, num_args = 2, value_names = ["SOURCE", "RECORD_ID"])]
    record: Option<Vec<String>>,
    /// Only these tags (comma-separated codes).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Print the profile as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let channel = connect(&args.server).await?;
    let mut profiles = ProfileServiceClient::new(channel.clone()).max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
    let (found, not_found) = match (args.person_ids.as_slice(), &args.id_number, &args.record) {
        ([person_id], _, _) => {
            let profile = profiles
                .get_profile(pb::GetProfileRequest {
                    person_id: person_id.clone(),
                    tag_mask: args.tags.clone(),
                    compact: false,
                })
                .await
                .map_err(status_error)?;
            (vec![profile.into_inner()], Vec::new())
        }
        ([], Some(id_number), _) => {
            let profile = profiles
                .get_profile_by_id_number(pb::GetProfileByIdNumberRequest {
                    id_number: id_number.clone(),
                    tag_mask: args.tags.clone(),
                    compact: false,
                })
                .await
                .map_err(status_error)?;
            (vec![profile.into_inner()], Vec::new())
        }
        ([], None, Some(record)) => {
            let [source, record_id] = record.as_slice() else {
                bail!("--record takes a source and a record id");
            };
            let profile = profiles
                .get_person_by_record(pb::GetPersonByRecordRequest {
                    source: source.clone(),
                    record_id: record_id.clone(),
                    tag_mask: args.tags.clone(),
                    compact: false,
                })
                .await
                .map_err(status_error)?;
            (vec![profile.into_inner()], Vec::new())
        }
        ([], None, None) => bail!("give a person id, --id-number or --record"),
        (person_ids, _, _) => {
            let answer = profiles
                .batch_get_profiles(pb::BatchGetProfilesRequest {
                    person_ids: person_ids.to_vec(),
                    tag_mask: args.tags.clone(),
                    compact: false,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            (answer.profiles, answer.not_found)
        }
    };
    if args.json {
        let json = if args.person_ids.len() > 1 {
            let profiles: Vec<serde_json::Value> = found.iter().map(profile_json).collect();
            serde_json::json!({ "profiles": profiles, "not_found": not_found })
        } else {
            profile_json(&found[0])
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let catalog = AdminServiceClient::new(channel)
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .get_catalog(pb::GetCatalogRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let labels: HashMap<&str, &str> = catalog
        .tags
        .iter()
        .map(|tag| (tag.code.as_str(), tag.label.as_str()))
        .collect();
    for (profile_idx, profile) in found.iter().enumerate() {
        if profile_idx > 0 {
            println!();
        }
        print_profile(profile, &labels);
    }
    for person_id in &not_found {
        println!("person {person_id} not found");
    }
    Ok(())
}

pub(super) fn profile_json(profile: &pb::Profile) -> serde_json::Value {
    let tags: BTreeMap<&str, serde_json::Value> = profile
        .tags
        .iter()
        .map(|tag| {
            let value = serde_json::json!({
                "value": tag.value, "source": tag.source,
                "record_id": tag.record_id, "observed_at": tag.observed_at,
            });
            (tag.tag.as_str(), value)
        })
        .collect();
    let records: Vec<String> = profile
        .records
        .iter()
        .map(|r| format!("{}/{}", r.source, r.record_id))
        .collect();
    serde_json::json!({
        "person_id": profile.person_id, "version": profile.version,
        "n_records": profile.n_records, "records": records, "tags": tags,
        "redirected_from": profile.redirected_from,
    })
}

fn print_profile(profile: &pb::Profile, labels: &HashMap<&str, &str>) {
    if !profile.redirected_from.is_empty() {
        println!(
            "person {} was merged into {}",
            profile.redirected_from, profile.person_id
        );
    }
    println!(
        "person {}  (version {}, {} records)",
        profile.person_id, profile.version, profile.n_records
    );
    for tag in &profile.tags {
        let label = labels.get(tag.tag.as_str()).copied().unwrap_or("");
        println!(
            "  {:<32} {:<12} {:<40} {}/{} {}",
            tag.tag, label, tag.value, tag.source, tag.record_id, tag.observed_at
        );
    }
}

pub(super) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("server answered {:?}: {}", status.code(), status.message())
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Output file: CSV (`source,record_id,person_id`), or JSONL with `--profiles`; `-` writes
    /// standard output.
    #[arg(long)]
    out: PathBuf,
    /// Write every profile (one JSON object a line, as `get --json` prints it) instead of the
    /// record -> person mapping.
    #[arg(long)]
    profiles: bool,
    /// With --profiles: only these tags (comma-separated codes).
    #[arg(long, value_delimiter = ',', requires = "profiles")]
    tags: Vec<String>,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    if args.profiles {
        return super::operations::export_profiles(&args.server, args.tags, &args.out).await;
    }
    let channel = connect(&args.server).await?;
    let mut chunks = ProfileServiceClient::new(channel)
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .export_mapping(pb::ExportMappingRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let sink: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?)
    };
    let mut writer = csv::Writer::from_writer(BufWriter::new(sink));
    writer.write_record(["source", "record_id", "person_id"])?;
    let mut n_rows = 0u64;
    while let Some(chunk) = chunks.message().await.map_err(status_error)? {
        for row in chunk.rows {
            writer.write_record([&row.source, &row.record_id, &row.person_id])?;
            n_rows += 1;
        }
    }
    writer.flush()?;
    eprintln!("exported {n_rows} records");
    Ok(())
}

#[derive(clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let channel = connect(&args.server).await?;
    let stats = AdminServiceClient::new(channel)
        .get_stats(pb::GetStatsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    println!("records            {}", stats.n_records);
    println!("persons            {}", stats.n_persons);
    println!("applied sequence   {}", stats.applied_sequence);
    println!("change sequence    {}", stats.change_sequence);
    println!("index watermark    {}", stats.index_watermark);
    println!("index lag          {}", stats.index_lag);
    println!("index persons      {}", stats.index_persons);
    println!("store bytes        {}", stats.store_bytes);
    println!("review items       {}", stats.n_review_items);
    for source in &stats.sources {
        println!("records of {:<7} {}", source.source, source.n_records);
    }
    if let Some(cost) = stats.ingest_cost.filter(|cost| cost.n_records > 0) {
        let per_record = |micros: u64| micros as f64 / cost.n_records as f64;
        println!(
            "ingest cost        {} records since start; per record: log {:.1} µs, cleanse {:.1} µs, candidates {:.1} µs, scoring {:.1} µs, store {:.1} µs",
            cost.n_records,
            per_record(cost.log_micros),
            per_record(cost.cleanse_micros),
            per_record(cost.candidates_micros),
            per_record(cost.scoring_micros),
            per_record(cost.store_micros)
        );
        let reads = cost.reads_read_ahead + cost.reads_by_writer;
        if reads > 0 {
            println!(
                "writer reads       {reads}: {} read ahead ({:.0}%), {} by the writer",
                cost.reads_read_ahead,
                100.0 * cost.reads_read_ahead as f64 / reads as f64,
                cost.reads_by_writer
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Number of persons.
    #[arg(long, default_value_t = 1_000)]
    persons: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Mean records per person.
    #[arg(long, default_value_t = 3.0)]
    records_per_person: f64,
    /// JSONL output; `-` writes standard output.
    #[arg(long)]
    out: PathBuf,
    /// Also write the ground truth as CSV (`source,record_id,true_person`).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Also write this many residents known to every department, whose profiles hold every
    /// tag of the catalog (record ids `full-N`, true person `full-N`), for read benchmarks.
    #[arg(long, default_value_t = 0)]
    full_profiles: u32,
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let config = SynthConfig {
        seed: args.seed,
        n_persons: args.persons,
        records_per_person_mean: args.records_per_person,
        ..SynthConfig::default()
    };
    let catalog = Catalog::shipped();
    let sink: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?)
    };
    let mut out = BufWriter::new(sink);
    let mut truth = match &args.truth {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut writer = csv::Writer::from_writer(BufWriter::new(file));
            writer.write_record(["source", "record_id", "true_person"])?;
            Some(writer)
        }
        None => None,
    };
    let mut n_records = 0u64;
    for synth in Generator::new(config, &catalog) {
        if let Some(truth) = &mut truth {
            truth.write_record([
                &synth.record.source,
                &synth.record.record_id,
                &synth.true_person.to_string(),
            ])?;
        }
        serde_json::to_writer(&mut out, &synth.record)?;
        out.write_all(b"\n")?;
        n_records += 1;
    }
    for person_idx in 0..args.full_profiles {
        for record in popmaster::synth::full_profile_records(&catalog, person_idx, 0) {
            if let Some(truth) = &mut truth {
                truth.write_record([&record.source, &record.record_id, &record.record_id])?;
            }
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
            n_records += 1;
        }
    }
    out.flush()?;
    if let Some(mut truth) = truth {
        truth.flush()?;
    }
    eprintln!("generated {n_records} records about {} persons", args.persons);
    Ok(())
}

#[derive(clap::Args)]
pub struct RulesArgs {
    /// Print a Markdown table (the one in docs/RULES.md).
    #[arg(long)]
    markdown: bool,
}

pub fn rules(args: RulesArgs) -> anyhow::Result<()> {
    use popmaster::cleanse::rules::{markdown_table, RULES};
    if args.markdown {
        print!("{}", markdown_table());
        return Ok(());
    }
    for rule in RULES {
        println!(
            "{}  {:<12} {:<6}  {:<28} {}",
            rule.id,
            format!("{:?}", rule.class),
            format!("{:?}", rule.action),
            rule.applies_to,
            rule.description
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct QualityArgs {
    /// A source code such as D07; all sources together when left out.
    source: Option<String>,
    /// Also list the rules that never fired.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn quality(args: QualityArgs) -> anyhow::Result<()> {
    let channel = connect(&args.server).await?;
    let report = AdminServiceClient::new(channel)
        .get_quality_report(pb::GetQualityReportRequest {
            source: args.source.clone().unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let scope = if report.source.is_empty() {
        "all sources".to_string()
    } else {
        format!("source {}", report.source)
    };
    println!(
        "quality of {scope}: {} records stored, {} refused",
        report.n_records, report.n_rejected
    );
    println!(
        "{:<8} {:<12} {:<6} {:>10} {:>8}  description",
        "rule", "class", "action", "count", "share"
    );
    for rule in report.rules.iter().filter(|rule| args.all || rule.count > 0) {
        let base = (report.n_records + report.n_rejected).max(1);
        println!(
            "{:<8} {:<12} {:<6} {:>10} {:>7.2}%  {}",
            rule.rule_id,
            rule.rule_class,
            rule.action,
            rule.count,
            100.0 * rule.count as f64 / base as f64,
            rule.description
        );
    }
    Ok(())
}
