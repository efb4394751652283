//! Client commands for the matcher: why a record is where it is, how two persons compare, and
//! the model (show it, retrain it).

use super::client::{connect, status_error};
use super::ServerArgs;
use anyhow::Context;
use popmaster::pb;
use popmaster::pb::admin_service_client::AdminServiceClient;
use popmaster::pb::profile_service_client::ProfileServiceClient;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// Source code of the record, e.g. D07.
    source: String,
    /// The record's id in its source.
    record_id: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let channel = connect(&args.server).await?;
    let explanation = ProfileServiceClient::new(channel)
        .explain_record(pb::ExplainRecordRequest {
            source: args.source,
            record_id: args.record_id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "record {}/{} -> person {}",
        explanation.source, explanation.record_id, explanation.person_id
    );
    println!("{}", explanation.text);
    if !explanation.review_candidates.is_empty() {
        println!("waiting for review with:");
        for candidate in &explanation.review_candidates {
            println!("  {} (probability {:.4})", candidate.person_id, candidate.probability);
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ExplainPairArgs {
    person_a: String,
    person_b: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn explain_pair(args: ExplainPairArgs) -> anyhow::Result<()> {
    let channel = connect(&args.server).await?;
    let explanation = ProfileServiceClient::new(channel)
        .explain_pair(pb::ExplainPairRequest {
            person_a: args.person_a,
            person_b: args.person_b,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{}", explanation.text);
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Print the match model: m, u and weight of every feature level.
    Model(ModelArgs),
    /// Re-estimate the match model from the stored data and install it (no restart).
    Train(ModelArgs),
    /// Install a model saved with `admin model --save` or `admin train --save` (no restart).
    InstallModel(InstallModelArgs),
    /// Rebuild the candidate search index from the store while the service keeps serving.
    RebuildIndex(super::rebuild::RebuildIndexArgs),
    /// Re-resolve every person with the current model (after a new model, thresholds or
    /// rules): split what no longer matches, merge what now does; steward decisions stand.
    Reevaluate(super::rebuild::ReevaluateArgs),
    /// Write a consistent backup of the running service into DIR on the server's machine.
    Backup(super::operations::BackupArgs),
}

#[derive(clap::Args)]
pub struct ModelArgs {
    /// Also write the model as JSON to this file.
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct InstallModelArgs {
    /// A model JSON file.
    file: std::path::PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::RebuildIndex(args) => super::rebuild::rebuild_index(args).await?,
        AdminCommand::Reevaluate(args) => super::rebuild::reevaluate(args).await?,
        AdminCommand::Backup(args) => super::operations::backup(args).await?,
        AdminCommand::Model(args) => {
            let channel = connect(&args.server).await?;
            let model = AdminServiceClient::new(channel)
                .get_model(pb::GetModelRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            print_model(&model);
            save(&model, args.save.as_deref())?;
        }
        AdminCommand::InstallModel(args) => {
            let model_json =
                std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
            let channel = connect(&args.server).await?;
            let model = AdminServiceClient::new(channel)
                .install_model(pb::InstallModelRequest { model_json })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("installed as version {}", model.version);
        }
        AdminCommand::Train(args) => {
            let channel = connect(&args.server).await?;
            let model = AdminServiceClient::new(channel)
                .train_model(pb::TrainModelRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "trained on {} random pairs and {} candidate pairs; installed as version {}",
                model.n_random_pairs, model.n_candidate_pairs, model.version
            );
            print_model(&model);
            save(&model, args.save.as_deref())?;
        }
    }
    Ok(())
}

fn save(model: &pb::ModelInfo, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, &model.model_json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn print_model(model: &pb::ModelInfo) {
    println!(
        "model version {}: match at probability {}, review at {}",
        model.version, model.match_probability, model.review_probability
    );
    println!(
        "{:<18} {:<40} {:>10} {:>12} {:>8}",
        "feature", "level", "m", "u", "weight"
    );
    for level in &model.levels {
        println!(
            "{:<18} {:<40} {:>10.4} {:>12.3e} {:>+8.2}",
            level.feature, level.level, level.m, level.u, level.weight
        );
    }
}
