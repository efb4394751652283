//! `febrl-to-jsonl` and `accuracy`: local commands (no server) that turn benchmark files into
//! records for `popmaster load`, and score the mapping `popmaster export` wrote against the
//! ground truth.

use anyhow::{bail, Context};
use popmaster::accuracy::{
    evaluate, read_febrl, records_without_usable_id_number, Evaluation, Mapping, PairCounts, PairTask, Truth,
};
use popmaster::catalog::Catalog;
use popmaster::model::SourceId;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct FebrlToJsonlArgs {
    /// FEBRL-format CSV with a header naming rec_id, given_name, surname, street_number,
    /// address_1, address_2, suburb, postcode, state, date_of_birth and soc_sec_id.
    file: PathBuf,
    /// The source department the records are loaded as, such as D15.
    #[arg(long)]
    source: String,
    /// JSONL output; `-` writes standard output.
    #[arg(long, default_value = "-")]
    out: PathBuf,
}

pub fn febrl_to_jsonl(args: FebrlToJsonlArgs) -> anyhow::Result<()> {
    let Some(source) = SourceId::parse(&args.source) else {
        bail!("--source must be a source code like D15");
    };
    let file = open(&args.file)?;
    let records = read_febrl(BufReader::new(file), source.as_str()).with_context(|| args.file.display().to_string())?;
    let sink: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?)
    };
    let mut out = BufWriter::new(sink);
    let mut n_records = 0u64;
    for record in records {
        let record = record.with_context(|| args.file.display().to_string())?;
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
        n_records += 1;
    }
    out.flush()?;
    eprintln!("converted {n_records} records as source {source}");
    Ok(())
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("ground_truth").required(true).args(["pairs", "truth"])))]
pub struct AccuracyArgs {
    /// The record -> person mapping `popmaster export` wrote (`source,record_id,person_id`).
    #[arg(long, value_name = "MAPPING.csv")]
    mapping: PathBuf,
    /// True pairs (`rec_id_1,rec_id_2`, as FEBRL ships them); records in no pair are persons of
    /// their own.
    #[arg(long, value_name = "PAIRS.csv", requires = "sources")]
    pairs: Option<PathBuf>,
    /// The source the paired records were loaded as (deduplication), or two sources, the one of
    /// `rec_id_1` first (linking: only pairs across the two count).
    #[arg(
        long,
        value_name = "SOURCE[,SOURCE]",
        value_delimiter = ',',
        conflicts_with = "truth"
    )]
    sources: Vec<String>,
    /// The true person of every record (`source,record_id,true_person`, as `popmaster generate
    /// --truth` writes it).
    #[arg(long, value_name = "TRUTH.csv")]
    truth: Option<PathBuf>,
    /// The records as loaded (JSONL): adds the figures on records without a usable resident ID
    /// number, judged by the shipped catalog's cleansing.
    #[arg(long, value_name = "RECORDS.jsonl")]
    records: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, conflicts_with = "tsv")]
    json: bool,
    /// Print tab-separated values with a header line, one line per breakdown (for scripts).
    #[arg(long)]
    tsv: bool,
}

fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("cannot open {}", path.display()))
}

fn pair_task(sources: &[String]) -> anyhow::Result<PairTask> {
    let codes = sources
        .iter()
        .map(|source| {
            SourceId::parse(source)
                .map(|id| id.as_str().to_string())
                .with_context(|| format!("--sources: `{source}` is not a source code like D15"))
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    match <[String; 2]>::try_from(codes) {
        Ok([left, right]) if left == right => bail!("--sources: linking needs two different sources"),
        Ok([left, right]) => Ok(PairTask::Link { left, right }),
        Err(codes) => match <[String; 1]>::try_from(codes) {
            Ok([source]) => Ok(PairTask::Dedupe { source }),
            Err(_) => bail!("--sources takes one source (deduplication) or two (linking)"),
        },
    }
}

pub fn accuracy(args: AccuracyArgs) -> anyhow::Result<()> {
    let mapping =
        Mapping::read_csv(BufReader::new(open(&args.mapping)?)).with_context(|| args.mapping.display().to_string())?;
    let (truth, scope) = match (&args.pairs, &args.truth) {
        (Some(pairs), _) => {
            let task = pair_task(&args.sources)?;
            let scope = match &task {
                PairTask::Dedupe { source } => format!("deduplication of {source}"),
                PairTask::Link { left, right } => format!("linking {left} with {right} (pairs across them)"),
            };
            let truth =
                Truth::read_pairs(BufReader::new(open(pairs)?), task).with_context(|| pairs.display().to_string())?;
            (truth, scope)
        }
        (None, Some(truth)) => {
            let persons =
                Truth::read_persons(BufReader::new(open(truth)?)).with_context(|| truth.display().to_string())?;
            (persons, "every pair of records".to_string())
        }
        (None, None) => bail!("give --pairs with --sources, or --truth"),
    };
    let subset = match &args.records {
        Some(path) => Some(
            records_without_usable_id_number(BufReader::new(open(path)?), &Catalog::shipped())
                .with_context(|| path.display().to_string())?,
        ),
        None => None,
    };
    let evaluation = evaluate(&mapping, &truth, subset.as_ref())?;
    if args.json {
        print_json(&evaluation, &scope)?;
    } else if args.tsv {
        print_tsv(&evaluation);
    } else {
        print_table(&evaluation, &scope);
    }
    Ok(())
}

/// The breakdowns of an evaluation, with the names the outputs give them.
fn breakdowns(evaluation: &Evaluation) -> Vec<(&'static str, &'static str, PairCounts)> {
    let mut rows = vec![("all", "all records", evaluation.overall)];
    if let Some(subset) = evaluation.subset {
        rows.push(("without_usable_id", "without a usable ID number", subset));
    }
    rows
}

fn measure(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| format!("{value:.4}"))
}

fn print_table(evaluation: &Evaluation, scope: &str) {
    println!("pairwise accuracy, {scope}");
    println!(
        "{:<28} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "", "records", "true pairs", "predicted", "TP", "FP", "FN", "precision", "recall", "F1"
    );
    for (_, label, counts) in breakdowns(evaluation) {
        println!(
            "{:<28} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
            label,
            counts.n_records,
            counts.n_true_pairs,
            counts.n_predicted_pairs,
            counts.n_true_positives,
            counts.false_positives(),
            counts.false_negatives(),
            measure(counts.precision()),
            measure(counts.recall()),
            measure(counts.f1()),
        );
    }
    if breakdowns(evaluation)
        .iter()
        .any(|(_, _, counts)| counts.precision().is_none() || counts.recall().is_none())
    {
        println!("- is undefined: precision without predicted pairs, recall without true pairs, F1 without either");
    }
    if evaluation.n_truth_records_unmapped > 0 {
        println!(
            "{} records of the truth are not in the mapping (rejected or not loaded); each counts as a person of its own",
            evaluation.n_truth_records_unmapped
        );
    }
}

fn print_tsv(evaluation: &Evaluation) {
    println!("breakdown\trecords\ttrue_pairs\tpredicted_pairs\ttp\tfp\tfn\tprecision\trecall\tf1");
    for (name, _, counts) in breakdowns(evaluation) {
        println!(
            "{name}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            counts.n_records,
            counts.n_true_pairs,
            counts.n_predicted_pairs,
            counts.n_true_positives,
            counts.false_positives(),
            counts.false_negatives(),
            measure(counts.precision()),
            measure(counts.recall()),
            measure(counts.f1()),
        );
    }
}

fn print_json(evaluation: &Evaluation, scope: &str) -> anyhow::Result<()> {
    let breakdown = |counts: PairCounts| {
        serde_json::json!({
            "records": counts.n_records,
            "true_pairs": counts.n_true_pairs,
            "predicted_pairs": counts.n_predicted_pairs,
            "true_positives": counts.n_true_positives,
            "false_positives": counts.false_positives(),
            "false_negatives": counts.false_negatives(),
            "precision": counts.precision(),
            "recall": counts.recall(),
            "f1": counts.f1(),
        })
    };
    let breakdowns: serde_json::Map<String, serde_json::Value> = breakdowns(evaluation)
        .into_iter()
        .map(|(name, _, counts)| (name.to_string(), breakdown(counts)))
        .collect();
    let json = serde_json::json!({
        "scope": scope,
        "breakdowns": breakdowns,
        "truth_records_unmapped": evaluation.n_truth_records_unmapped,
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
