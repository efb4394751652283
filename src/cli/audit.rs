//! `popmaster audit`: the audit log of a running server (who read or changed what, when and
//! why), and the monthly share counts per caller.

use super::client::{connect, status_error};
use super::ServerArgs;
use anyhow::bail;
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Audit entries, oldest first: time, caller, purpose, method, outcome, persons, tags.
    Query(QueryArgs),
    /// Profiles shared per caller and month (China Standard Time).
    Shares(SharesArgs),
}

#[derive(clap::Args)]
pub struct QueryArgs {
    /// Only this caller's calls.
    #[arg(long)]
    caller: Option<String>,
    /// Only calls that read or changed this person.
    #[arg(long)]
    person: Option<String>,
    /// From this RFC 3339 time (inclusive).
    #[arg(long)]
    from: Option<String>,
    /// Until this RFC 3339 time (exclusive).
    #[arg(long)]
    to: Option<String>,
    /// At most this many entries in all.
    #[arg(long, default_value_t = 1_000)]
    limit: usize,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct SharesArgs {
    /// YYYY-MM; every month if absent.
    #[arg(long)]
    month: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Query(args) => query(args).await,
        AuditCommand::Shares(args) => shares(args).await,
    }
}

fn entry_json(entry: &pb::AuditEntry) -> serde_json::Value {
    serde_json::json!({
        "at": entry.at,
        "caller": entry.caller,
        "purpose": entry.purpose,
        "action": entry.action,
        "outcome": entry.outcome,
        "person_ids": entry.person_ids,
        "tags": entry.tags,
        "shares": entry.shares,
        "detail": entry.detail,
    })
}

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let mut client = AdminServiceClient::new(connect(&args.server).await?);
    let mut page_token = String::new();
    let mut n_printed = 0usize;
    loop {
        let page = client
            .query_audit(pb::QueryAuditRequest {
                caller: args.caller.clone().unwrap_or_default(),
                person_id: args.person.clone().unwrap_or_default(),
                from: args.from.clone().unwrap_or_default(),
                to: args.to.clone().unwrap_or_default(),
                page_size: u32::try_from((args.limit - n_printed).min(1_000)).expect("at most 1000"),
                page_token: page_token.clone(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        for entry in &page.entries {
            if args.json {
                println!("{}", entry_json(entry));
            } else {
                let tags = if entry.tags.len() > 8 {
                    format!("{} tags", entry.tags.len())
                } else {
                    entry.tags.join(",")
                };
                println!(
                    "{}  {}  {}  {}  purpose={:?}  persons={}  tags={}  shares={}{}",
                    entry.at,
                    entry.caller,
                    entry.action,
                    entry.outcome,
                    entry.purpose,
                    entry.person_ids.join(","),
                    tags,
                    entry.shares,
                    if entry.detail.is_empty() {
                        String::new()
                    } else {
                        format!("  {}", entry.detail)
                    }
                );
            }
        }
        n_printed += page.entries.len();
        if page.next_page_token.is_empty() || n_printed >= args.limit {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn shares(args: SharesArgs) -> anyhow::Result<()> {
    let counts = AdminServiceClient::new(connect(&args.server).await?)
        .get_share_counts(pb::GetShareCountsRequest {
            month: args.month.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{:<8} {:<32} {:>12} {:>12}", "month", "caller", "shares", "calls");
    for count in &counts.counts {
        println!(
            "{:<8} {:<32} {:>12} {:>12}",
            count.month, count.caller, count.n_shares, count.n_calls
        );
    }
    Ok(())
}
