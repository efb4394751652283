//! The rule catalog: every cleansing rule with its stable id, class, action, the tags it
//! applies to and a one-line description. Findings name rules by these ids, so the ids never
//! change meaning once released. `popmaster rules` prints this table.

use crate::model::Rejection;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum RuleClass {
    Completeness,
    Accuracy,
    Normativity,
    Consistency,
    Association,
    Uniqueness,
}

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RuleAction {
    /// The value is standardized (or derived); the original is kept beside it.
    Fix,
    /// The value is kept as it is; the finding is recorded.
    Flag,
    /// The value (or, where the description says so, the whole record) is refused.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub class: RuleClass,
    pub action: RuleAction,
    pub applies_to: &'static str,
    pub description: &'static str,
}

macro_rules! rules {
    ($($name:ident = $id:literal, $class:ident, $action:ident, $applies_to:literal, $description:literal;)*) => {
        $(pub const $name: &str = $id;)*
        /// Every rule, in id order within each class.
        pub const RULES: &[Rule] = &[
            $(Rule {
                id: $id,
                class: RuleClass::$class,
                action: RuleAction::$action,
                applies_to: $applies_to,
                description: $description,
            },)*
        ];
    };
}

rules! {
    REQUIRED_TAG_MISSING = "COM-001", Completeness, Flag, "the source's required tags",
        "a tag the source must always send is missing";
    NO_IDENTITY_TAG = "COM-002", Completeness, Flag, "record",
        "the record carries no identity tag (name, ID number, birth date, phone or address)";
    PLACEHOLDER_VALUE = "COM-003", Completeness, Fix, "every tag",
        "placeholder values (无, 不详, 未知, 暂无, 空, N/A, NULL, -, /) are treated as not recorded";
    ADDRESS_INCOMPLETE = "COM-004", Completeness, Flag, "address, hukou_address",
        "the address stops at the district, with no street, village or house number";
    MISSING_RECORD_KEY = "COM-005", Completeness, Reject, "record",
        "record without a usable source or record_id: missing, malformed, too long or with control characters (the record is refused)";
    NO_TAGS = "COM-006", Completeness, Reject, "record",
        "record with no tag that has a value (the record is refused)";

    ID_NUMBER_MALFORMED = "ACC-001", Accuracy, Flag, "id_number",
        "ID number is not 15 or 18 digits (18 may end in X)";
    ID_NUMBER_CHECK_DIGIT = "ACC-002", Accuracy, Flag, "id_number",
        "ID number fails the GB 11643 / ISO 7064 MOD 11-2 check digit (flagged, never repaired)";
    ID_NUMBER_BIRTH_DATE = "ACC-003", Accuracy, Flag, "id_number",
        "ID number embeds a birth date that is not a real date";
    ID_NUMBER_REGION = "ACC-004", Accuracy, Flag, "id_number",
        "ID number's region code names no GB/T 2260 province";
    DATE_INVALID = "ACC-005", Accuracy, Flag, "date tags",
        "date cannot be read or is not a real calendar date";
    DATE_IN_FUTURE = "ACC-006", Accuracy, Flag, "date tags",
        "date lies after the day the record was received";
    BIRTH_DATE_TOO_EARLY = "ACC-007", Accuracy, Flag, "birth_date",
        "birth date before 1900";
    PHONE_INVALID = "ACC-008", Accuracy, Flag, "phone tags",
        "phone is neither an 11-digit mobile number (1[3-9]...) nor a landline with an area code";
    GENDER_UNRECOGNIZED = "ACC-009", Accuracy, Flag, "gender",
        "gender value is not one the standardizer knows";
    NAME_CHARACTERS = "ACC-010", Accuracy, Flag, "name tags",
        "name contains digits or symbols";
    ADDRESS_UNPLACED = "ACC-011", Accuracy, Flag, "address tags",
        "address names no GB/T 2260 province, city or district";
    ETHNICITY_UNKNOWN = "ACC-012", Accuracy, Flag, "ethnicity",
        "ethnicity is not one of the 56 groups of GB 3304";
    NUMBER_INVALID = "ACC-013", Accuracy, Reject, "integer and decimal tags",
        "a numeric tag holds something that is not a number (the value is refused)";
    BOOLEAN_INVALID = "ACC-014", Accuracy, Reject, "yes/no tags",
        "a yes/no tag holds something else (the value is refused)";
    VALUE_TOO_LONG = "ACC-015", Accuracy, Reject, "every tag",
        "a value longer than the configured limit (the record is refused)";
    TOO_MANY_TAGS = "ACC-016", Accuracy, Reject, "record",
        "more tags than the configured limit (the record is refused)";

    TEXT_HALF_WIDTH = "NOR-001", Normativity, Fix, "every tag",
        "full-width letters, digits and punctuation become half-width";
    TEXT_WHITESPACE = "NOR-002", Normativity, Fix, "every tag",
        "control and zero-width characters removed, white space collapsed and trimmed";
    NAME_SIMPLIFIED = "NOR-003", Normativity, Fix, "name tags",
        "traditional Chinese characters in names become simplified";
    NAME_SEPARATOR = "NOR-004", Normativity, Fix, "name tags",
        "minority-name separators (·, •, ., ・, ‧, 。, spaces around them) become ·";
    NAME_LATIN = "NOR-005", Normativity, Fix, "name tags",
        "Latin-script names upper-cased with single spaces";
    NAME_SPACES = "NOR-006", Normativity, Fix, "name tags",
        "spaces inside Chinese names removed (张 伟 becomes 张伟)";
    ID_NUMBER_FORM = "NOR-007", Normativity, Fix, "id_number",
        "ID numbers lose separators and spaces; a lower-case x becomes X";
    ID_NUMBER_LEGACY = "NOR-008", Normativity, Fix, "id_number",
        "15-digit legacy ID numbers become 18 digits (century 19, computed check digit)";
    DATE_FORMAT = "NOR-009", Normativity, Fix, "date tags",
        "dates (1990-01-02, 19900102, 1990/1/2, 1990.1.2, 1990年1月2日, ...) become YYYY-MM-DD";
    PHONE_COUNTRY_CODE = "NOR-010", Normativity, Fix, "phone tags",
        "+86, 0086 and 86 prefixes removed from phone numbers";
    PHONE_SEPARATORS = "NOR-011", Normativity, Fix, "phone tags",
        "spaces, dashes, dots and brackets removed; landlines written AREA-NUMBER";
    GENDER_CODE = "NOR-012", Normativity, Fix, "gender",
        "gender codes (男/女, M/F, 1/2, GB/T 2261.1 0/1/2/9) become 男, 女, 未知的性别 or 未说明的性别";
    ADDRESS_SIMPLIFIED = "NOR-013", Normativity, Fix, "address tags",
        "traditional Chinese characters in addresses become simplified";
    ADDRESS_EXPANDED = "NOR-014", Normativity, Fix, "address tags",
        "abbreviated province, city and district names expanded from GB/T 2260 (杭州西湖区 becomes 浙江省杭州市西湖区)";
    ETHNICITY_NAME = "NOR-015", Normativity, Fix, "ethnicity",
        "ethnicity codes and short forms (01, 汉) become the GB 3304 name (汉族)";
    BOOLEAN_FORM = "NOR-016", Normativity, Fix, "yes/no tags",
        "yes/no forms (是/否, Y/N, true/false, 1/0) become true or false";
    NUMBER_FORM = "NOR-017", Normativity, Fix, "integer and decimal tags",
        "thousands separators, spaces and a leading + removed from numbers";
    UNKNOWN_SOURCE = "NOR-018", Normativity, Reject, "record",
        "record from a source that is not in the catalog (the record is refused)";
    UNKNOWN_TAG = "NOR-019", Normativity, Reject, "record",
        "tag that is not in the catalog (the record is refused)";
    FOREIGN_TAG = "NOR-020", Normativity, Reject, "record",
        "department tag sent by a source other than its owner (the record is refused)";
    OBSERVED_AT_FORMAT = "NOR-021", Normativity, Reject, "observed_at",
        "observed_at is not an RFC 3339 time (the record is refused)";

    BIRTH_DATE_VS_ID_NUMBER = "CON-001", Consistency, Flag, "birth_date",
        "stated birth date disagrees with the one in the ID number";
    GENDER_VS_ID_NUMBER = "CON-002", Consistency, Flag, "gender",
        "stated gender disagrees with the one in the ID number (odd 17th digit: male)";
    DATE_BEFORE_BIRTH = "CON-003", Consistency, Flag, "date tags",
        "a date of the record (a licence, a registration) lies before the person's birth date";

    BIRTH_DATE_FROM_ID_NUMBER = "ASS-001", Association, Fix, "birth_date",
        "birth date derived from a valid ID number when the record has none";
    GENDER_FROM_ID_NUMBER = "ASS-002", Association, Fix, "gender",
        "gender derived from a valid ID number when the record has none";
    BIRTHPLACE_FROM_ID_NUMBER = "ASS-003", Association, Fix, "birthplace_region",
        "birthplace region (the GB/T 2260 district of the ID number) derived from a valid ID number";
    ADDRESS_DIVISION = "ASS-004", Association, Fix, "address_division, hukou_division",
        "the district code of the address and of the household registration address derived";

    SHARED_ID_NUMBER = "UNI-001", Uniqueness, Flag, "id_number",
        "the same ID number on records of one source that name different people";
    DUPLICATE_IN_BATCH = "UNI-002", Uniqueness, Flag, "record",
        "the same record sent more than once in one batch (the last one counts)";
}

pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.id == id)
}

/// The rule behind a rejection at admission, for the quality report.
pub fn rule_for_rejection(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::MissingSource
        | Rejection::MalformedSource(_)
        | Rejection::MissingRecordId
        | Rejection::RecordIdTooLong { .. }
        | Rejection::BadRecordId => MISSING_RECORD_KEY,
        Rejection::UnknownSource(_) => UNKNOWN_SOURCE,
        Rejection::UnknownTag { .. } => UNKNOWN_TAG,
        Rejection::ForeignTag { .. } => FOREIGN_TAG,
        Rejection::BadObservedAt(_) => OBSERVED_AT_FORMAT,
        Rejection::TooManyTags { .. } => TOO_MANY_TAGS,
        Rejection::ValueTooLong { .. } => VALUE_TOO_LONG,
        Rejection::NoTags => NO_TAGS,
    }
}

/// The catalog as a Markdown table (docs/RULES.md is this, checked by a test).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "# Cleansing rules\n\nEvery record is cleansed by these rules before resolution. A finding \
         names the rule, the tag and the original value; `popmaster quality` counts them per source.\n\
         Generated by `popmaster rules --markdown`.\n\n| id | class | action | applies to | what it does |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for rule in RULES {
        out.push_str(&format!(
            "| {} | {:?} | {:?} | {} | {} |\n",
            rule.id, rule.class, rule.action, rule.applies_to, rule.description
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_complete_and_well_formed() {
        assert!(RULES.len() >= 37, "at least 37 rules, found {}", RULES.len());
        let mut ids = std::collections::BTreeSet::new();
        for rule in RULES {
            assert!(ids.insert(rule.id), "{} listed twice", rule.id);
            let prefix = match rule.class {
                RuleClass::Completeness => "COM-",
                RuleClass::Accuracy => "ACC-",
                RuleClass::Normativity => "NOR-",
                RuleClass::Consistency => "CON-",
                RuleClass::Association => "ASS-",
                RuleClass::Uniqueness => "UNI-",
            };
            assert!(
                rule.id.starts_with(prefix) && rule.id.len() == 7,
                "{} is not a {prefix} id",
                rule.id
            );
            assert!(!rule.description.is_empty());
        }
        let classes: std::collections::BTreeSet<RuleClass> = RULES.iter().map(|rule| rule.class).collect();
        assert_eq!(classes.len(), 6);
        assert_eq!(rule("NOR-008").map(|rule| rule.id), Some(ID_NUMBER_LEGACY));
    }

    #[test]
    fn every_rejection_has_a_reject_rule() {
        let rejections = [
            Rejection::MissingSource,
            Rejection::MalformedSource("X".into()),
            Rejection::UnknownSource("D99".into()),
            Rejection::MissingRecordId,
            Rejection::RecordIdTooLong { max: 1 },
            Rejection::BadRecordId,
            Rejection::BadObservedAt("x".into()),
            Rejection::UnknownTag { tag: "x".into() },
            Rejection::ForeignTag {
                tag: "d01.x".into(),
                owner: "D01".into(),
                source_id: "D07".into(),
            },
            Rejection::TooManyTags { n: 2, max: 1 },
            Rejection::ValueTooLong {
                tag: "x".into(),
                max: 1,
            },
            Rejection::NoTags,
        ];
        for rejection in &rejections {
            let rule_id = rule_for_rejection(rejection);
            let found = rule(rule_id).expect("mapped rule is in the catalog");
            assert_eq!(found.action, RuleAction::Reject, "{rule_id} for {rejection:?}");
        }
    }

    #[test]
    fn docs_table_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/RULES.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == markdown_table(),
            "docs/RULES.md is out of date: run `cargo run -- rules --markdown > docs/RULES.md`"
        );
    }
}
