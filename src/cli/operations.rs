//! Operator commands: `admin backup` (a gRPC client: the server writes the backup on its own
//! machine), `restore` (offline, no server: loads a backup into a new data directory), and
//! `export --profiles` (every profile as JSONL, from a running server).

use super::client::{connect, profile_json, status_error, CLIENT_MESSAGE_BYTES_MAX};
use super::ServerArgs;
use anyhow::{bail, Context};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use popmaster::engine::RestoreStage;
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct BackupArgs {
    /// A directory on the server's machine (absolute path): new, or empty, and outside the
    /// server's data directory.
    dir: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    if !args.dir.is_absolute() {
        bail!(
            "{} is not an absolute path; DIR names a directory on the server's machine",
            args.dir.display()
        );
    }
    let channel = connect(&args.server).await?;
    let mut stream = AdminServiceClient::new(channel)
        .backup(pb::BackupRequest {
            dir: args.dir.display().to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    // The server knows the records and persons in the backup, not its size: a spinner with
    // the counts and the rate.
    let progress = ProgressBar::new_spinner();
    progress.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("static template"));
    progress.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut manifest = None;
    while let Some(message) = stream.message().await.map_err(status_error)? {
        progress.set_message(format!(
            "backing up {} records, {} persons: {} keys, {} written, {}/s",
            message.n_records,
            message.n_persons,
            message.n_keys_done,
            HumanBytes(message.n_bytes_done),
            HumanBytes(message.bytes_per_second)
        ));
        if message.done.is_some() {
            manifest = message.done;
        }
    }
    progress.finish_and_clear();
    let Some(manifest) = manifest else {
        bail!("the server ended the backup without saying it was written; see the server log");
    };
    println!("backup written to {}", manifest.dir);
    println!(
        "  holds every batch up to sequence {} (change sequence {}), created {}",
        manifest.applied_sequence, manifest.change_sequence, manifest.created_at
    );
    println!(
        "  {} records, {} persons; {} keys, {} in {:.1} s",
        manifest.n_records,
        manifest.n_persons,
        manifest.n_keys,
        HumanBytes(manifest.dump_bytes),
        manifest.elapsed_ms as f64 / 1_000.0
    );
    println!(
        "  ingest meanwhile: {} batches committed, the longest waited {:.1} ms for the backup",
        manifest.n_commits_during,
        manifest.commit_wait_max_micros as f64 / 1_000.0
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// A backup directory written by `admin backup`.
    dir: PathBuf,
    /// The new data directory to restore into: absent or empty. Start the server on it.
    #[arg(long)]
    data_dir: PathBuf,
}

/// Restores offline, with no server running: checks the whole backup, then writes the store.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let backup_dir = absolute(&args.dir)?;
    let data_dir = absolute(&args.data_dir)?;
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template(
            "{prefix:>9} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let mut stage = None;
    let manifest = popmaster::engine::restore(
        &backup_dir,
        &data_dir,
        popmaster::config::StorageConfig::default().cache_capacity_bytes,
        &mut |now, bytes_read, bytes_total| {
            if stage != Some(now) {
                stage = Some(now);
                progress.reset();
                progress.set_length(bytes_total);
                progress.set_prefix(match now {
                    RestoreStage::Verifying => "verifying",
                    RestoreStage::Writing => "writing",
                });
            }
            progress.set_position(bytes_read);
        },
    )
    .with_context(|| format!("cannot restore {}", backup_dir.display()))?;
    progress.finish_and_clear();
    println!(
        "restored {} records, {} persons ({} keys) into {}",
        manifest.n_records,
        manifest.n_persons,
        manifest.n_keys,
        data_dir.display()
    );
    println!(
        "  the store holds every batch up to sequence {}; the next batch will be {}",
        manifest.applied_sequence,
        manifest.applied_sequence + 1
    );
    println!("  the search index is rebuilt from the change feed when the server starts on it");
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Writes every profile as JSONL, one a line, in the `get --json` form. The profiles come
/// compact (each record named once: about half the bytes for whole profiles, and two strings a
/// value to decode instead of five) and are expanded here.
pub async fn export_profiles(server: &ServerArgs, tags: Vec<String>, out: &Path) -> anyhow::Result<()> {
    let channel = connect(server).await?;
    let mut chunks = ProfileServiceClient::new(channel)
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .export_profiles(pb::ExportProfilesRequest {
            tag_mask: tags,
            compact: true,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let sink: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        // Every resident's values: only the owner may read the file.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Box::new(
            options
                .open(out)
                .with_context(|| format!("cannot create {}", out.display()))?,
        )
    };
    let mut writer = BufWriter::new(sink);
    let mut n_profiles = 0u64;
    let mut change_sequence = 0;
    while let Some(chunk) = chunks.message().await.map_err(status_error)? {
        change_sequence = change_sequence.max(chunk.change_sequence);
        for profile in chunk.profiles {
            let profile = popmaster::api::convert::expand_compact_profile(profile);
            serde_json::to_writer(&mut writer, &profile_json(&profile))?;
            writer.write_all(b"\n")?;
            n_profiles += 1;
        }
    }
    writer.flush()?;
    eprintln!(
        "exported {n_profiles} profiles; changes after the start of the export: popmaster watch --from {}",
        change_sequence + 1
    );
    Ok(())
}
