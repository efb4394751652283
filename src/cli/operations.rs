//! Operator commands: `export --profiles` (every profile as JSONL, from a running server).

use super::client::{connect, profile_json, status_error, CLIENT_MESSAGE_BYTES_MAX};
use super::ServerArgs;
use anyhow::Context;
use popmaster::pb;
use popmaster::pb::profile_service_client::ProfileServiceClient;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes every profile as JSONL, one a line, in the `get --json` form.
pub async fn export_profiles(server: &ServerArgs, tags: Vec<String>, out: &Path) -> anyhow::Result<()> {
    let channel = connect(server).await?;
    let mut chunks = ProfileServiceClient::new(channel)
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .export_profiles(pb::ExportProfilesRequest { tag_mask: tags })
        .await
        .map_err(status_error)?
        .into_inner();
    let sink: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?)
    };
    let mut writer = BufWriter::new(sink);
    let mut n_profiles = 0u64;
    let mut change_sequence = 0;
    while let Some(chunk) = chunks.message().await.map_err(status_error)? {
        change_sequence = change_sequence.max(chunk.change_sequence);
        for profile in &chunk.profiles {
            serde_json::to_writer(&mut writer, &profile_json(profile))?;
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
