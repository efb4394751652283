//! [`CandidateIndex`]: the tantivy index handle — open/create/recreate, applying feed ops,
//! committing with a watermark, and top-k candidate search.
//!
//! Owns: the single `IndexWriter` (behind a mutex), the manually reloaded reader, the in-memory
//! copy of the committed watermark, and the deterministic top-k ordering.
//!
//! Must not: decide what to index (that is [`crate::schema`]/[`crate::analysis`]), decide
//! scoring (that is [`crate::query`]), read the store or the feed, or log personal values (only
//! counts, watermarks and paths are logged).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Mutex, MutexGuard};

use tantivy::columnar::{Column, StrColumn};
use tantivy::indexer::UserOperation;
use tantivy::schema::IndexRecordOption;
use tantivy::{
    DocAddress, DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, TantivyDocument,
    TantivyError, Term,
};
use tracing::{debug, info};

use crate::error::IndexError;
use crate::layout::{self, DirState};
use crate::schema::{self, Fields};
use crate::{query, top_k, Candidate, CandidateQuery, IndexConfig, IndexOp};

/// Longest accepted `person_id`, in bytes.
const MAX_PERSON_ID_BYTES: usize = 1024;
/// tantivy's minimum writer memory per indexing thread.
const MIN_MEMORY_PER_THREAD: usize = 15_000_000;
/// tantivy's maximum writer memory per indexing thread.
const MAX_MEMORY_PER_THREAD: usize = u32::MAX as usize - 1_000_000;
/// tantivy's maximum number of indexing threads.
const MAX_WRITER_THREADS: usize = 8;

/// The derived candidate index. `Send + Sync`: share it behind an `Arc`; searches run
/// concurrently, `apply`/`commit`/`rollback` serialize on the writer.
pub struct CandidateIndex {
    fields: Fields,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    reader: IndexReader,
    /// Watermark of the last successful commit. Only written while holding `writer`.
    watermark: AtomicU64,
}

impl std::fmt::Debug for CandidateIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandidateIndex")
            .field("watermark", &self.watermark())
            .field("num_persons", &self.num_persons())
            .finish_non_exhaustive()
    }
}

impl CandidateIndex {
    /// Opens the index in `dir`, or creates an empty one (watermark 0) if `dir` is absent or
    /// empty.
    ///
    /// Errors the caller should answer with [`recreate`](Self::recreate) + replay (see
    /// [`IndexError::needs_rebuild`]): [`IndexError::Incompatible`] when the directory holds
    /// another format version, [`IndexError::Corrupt`] when it is not empty but holds no usable
    /// candidate index (garbage, a half-created index, damaged metadata).
    /// [`IndexError::Locked`] means another writer has the directory open.
    pub fn open(dir: &Path, config: &IndexConfig) -> Result<Self, IndexError> {
        config.validate()?;
        match layout::inspect(dir)? {
            DirState::Absent => {
                std::fs::create_dir_all(dir).map_err(IndexError::io("creating the index directory"))?;
                Self::create_in(dir, config)
            }
            DirState::Empty => Self::create_in(dir, config),
            DirState::Populated => Self::open_existing(dir, config),
        }
    }

    /// Deletes whatever is inside `dir` (creating it if needed) and creates an empty index with
    /// watermark 0. Any `CandidateIndex` open on `dir` must be dropped first.
    pub fn recreate(dir: &Path, config: &IndexConfig) -> Result<Self, IndexError> {
        config.validate()?;
        layout::clear(dir)?;
        info!(dir = %dir.display(), "recreating candidate index");
        Self::create_in(dir, config)
    }

    fn create_in(dir: &Path, config: &IndexConfig) -> Result<Self, IndexError> {
        let (schema, fields) = schema::build();
        let index = Index::create_in_dir(dir, schema).map_err(IndexError::tantivy("creating the index"))?;
        let mut writer = new_writer(&index, config)?;
        let mut prepared = writer
            .prepare_commit()
            .map_err(IndexError::tantivy("preparing the initial commit"))?;
        prepared.set_payload(&layout::encode_payload(0));
        prepared
            .commit()
            .map_err(IndexError::tantivy("writing the initial commit"))?;
        // Written last: a crash before this leaves a directory that `open` calls corrupt.
        layout::write_marker(dir)?;
        debug!(dir = %dir.display(), "created candidate index");
        Self::assemble(&index, fields, writer, 0)
    }

    fn open_existing(dir: &Path, config: &IndexConfig) -> Result<Self, IndexError> {
        layout::check_marker(dir)?;
        let index =
            Index::open_in_dir(dir).map_err(|e| IndexError::corrupt_because("tantivy cannot open the index", e))?;
        let (schema, fields) = schema::build();
        if index.schema() != schema {
            return Err(IndexError::corrupt("index schema does not match its format version"));
        }
        let metas = index
            .load_metas()
            .map_err(|e| IndexError::corrupt_because("index metadata is unreadable", e))?;
        let watermark = layout::decode_payload(metas.payload.as_deref())?;
        let writer = new_writer(&index, config)?;
        let opened = Self::assemble(&index, fields, writer, watermark)?;
        info!(
            dir = %dir.display(),
            watermark,
            persons = opened.num_persons(),
            "opened candidate index"
        );
        Ok(opened)
    }

    fn assemble(
        index: &Index,
        fields: Fields,
        writer: IndexWriter<TantivyDocument>,
        watermark: u64,
    ) -> Result<Self, IndexError> {
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| IndexError::corrupt_because("index segments are unreadable", e))?;
        Ok(CandidateIndex {
            fields,
            writer: Mutex::new(writer),
            reader,
            watermark: AtomicU64::new(watermark),
        })
    }

    /// Applies feed ops in order: `Upsert` replaces every document of the person (delete by
    /// `person_id`, then add), `Delete` removes them. Not searchable and not durable until
    /// [`commit`](Self::commit).
    ///
    /// The batch is validated first (an invalid op fails the call with
    /// [`IndexError::InvalidInput`] and nothing is applied), then queued as one group. After any
    /// other error the pending state is unknown: call [`rollback`](Self::rollback) and re-apply
    /// from [`watermark`](Self::watermark).
    pub fn apply(&self, ops: Vec<IndexOp>) -> Result<(), IndexError> {
        if ops.is_empty() {
            return Ok(());
        }
        for op in &ops {
            validate_person_id(op.person_id())?;
        }
        let count = ops.len();
        let mut user_ops = Vec::with_capacity(count * 2);
        for op in ops {
            match op {
                IndexOp::Upsert(person) => {
                    user_ops.push(UserOperation::Delete(self.person_term(&person.person_id)));
                    user_ops.push(UserOperation::Add(self.fields.document(&person)));
                }
                IndexOp::Delete { person_id } => {
                    user_ops.push(UserOperation::Delete(self.person_term(&person_id)));
                }
            }
        }
        let writer = self.lock_writer()?;
        writer
            .run(user_ops)
            .map_err(IndexError::tantivy("queueing index operations"))?;
        debug!(ops = count, "applied index operations");
        Ok(())
    }

    /// Commits everything applied so far, recording `watermark` (the feed sequence number the
    /// applied ops reach) in the commit payload, then reloads the reader so the changes are
    /// searchable. `watermark` may equal the current one (an empty or repeated commit) but must
    /// not go below it ([`IndexError::WatermarkRegression`], nothing committed).
    ///
    /// On any other error the last durable state is still the previous commit (the in-memory
    /// watermark is only advanced once the commit is durable): call [`rollback`](Self::rollback)
    /// and re-apply from [`watermark`](Self::watermark), or reopen.
    pub fn commit(&self, watermark: u64) -> Result<(), IndexError> {
        let mut writer = self.lock_writer()?;
        let current = self.watermark.load(AtomicOrdering::Acquire);
        if watermark < current {
            return Err(IndexError::WatermarkRegression {
                current,
                requested: watermark,
            });
        }
        let mut prepared = writer
            .prepare_commit()
            .map_err(IndexError::tantivy("preparing a commit"))?;
        prepared.set_payload(&layout::encode_payload(watermark));
        prepared.commit().map_err(IndexError::tantivy("committing"))?;
        // Searchable first: whoever sees the new watermark must find what it covers.
        self.reader
            .reload()
            .map_err(IndexError::tantivy("reloading the reader after a commit"))?;
        self.watermark.store(watermark, AtomicOrdering::Release);
        debug!(watermark, "committed candidate index");
        Ok(())
    }

    /// Discards everything applied since the last commit.
    pub fn rollback(&self) -> Result<(), IndexError> {
        let mut writer = self.lock_writer()?;
        writer.rollback().map_err(IndexError::tantivy("rolling back"))?;
        debug!("rolled back uncommitted index operations");
        Ok(())
    }

    /// Watermark of the last commit (0 for a new index).
    pub fn watermark(&self) -> u64 {
        self.watermark.load(AtomicOrdering::Acquire)
    }

    /// Number of live person documents as of the last commit.
    pub fn num_persons(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The person id and version of every live document as of the last commit, one pair for
    /// each document, in no particular order: a sound index names each person it holds once,
    /// at its latest version. For checks of the index against the store; it reads the whole
    /// index.
    pub fn documents(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let searcher = self.reader.searcher();
        let mut documents = Vec::with_capacity(usize::try_from(searcher.num_docs()).unwrap_or(0));
        for segment in searcher.segment_readers() {
            let ids = segment
                .fast_fields()
                .str(schema::PERSON_ID)
                .map_err(|e| IndexError::corrupt_because("the person id column is unreadable", e))?
                .ok_or(IndexError::corrupt("a segment has no person id column"))?;
            let versions: Column<u64> = segment
                .fast_fields()
                .u64(schema::VERSION)
                .map_err(|e| IndexError::corrupt_because("the version column is unreadable", e))?;
            for doc in segment.doc_ids_alive() {
                let version = versions
                    .first(doc)
                    .ok_or(IndexError::corrupt("a document has no version"))?;
                documents.push((id_from_dictionary(&ids, doc)?, version));
            }
        }
        Ok(documents)
    }

    /// The top `k` candidate persons for `query`, best first, ties broken by ascending
    /// `person_id` (through its number, `schema::person_key`). Empty when `k` is 0, the query has no usable value, or nothing matches.
    ///
    /// The score is the sum of constant weights of the distinct matched terms (see the
    /// `query` module), identical for an incrementally maintained and a rebuilt index.
    pub fn candidates(&self, query: &CandidateQuery, k: usize) -> Result<Vec<Candidate>, IndexError> {
        let terms = query::weighted_terms(&self.fields, query);
        let searcher = self.reader.searcher();
        let limit = k.min(usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX));
        let hits = top_k::top_k(&searcher, &terms, limit)?;
        self.hits_to_candidates(
            &searcher,
            hits.into_iter()
                .map(|hit| (hit.score, Some(hit.person_key), hit.address)),
        )
    }

    /// `candidates` through tantivy's own collector over `query::build`'s boolean query: what
    /// `top_k` must give, for the tests to hold it to.
    #[cfg(test)]
    pub(crate) fn candidates_by_collector(
        &self,
        query: &CandidateQuery,
        k: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        use tantivy::collector::sort_key::{SortBySimilarityScore, SortByStaticFastValue};
        use tantivy::collector::TopDocs;
        use tantivy::Order;
        let Some(tantivy_query) = query::build(&self.fields, query) else {
            return Ok(Vec::new());
        };
        let searcher = self.reader.searcher();
        let limit = k.min(usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX));
        if limit == 0 {
            return Ok(Vec::new());
        }
        let collector = TopDocs::with_limit(limit).order_by((
            (SortBySimilarityScore, Order::Desc),
            (SortByStaticFastValue::<u64>::for_field(schema::PERSON_KEY), Order::Asc),
        ));
        let hits: Vec<((Score, Option<u64>), DocAddress)> = searcher
            .search(&tantivy_query, &collector)
            .map_err(IndexError::tantivy("searching candidates"))?;
        // Every id read from the dictionary: the other way of `candidates` is checked too.
        self.hits_to_candidates(
            &searcher,
            hits.into_iter().map(|((score, _), address)| (score, None, address)),
        )
    }

    /// Each hit's person id and version, from the fast columns. A hit whose person key is that
    /// of a service id (`P` and 16 hex digits) is checked against that id's postings, which is
    /// much cheaper than reading the id out of the string column's dictionary; any other is read
    /// from the dictionary.
    fn hits_to_candidates(
        &self,
        searcher: &tantivy::Searcher,
        hits: impl ExactSizeIterator<Item = (Score, Option<u64>, DocAddress)>,
    ) -> Result<Vec<Candidate>, IndexError> {
        let n_segments = searcher.segment_readers().len();
        let mut version_columns: Vec<Option<Column<u64>>> = vec![None; n_segments];
        let mut id_columns: Vec<Option<StrColumn>> = vec![None; n_segments];
        let mut candidates = Vec::with_capacity(hits.len());
        for (score, person_key, address) in hits {
            let segment = searcher.segment_reader(address.segment_ord);
            let column = match version_columns.get_mut(address.segment_ord as usize) {
                Some(Some(column)) => column,
                Some(slot) => slot.insert(
                    segment
                        .fast_fields()
                        .u64(schema::VERSION)
                        .map_err(|e| IndexError::corrupt_because("the version column is unreadable", e))?,
                ),
                None => return Err(IndexError::corrupt("a hit points to no segment")),
            };
            let version = column
                .first(address.doc_id)
                .ok_or(IndexError::corrupt("a document has no version"))?;
            let person_id = match person_key.map(|key| self.service_id_of(segment, address.doc_id, key)) {
                Some(Ok(Some(person_id))) => person_id,
                Some(Err(error)) => return Err(error),
                Some(Ok(None)) | None => {
                    let ids = match &mut id_columns[address.segment_ord as usize] {
                        Some(ids) => ids,
                        slot => slot.insert(
                            segment
                                .fast_fields()
                                .str(schema::PERSON_ID)
                                .map_err(|e| IndexError::corrupt_because("the person id column is unreadable", e))?
                                .ok_or(IndexError::corrupt("a segment has no person id column"))?,
                        ),
                    };
                    id_from_dictionary(ids, address.doc_id)?
                }
            };
            candidates.push(Candidate {
                person_id,
                version,
                score,
            });
        }
        Ok(candidates)
    }

    /// The service id whose person key is `key` (`P` and its 16 hex digits), if document `doc`
    /// of `segment` holds it; `None` when it holds another id.
    fn service_id_of(&self, segment: &SegmentReader, doc: DocId, key: u64) -> Result<Option<String>, IndexError> {
        let person_id = format!("P{key:016X}");
        let inverted = segment
            .inverted_index(self.fields.person_id)
            .map_err(|e| IndexError::corrupt_because("the person id index is unreadable", e))?;
        let postings = inverted
            .read_postings(&self.person_term(&person_id), IndexRecordOption::Basic)
            .map_err(|e| IndexError::corrupt_because("a person id's postings are unreadable", e))?;
        let holds = postings
            .is_some_and(|mut postings| postings.doc() == doc || (postings.doc() < doc && postings.seek(doc) == doc));
        Ok(holds.then_some(person_id))
    }

    fn person_term(&self, person_id: &str) -> Term {
        Term::from_field_text(self.fields.person_id, person_id)
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, IndexWriter<TantivyDocument>>, IndexError> {
        self.writer.lock().map_err(|_| IndexError::Poisoned)
    }
}

impl IndexConfig {
    /// Checks the configuration against tantivy's writer limits.
    pub fn validate(&self) -> Result<(), IndexError> {
        if self.writer_threads == 0 || self.writer_threads > MAX_WRITER_THREADS {
            return Err(IndexError::InvalidConfig {
                reason: "writer_threads must be between 1 and 8",
            });
        }
        let per_thread = self.writer_memory_bytes / self.writer_threads;
        if per_thread < MIN_MEMORY_PER_THREAD {
            return Err(IndexError::InvalidConfig {
                reason: "writer_memory_bytes must give each writer thread at least 15 MB",
            });
        }
        if per_thread > MAX_MEMORY_PER_THREAD {
            return Err(IndexError::InvalidConfig {
                reason: "writer_memory_bytes per writer thread must stay below 4 GB",
            });
        }
        Ok(())
    }
}

fn new_writer(index: &Index, config: &IndexConfig) -> Result<IndexWriter<TantivyDocument>, IndexError> {
    index
        .writer_with_num_threads(config.writer_threads, config.writer_memory_bytes)
        .map_err(|e| match e {
            TantivyError::LockFailure(..) => IndexError::Locked(e),
            TantivyError::InvalidArgument(_) => IndexError::InvalidConfig {
                reason: "rejected by the index writer",
            },
            other => IndexError::Tantivy {
                context: "opening the index writer",
                source: other,
            },
        })
}

fn validate_person_id(person_id: &str) -> Result<(), IndexError> {
    if person_id.is_empty() {
        return Err(IndexError::InvalidInput {
            reason: "person_id is empty",
        });
    }
    if person_id.len() > MAX_PERSON_ID_BYTES {
        return Err(IndexError::InvalidInput {
            reason: "person_id is longer than 1024 bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// The person id of document `doc`, read out of the string column's dictionary.
fn id_from_dictionary(ids: &StrColumn, doc: DocId) -> Result<String, IndexError> {
    let ordinal = ids
        .ords()
        .first(doc)
        .ok_or(IndexError::corrupt("a document has no person id"))?;
    let mut bytes = Vec::new();
    let found = ids
        .dictionary()
        .ord_to_term(ordinal, &mut bytes)
        .map_err(|e| IndexError::corrupt_because("the person id dictionary is unreadable", e))?;
    if !found {
        return Err(IndexError::corrupt("a person id is missing from its dictionary"));
    }
    String::from_utf8(bytes).map_err(|_| IndexError::corrupt("a person id is not UTF-8"))
}
