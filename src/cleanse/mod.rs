//! Cleansing: standardizes each tag of a record and records findings. Pure functions of a
//! record and the catalog; never touches storage.
//!
//! This is the first slice of the rule catalog: character normalization for every value and
//! the resident ID number rules. Findings name the rule and the tag, never the value.

pub mod id_number;
pub mod text;

use crate::catalog::{Catalog, IdentityRole};
use crate::model::{CleanRecord, EpochMillis, Finding, RawRecord, TagValue};
use id_number::{normalize_id_number, IdNumberProblem};

/// Rule ids, stable across releases.
pub const RULE_ID_MALFORMED: &str = "ACC-001";
pub const RULE_ID_CHECK_DIGIT: &str = "ACC-002";
pub const RULE_ID_BIRTH_DATE: &str = "ACC-003";
pub const RULE_ID_REGION: &str = "ACC-004";
pub const RULE_ID_LEGACY_UPGRADED: &str = "NOR-002";
pub const RULE_TEXT_NORMALIZED: &str = "NOR-001";

/// Standardizes every tag; the raw value is kept beside the standardized one.
/// `received_at` stands in for an observation time the source did not give.
pub fn cleanse_record(raw: &RawRecord, received_at: EpochMillis, catalog: &Catalog) -> CleanRecord {
    let mut findings = Vec::new();
    let mut id_number = None;
    let mut tags = std::collections::BTreeMap::new();
    for (tag, raw_value) in &raw.tags {
        let role = catalog.tag(tag.as_str()).map(|def| def.identity_role);
        let mut standardized = text::clean_text(raw_value);
        if standardized != *raw_value {
            findings.push(Finding {
                rule_id: RULE_TEXT_NORMALIZED.into(),
                tag: tag.clone(),
            });
        }
        if role == Some(IdentityRole::IdNumber) {
            match normalize_id_number(&standardized) {
                Ok(normalized) => {
                    if standardized.chars().filter(char::is_ascii_alphanumeric).count() == 15 {
                        findings.push(Finding {
                            rule_id: RULE_ID_LEGACY_UPGRADED.into(),
                            tag: tag.clone(),
                        });
                    }
                    standardized = normalized.clone();
                    id_number = Some(normalized);
                }
                Err(problem) => {
                    let rule_id = match problem {
                        IdNumberProblem::Malformed => RULE_ID_MALFORMED,
                        IdNumberProblem::BadCheckDigit => RULE_ID_CHECK_DIGIT,
                        IdNumberProblem::BadBirthDate => RULE_ID_BIRTH_DATE,
                        IdNumberProblem::BadRegion => RULE_ID_REGION,
                    };
                    findings.push(Finding {
                        rule_id: rule_id.into(),
                        tag: tag.clone(),
                    });
                }
            }
        }
        tags.insert(
            tag.clone(),
            TagValue {
                raw: raw_value.clone(),
                standardized,
            },
        );
    }
    CleanRecord {
        key: raw.key.clone(),
        observed_at: raw.observed_at.unwrap_or(received_at),
        tags,
        id_number,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordKey, SourceId, TagCode};

    fn record(tags: &[(&str, &str)]) -> RawRecord {
        RawRecord {
            key: RecordKey {
                source: SourceId::parse("D07").expect("well-formed"),
                record_id: "r1".into(),
            },
            observed_at: None,
            tags: tags.iter().map(|(k, v)| (TagCode::new(*k), v.to_string())).collect(),
        }
    }

    #[test]
    fn id_number_is_normalized_and_raw_kept() {
        let catalog = Catalog::shipped();
        let clean = cleanse_record(
            &record(&[("id_number", "110105491231002"), ("name", " 张伟 ")]),
            0,
            &catalog,
        );
        assert_eq!(clean.id_number.as_deref(), Some("11010519491231002X"));
        let id_tag = &clean.tags[&TagCode::new("id_number")];
        assert_eq!(id_tag.raw, "110105491231002");
        assert_eq!(id_tag.standardized, "11010519491231002X");
        assert_eq!(clean.tags[&TagCode::new("name")].standardized, "张伟");
        let rules: Vec<&str> = clean.findings.iter().map(|f| f.rule_id.as_str()).collect();
        assert!(rules.contains(&RULE_ID_LEGACY_UPGRADED), "{rules:?}");
        assert!(rules.contains(&RULE_TEXT_NORMALIZED), "{rules:?}");
    }

    #[test]
    fn bad_check_digit_is_flagged_not_repaired() {
        let catalog = Catalog::shipped();
        let clean = cleanse_record(&record(&[("id_number", "110105194912310021")]), 0, &catalog);
        assert_eq!(clean.id_number, None);
        assert_eq!(
            clean.tags[&TagCode::new("id_number")].standardized,
            "110105194912310021"
        );
        assert_eq!(clean.findings[0].rule_id, RULE_ID_CHECK_DIGIT);
    }
}
