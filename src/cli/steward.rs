//! Client commands for stewards: a person's history, a tag's lineage, the review queue, merge,
//! unmerge and record deletion.

use super::client::{connect, status_error};
use super::ServerArgs;
use anyhow::{bail, Context};
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;
use popmaster::pb::ingest_service_client::IngestServiceClient;
use popmaster::pb::profile_service_client::ProfileServiceClient;

/// `D07/2024-000123`: a source code, a slash, the record id (which may hold more slashes).
fn record_ref(text: &str) -> anyhow::Result<pb::RecordRef> {
    match text.split_once('/') {
        Some((source, record_id)) if !source.is_empty() && !record_id.is_empty() => Ok(pb::RecordRef {
            source: source.to_string(),
            record_id: record_id.to_string(),
            observed_at: String::new(),
        }),
        _ => bail!("{text:?} is not a record reference; write SOURCE/RECORD_ID, such as D07/2024-000123"),
    }
}

fn show_record(record: Option<&pb::RecordRef>) -> String {
    record.map_or_else(String::new, |record| format!("{}/{}", record.source, record.record_id))
}

fn print_result(result: &pb::StewardResult) {
    if result.person_id.is_empty() {
        println!(
            "nothing to do: the persons changed meanwhile (sequence {})",
            result.sequence
        );
        return;
    }
    println!("person {} (sequence {})", result.person_id, result.sequence);
    for person in &result.new_person_ids {
        println!("new person {person}");
    }
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    person_id: String,
    /// Start at this version.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Versions per request.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    #[command(flatten)]
    server: ServerArgs,
}

fn event_line(event: &pb::PersonEvent) -> String {
    use pb::person_event::Kind;
    let kind = Kind::try_from(event.kind).unwrap_or(Kind::Unspecified);
    let mut line = match kind {
        Kind::RecordAdded => format!(
            "record {} added ({})",
            show_record(event.record.as_ref()),
            pb::Decision::try_from(event.decision)
                .map(|decision| decision.as_str_name().trim_start_matches("DECISION_").to_lowercase())
                .unwrap_or_default()
        ),
        Kind::RecordReplaced => format!("record {} re-sent", show_record(event.record.as_ref())),
        Kind::RecordRemoved => format!("record {} left", show_record(event.record.as_ref())),
        Kind::Absorbed => format!("person {} merged into this one", event.person_id),
        Kind::MergedInto => format!("merged into person {}", event.person_id),
        Kind::SplitOff => format!(
            "{} record(s) split off into person {}",
            event.records.len(),
            event.person_id
        ),
        Kind::SplitFrom => format!("split off person {}", event.person_id),
        Kind::HeldApart => format!("held apart from person {}", event.person_id),
        Kind::Unspecified => "unknown event".to_string(),
    };
    line.push_str(&format!(" [{}]", event.cause));
    if !event.note.is_empty() {
        line.push_str(&format!(": {}", event.note));
    }
    line
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let mut client = ProfileServiceClient::new(connect(&args.server).await?);
    let mut from_version = args.from;
    loop {
        let page = client
            .get_profile_history(pb::GetProfileHistoryRequest {
                person_id: args.person_id.clone(),
                from_version,
                page_size: args.page_size,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        for entry in &page.entries {
            println!(
                "v{} {} {} (change {})",
                entry.version, entry.at, entry.kind, entry.change_sequence
            );
            for event in &entry.events {
                println!("  {}", event_line(event));
            }
            if entry.n_changed_tags > 0 {
                let more = entry.n_changed_tags as usize - entry.changed_tags.len();
                let suffix = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                println!("  tags changed: {}{suffix}", entry.changed_tags.join(", "));
            }
        }
        if page.next_version == 0 {
            return Ok(());
        }
        from_version = page.next_version;
    }
}

#[derive(clap::Args)]
pub struct LineageArgs {
    person_id: String,
    /// A tag code, such as phone or d07.vehicle_plate.
    tag: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn lineage(args: LineageArgs) -> anyhow::Result<()> {
    let lineage = ProfileServiceClient::new(connect(&args.server).await?)
        .get_tag_lineage(pb::GetTagLineageRequest {
            person_id: args.person_id,
            tag: args.tag,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match &lineage.winner {
        Some(winner) => println!(
            "{} of person {}: {} (from {}/{}, observed {})",
            lineage.tag, lineage.person_id, winner.value, winner.source, winner.record_id, winner.observed_at
        ),
        None => println!("{} of person {}: no value", lineage.tag, lineage.person_id),
    }
    println!("rule: {}; {}", lineage.rule, lineage.reason);
    if !lineage.values.is_empty() {
        println!("distinct values (most recently seen first):");
        for value in &lineage.values {
            println!(
                "  {}  first {}  last {}  {} record(s) from {}",
                value.value,
                value.first_seen,
                value.last_seen,
                value.n_records,
                value.sources.join(", ")
            );
        }
    }
    println!("records (newest first):");
    for contribution in &lineage.contributions {
        println!(
            "  {}{} {}  raw {:?} -> {:?}",
            if contribution.winner { "* " } else { "  " },
            show_record(contribution.record.as_ref()),
            contribution.observed_at,
            contribution.raw,
            contribution.standardized
        );
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum ReviewCommand {
    /// List open review items, the most likely matches first.
    List(ReviewListArgs),
    /// Settle a candidate of a review item as the same person: the two persons merge.
    Same(ReviewResolveArgs),
    /// Settle a candidate of a review item as a different person: never joined automatically.
    Different(ReviewResolveArgs),
}

#[derive(clap::Args)]
pub struct ReviewListArgs {
    /// Items to show.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Continue after a previous listing (the token it printed).
    #[arg(long, default_value = "")]
    page_token: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct ReviewResolveArgs {
    /// The record of the review item, as SOURCE/RECORD_ID.
    record: String,
    /// The candidate person being settled.
    candidate: String,
    /// Why, for the history.
    #[arg(long, default_value = "")]
    note: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn review(command: ReviewCommand) -> anyhow::Result<()> {
    let (args, same) = match command {
        ReviewCommand::List(args) => return review_list(args).await,
        ReviewCommand::Same(args) => (args, true),
        ReviewCommand::Different(args) => (args, false),
    };
    let result = AdminServiceClient::new(connect(&args.server).await?)
        .resolve_review_item(pb::ResolveReviewItemRequest {
            record: Some(record_ref(&args.record)?),
            candidate_person_id: args.candidate,
            same,
            note: args.note,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_result(&result);
    Ok(())
}

async fn review_list(args: ReviewListArgs) -> anyhow::Result<()> {
    let page = AdminServiceClient::new(connect(&args.server).await?)
        .list_review_items(pb::ListReviewItemsRequest {
            page_size: args.limit,
            page_token: args.page_token,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{} item(s) waiting", page.n_open);
    for item in &page.items {
        println!(
            "{}  in person {}  best {:.4}",
            show_record(item.record.as_ref()),
            item.person_id,
            item.best_probability
        );
        for candidate in &item.candidates {
            println!(
                "  may be {} (probability {:.4})",
                candidate.person_id, candidate.probability
            );
            for comparison in &candidate.comparisons {
                println!(
                    "    {}: {} ({:+.1})",
                    comparison.feature, comparison.level, comparison.weight
                );
            }
        }
    }
    if !page.next_page_token.is_empty() {
        println!("more: --page-token {}", page.next_page_token);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct MergeArgs {
    person_a: String,
    person_b: String,
    /// Why, for the history.
    #[arg(long, default_value = "")]
    note: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let result = AdminServiceClient::new(connect(&args.server).await?)
        .merge(pb::MergeRequest {
            person_a: args.person_a,
            person_b: args.person_b,
            note: args.note,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_result(&result);
    Ok(())
}

#[derive(clap::Args)]
pub struct UnmergeArgs {
    person_id: String,
    /// The records to move into a new person, as SOURCE/RECORD_ID.
    #[arg(required = true)]
    records: Vec<String>,
    /// Why, for the history.
    #[arg(long, default_value = "")]
    note: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn unmerge(args: UnmergeArgs) -> anyhow::Result<()> {
    let records = args
        .records
        .iter()
        .map(|text| record_ref(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let result = AdminServiceClient::new(connect(&args.server).await?)
        .unmerge(pb::UnmergeRequest {
            person_id: args.person_id,
            records,
            note: args.note,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_result(&result);
    Ok(())
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The record to delete, as SOURCE/RECORD_ID.
    record: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let record = record_ref(&args.record).context("the record to delete")?;
    let result = IngestServiceClient::new(connect(&args.server).await?)
        .delete_record(pb::DeleteRecordRequest {
            source: record.source,
            record_id: record.record_id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_result(&result);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_references() {
        let record = record_ref("D07/2024/000123").expect("parses");
        assert_eq!(
            (record.source.as_str(), record.record_id.as_str()),
            ("D07", "2024/000123")
        );
        assert!(record_ref("D07").is_err());
        assert!(record_ref("/x").is_err());
        assert!(record_ref("D07/").is_err());
    }
}
