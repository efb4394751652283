//! Operator commands that rebuild derived state on a live service: `admin rebuild-index`,
//! `admin reevaluate`.

use super::client::{connect, status_error};
use super::ServerArgs;
use indicatif::{ProgressBar, ProgressStyle};
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;
use popmaster::pb::rebuild_index_progress::Phase;
use std::io::{IsTerminal, Write};

#[derive(clap::Args)]
pub struct RebuildIndexArgs {
    #[command(flatten)]
    server: ServerArgs,
}

/// Rebuilds the server's candidate index, showing the scan as a progress bar (or, when stderr
/// is not a terminal, one line per phase).
pub async fn rebuild_index(args: RebuildIndexArgs) -> anyhow::Result<()> {
    let channel = connect(&args.server).await?;
    let mut stream = AdminServiceClient::new(channel)
        .rebuild_index(pb::RebuildIndexRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let bar = persons_bar();
    let mut last_phase = Phase::Unspecified;
    while let Some(progress) = stream.message().await.map_err(status_error)? {
        let phase = progress.phase();
        bar.set_length(progress.persons_total.max(progress.persons_done));
        bar.set_position(progress.persons_done);
        bar.set_message(match phase {
            Phase::Scanning => format!(
                "{:.0}/s, about {:.0} s left",
                progress.persons_per_second, progress.eta_seconds
            ),
            Phase::CatchingUp => "catching up with changes made meanwhile".to_string(),
            Phase::Done | Phase::Unspecified => String::new(),
        });
        if phase != last_phase && bar.is_hidden() {
            eprintln!(
                "{}: {} of {} persons, {:.1} s",
                phase_name(phase),
                progress.persons_done,
                progress.persons_total,
                progress.elapsed_seconds
            );
        }
        last_phase = phase;
        if phase == Phase::Done {
            bar.finish_and_clear();
            println!(
                "rebuilt the index: {} persons in {:.1} s ({:.0} persons/s), caught up to change {}",
                progress.persons_done,
                progress.elapsed_seconds,
                progress.persons_done as f64 / progress.elapsed_seconds.max(1e-9),
                progress.index_watermark
            );
            return Ok(());
        }
    }
    bar.abandon();
    anyhow::bail!("the server ended the rebuild stream before the rebuild finished; see the server log")
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Scanning => "scanning",
        Phase::CatchingUp => "catching up",
        Phase::Done => "done",
        Phase::Unspecified => "starting",
    }
}

#[derive(clap::Args)]
pub struct ReevaluateArgs {
    /// Also write every change, one line each ("split PERSON" for a new person split off,
    /// "merged PERSON" for the person that kept its id), to this file.
    #[arg(long)]
    changes: Option<std::path::PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Re-resolves every person on the server with its current model, showing progress, and
/// prints how many persons were split and merged.
pub async fn reevaluate(args: ReevaluateArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use pb::reevaluate_change::Kind;
    let mut changes = match &args.changes {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => None,
    };
    let channel = connect(&args.server).await?;
    let mut stream = AdminServiceClient::new(channel)
        .reevaluate(pb::ReevaluateRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let bar = persons_bar();
    while let Some(progress) = stream.message().await.map_err(status_error)? {
        bar.set_length(progress.persons_total.max(progress.persons_done));
        bar.set_position(progress.persons_done);
        bar.set_message(format!("{} split, {} merged", progress.n_splits, progress.n_merges));
        if let Some(out) = changes.as_mut() {
            for change in &progress.changes {
                let kind = match change.kind() {
                    Kind::Split => "split",
                    Kind::Merged => "merged",
                    Kind::Unspecified => continue,
                };
                writeln!(out, "{kind} {}", change.person_id)?;
            }
        }
        if progress.done {
            bar.finish_and_clear();
            if let Some(mut out) = changes.take() {
                out.flush()?;
            }
            println!(
                "re-resolved {} persons in {:.1} s: {} split off, {} merged",
                progress.persons_done, progress.elapsed_seconds, progress.n_splits, progress.n_merges
            );
            return Ok(());
        }
    }
    bar.abandon();
    anyhow::bail!("the server ended the re-resolution stream before it finished; see the server log")
}

/// A bar counting persons on a terminal; hidden otherwise.
fn persons_bar() -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} persons {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}
