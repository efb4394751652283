//! Operator commands that work on the service as a whole: `admin rebuild-index`.

use super::client::{connect, status_error};
use super::ServerArgs;
use indicatif::{ProgressBar, ProgressStyle};
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;
use popmaster::pb::rebuild_index_progress::Phase;
use std::io::IsTerminal;

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
