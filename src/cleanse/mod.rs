//! Cleansing: the rule catalog (`rules`) applied to every record before resolution. Each tag
//! is standardized by its value type, identity values are cross-checked and derived, and every
//! rule that fires leaves a finding (rule, tag, original value). Pure functions of a record,
//! the catalog and the division table; never touches storage.

pub mod address;
pub mod date;
pub mod ethnicity;
pub mod gender;
pub mod id_number;
pub mod name;
pub mod phone;
pub mod rules;
pub mod text;
pub mod values;

use crate::catalog::{Catalog, IdentityRole, ValueType};
use crate::model::{CleanRecord, EpochMillis, Finding, RawRecord, TagCode, TagValue};
use address::Divisions;
use chrono::{Datelike, NaiveDate};
use id_number::{normalize_id_number, IdNumberProblem};
use std::collections::BTreeMap;

/// What a standardizer made of one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standardized {
    /// The standardized value; `None` when the value is refused (a `Reject` rule fired) or
    /// stands for "not recorded".
    pub value: Option<String>,
    /// The ids of the rules that fired (constants of `rules`), in the order they fired.
    pub rules: Vec<&'static str>,
}

impl Standardized {
    /// A value kept as it is, no rule fired.
    pub fn unchanged(value: &str) -> Standardized {
        Standardized {
            value: Some(value.to_string()),
            rules: Vec::new(),
        }
    }
}

/// Derived tags: filled by association rules, never sent by sources.
pub const BIRTHPLACE_REGION: &str = "birthplace_region";
pub const ADDRESS_DIVISION: &str = "address_division";
pub const HUKOU_DIVISION: &str = "hukou_division";

/// The most findings room is made for up front: 14 findings of 72 bytes take 1,008 bytes.
const FINDINGS_CAPACITY_MAX: usize = 14;

/// Tags that say who a record is about, for the completeness check.
const IDENTITY_ROLES: [IdentityRole; 5] = [
    IdentityRole::Name,
    IdentityRole::IdNumber,
    IdentityRole::BirthDate,
    IdentityRole::Phone,
    IdentityRole::Address,
];

/// Cleanses one record: standardizes every tag, derives and cross-checks identity values, and
/// records a finding for every rule that fired. `received_at` stands in for an observation
/// time the source did not give, and is "today" for the date checks.
pub fn cleanse_record(raw: RawRecord, received_at: EpochMillis, catalog: &Catalog) -> CleanRecord {
    let divisions = Divisions::shipped();
    let observed_at = raw.observed_at.unwrap_or(received_at);
    let today = chrono::DateTime::from_timestamp_millis(received_at)
        .map(|time| time.date_naive())
        .unwrap_or(NaiveDate::MAX);
    let mut cleanser = Cleanser {
        // Messy records carry about one finding for every two tags, plus the derived values:
        // room for those saves reallocating from an empty vector. The room stays under 1 KiB:
        // glibc serves larger blocks from its slow path, which also consolidates its free
        // lists and cost more than the reallocations saved.
        findings: Vec::with_capacity((raw.tags.len() / 2 + 4).min(FINDINGS_CAPACITY_MAX)),
        codes: Vec::with_capacity(raw.tags.len() + DERIVED_TAGS_MAX),
        values: Vec::with_capacity(raw.tags.len() + DERIVED_TAGS_MAX),
        derived: [0; DERIVED_TAGS_MAX],
        n_derived: 0,
        other_dates: Vec::new(),
    };
    let mut id_number = None;
    let mut roles = Roles::default();
    for (tag, raw_value) in raw.tags {
        let Some(def) = catalog.tag(tag.as_str()) else {
            // Admission refuses unknown tags; a catalog replaced under a running log could
            // still name one. Keep the value as sent.
            let cleaned = text::clean_text(&raw_value);
            cleanser.keep(tag, raw_value, Some(cleaned));
            continue;
        };
        let (cleaned, half_width_changed, whitespace_changed) = text::normalize_text(&raw_value);
        // 无 is a placeholder elsewhere but "no" in a yes/no tag: booleans decide for themselves.
        let placeholder = def.value_type != ValueType::Boolean && text::is_placeholder(&cleaned);
        if cleaned.is_empty() || placeholder {
            cleanser.fired_text_rules(half_width_changed, whitespace_changed, &tag, &raw_value);
            cleanser.fired(rules::PLACEHOLDER_VALUE, &tag, &raw_value);
            cleanser.keep(tag, raw_value, None);
            continue;
        }
        let mut other_date = None;
        let standardized = match def.value_type {
            ValueType::Name => name::standardize_name(&cleaned),
            ValueType::IdNumber => {
                let result = standardize_id_number(&cleaned, divisions);
                if def.identity_role == IdentityRole::IdNumber && result.rules.iter().all(|rule| !is_id_problem(rule)) {
                    id_number = result.value.clone();
                }
                result
            }
            ValueType::Date => {
                let mut result = date::standardize_date(&cleaned, today);
                let parsed = result.value.as_deref().and_then(date::parse_date);
                if def.identity_role == IdentityRole::BirthDate {
                    if parsed.is_some_and(|birth| birth.year() < 1900) {
                        result.rules.push(rules::BIRTH_DATE_TOO_EARLY);
                    }
                } else {
                    other_date = parsed;
                }
                result
            }
            ValueType::Gender => gender::standardize_gender(&cleaned),
            ValueType::Phone => phone::standardize_phone(&cleaned),
            ValueType::Address => {
                let (result, division) = address::standardize_address(&cleaned, divisions);
                let derived_tag = match def.identity_role {
                    IdentityRole::Address => Some(ADDRESS_DIVISION),
                    IdentityRole::HukouAddress => Some(HUKOU_DIVISION),
                    _ => None,
                };
                if let (Some(derived_tag), Some(division)) = (derived_tag, division) {
                    cleanser.derive(derived_tag, division, rules::ADDRESS_DIVISION, catalog);
                }
                result
            }
            ValueType::Code if def.identity_role == IdentityRole::Ethnicity => {
                ethnicity::standardize_ethnicity(&cleaned)
            }
            ValueType::Integer => values::standardize_number(&cleaned, true),
            ValueType::Decimal => values::standardize_number(&cleaned, false),
            ValueType::Boolean => values::standardize_boolean(&cleaned),
            ValueType::Text | ValueType::Code | ValueType::Identifier => Standardized {
                value: Some(cleaned.into_owned()),
                rules: Vec::new(),
            },
        };
        // The tag's findings follow any a standardizer derived (the address division), as
        // they always have: text rules first, then the standardizer's in the order they fired.
        cleanser.fired_text_rules(half_width_changed, whitespace_changed, &tag, &raw_value);
        for rule_id in &standardized.rules {
            cleanser.fired(rule_id, &tag, &raw_value);
        }
        // What is left after standardizing may itself only say "not recorded" ("{/}" -> "/").
        let mut value = standardized.value;
        let empty_after = value.as_deref().is_some_and(|value| {
            value.is_empty() || (def.value_type != ValueType::Boolean && text::is_placeholder(value))
        });
        if empty_after {
            value = None;
            cleanser.fired(rules::PLACEHOLDER_VALUE, &tag, &raw_value);
        }
        let kept = cleanser.keep(tag, raw_value, value);
        if def.identity_role != IdentityRole::None {
            roles.insert(def.identity_role, kept);
        }
        if let Some(date) = other_date {
            cleanser.other_dates.push((kept, date));
        }
    }
    cleanser.associate(id_number.as_deref(), &roles, catalog, divisions);
    let source = catalog.source(&raw.key.source);
    for required in source.map(|source| source.required_tags.as_slice()).unwrap_or_default() {
        let present = cleanser
            .place_of(required)
            .is_some_and(|kept| !cleanser.values[kept].standardized.is_empty());
        if !present {
            cleanser.finding(rules::REQUIRED_TAG_MISSING, Some(TagCode::new(required.as_str())), None);
        }
    }
    let has_identity = IDENTITY_ROLES.iter().any(|role| {
        roles
            .get(role)
            .is_some_and(|kept| !cleanser.values[kept].standardized.is_empty())
    });
    if !has_identity {
        cleanser.finding(rules::NO_IDENTITY_TAG, None, None);
    }
    let (tags, findings) = cleanser.finish();
    CleanRecord {
        key: raw.key,
        observed_at,
        tags,
        id_number,
        findings,
    }
}

fn is_id_problem(rule: &str) -> bool {
    matches!(
        rule,
        rules::ID_NUMBER_MALFORMED
            | rules::ID_NUMBER_CHECK_DIGIT
            | rules::ID_NUMBER_BIRTH_DATE
            | rules::ID_NUMBER_REGION
    )
}

/// ID numbers: normalized when valid, kept as sent (and flagged) when not. A number whose
/// region is unknown to GB/T 2260 is flagged but stays usable: the table lags new districts.
fn standardize_id_number(cleaned: &str, divisions: &Divisions) -> Standardized {
    match normalize_id_number(cleaned) {
        Ok(normalized) => {
            let mut rules = Vec::new();
            let digits = cleaned.chars().filter(char::is_ascii_alphanumeric).count();
            if digits == 15 {
                rules.push(rules::ID_NUMBER_LEGACY);
            } else if normalized != cleaned {
                rules.push(rules::ID_NUMBER_FORM);
            }
            if !divisions.has_province(&normalized[..2]) {
                rules.push(rules::ID_NUMBER_REGION);
            }
            Standardized {
                value: Some(normalized),
                rules,
            }
        }
        Err(problem) => Standardized {
            value: Some(cleaned.to_string()),
            rules: vec![match problem {
                IdNumberProblem::Malformed => rules::ID_NUMBER_MALFORMED,
                IdNumberProblem::BadCheckDigit => rules::ID_NUMBER_CHECK_DIGIT,
                IdNumberProblem::BadBirthDate => rules::ID_NUMBER_BIRTH_DATE,
                IdNumberProblem::BadRegion => rules::ID_NUMBER_REGION,
            }],
        },
    }
}

/// The tag that holds each identity role in a record (the last one sent, when several do), as
/// its place in `Cleanser::codes`. Indexed by role: looked up a few times per record, so a small
/// array beats a map.
#[derive(Default)]
struct Roles {
    tags: [Option<usize>; IDENTITY_ROLE_COUNT],
}

/// The most derived values one record can get: birth date, gender, birthplace and the two
/// address divisions (`Cleanser::derive` fills each tag once).
const DERIVED_TAGS_MAX: usize = 5;

/// How many `IdentityRole` variants there are; `Roles::slot` fails to compile if one is added.
const IDENTITY_ROLE_COUNT: usize = 10;

impl Roles {
    fn slot(role: IdentityRole) -> usize {
        match role {
            IdentityRole::None => 0,
            IdentityRole::IdNumber => 1,
            IdentityRole::Name => 2,
            IdentityRole::BirthDate => 3,
            IdentityRole::Gender => 4,
            IdentityRole::Phone => 5,
            IdentityRole::Address => 6,
            IdentityRole::HukouAddress => 7,
            IdentityRole::Ethnicity => 8,
            IdentityRole::SecondaryId => 9,
        }
    }

    fn insert(&mut self, role: IdentityRole, kept: usize) {
        self.tags[Roles::slot(role)] = Some(kept);
    }

    fn get(&self, role: &IdentityRole) -> Option<usize> {
        self.tags[Roles::slot(*role)]
    }
}

/// The record being cleansed.
struct Cleanser {
    findings: Vec<Finding>,
    /// The codes of the tags kept so far, each once, so that a tag is found by its place
    /// rather than by copying its code. Kept apart from `values` so that each vector stays
    /// under 1 KiB for records of up to 16 tags: glibc serves larger blocks from its slow path.
    codes: Vec<TagCode>,
    /// The values of the tags in `codes`, at the same places.
    values: Vec<TagValue>,
    /// Places in `codes` of the derived values no source sent (the first `n_derived`), which a
    /// tag kept later replaces.
    derived: [usize; DERIVED_TAGS_MAX],
    n_derived: usize,
    /// Dates of the record other than the birth date (by place in `codes`), for the check
    /// against it.
    other_dates: Vec<(usize, NaiveDate)>,
}

impl Cleanser {
    fn finding(&mut self, rule_id: &'static str, tag: Option<TagCode>, original: Option<String>) {
        self.findings.push(Finding {
            rule_id: std::borrow::Cow::Borrowed(rule_id),
            tag,
            original,
        });
    }

    /// Records that a rule fired on a tag's value as the source sent it.
    fn fired(&mut self, rule_id: &'static str, tag: &TagCode, raw: &str) {
        self.finding(rule_id, Some(tag.clone()), Some(raw.to_string()));
    }

    /// Records that a rule fired on a value kept (by place in `codes`).
    fn fired_on_kept(&mut self, rule_id: &'static str, kept: usize) {
        let (tag, original) = (self.codes[kept].clone(), self.values[kept].raw.clone());
        self.finding(rule_id, Some(tag), Some(original));
    }

    /// Records the character-level rules `text::normalize_text` reported for a tag's value.
    fn fired_text_rules(&mut self, half_width_changed: bool, whitespace_changed: bool, tag: &TagCode, raw: &str) {
        if half_width_changed {
            self.fired(rules::TEXT_HALF_WIDTH, tag, raw);
        }
        if whitespace_changed {
            self.fired(rules::TEXT_WHITESPACE, tag, raw);
        }
    }

    /// Stores a tag's raw and standardized value (empty when refused or not recorded), in place
    /// of a derived value of the same tag. Returns its place in `codes`.
    fn keep(&mut self, tag: TagCode, raw: String, standardized: Option<String>) -> usize {
        let value = TagValue {
            raw,
            standardized: standardized.unwrap_or_default(),
        };
        let derived = &self.derived[..self.n_derived];
        if let Some(&kept) = derived.iter().find(|&&kept| self.codes[kept] == tag) {
            self.values[kept] = value;
            return kept;
        }
        self.codes.push(tag);
        self.values.push(value);
        self.codes.len() - 1
    }

    /// The place of a tag in `codes`: a scan, done a few times per record.
    fn place_of(&self, tag: &str) -> Option<usize> {
        self.codes.iter().position(|kept| kept.as_str() == tag)
    }

    /// The tags kept, as a map, and the findings.
    fn finish(self) -> (BTreeMap<TagCode, TagValue>, Vec<Finding>) {
        let mut tags = BTreeMap::new();
        // Not `collect`: it gathers the pairs in a block of 72 bytes a tag, over 1 KiB.
        for (code, value) in self.codes.into_iter().zip(self.values) {
            tags.insert(code, value);
        }
        (tags, self.findings)
    }

    /// Fills a value derived from others. A value the source sent as a placeholder keeps its
    /// raw form; otherwise the raw value is empty: no source sent it.
    fn derive(&mut self, tag: &str, value: String, rule_id: &'static str, catalog: &Catalog) {
        if catalog.tag(tag).is_none() {
            return;
        }
        let tag = TagCode::new(tag);
        self.finding(rule_id, Some(tag.clone()), None);
        match self.place_of(tag.as_str()) {
            Some(kept) => self.values[kept].standardized = value,
            None => {
                // Each of the derived tags is pushed once at most.
                self.derived[self.n_derived] = self.codes.len();
                self.n_derived += 1;
                self.codes.push(tag);
                self.values.push(TagValue {
                    raw: String::new(),
                    standardized: value,
                });
            }
        }
    }

    fn standardized(&self, roles: &Roles, role: IdentityRole) -> Option<(usize, &str)> {
        let kept = roles.get(&role)?;
        let value = &self.values[kept];
        (!value.standardized.is_empty()).then_some((kept, value.standardized.as_str()))
    }

    /// Consistency and association: what a valid ID number says about birth date, gender
    /// and birthplace, checked against the record or filled in where it is silent.
    fn associate(&mut self, id_number: Option<&str>, roles: &Roles, catalog: &Catalog, divisions: &Divisions) {
        let id_birth = id_number.and_then(id_number::birth_date);
        let stated_birth = self
            .standardized(roles, IdentityRole::BirthDate)
            .and_then(|(kept, value)| date::parse_date(value).map(|date| (kept, date)));
        if let Some(id) = id_number {
            match (stated_birth, id_birth) {
                (Some((kept, stated)), Some(id_birth)) if stated != id_birth => {
                    self.fired_on_kept(rules::BIRTH_DATE_VS_ID_NUMBER, kept);
                }
                (None, Some(id_birth)) if roles.get(&IdentityRole::BirthDate).is_none() => {
                    let derived = date::format_date(id_birth);
                    self.derive("birth_date", derived, rules::BIRTH_DATE_FROM_ID_NUMBER, catalog);
                }
                _ => {}
            }
            let id_gender = if (id.as_bytes()[16] - b'0') % 2 == 1 {
                gender::MALE
            } else {
                gender::FEMALE
            };
            match self.standardized(roles, IdentityRole::Gender) {
                Some((kept, stated)) if (stated == gender::MALE || stated == gender::FEMALE) && stated != id_gender => {
                    self.fired_on_kept(rules::GENDER_VS_ID_NUMBER, kept);
                }
                None if roles.get(&IdentityRole::Gender).is_none() => {
                    self.derive("gender", id_gender.to_string(), rules::GENDER_FROM_ID_NUMBER, catalog);
                }
                _ => {}
            }
            if divisions.name_of(&id[..6]).is_some() {
                self.derive(
                    BIRTHPLACE_REGION,
                    id[..6].to_string(),
                    rules::BIRTHPLACE_FROM_ID_NUMBER,
                    catalog,
                );
            }
        }
        let birth = stated_birth.map(|(_, date)| date).or(id_birth);
        if let Some(birth) = birth {
            for idx in 0..self.other_dates.len() {
                let (kept, date) = self.other_dates[idx];
                if date < birth {
                    self.fired_on_kept(rules::DATE_BEFORE_BIRTH, kept);
                }
            }
        }
    }
}

/// Property shared by the standardizers' tests: a second pass keeps the value and fires no
/// fix (NOR-) rule; flags may fire again.
#[cfg(test)]
fn assert_fix_idempotent(
    standardize: fn(&str) -> Standardized,
    raw: &str,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let once = standardize(raw);
    if let Some(value) = &once.value {
        let twice = standardize(value);
        proptest::prop_assert_eq!(twice.value.as_ref(), Some(value), "raw {:?}", raw);
        proptest::prop_assert!(
            twice.rules.iter().all(|rule| !rule.starts_with("NOR-")),
            "{:?} on {:?}",
            twice.rules,
            value
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordKey, SourceId};
    use proptest::prelude::*;

    fn record(source: &str, tags: &[(&str, &str)]) -> RawRecord {
        RawRecord {
            key: RecordKey {
                source: SourceId::parse(source).expect("well-formed"),
                record_id: "r1".into(),
            },
            observed_at: None,
            tags: tags.iter().map(|(k, v)| (TagCode::new(*k), v.to_string())).collect(),
        }
    }

    /// 2024-06-01 00:00 UTC.
    const RECEIVED_AT: EpochMillis = 1_717_200_000_000;

    fn cleanse(source: &str, tags: &[(&str, &str)]) -> CleanRecord {
        cleanse_record(record(source, tags), RECEIVED_AT, &Catalog::shipped())
    }

    fn standardized(clean: &CleanRecord, tag: &str) -> String {
        clean
            .tags
            .get(&TagCode::new(tag))
            .map(|value| value.standardized.clone())
            .unwrap_or_default()
    }

    fn fired(clean: &CleanRecord, rule_id: &str, tag: Option<&str>) -> bool {
        clean
            .findings
            .iter()
            .any(|finding| finding.rule_id == rule_id && finding.tag.as_ref().map(TagCode::as_str) == tag)
    }

    /// One line per rule that `cleanse_record` itself decides (the standardizers' own rules are
    /// tested beside them): the tags sent, the rule, the tag it names, and whether it fires.
    #[track_caller]
    fn check(source: &str, tags: &[(&str, &str)], rule_id: &str, tag: Option<&str>, expected: bool) {
        let clean = cleanse(source, tags);
        assert_eq!(
            fired(&clean, rule_id, tag),
            expected,
            "{rule_id} on {tags:?}: {:?}",
            clean.findings
        );
    }

    const ID: &str = "33010619900102177X";

    #[test]
    fn record_level_rules() {
        check("D07", &[("name", "ＡＢＣ")], rules::TEXT_HALF_WIDTH, Some("name"), true);
        check("D07", &[("name", " 张伟 ")], rules::TEXT_WHITESPACE, Some("name"), true);
        check(
            "D07",
            &[("name", "张伟"), ("phone", "不详")],
            rules::PLACEHOLDER_VALUE,
            Some("phone"),
            true,
        );
        check(
            "D07",
            &[("name", "张伟"), ("phone", "N/A")],
            rules::PLACEHOLDER_VALUE,
            Some("phone"),
            true,
        );
        check(
            "D01",
            &[("name", "张伟")],
            rules::REQUIRED_TAG_MISSING,
            Some("id_number"),
            true,
        );
        check(
            "D01",
            &[("name", "张伟"), ("id_number", ID)],
            rules::REQUIRED_TAG_MISSING,
            Some("id_number"),
            false,
        );
        check(
            "D07",
            &[("d07.vehicle_plate", "浙A12345")],
            rules::NO_IDENTITY_TAG,
            None,
            true,
        );
        check("D07", &[("name", "张伟")], rules::NO_IDENTITY_TAG, None, false);
        check(
            "D07",
            &[("id_number", "330106900102177")],
            rules::ID_NUMBER_LEGACY,
            Some("id_number"),
            true,
        );
        check(
            "D07",
            &[("id_number", "33010619900102177x")],
            rules::ID_NUMBER_FORM,
            Some("id_number"),
            true,
        );
        check(
            "D07",
            &[("id_number", "330106199001021771")],
            rules::ID_NUMBER_CHECK_DIGIT,
            Some("id_number"),
            true,
        );
        check(
            "D07",
            &[("id_number", "33010619900102")],
            rules::ID_NUMBER_MALFORMED,
            Some("id_number"),
            true,
        );
        check(
            "D07",
            &[("id_number", "330106199013021774")],
            rules::ID_NUMBER_BIRTH_DATE,
            Some("id_number"),
            true,
        );
        check(
            "D07",
            &[("birth_date", "1890-01-01")],
            rules::BIRTH_DATE_TOO_EARLY,
            Some("birth_date"),
            true,
        );
        check(
            "D07",
            &[("birth_date", "1990-01-01")],
            rules::BIRTH_DATE_TOO_EARLY,
            Some("birth_date"),
            false,
        );
        check(
            "D07",
            &[("id_number", ID), ("birth_date", "1990-01-03")],
            rules::BIRTH_DATE_VS_ID_NUMBER,
            Some("birth_date"),
            true,
        );
        check(
            "D07",
            &[("id_number", ID), ("birth_date", "1990年1月2日")],
            rules::BIRTH_DATE_VS_ID_NUMBER,
            Some("birth_date"),
            false,
        );
        check(
            "D07",
            &[("id_number", ID), ("gender", "女")],
            rules::GENDER_VS_ID_NUMBER,
            Some("gender"),
            true,
        );
        check(
            "D07",
            &[("id_number", ID), ("gender", "M")],
            rules::GENDER_VS_ID_NUMBER,
            Some("gender"),
            false,
        );
        check(
            "D07",
            &[("id_number", ID)],
            rules::BIRTH_DATE_FROM_ID_NUMBER,
            Some("birth_date"),
            true,
        );
        check(
            "D07",
            &[("id_number", ID)],
            rules::GENDER_FROM_ID_NUMBER,
            Some("gender"),
            true,
        );
        check(
            "D07",
            &[("id_number", ID)],
            rules::BIRTHPLACE_FROM_ID_NUMBER,
            Some(BIRTHPLACE_REGION),
            true,
        );
        check(
            "D07",
            &[("address", "杭州西湖区文三路1号")],
            rules::ADDRESS_DIVISION,
            Some(ADDRESS_DIVISION),
            true,
        );
        check(
            "D01",
            &[("hukou_address", "浙江省杭州市西湖区文三路1号")],
            rules::ADDRESS_DIVISION,
            Some(HUKOU_DIVISION),
            true,
        );
        check(
            "D07",
            &[
                ("birth_date", "1990-01-02"),
                ("d07.vehicle_registration_date", "1985-05-05"),
            ],
            rules::DATE_BEFORE_BIRTH,
            Some("d07.vehicle_registration_date"),
            true,
        );
        check(
            "D07",
            &[
                ("birth_date", "1990-01-02"),
                ("d07.vehicle_registration_date", "2015-05-05"),
            ],
            rules::DATE_BEFORE_BIRTH,
            Some("d07.vehicle_registration_date"),
            false,
        );
    }

    #[test]
    fn design_example_is_cleansed() {
        let clean = cleanse(
            "D07",
            &[
                ("name", "張偉"),
                ("id_number", "33010619900102177x"),
                ("birth_date", "1990年1月2日"),
                ("gender", "男"),
                ("phone", "+86 138-0000-1234"),
                ("address", "杭州西湖区文三路1号"),
                ("d07.vehicle_plate", "浙A12345"),
            ],
        );
        assert_eq!(clean.id_number.as_deref(), Some(ID));
        assert_eq!(standardized(&clean, "name"), "张伟");
        assert_eq!(standardized(&clean, "birth_date"), "1990-01-02");
        assert_eq!(standardized(&clean, "phone"), "13800001234");
        assert_eq!(standardized(&clean, "address"), "浙江省杭州市西湖区文三路1号");
        assert_eq!(standardized(&clean, ADDRESS_DIVISION), "330106");
        assert_eq!(standardized(&clean, BIRTHPLACE_REGION), "330106");
        assert_eq!(clean.tags[&TagCode::new("name")].raw, "張偉", "the raw value is kept");
        let original = clean
            .findings
            .iter()
            .find(|finding| finding.rule_id == rules::NAME_SIMPLIFIED);
        assert_eq!(original.and_then(|finding| finding.original.as_deref()), Some("張偉"));
    }

    #[test]
    fn refused_values_keep_their_raw_form() {
        let clean = cleanse("D04", &[("name", "王芳"), ("d04.children_count", "两个")]);
        assert_eq!(clean.tags[&TagCode::new("d04.children_count")].raw, "两个");
        assert_eq!(standardized(&clean, "d04.children_count"), "");
        assert!(fired(&clean, rules::NUMBER_INVALID, Some("d04.children_count")));
    }

    proptest! {
        /// The record cleanser never panics on arbitrary Unicode in any tag, and cleansing the
        /// standardized values again changes nothing (idempotence).
        #[test]
        fn never_panics_and_is_idempotent(values in proptest::collection::vec("\\PC{0,24}", 8)) {
            let tags = ["name", "id_number", "birth_date", "gender", "phone", "address", "ethnicity", "d04.children_count"];
            let pairs: Vec<(&str, &str)> = tags.iter().copied().zip(values.iter().map(String::as_str)).collect();
            let once = cleanse("D04", &pairs);
            let again_pairs: Vec<(String, String)> = once
                .tags
                .iter()
                .filter(|(tag, value)| !value.raw.is_empty() && !value.standardized.is_empty() && tags.contains(&tag.as_str()))
                .map(|(tag, value)| (tag.to_string(), value.standardized.clone()))
                .collect();
            let again_refs: Vec<(&str, &str)> = again_pairs.iter().map(|(tag, value)| (tag.as_str(), value.as_str())).collect();
            let twice = cleanse("D04", &again_refs);
            for (tag, value) in &again_pairs {
                prop_assert_eq!(&standardized(&twice, tag), value, "tag {}", tag);
            }
        }
    }
}
