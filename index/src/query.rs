//! Candidate query construction and scoring weights.
//!
//! Owns: turning a [`CandidateQuery`] into its distinct analyzed terms, each with the weight a
//! document holding it gains (executed by `top_k`; as one boolean "should" query of tantivy's
//! in the tests), and the weight of each kind of matched term.
//!
//! Scoring is deliberately *not* BM25: every distinct matched query term adds a constant weight
//! (as a `ConstScoreQuery` per term would). BM25 statistics include deleted-but-unmerged documents, so an
//! incrementally maintained index and a freshly rebuilt one would rank differently; constant
//! weights make the score a pure function of (query, live document), and all weights are small
//! dyadic numbers so every sum is exact in `f32` regardless of summation order. Final precision
//! is the resolver's job; this only has to put the right persons in the top k.
//!
//! Must not: execute the query, touch the writer, or log query values.

use tantivy::schema::Field;
use tantivy::{Score, Term};

use crate::analysis::{exact_term, AddressTerms, NameTerms};
use crate::schema::Fields;
use crate::CandidateQuery;

/// Weight per matched term kind. ID number dominates: one matching ID outweighs a perfect name,
/// birth date, phone and address together.
pub(crate) mod weight {
    use tantivy::Score;

    pub(crate) const ID_NUMBER: Score = 64.0;
    pub(crate) const PHONE: Score = 16.0;
    pub(crate) const BIRTH_DATE: Score = 8.0;
    pub(crate) const NAME_EXACT: Score = 8.0;
    pub(crate) const NAME_PINYIN: Score = 6.0;
    pub(crate) const NAME_BIGRAM: Score = 2.0;
    pub(crate) const NAME_PINYIN_BIGRAM: Score = 1.0;
    pub(crate) const NAME_UNIGRAM: Score = 1.0;
    pub(crate) const ADDRESS_EXACT: Score = 4.0;
    pub(crate) const ADDRESS_BIGRAM: Score = 0.5;
}

/// The query for `query` as tantivy's boolean query, or `None` if it yields no term at all
/// (nothing can match): what `top_k` executes on its own, for the tests to compare with.
#[cfg(test)]
pub(crate) fn build(fields: &Fields, query: &CandidateQuery) -> Option<tantivy::query::BooleanQuery> {
    use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
    use tantivy::schema::IndexRecordOption;
    let clauses: Vec<(Occur, Box<dyn Query>)> = weighted_terms(fields, query)
        .into_iter()
        .map(|(term, weight)| {
            let term_query = TermQuery::new(term, IndexRecordOption::Basic);
            let clause: Box<dyn Query> = Box::new(ConstScoreQuery::new(Box::new(term_query), weight));
            (Occur::Should, clause)
        })
        .collect();
    (!clauses.is_empty()).then(|| BooleanQuery::new(clauses))
}

/// The distinct terms of `query`, each with the weight a document matching it gains: the
/// clauses of `build`'s query, for an executor of its own (`top_k`).
pub(crate) fn weighted_terms(fields: &Fields, query: &CandidateQuery) -> Vec<(Term, Score)> {
    let mut clauses: Vec<(Term, Score)> = Vec::new();

    if let Some(name) = &query.name {
        let t = NameTerms::of(name);
        push(&mut clauses, fields.name_exact, &t.exact, weight::NAME_EXACT);
        push(&mut clauses, fields.name_unigram, &t.unigrams, weight::NAME_UNIGRAM);
        push(&mut clauses, fields.name_bigram, &t.bigrams, weight::NAME_BIGRAM);
        push(&mut clauses, fields.name_pinyin, &t.pinyin_full, weight::NAME_PINYIN);
        push(
            &mut clauses,
            fields.name_pinyin_bigram,
            &t.pinyin_bigrams,
            weight::NAME_PINYIN_BIGRAM,
        );
    }
    let exact = [
        (&query.id_number, fields.id_number, weight::ID_NUMBER),
        (&query.birth_date, fields.birth_date, weight::BIRTH_DATE),
        (&query.phone, fields.phone, weight::PHONE),
    ];
    for (value, field, w) in exact {
        if let Some(term) = value.as_deref().and_then(exact_term) {
            push(&mut clauses, field, [&term], w);
        }
    }
    if let Some(address) = &query.address {
        let t = AddressTerms::of(address);
        push(&mut clauses, fields.address_exact, &t.exact, weight::ADDRESS_EXACT);
        push(&mut clauses, fields.address_bigram, &t.bigrams, weight::ADDRESS_BIGRAM);
    }

    clauses
}

fn push<'a>(
    clauses: &mut Vec<(Term, Score)>,
    field: Field,
    terms: impl IntoIterator<Item = &'a String>,
    weight: Score,
) {
    // Callers pass sets (or a single term), so each distinct term scores once.
    for term in terms {
        clauses.push((Term::from_field_text(field, term), weight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;

    fn query(name: Option<&str>, id: Option<&str>) -> CandidateQuery {
        CandidateQuery {
            name: name.map(str::to_owned),
            id_number: id.map(str::to_owned),
            ..CandidateQuery::default()
        }
    }

    #[test]
    fn empty_query_builds_nothing() {
        let (_, fields) = schema::build();
        let cases = [
            CandidateQuery::default(),
            query(Some("  "), None),
            query(None, Some("   ")),
            query(Some("·"), Some("")),
        ];
        for q in &cases {
            assert!(build(&fields, q).is_none(), "{q:?}");
        }
    }

    #[test]
    fn clauses_are_one_per_distinct_term() {
        let (_, fields) = schema::build();
        // 张张: exact 1, unigram 1 (deduplicated), bigram 1, pinyin 1, pinyin bigram 1.
        let q = build(&fields, &query(Some("张张"), None)).expect("query");
        assert_eq!(q.clauses().len(), 5);
    }

    #[test]
    fn id_outweighs_everything_else_of_a_perfect_match() {
        // A 4-character name with every kind of name match, plus phone, birth date and a
        // 10-character address.
        let name = weight::NAME_EXACT
            + weight::NAME_PINYIN
            + 4.0 * weight::NAME_UNIGRAM
            + 3.0 * weight::NAME_BIGRAM
            + 3.0 * weight::NAME_PINYIN_BIGRAM;
        let address = weight::ADDRESS_EXACT + 9.0 * weight::ADDRESS_BIGRAM;
        let rest = weight::PHONE + weight::BIRTH_DATE;
        assert!(weight::ID_NUMBER > name + rest + address);
    }
}
