//! The crate's error type.
//!
//! Owns: `IndexError` and the mapping of tantivy/io failures onto variants a caller can act on
//! (rebuild on `Incompatible`/`Corrupt`, retry later on `Locked`, fix config, re-apply from the
//! watermark after a failed `apply`/`commit`).
//!
//! Must not: put personal values (names, ID numbers, phones, ...) into any message. Messages are
//! built only from static text, numbers and file-system paths; tantivy's own errors are kept as
//! `source` and never formatted into our `Display`.

use std::error::Error as StdError;
use std::io;

/// Boxed cause of a [`IndexError::Corrupt`].
pub type CorruptCause = Box<dyn StdError + Send + Sync + 'static>;

/// Errors of the candidate index. Messages carry no personal values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The directory holds an index written with another schema/analyzer format version.
    /// The caller should [`recreate`](crate::CandidateIndex::recreate) and replay the feed.
    #[error("candidate index has format version {found}, this build expects {expected}; rebuild it")]
    Incompatible {
        /// Format version recorded in the directory.
        found: u32,
        /// Format version this build writes ([`crate::FORMAT_VERSION`]).
        expected: u32,
    },

    /// The directory is not empty but does not hold a readable candidate index (garbage files,
    /// a half-created index, damaged metadata). The caller should recreate and replay.
    #[error("candidate index directory is corrupt or not a candidate index: {reason}")]
    Corrupt {
        /// What was wrong, in static words.
        reason: &'static str,
        /// The underlying failure, if any.
        #[source]
        source: Option<CorruptCause>,
    },

    /// Another writer (in this or another process) holds the index directory.
    #[error("candidate index directory is locked by another writer")]
    Locked(#[source] tantivy::TantivyError),

    /// The [`IndexConfig`](crate::IndexConfig) is unusable.
    #[error("invalid candidate index configuration: {reason}")]
    InvalidConfig {
        /// What was wrong, in static words.
        reason: &'static str,
    },

    /// An op passed to [`apply`](crate::CandidateIndex::apply) is unusable (e.g. empty
    /// `person_id`). Nothing of the batch was applied.
    #[error("invalid index operation: {reason}")]
    InvalidInput {
        /// What was wrong, in static words.
        reason: &'static str,
    },

    /// [`commit`](crate::CandidateIndex::commit) was asked to record a watermark below the one
    /// already committed. Nothing was committed.
    #[error("commit watermark {requested} is below the committed watermark {current}")]
    WatermarkRegression {
        /// Watermark of the last commit.
        current: u64,
        /// Watermark the caller asked for.
        requested: u64,
    },

    /// A thread panicked while holding the writer; the pending ops are in an unknown state.
    /// Drop this `CandidateIndex` and open it again (it resumes from the last commit).
    #[error("candidate index writer is unusable after a panic; reopen the index")]
    Poisoned,

    /// A file-system operation failed.
    #[error("i/o error while {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// Any other tantivy failure.
    #[error("search engine error while {context}")]
    Tantivy {
        /// What was being done.
        context: &'static str,
        /// The underlying failure.
        #[source]
        source: tantivy::TantivyError,
    },
}

impl IndexError {
    pub(crate) fn corrupt(reason: &'static str) -> Self {
        IndexError::Corrupt { reason, source: None }
    }

    pub(crate) fn corrupt_because(reason: &'static str, source: impl Into<CorruptCause>) -> Self {
        IndexError::Corrupt {
            reason,
            source: Some(source.into()),
        }
    }

    /// `map_err` helper for io failures.
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| IndexError::Io { context, source }
    }

    /// `map_err` helper for tantivy failures.
    pub(crate) fn tantivy(context: &'static str) -> impl FnOnce(tantivy::TantivyError) -> Self {
        move |source| IndexError::Tantivy { context, source }
    }

    /// Whether the right reaction is to delete the directory and rebuild from the feed.
    pub fn needs_rebuild(&self) -> bool {
        matches!(self, IndexError::Incompatible { .. } | IndexError::Corrupt { .. })
    }
}
