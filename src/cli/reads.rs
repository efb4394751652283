//! Client commands that read master profiles beyond `get`: person search by identity
//! attributes, and the change feed of persons.

use super::client::{connect, status_error};
use super::ServerArgs;
use popmaster::pb;
use popmaster::pb::profile_service_client::ProfileServiceClient;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("attributes").required(true).multiple(true)))]
pub struct SearchArgs {
    /// Name, in any script or form (traditional characters, full-width, spaces).
    #[arg(long, group = "attributes")]
    name: Option<String>,
    /// Resident ID number, in any form.
    #[arg(long, group = "attributes")]
    id_number: Option<String>,
    /// Birth date, in any common form (1990-01-02, 1990年1月2日, 19900102).
    #[arg(long, group = "attributes")]
    birth_date: Option<String>,
    /// Gender (男, 女, M, F, 1, 2...).
    #[arg(long, group = "attributes")]
    gender: Option<String>,
    /// Phone, in any form (+86, dashes, spaces, full-width).
    #[arg(long, group = "attributes")]
    phone: Option<String>,
    /// Current address.
    #[arg(long, group = "attributes")]
    address: Option<String>,
    /// How many persons to list, best first (at most the server's limit, 100 by default).
    #[arg(long, default_value_t = 10)]
    top: u32,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let channel = connect(&args.server).await?;
    let answer = ProfileServiceClient::new(channel)
        .search_persons(pb::SearchPersonsRequest {
            name: args.name.unwrap_or_default(),
            id_number: args.id_number.unwrap_or_default(),
            birth_date: args.birth_date.unwrap_or_default(),
            gender: args.gender.unwrap_or_default(),
            phone: args.phone.unwrap_or_default(),
            address: args.address.unwrap_or_default(),
            top_k: args.top,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        let persons: Vec<serde_json::Value> = answer
            .persons
            .iter()
            .map(|found| {
                serde_json::json!({
                    "person_id": found.person_id,
                    "probability": found.probability,
                    "explanation": found.explanation,
                })
            })
            .collect();
        let json = serde_json::json!({ "persons": persons, "n_candidates": answer.n_candidates });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if answer.persons.is_empty() {
        println!("no person found ({} candidates scored)", answer.n_candidates);
        return Ok(());
    }
    for (rank, found) in answer.persons.iter().enumerate() {
        println!(
            "{:>3}  {}  {:.4}  {}",
            rank + 1,
            found.person_id,
            found.probability,
            found.explanation
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct WatchArgs {
    /// The first change-feed sequence to print (0: the oldest change the feed keeps); to
    /// resume, the last one printed plus one.
    #[arg(long, default_value_t = 0)]
    from: u64,
    #[command(flatten)]
    server: ServerArgs,
}

fn kind_name(kind: i32) -> &'static str {
    match pb::ChangeKind::try_from(kind).unwrap_or(pb::ChangeKind::Unspecified) {
        pb::ChangeKind::Created => "created",
        pb::ChangeKind::Updated => "updated",
        pb::ChangeKind::Deleted => "deleted",
        pb::ChangeKind::Merged => "merged",
        pb::ChangeKind::Split => "split",
        pb::ChangeKind::Unspecified => "unspecified",
    }
}

/// Prints one line per change (`sequence person_id version kind`) until interrupted or until
/// the server ends the stream.
pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let channel = connect(&args.server).await?;
    let mut stream = ProfileServiceClient::new(channel)
        .watch_changes(pb::WatchChangesRequest {
            from_sequence: args.from,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    // Nothing printed yet: resuming is asking again from where this call asked (0: the oldest
    // change kept).
    let mut next_sequence = args.from;
    while let Some(batch) = stream.message().await.map_err(status_error)? {
        for change in batch.changes {
            // Where a merged person went, or which person a split one came from.
            let other = if !change.merged_into.is_empty() {
                format!(" into {}", change.merged_into)
            } else if !change.split_from.is_empty() {
                format!(" from {}", change.split_from)
            } else {
                String::new()
            };
            println!(
                "{} {} {} {}{other}",
                change.sequence,
                change.person_id,
                change.version,
                kind_name(change.kind)
            );
            next_sequence = change.sequence + 1;
        }
    }
    eprintln!("the server ended the stream; resume with --from {next_sequence}");
    Ok(())
}
