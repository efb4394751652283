//! popmaster's derived candidate index for fuzzy person search.
//!
//! Owns: a tantivy index of person versions, fed only from the store's ordered change feed
//! ([`CandidateIndex::apply`] + [`CandidateIndex::commit`]), recording how far it has caught up
//! (the feed sequence number, "watermark") in each commit, and answering top-k candidate
//! queries ([`CandidateIndex::candidates`]).
//!
//! Must not: be a source of truth. The store is; this index can be deleted and rebuilt at any
//! time ([`CandidateIndex::recreate`] + replay of the feed from sequence 0), and a rebuilt index
//! answers exactly like an incrementally maintained one. It must not store personal values in
//! retrievable form (only `person_id` and `version` come back), nor log or put them in errors.
//!
//! Module map: `analysis` (values → terms), `schema` (fields, documents), `query` (candidate
//! query and weights), `layout` (format marker, commit payload, directory handling),
//! `candidate_index` (the handle), `home` (the generations of an index home, for rebuilding
//! beside the index in use and swapping atomically), `error`.

mod analysis;
mod candidate_index;
mod error;
mod home;
mod layout;
mod query;
mod schema;
mod top_k;

use std::fmt;

pub use candidate_index::CandidateIndex;
pub use error::{CorruptCause, IndexError};
pub use home::IndexHome;

/// Version of everything that determines what is on disk: schema, analyzer (normalization,
/// n-grams, pinyin table), marker and payload format. An index of another version is rejected
/// by [`CandidateIndex::open`] with [`IndexError::Incompatible`] and must be rebuilt. Bump it on
/// any such change.
pub const FORMAT_VERSION: u32 = 2;

/// The identity fields of one person version, as the index sees them. All values are already
/// standardized by the caller (simplified Chinese, half-width, normalized 18-digit ID numbers,
/// dates as YYYY-MM-DD, phones as digits).
///
/// `Debug` shows only `person_id`, `version` and how many values each field has.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PersonDoc {
    /// Stable person id (the delete/replace key). Must be non-empty, at most 1024 bytes.
    pub person_id: String,
    /// Version of the person this document describes.
    pub version: u64,
    /// All distinct names of the person.
    pub names: Vec<String>,
    /// Normalized ID numbers.
    pub id_numbers: Vec<String>,
    /// Birth dates, `YYYY-MM-DD`.
    pub birth_dates: Vec<String>,
    /// Phone numbers, digits only.
    pub phones: Vec<String>,
    /// Addresses.
    pub addresses: Vec<String>,
}

impl fmt::Debug for PersonDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonDoc")
            .field("person_id", &self.person_id)
            .field("version", &self.version)
            .field("names", &self.names.len())
            .field("id_numbers", &self.id_numbers.len())
            .field("birth_dates", &self.birth_dates.len())
            .field("phones", &self.phones.len())
            .field("addresses", &self.addresses.len())
            .finish()
    }
}

/// One change from the store's feed, applied in feed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    /// Replace whatever the index holds for `person_id` with this version.
    Upsert(PersonDoc),
    /// Remove the person (merged away, deleted).
    Delete {
        /// The person to remove.
        person_id: String,
    },
}

impl IndexOp {
    /// The person this op is about.
    pub fn person_id(&self) -> &str {
        match self {
            IndexOp::Upsert(doc) => &doc.person_id,
            IndexOp::Delete { person_id } => person_id,
        }
    }
}

/// What to look for; any subset of fields. Values are standardized like [`PersonDoc`]'s.
///
/// `Debug` shows only which fields are present.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CandidateQuery {
    /// Name, matched fuzzily (character n-grams and toneless pinyin).
    pub name: Option<String>,
    /// ID number, matched exactly.
    pub id_number: Option<String>,
    /// Birth date, matched exactly.
    pub birth_date: Option<String>,
    /// Phone, matched exactly.
    pub phone: Option<String>,
    /// Address, matched by character bigrams.
    pub address: Option<String>,
}

impl fmt::Debug for CandidateQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CandidateQuery")
            .field("name", &self.name.is_some())
            .field("id_number", &self.id_number.is_some())
            .field("birth_date", &self.birth_date.is_some())
            .field("phone", &self.phone.is_some())
            .field("address", &self.address.is_some())
            .finish()
    }
}

/// One candidate person. `version` is the version the index last saw; the caller should
/// re-read the person from the store before deciding anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The person.
    pub person_id: String,
    /// The indexed version of the person.
    pub version: u64,
    /// Sum of the weights of the matched query terms; comparable only within one query.
    pub score: f32,
}

/// Tuning of the index writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// Total indexing memory budget shared by the writer threads; each thread needs at least
    /// 15 MB. Default 64 MiB.
    pub writer_memory_bytes: usize,
    /// Number of indexing threads, 1 to 8. Default 1.
    pub writer_threads: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            writer_memory_bytes: 64 * 1024 * 1024,
            writer_threads: 1,
        }
    }
}
