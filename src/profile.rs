//! Survivorship: picks each tag's winning value from a person's records, with provenance.
//! Pure: never touches the store or the index.

use crate::catalog::{Catalog, Survivorship};
use crate::model::{EpochMillis, RecordKey, SourceId, TagCode, TagValue};
use crate::store::ProfileEntry;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// One record of the person, as survivorship needs it.
pub struct RecordView<'a> {
    pub key: &'a RecordKey,
    pub observed_at: EpochMillis,
    pub tags: &'a BTreeMap<TagCode, TagValue>,
}

/// The winning standardized value of every tag any record carries. Ties are broken by the
/// record key, so the result never depends on the order of `records`.
pub fn survive(records: &[RecordView<'_>], catalog: &Catalog) -> BTreeMap<TagCode, ProfileEntry> {
    let mut profile = BTreeMap::new();
    for record in records {
        offer(&mut profile, record, catalog);
    }
    let collective: BTreeSet<TagCode> = records
        .iter()
        .flat_map(|record| record.tags.keys())
        .filter(|tag| is_collective(tag, catalog))
        .cloned()
        .collect();
    profile.extend(survive_tags(records, &collective, catalog));
    profile
}

/// The winners of `tags` only, among `records`.
pub fn survive_tags(
    records: &[RecordView<'_>],
    tags: &BTreeSet<TagCode>,
    catalog: &Catalog,
) -> BTreeMap<TagCode, ProfileEntry> {
    let mut profile = BTreeMap::new();
    let mut counts: BTreeMap<&TagCode, BTreeMap<&str, usize>> = BTreeMap::new();
    for record in records {
        for (tag, value) in record.tags.range(..).filter(|(tag, _)| tags.contains(*tag)) {
            if !value.standardized.is_empty() && is_collective(tag, catalog) {
                *counts
                    .entry(tag)
                    .or_default()
                    .entry(value.standardized.as_str())
                    .or_default() += 1;
            }
        }
    }
    for record in records {
        for (tag, value) in record.tags.range(..).filter(|(tag, _)| tags.contains(*tag)) {
            offer_value(&mut profile, record, tag, value, counts.get(tag), catalog);
        }
    }
    profile
}

/// Whether a tag's winner depends on all the person's records at once (most frequent):
/// `offer` leaves such tags alone, and they are recomputed with `survive_tags` over every
/// record.
pub fn is_collective(tag: &TagCode, catalog: &Catalog) -> bool {
    rule_of(tag, catalog) == Survivorship::MostFrequent
}

fn rule_of(tag: &TagCode, catalog: &Catalog) -> Survivorship {
    catalog
        .tag(tag.as_str())
        .map_or(Survivorship::MostRecent, |def| def.survivorship)
}

/// Lets one record compete for every tag it carries: each value replaces the current winner
/// if it ranks better. Offering records one by one gives the same profile as `survive` over
/// all of them, which is what lets the engine update a profile without reading every record;
/// the exception is the collective tags (`is_collective`), which it leaves to `survive_tags`.
pub fn offer(profile: &mut BTreeMap<TagCode, ProfileEntry>, record: &RecordView<'_>, catalog: &Catalog) {
    for (tag, value) in record.tags {
        if !is_collective(tag, catalog) {
            offer_value(profile, record, tag, value, None, catalog);
        }
    }
}

/// `counts`: how many of the person's records carry each value of the tag (most frequent).
fn offer_value(
    profile: &mut BTreeMap<TagCode, ProfileEntry>,
    record: &RecordView<'_>,
    tag: &TagCode,
    value: &TagValue,
    counts: Option<&BTreeMap<&str, usize>>,
    catalog: &Catalog,
) {
    if value.standardized.is_empty() {
        return;
    }
    let rule = rule_of(tag, catalog);
    let count_of = |value: &str| counts.and_then(|counts| counts.get(value)).copied().unwrap_or(0);
    let challenger = Contender {
        source: &record.key.source,
        observed_at: record.observed_at,
        record_id: &record.key.record_id,
        value: &value.standardized,
        count: count_of(&value.standardized),
    };
    let better = match profile.get(tag) {
        None => true,
        Some(current) => {
            let holder = Contender {
                source: &current.source,
                observed_at: current.observed_at,
                record_id: &current.record_id,
                value: &current.value,
                count: count_of(&current.value),
            };
            challenger.rank(rule, catalog) < holder.rank(rule, catalog)
        }
    };
    if better {
        profile.insert(
            tag.clone(),
            ProfileEntry {
                value: value.standardized.clone(),
                source: record.key.source.clone(),
                record_id: record.key.record_id.clone(),
                observed_at: record.observed_at,
            },
        );
    }
}

/// A value competing for a tag, with what the rules rank it by.
struct Contender<'r> {
    source: &'r SourceId,
    observed_at: EpochMillis,
    record_id: &'r str,
    value: &'r str,
    /// Records carrying the value (most frequent only).
    count: usize,
}

impl<'r> Contender<'r> {
    /// Smaller ranks win. Every rule ends with the source and record id, so there are no ties.
    fn rank(
        &self,
        rule: Survivorship,
        catalog: &Catalog,
    ) -> (Reverse<usize>, u32, Reverse<EpochMillis>, u32, &'r SourceId, &'r str) {
        let authority = catalog.authority_rank(self.source);
        let recency = Reverse(self.observed_at);
        match rule {
            Survivorship::SourcePriority => (Reverse(0), authority, recency, 0, self.source, self.record_id),
            // Equal times fall back to authority.
            Survivorship::MostRecent => (Reverse(0), 0, recency, authority, self.source, self.record_id),
            Survivorship::MostFrequent => (Reverse(self.count), 0, recency, authority, self.source, self.record_id),
            Survivorship::MostComplete => (
                Reverse(self.value.chars().count()),
                0,
                recency,
                authority,
                self.source,
                self.record_id,
            ),
        }
    }
}

/// One record's value of a tag, as lineage shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub key: RecordKey,
    pub observed_at: EpochMillis,
    pub raw: String,
    pub standardized: String,
}

/// One distinct standardized value of a tag across a person's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinctValue {
    pub value: String,
    pub first_seen: EpochMillis,
    pub last_seen: EpochMillis,
    pub sources: BTreeSet<SourceId>,
    pub n_records: usize,
}

/// Where a tag's value came from: the winner and why, every record that carries the tag, and
/// the distinct values with when and where each was seen (a phone or address history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagLineage {
    pub winner: Option<ProfileEntry>,
    pub rule: Survivorship,
    /// Why the winner won, in words.
    pub reason: String,
    /// Newest first.
    pub contributions: Vec<Contribution>,
    /// The most recently seen first.
    pub values: Vec<DistinctValue>,
}

/// The lineage of one tag over a person's records (the same survivorship as `survive`).
pub fn lineage(records: &[RecordView<'_>], tag: &TagCode, catalog: &Catalog) -> TagLineage {
    let rule = catalog
        .tag(tag.as_str())
        .map_or(Survivorship::MostRecent, |def| def.survivorship);
    let tags: BTreeSet<TagCode> = [tag.clone()].into_iter().collect();
    let winner = survive_tags(records, &tags, catalog).remove(tag);
    let mut contributions: Vec<Contribution> = records
        .iter()
        .filter_map(|record| {
            let value = record.tags.get(tag)?;
            Some(Contribution {
                key: record.key.clone(),
                observed_at: record.observed_at,
                raw: value.raw.clone(),
                standardized: value.standardized.clone(),
            })
        })
        .collect();
    contributions.sort_by(|a, b| b.observed_at.cmp(&a.observed_at).then_with(|| a.key.cmp(&b.key)));
    let mut values: BTreeMap<&str, DistinctValue> = BTreeMap::new();
    for contribution in contributions.iter().filter(|c| !c.standardized.is_empty()) {
        let entry = values
            .entry(contribution.standardized.as_str())
            .or_insert_with(|| DistinctValue {
                value: contribution.standardized.clone(),
                first_seen: contribution.observed_at,
                last_seen: contribution.observed_at,
                sources: BTreeSet::new(),
                n_records: 0,
            });
        entry.first_seen = entry.first_seen.min(contribution.observed_at);
        entry.last_seen = entry.last_seen.max(contribution.observed_at);
        entry.sources.insert(contribution.key.source.clone());
        entry.n_records += 1;
    }
    let mut values: Vec<DistinctValue> = values.into_values().collect();
    values.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.value.cmp(&b.value)));
    let reason = match &winner {
        None => "no record of this person carries a value".to_string(),
        Some(entry) => match rule {
            Survivorship::SourcePriority => format!(
                "source priority: {} ranks {} in authority for this tag's identity data, and this is its most recent value",
                entry.source,
                catalog.authority_rank(&entry.source)
            ),
            Survivorship::MostRecent => {
                "most recent: the latest observation wins, whatever its source".to_string()
            }
            Survivorship::MostFrequent => {
                let n = contributions.iter().filter(|c| c.standardized == entry.value).count();
                format!("most frequent: {n} of the {} records carrying the tag hold this value", contributions.len())
            }
            Survivorship::MostComplete => {
                "most complete: the longest value wins, as the most detailed; then the most recent".to_string()
            }
        },
    };
    TagLineage {
        winner,
        rule,
        reason,
        contributions,
        values,
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
    fn lineage_names_the_winner_and_every_contribution() {
        let catalog = Catalog::shipped();
        let (k1, k2, k3) = (key("D01", "a"), key("D07", "b"), key("D13", "c"));
        let (t1, t2, t3) = (
            tags(&[("phone", "13800000001")]),
            tags(&[("phone", "13800000002")]),
            tags(&[("phone", "13800000001"), ("name", "张伟")]),
        );
        let records = [
            RecordView {
                key: &k1,
                observed_at: 1_000,
                tags: &t1,
            },
            RecordView {
                key: &k2,
                observed_at: 3_000,
                tags: &t2,
            },
            RecordView {
                key: &k3,
                observed_at: 2_000,
                tags: &t3,
            },
        ];
        let lineage = lineage(&records, &TagCode::new("phone"), &catalog);
        assert_eq!(lineage.rule, Survivorship::MostRecent);
        assert_eq!(
            lineage.winner.as_ref().map(|entry| entry.value.as_str()),
            Some("13800000002")
        );
        assert!(lineage.reason.starts_with("most recent"), "{}", lineage.reason);
        let order: Vec<&str> = lineage.contributions.iter().map(|c| c.key.record_id.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(lineage.values.len(), 2);
        let older = &lineage.values[1];
        assert_eq!(older.value, "13800000001");
        assert_eq!((older.first_seen, older.last_seen, older.n_records), (1_000, 2_000, 2));
        assert_eq!(
            older.sources.iter().map(SourceId::as_str).collect::<Vec<_>>(),
            ["D01", "D13"]
        );
        let name = super::lineage(&records, &TagCode::new("name"), &catalog);
        assert_eq!(name.rule, Survivorship::SourcePriority);
        assert!(name.reason.contains("D13"), "{}", name.reason);
        let none = super::lineage(&records, &TagCode::new("gender"), &catalog);
        assert!(none.winner.is_none() && none.contributions.is_empty());
    }

    #[test]
    fn most_frequent_and_most_complete() {
        let catalog = Catalog::shipped_with_rules(&[
            ("ethnicity", Survivorship::MostFrequent),
            ("hukou_address", Survivorship::MostComplete),
        ]);
        let keys = [key("D01", "a"), key("D07", "b"), key("D13", "c")];
        let tag_maps = [
            tags(&[("ethnicity", "回族"), ("hukou_address", "浙江省杭州市西湖区")]),
            tags(&[("ethnicity", "汉族"), ("hukou_address", "浙江省杭州市西湖区文三路1号")]),
            tags(&[("ethnicity", "汉族"), ("hukou_address", "杭州市")]),
        ];
        let views: Vec<RecordView<'_>> = (0..3)
            .map(|idx| RecordView {
                key: &keys[idx],
                observed_at: [3_000, 1_000, 2_000][idx],
                tags: &tag_maps[idx],
            })
            .collect();
        let profile = survive(&views, &catalog);
        // Two records of three say 汉族, although public security's more recent one says 回族.
        assert_eq!(profile[&TagCode::new("ethnicity")].value, "汉族");
        assert_eq!(
            profile[&TagCode::new("hukou_address")].value,
            "浙江省杭州市西湖区文三路1号"
        );
        // Offering record by record leaves most-frequent tags to the full computation.
        let mut incremental = BTreeMap::new();
        for view in &views {
            offer(&mut incremental, view, &catalog);
        }
        assert!(!incremental.contains_key(&TagCode::new("ethnicity")));
        assert_eq!(
            incremental[&TagCode::new("hukou_address")],
            profile[&TagCode::new("hukou_address")]
        );
        let ethnicity = lineage(&views, &TagCode::new("ethnicity"), &catalog);
        assert!(
            ethnicity.reason.starts_with("most frequent: 2 of the 3"),
            "{}",
            ethnicity.reason
        );
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

    proptest::proptest! {
        /// Offering records one at a time, in any order, equals survivorship over all of them,
        /// and recomputing some tags over all records changes nothing.
        #[test]
        fn incremental_equals_full(
            raw in proptest::collection::vec((0usize..5, 0i64..4, proptest::collection::vec((0usize..4, "[ab]{0,2}"), 0..4)), 1..8),
            order_seed in 0u64..1000,
        ) {
            let catalog = Catalog::shipped();
            let sources = ["D01", "D02", "D07", "D13", "D40"];
            let tag_codes = ["name", "phone", "gender", "address"];
            let keys: Vec<RecordKey> = raw.iter().enumerate().map(|(idx, (source_idx, _, _))| key(sources[*source_idx], &idx.to_string())).collect();
            let tag_maps: Vec<BTreeMap<TagCode, TagValue>> = raw.iter().map(|(_, _, pairs)| {
                let pairs: Vec<(&str, &str)> = pairs.iter().map(|(tag_idx, value)| (tag_codes[*tag_idx], value.as_str())).collect();
                tags(&pairs)
            }).collect();
            let views: Vec<RecordView<'_>> = raw.iter().enumerate().map(|(idx, (_, time, _))| RecordView { key: &keys[idx], observed_at: *time, tags: &tag_maps[idx] }).collect();
            let full = survive(&views, &catalog);
            let mut order: Vec<usize> = (0..views.len()).collect();
            order.rotate_left(order_seed as usize % views.len());
            let mut incremental = BTreeMap::new();
            for idx in order {
                offer(&mut incremental, &views[idx], &catalog);
            }
            proptest::prop_assert_eq!(&incremental, &full);
            let some_tags: BTreeSet<TagCode> = [TagCode::new("name"), TagCode::new("phone")].into_iter().collect();
            let partial = survive_tags(&views, &some_tags, &catalog);
            let expected: BTreeMap<TagCode, ProfileEntry> = full.into_iter().filter(|(tag, _)| some_tags.contains(tag)).collect();
            proptest::prop_assert_eq!(partial, expected);
        }
    }
}
