//! The candidate query's own executor: the top `k` live documents by score (the sum of the
//! weights of the distinct query terms a document holds), ties by person key, found with
//! MaxScore pruning.
//!
//! Owns: walking the term postings of each segment. The result is exactly what tantivy's
//! `TopDocs` ordered by (score descending, person key ascending) gives over `query::build`'s
//! boolean query (the tests hold the two to that; two ids sharing a person key, which only
//! ids not made by the service can, are ordered by document here); the work is not. A union of every term's
//! postings visits each document holding any of them: the unigram of a common surname is on
//! a tenth of the index. Here the terms are taken lightest first, and once the top `k` are held
//! the lightest terms whose weights together cannot lift a document to the `k`th score are
//! only looked up (`seek`) for the documents the heavier terms bring, never walked.
//!
//! Must not: build documents, or know what a term means.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tantivy::postings::SegmentPostings;
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocId, DocSet, Score, Searcher, Term, TERMINATED};

use crate::error::IndexError;
use crate::schema;

/// One document of the top `k`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub(crate) score: Score,
    pub(crate) person_key: u64,
    pub(crate) address: DocAddress,
}

impl Hit {
    /// Orders by worth: a higher score, then a lower person key, then (two ids sharing a key)
    /// the earlier document, is better.
    fn better_than(&self, other: &Hit) -> bool {
        (other.score, self.person_key, self.address) < (self.score, other.person_key, other.address)
    }
}

/// The heap's order: the worst hit is the greatest, so it is the one on top.
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Worst {}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.0.better_than(&other.0) {
            Ordering::Less
        } else if other.0.better_than(&self.0) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }
}

/// The best `k` hits of `terms` over every segment of `searcher`, best first.
pub(crate) fn top_k(searcher: &Searcher, terms: &[(Term, Score)], k: usize) -> Result<Vec<Hit>, IndexError> {
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
    if k == 0 || terms.is_empty() {
        return Ok(Vec::new());
    }
    for (segment_ord, segment) in searcher.segment_readers().iter().enumerate() {
        let segment_ord = u32::try_from(segment_ord).map_err(|_| IndexError::corrupt("too many segments"))?;
        let keys = segment
            .fast_fields()
            .u64(schema::PERSON_KEY)
            .map_err(|e| IndexError::corrupt_because("the person key column is unreadable", e))?;
        let alive = segment.alive_bitset();
        // Each term's postings in this segment, lightest first.
        let mut lists: Vec<(Score, SegmentPostings)> = Vec::with_capacity(terms.len());
        for (term, weight) in terms {
            let inverted = segment
                .inverted_index(term.field())
                .map_err(|e| IndexError::corrupt_because("a term index is unreadable", e))?;
            let postings = inverted
                .read_postings(term, IndexRecordOption::Basic)
                .map_err(|e| IndexError::corrupt_because("a posting list is unreadable", e))?;
            if let Some(postings) = postings {
                if postings.doc() != TERMINATED {
                    lists.push((*weight, postings));
                }
            }
        }
        lists.sort_by(|a, b| a.0.total_cmp(&b.0));
        // below[i]: the weights of lists[0..i] together (below[0] = 0).
        let mut below = Vec::with_capacity(lists.len() + 1);
        below.push(0.0);
        for (weight, _) in &lists {
            below.push(below[below.len() - 1] + weight);
        }
        // The score a hit must reach to enter a full heap (ties enter on a lower key).
        let threshold = |heap: &BinaryHeap<Worst>| -> Option<Score> {
            (heap.len() >= k).then(|| heap.peek().map_or(0.0, |worst| worst.0.score))
        };
        // lists[..essential] cannot make a document enter alone: they are only looked up.
        let mut essential = 0;
        if let Some(bar) = threshold(&heap) {
            while essential < lists.len() && below[essential + 1] < bar {
                essential += 1;
            }
        }
        loop {
            let doc: DocId = lists[essential..]
                .iter()
                .map(|(_, postings)| postings.doc())
                .min()
                .unwrap_or(TERMINATED);
            if doc == TERMINATED {
                break;
            }
            let mut score: Score = 0.0;
            for (weight, postings) in &mut lists[essential..] {
                if postings.doc() == doc {
                    score += *weight;
                    postings.advance();
                }
            }
            let bar = threshold(&heap);
            let mut reachable = true;
            for idx in (0..essential).rev() {
                // At most the weights of lists[..=idx] are still to come.
                if bar.is_some_and(|bar| score + below[idx + 1] < bar) {
                    reachable = false;
                    break;
                }
                let (weight, postings) = &mut lists[idx];
                if postings.doc() < doc {
                    postings.seek(doc);
                }
                if postings.doc() == doc {
                    score += *weight;
                }
            }
            if !reachable || bar.is_some_and(|bar| score < bar) {
                continue;
            }
            if alive.is_some_and(|alive| alive.is_deleted(doc)) {
                continue;
            }
            let hit = Hit {
                score,
                person_key: keys.first(doc).unwrap_or(u64::MAX),
                address: DocAddress::new(segment_ord, doc),
            };
            if heap.len() < k {
                heap.push(Worst(hit));
            } else if heap.peek().is_some_and(|worst| hit.better_than(&worst.0)) {
                heap.pop();
                heap.push(Worst(hit));
            } else {
                continue;
            }
            if let Some(bar) = threshold(&heap) {
                while essential < lists.len() && below[essential + 1] < bar {
                    essential += 1;
                }
            }
        }
    }
    let mut hits: Vec<Hit> = heap.into_iter().map(|worst| worst.0).collect();
    hits.sort_by(|a, b| {
        if a.better_than(b) {
            Ordering::Less
        } else if b.better_than(a) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    });
    Ok(hits)
}
