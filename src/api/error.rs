//! The one place engine errors become gRPC statuses. Logs the internal cause once and gives
//! the client a stable code and a message without personal values.

use crate::backup::BackupError;
use crate::engine::EngineError;
use tonic::{Code, Status};

pub fn to_status(error: EngineError) -> Status {
    match error {
        EngineError::InvalidArgument(message) => Status::invalid_argument(message),
        EngineError::NotFound(message) => Status::not_found(message),
        EngineError::OutOfRange(message) => Status::out_of_range(message),
        EngineError::FailedPrecondition(message) => Status::failed_precondition(message),
        EngineError::Aborted(message) => Status::aborted(message),
        EngineError::ResourceExhausted(message) => Status::resource_exhausted(message),
        EngineError::Backup(error) => backup_status(error),
        EngineError::ShuttingDown => {
            Status::unavailable("the service is shutting down; retry against a running server")
        }
        EngineError::Audit(message) => {
            tracing::error!(%message, "audit log failure");
            Status::unavailable("the audit log cannot be written, so nothing is served; retry later")
        }
        EngineError::WritePathFailed => {
            Status::unavailable("the write path has failed and stopped acknowledging; the service needs a restart")
        }
        EngineError::Store(crate::store::StoreError::Torn) => Status::unavailable(
            "the store stopped part-way through a batch and serves nothing until a restart completes it; the service needs a restart",
        ),
        internal @ (EngineError::Store(_)
        | EngineError::Wal(_)
        | EngineError::Index(_)
        | EngineError::DataDir { .. }
        | EngineError::Thread { .. }) => {
            tracing::error!(error = %internal, "internal error");
            Status::new(Code::Internal, "internal error; see the server log")
        }
    }
}

/// Backup errors name paths on the server and what is wrong with them; they carry no
/// personal values, so the operator sees them whole.
fn backup_status(error: BackupError) -> Status {
    match error {
        BackupError::NotAbsolute { .. } => Status::invalid_argument(error.to_string()),
        BackupError::HoldsBackup { .. } | BackupError::NotEmpty { .. } | BackupError::NotADirectory { .. } => {
            Status::failed_precondition(error.to_string())
        }
        other => {
            tracing::error!(error = %other, "backup failed");
            Status::internal(format!("backup failed: {other}"))
        }
    }
}
