//! Survivorship: picks each tag's winning value from a person's records, with provenance.
//! Pure: never touches the store or the index.

use crate::catalog::{Catalog, Survivorship};
use crate::model::{EpochMillis, RecordKey, TagCode, TagValue};
use crate::store::ProfileEntry;
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// One record of the person, as survivorship needs it.
pub struct RecordView<'a> {
    pub key: &'a RecordKey,
    pub observed_at: EpochMillis,
    pub tags: &'a BTreeMap<TagCode, TagValue>,
}

/// The winning standardized value of every tag any record carries. Ties are broken by the
/// record key, so the result never depends on the order of `records`.
pub fn survive(records: &[RecordView<'_>], catalog: &Catalog) -> BTreeMap<TagCode, ProfileEntry> {
    let mut winners: BTreeMap<&TagCode, (&RecordView<'_>, &TagValue)> = BTreeMap::new();
    for record in records {
        for (tag, value) in record.tags {
            if value.standardized.is_empty() {
                continue;
            }
            let rule = catalog
                .tag(tag.as_str())
                .map_or(Survivorship::MostRecent, |def| def.survivorship);
            let better = match winners.get(tag) {
                None => true,
                Some((current, _)) => rank(record, rule, catalog) < rank(current, rule, catalog),
            };
            if better {
                winners.insert(tag, (record, value));
            }
        }
    }
    winners
        .into_iter()
        .map(|(tag, (record, value))| {
            (
                tag.clone(),
                ProfileEntry {
                    value: value.standardized.clone(),
                    source: record.key.source.clone(),
                    record_id: record.key.record_id.clone(),
                    observed_at: record.observed_at,
                },
            )
        })
        .collect()
}

/// Smaller ranks win.
fn rank<'r>(
    record: &'r RecordView<'_>,
    rule: Survivorship,
    catalog: &Catalog,
) -> (u32, Reverse<EpochMillis>, u32, &'r RecordKey) {
    let authority = catalog.authority_rank(&record.key.source);
    match rule {
        Survivorship::SourcePriority => (authority, Reverse(record.observed_at), 0, record.key),
        // Equal times fall back to authority.
        Survivorship::MostRecent => (0, Reverse(record.observed_at), authority, record.key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceId;

    fn key(source: &str, record_id: &str) -> RecordKey {
        RecordKey {
            source: SourceId::parse(source).expect("well-formed"),
            record_id: record_id.into(),
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<TagCode, TagValue> {
        pairs
            .iter()
            .map(|(tag, value)| {
                let value = TagValue {
                    raw: value.to_string(),
                    standardized: value.to_string(),
                };
                (TagCode::new(*tag), value)
            })
            .collect()
    }

    #[test]
    fn source_priority_and_most_recent() {
        let catalog = Catalog::shipped();
        // D01 (public security) is the most authoritative source for names; phones follow the
        // most recent observation whatever its source.
        let (k1, k2) = (key("D01", "a"), key("D07", "b"));
        let (t1, t2) = (
            tags(&[("name", "张伟"), ("phone", "13800000001")]),
            tags(&[("name", "张玮"), ("phone", "13800000002"), ("gender", "")]),
        );
        let older_authoritative = RecordView {
            key: &k1,
            observed_at: 1_000,
            tags: &t1,
        };
        let newer_other = RecordView {
            key: &k2,
            observed_at: 2_000,
            tags: &t2,
        };
        for records in [
            vec![older_authoritative, newer_other],
            vec![
                RecordView {
                    key: &k2,
                    observed_at: 2_000,
                    tags: &t2,
                },
                RecordView {
                    key: &k1,
                    observed_at: 1_000,
                    tags: &t1,
                },
            ],
        ] {
            let profile = survive(&records, &catalog);
            assert_eq!(profile[&TagCode::new("name")].value, "张伟");
            assert_eq!(profile[&TagCode::new("name")].source.as_str(), "D01");
            assert_eq!(profile[&TagCode::new("phone")].value, "13800000002");
            assert_eq!(profile[&TagCode::new("phone")].record_id, "b");
            assert!(!profile.contains_key(&TagCode::new("gender")), "empty values never win");
        }
    }
}
