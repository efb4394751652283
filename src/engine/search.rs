//! Person search on the read side (`ProfileService.SearchPersons`): identity attributes as
//! anyone might give them become the features of a record, cleansed exactly as the write path
//! cleanses; the candidates are the persons sharing one of its exact blocking keys (the same
//! lookup as the write path's) and those the tantivy index finds like it; each is scored with
//! the current match model against its stored features and ranked by probability.
//!
//! Must not: write. The store transaction it reads through is never committed, and the index
//! is only asked.

use super::apply::{self, FuzzyCandidates};
use super::EngineError;
use crate::catalog::Catalog;
use crate::cleanse::cleanse_record;
use crate::model::{EpochMillis, PersonId, RawRecord, RecordKey, TagCode};
use crate::resolve::decide::{describe_levels, score};
use crate::resolve::model::Score;
use crate::resolve::Features;
use crate::store::Store;
use std::collections::BTreeMap;

/// The identity attributes of a search, raw as given; `None` for an attribute not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonQuery {
    pub name: Option<String>,
    pub id_number: Option<String>,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
}

impl PersonQuery {
    /// The attributes as the canonical identity tags of a record.
    fn tags(self) -> BTreeMap<TagCode, String> {
        [
            ("name", self.name),
            ("id_number", self.id_number),
            ("birth_date", self.birth_date),
            ("gender", self.gender),
            ("phone", self.phone),
            ("address", self.address),
        ]
        .into_iter()
        .filter_map(|(tag, value)| {
            value
                .filter(|value| !value.trim().is_empty())
                .map(|value| (TagCode::new(tag), value))
        })
        .collect()
    }
}

/// One person found, with its comparison to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonMatch {
    pub person_id: PersonId,
    pub score: Score,
    /// The agreement of each feature in words.
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Best first: by log-odds (so by probability), ties by person id.
    pub matches: Vec<PersonMatch>,
    /// How many candidate persons were scored.
    pub n_candidates: usize,
}

/// Searches the store (and, through `fuzzy`, the index) for the persons most like `query`,
/// at most `top_k`. `now` is "today" for the cleansing rules that check dates.
pub(super) fn search_persons(
    store: &Store,
    catalog: &Catalog,
    fuzzy: FuzzyCandidates<'_>,
    query: PersonQuery,
    top_k: usize,
    now: EpochMillis,
) -> Result<SearchResult, EngineError> {
    let tags = query.tags();
    if tags.is_empty() {
        return Err(EngineError::InvalidArgument(
            "give at least one of name, id_number, birth_date, gender, phone, address".into(),
        ));
    }
    // The attributes are cleansed as a record of a source would be: only the canonical
    // identity tags are used, and every source may send those.
    let source = catalog
        .sources()
        .next()
        .and_then(|source| crate::model::SourceId::parse(&source.code))
        .ok_or_else(|| EngineError::InvalidArgument("the catalog has no source to cleanse the search as".into()))?;
    let raw = RawRecord {
        key: RecordKey {
            source,
            record_id: "search".into(),
        },
        observed_at: None,
        tags,
    };
    let clean = cleanse_record(raw, now, catalog);
    let features = Features::of_record(&clean, catalog);
    if features.is_empty() {
        return Err(EngineError::InvalidArgument(
            "no attribute is left after cleansing: each was empty, a placeholder such as 不详, or refused".into(),
        ));
    }
    // Never committed: `gather_candidates` may note a key it found too common, and that note
    // goes nowhere.
    let mut txn = store.begin();
    let mut candidates = apply::gather_candidates(&mut txn, &features)?;
    apply::add_fuzzy_candidates(&txn, fuzzy, &features, &mut candidates)?;
    let model = apply::current_model(&txn)?;
    let n_persons = txn.n_persons()?;
    let name_share = apply::name_share(&txn, &model);
    let mut matches: Vec<PersonMatch> = candidates
        .iter()
        .map(|candidate| {
            let score = score(&features, &candidate.features, &model, n_persons, &name_share);
            PersonMatch {
                person_id: candidate.person_id.clone(),
                explanation: describe_levels(&score),
                score,
            }
        })
        .collect();
    matches.sort_by(|a, b| {
        b.score
            .log_odds()
            .total_cmp(&a.score.log_odds())
            .then_with(|| a.person_id.cmp(&b.person_id))
    });
    let n_candidates = matches.len();
    matches.truncate(top_k);
    tracing::debug!(n_candidates, n_returned = matches.len(), "persons searched");
    Ok(SearchResult { matches, n_candidates })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::MemKv;
    use crate::wal::WalEntry;

    /// 2024-05-01: "today" for the date checks, at ingest and at search.
    const NOW: EpochMillis = 1_714_521_600_000;

    fn raw(record_id: &str, tags: &[(&str, &str)]) -> RawRecord {
        RawRecord {
            key: RecordKey {
                source: crate::model::SourceId::parse("D05").expect("well-formed"),
                record_id: record_id.into(),
            },
            observed_at: None,
            tags: tags
                .iter()
                .map(|(tag, value)| (TagCode::new(*tag), value.to_string()))
                .collect(),
        }
    }

    /// Three persons: 欧阳震华 (two records), his child 欧阳小明 (who gave the same phone) and
    /// 李娜. Returns the store and the person of each record.
    fn world(catalog: &Catalog) -> (Store, BTreeMap<String, PersonId>) {
        let store = Store::open(Box::new(MemKv::default())).expect("opens");
        let records = vec![
            raw(
                "a",
                &[
                    ("name", "欧阳震华"),
                    ("birth_date", "1988-03-14"),
                    ("phone", "13912345678"),
                    ("address", "浙江省杭州市西湖区文三路100号"),
                ],
            ),
            raw(
                "b",
                &[
                    ("name", "欧阳震华"),
                    ("birth_date", "1988-03-14"),
                    ("phone", "13912345678"),
                ],
            ),
            raw(
                "c",
                &[
                    ("name", "欧阳小明"),
                    ("birth_date", "2015-06-01"),
                    ("phone", "13912345678"),
                ],
            ),
            raw("d", &[("name", "李娜"), ("birth_date", "1990-01-02")]),
        ];
        let keys: Vec<String> = records.iter().map(|record| record.key.record_id.clone()).collect();
        let entry = WalEntry {
            sequence: 1,
            received_at: NOW,
            records,
            rejected: vec![],
            model: None,
            steward: None,
            actor: None,
        };
        let placed = apply::apply_entry(&store, catalog, entry).expect("applies");
        let persons = keys
            .into_iter()
            .zip(placed)
            .map(|(key, placed)| (key, placed.person_id))
            .collect();
        (store, persons)
    }

    fn no_index(_: &Features) -> Vec<PersonId> {
        Vec::new()
    }

    fn search(store: &Store, catalog: &Catalog, query: PersonQuery, top_k: usize) -> Result<SearchResult, EngineError> {
        search_persons(store, catalog, &no_index, query, top_k, NOW)
    }

    #[test]
    fn messy_attributes_find_the_right_person_first() {
        let catalog = Catalog::shipped();
        let (store, persons) = world(&catalog);
        assert_eq!(persons["a"], persons["b"]);
        assert_ne!(persons["a"], persons["c"]);
        // Traditional characters, a date in words, a full-width phone with country code.
        let query = PersonQuery {
            name: Some("歐陽震華".into()),
            birth_date: Some("1988年3月14日".into()),
            phone: Some("+86 １３９-１２３４-５６７８".into()),
            ..PersonQuery::default()
        };
        let result = search(&store, &catalog, query, 10).expect("searches");
        assert_eq!(result.matches[0].person_id, persons["a"]);
        assert!(result.matches[0].score.probability() > 0.99, "{result:?}");
        let levels: Vec<&str> = result.matches[0].explanation.split("; ").collect();
        assert_eq!(levels, ["name: the same", "birth date: the same", "phone: the same"]);
        // The child sharing the phone is found too, below the review threshold.
        let child = result
            .matches
            .iter()
            .find(|found| found.person_id == persons["c"])
            .expect("the child is a candidate");
        assert!(child.score.probability() < 0.5, "{child:?}");
        assert!(result.matches.iter().all(|found| found.person_id != persons["d"]));
        assert_eq!(result.n_candidates, result.matches.len());
    }

    #[test]
    fn top_k_cuts_the_ranking() {
        let catalog = Catalog::shipped();
        let (store, persons) = world(&catalog);
        let query = PersonQuery {
            name: Some("欧阳震华".into()),
            phone: Some("13912345678".into()),
            ..PersonQuery::default()
        };
        let result = search(&store, &catalog, query, 1).expect("searches");
        assert_eq!(result.matches.len(), 1);
        assert_eq!(result.matches[0].person_id, persons["a"]);
        assert_eq!(result.n_candidates, 2);
    }

    #[test]
    fn index_candidates_are_scored_from_the_store() {
        let catalog = Catalog::shipped();
        let (store, persons) = world(&catalog);
        // A misspelled name alone meets no exact key: only the index can bring candidates. It
        // names a person that no longer exists too, which is skipped.
        let target = persons["d"].clone();
        let index = move |_: &Features| vec![PersonId::new("P-gone"), target.clone()];
        let query = PersonQuery {
            name: Some("李娜娜".into()),
            ..PersonQuery::default()
        };
        let without = search(&store, &catalog, query.clone(), 10).expect("searches");
        assert!(without.matches.is_empty());
        let with = search_persons(&store, &catalog, &index, query, 10, NOW).expect("searches");
        assert_eq!(with.n_candidates, 1);
        assert_eq!(with.matches[0].person_id, persons["d"]);
        assert!(with.matches[0].explanation.starts_with("name: "), "{with:?}");
    }

    #[test]
    fn a_search_needs_a_usable_attribute() {
        let catalog = Catalog::shipped();
        let (store, _) = world(&catalog);
        let error = search(&store, &catalog, PersonQuery::default(), 10).expect_err("nothing given");
        assert!(error.to_string().contains("at least one of name"), "{error}");
        let blank = PersonQuery {
            name: Some("  ".into()),
            ..PersonQuery::default()
        };
        assert!(search(&store, &catalog, blank, 10).is_err());
        let placeholder = PersonQuery {
            name: Some("不详".into()),
            phone: Some("无".into()),
            ..PersonQuery::default()
        };
        let error = search(&store, &catalog, placeholder, 10).expect_err("only placeholders");
        assert!(error.to_string().contains("after cleansing"), "{error}");
    }
}
