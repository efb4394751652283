//! The identity features the matcher compares: what one record says about who it is, and the
//! union of that over a person's records. Built from standardized values only, so two forms of
//! the same value (a legacy ID number, a traditional name) are already equal here.

use crate::catalog::{Catalog, IdentityRole};
use crate::cleanse::{rules, ADDRESS_DIVISION, HUKOU_DIVISION};
use crate::model::{CleanRecord, Finding, TagCode, TagValue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The features the model scores, in the order explanations list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Feature {
    IdNumber,
    OtherId,
    Name,
    BirthDate,
    Gender,
    Phone,
    Address,
}

impl Feature {
    pub const ALL: [Feature; 7] = [
        Feature::IdNumber,
        Feature::OtherId,
        Feature::Name,
        Feature::BirthDate,
        Feature::Gender,
        Feature::Phone,
        Feature::Address,
    ];

    /// Words for explanations.
    pub fn label(self) -> &'static str {
        match self {
            Feature::IdNumber => "ID number",
            Feature::OtherId => "other identifier",
            Feature::Name => "name",
            Feature::BirthDate => "birth date",
            Feature::Gender => "gender",
            Feature::Phone => "phone",
            Feature::Address => "address",
        }
    }

    fn of_role(role: IdentityRole) -> Option<Feature> {
        match role {
            IdentityRole::IdNumber => Some(Feature::IdNumber),
            IdentityRole::SecondaryId => Some(Feature::OtherId),
            IdentityRole::Name => Some(Feature::Name),
            IdentityRole::BirthDate => Some(Feature::BirthDate),
            IdentityRole::Gender => Some(Feature::Gender),
            IdentityRole::Phone => Some(Feature::Phone),
            IdentityRole::Address | IdentityRole::HukouAddress => Some(Feature::Address),
            IdentityRole::Ethnicity | IdentityRole::None => None,
        }
    }
}

/// One value of a feature.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeatureValue {
    /// The standardized value.
    pub text: String,
    /// The GB/T 2260 district code of an address, when cleansing placed it; empty otherwise.
    pub division: String,
    /// Cleansing found a problem with the value (a failed check digit, an impossible date, a
    /// date that disagrees with the ID number): weaker evidence than a clean value.
    pub weak: bool,
}

/// The most distinct values a person keeps per feature: a person's features are read for every
/// record it is a candidate for, so they must stay small.
pub const VALUES_PER_FEATURE_MAX: usize = 24;

/// Values per feature: of one record, or the union over a person's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    values: BTreeMap<Feature, BTreeSet<FeatureValue>>,
}

/// Gender values that say nothing about the person.
const UNKNOWN_GENDERS: [&str; 2] = ["未知的性别", "未说明的性别"];

impl Features {
    /// The identity features of a cleansed record.
    pub fn of_record(record: &CleanRecord, catalog: &Catalog) -> Features {
        Features::of_tags(&record.tags, record.id_number.as_deref(), &record.findings, catalog)
    }

    /// The identity features of a record's standardized tags, its valid ID number and its
    /// findings (a stored record has the same three).
    pub fn of_tags(
        tags: &BTreeMap<TagCode, TagValue>,
        valid_id_number: Option<&str>,
        findings: &[Finding],
        catalog: &Catalog,
    ) -> Features {
        let mut features = Features::default();
        for (tag, value) in tags {
            let Some(feature) = catalog
                .tag(tag.as_str())
                .and_then(|def| Feature::of_role(def.identity_role))
            else {
                continue;
            };
            let text = value.standardized.trim();
            if text.is_empty() || (feature == Feature::Gender && UNKNOWN_GENDERS.contains(&text)) {
                continue;
            }
            let division = match tag.as_str() {
                "address" => tags.get(&TagCode::new(ADDRESS_DIVISION)),
                "hukou_address" => tags.get(&TagCode::new(HUKOU_DIVISION)),
                _ => None,
            }
            .map(|code| code.standardized.clone())
            .unwrap_or_default();
            let weak = match feature {
                // Only a valid number is strong evidence; cleansing normalized it.
                Feature::IdNumber => valid_id_number != Some(text),
                _ => findings
                    .iter()
                    .any(|finding| finding.tag.as_ref() == Some(tag) && weakens(&finding.rule_id)),
            };
            features.insert(
                feature,
                FeatureValue {
                    text: text.to_string(),
                    division,
                    weak,
                },
            );
        }
        features
    }

    /// Adds a value; returns whether the features changed.
    pub fn insert(&mut self, feature: Feature, value: FeatureValue) -> bool {
        let values = self.values.entry(feature).or_default();
        // A value already held strong stays strong; a weak copy of it adds nothing.
        let held_strong = values
            .iter()
            .any(|held| held.text == value.text && held.division == value.division && !held.weak);
        if values.len() >= VALUES_PER_FEATURE_MAX || held_strong {
            return false;
        }
        if !value.weak {
            values.retain(|held| !(held.text == value.text && held.division == value.division));
        }
        values.insert(value)
    }

    /// Adds every value of `other`; returns whether the features changed.
    pub fn absorb(&mut self, other: &Features) -> bool {
        let mut changed = false;
        for (feature, values) in &other.values {
            for value in values {
                changed |= self.insert(*feature, value.clone());
            }
        }
        changed
    }

    pub fn values(&self, feature: Feature) -> impl Iterator<Item = &FeatureValue> {
        self.values.get(&feature).into_iter().flatten()
    }

    pub fn texts(&self, feature: Feature) -> impl Iterator<Item = &str> {
        self.values(feature).map(|value| value.text.as_str())
    }

    pub fn has(&self, feature: Feature) -> bool {
        self.values.get(&feature).is_some_and(|values| !values.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.values.values().all(BTreeSet::is_empty)
    }

    /// The valid resident ID numbers: two different ones mean two different people.
    pub fn valid_id_numbers(&self) -> BTreeSet<&str> {
        self.values(Feature::IdNumber)
            .filter(|value| !value.weak)
            .map(|value| value.text.as_str())
            .collect()
    }
}

/// The exact candidate keys of a set of features (kept in the store as postings, key ->
/// persons): a record's candidates are the persons sharing one of its keys. Each key pairs
/// values so that it stays selective; a key held by too many persons is ignored when looking
/// up (see `store::Txn::postings`). Variants catch the usual errors: the pinyin or reordered
/// words of a name with the birth date (homophones, swapped given name and surname), each
/// word of a name with the birth date (a misspelled other word), the birth date with the
/// locality (a misspelled name). Some keys stand alone where a rare value is enough to look
/// further: the name's variant, the digits of another identifier in sorted order (swapped
/// digits), the start of a street address.
pub fn blocking_keys(features: &Features) -> BTreeSet<String> {
    const SEP: char = '\u{1f}';
    let mut keys = BTreeSet::new();
    for value in features.texts(Feature::IdNumber) {
        keys.insert(format!("id/{value}"));
    }
    for value in features.texts(Feature::OtherId) {
        keys.insert(format!("oi/{value}"));
        // The same digits in any order: two swapped digits still meet.
        let mut digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 6 {
            digits.sort_unstable();
            keys.insert(format!("os/{}", digits.into_iter().collect::<String>()));
        }
    }
    for value in features.texts(Feature::Phone) {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 7 {
            keys.insert(format!("ph/{digits}"));
        }
    }
    let dates: BTreeSet<String> = features
        .texts(Feature::BirthDate)
        .map(|date| date.chars().filter(char::is_ascii_digit).collect::<String>())
        .filter(|date| date.len() >= 6)
        .collect();
    let localities: BTreeSet<String> = features.values(Feature::Address).filter_map(locality).collect();
    for name in features.texts(Feature::Name) {
        let variant = name_variant(name);
        let words = name_words(name);
        // The name alone, for a person whose birth date and address both differ or are missing;
        // a common name is held by too many persons and ignored.
        keys.insert(format!("nm/{variant}"));
        for date in &dates {
            keys.insert(format!("nd/{name}{SEP}{date}"));
            if variant != name {
                keys.insert(format!("pd/{variant}{SEP}{date}"));
            }
            for word in &words {
                keys.insert(format!("wd/{word}{SEP}{date}"));
                if let Some(code) = soundex(word) {
                    keys.insert(format!("sd/{code}{SEP}{date}"));
                }
            }
        }
        for locality in &localities {
            keys.insert(format!("nl/{variant}{SEP}{locality}"));
            // A Chinese surname or given name alone is too common for a district.
            if name.is_ascii() {
                for word in &words {
                    keys.insert(format!("wl/{word}{SEP}{locality}"));
                }
            }
        }
    }
    let leads: BTreeSet<String> = features.values(Feature::Address).filter_map(street_lead).collect();
    for lead in &leads {
        keys.insert(format!("sl/{lead}"));
    }
    for date in &dates {
        for locality in &localities {
            keys.insert(format!("dl/{date}{SEP}{locality}"));
        }
        for lead in &leads {
            keys.insert(format!("dw/{date}{SEP}{lead}"));
        }
    }
    keys
}

/// Keys that stand alone on one rare value (the name alone, another identifier's sorted
/// digits, the start of a street address). The write path looks them up only when the other
/// keys find no possible match: they are for the record whose paired values are all wrong,
/// and most records do not need them.
pub fn is_fallback_key(key: &str) -> bool {
    key.starts_with("nm/") || key.starts_with("os/") || key.starts_with("sl/")
}

/// American Soundex of a Latin word (R163 for ROBERT and RUPERT), so a misspelled surname
/// still meets its person; `None` for words that are not Latin letters.
fn soundex(word: &str) -> Option<String> {
    fn digit(c: char) -> Option<char> {
        match c {
            'B' | 'F' | 'P' | 'V' => Some('1'),
            'C' | 'G' | 'J' | 'K' | 'Q' | 'S' | 'X' | 'Z' => Some('2'),
            'D' | 'T' => Some('3'),
            'L' => Some('4'),
            'M' | 'N' => Some('5'),
            'R' => Some('6'),
            _ => None,
        }
    }
    let mut letters = word.chars().map(|c| c.to_ascii_uppercase());
    let first = letters.next().filter(char::is_ascii_alphabetic)?;
    let mut code = String::with_capacity(4);
    code.push(first);
    let mut last = digit(first);
    for c in letters {
        if !c.is_ascii_alphabetic() {
            return None;
        }
        let current = digit(c);
        if let Some(code_digit) = current.filter(|_| current != last) {
            code.push(code_digit);
            if code.len() == 4 {
                break;
            }
        }
        // H and W do not separate equal codes; vowels do.
        if c != 'H' && c != 'W' {
            last = current;
        }
    }
    while code.len() < 4 {
        code.push('0');
    }
    Some(code)
}

/// The start of a Latin-script street address (house number and street name), which survives
/// a misspelled town or postcode. Chinese addresses are placed by their district instead.
fn street_lead(value: &FeatureValue) -> Option<String> {
    if !value.division.is_empty() || !value.text.is_ascii() {
        return None;
    }
    let words: Vec<&str> = value
        .text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .take(2)
        .collect();
    (words.len() == 2 && words.iter().any(|word| word.bytes().any(|b| b.is_ascii_alphabetic())))
        .then(|| words.join(" ").to_ascii_uppercase())
}

/// The spelling-independent form of a name: toneless pinyin of a Chinese name, the sorted
/// words of a Latin one.
fn name_variant(name: &str) -> String {
    if !name.is_ascii() {
        super::compare::name_pinyin(name)
    } else {
        super::compare::sorted_words(name)
    }
}

/// The parts of a name that each may survive a typo in the others: the words of a Latin name
/// (when it has several), the surname character and the given name of a Chinese one.
fn name_words(name: &str) -> Vec<String> {
    if name.is_ascii() {
        let words: Vec<String> = name.split_whitespace().map(String::from).collect();
        return if words.len() > 1 { words } else { Vec::new() };
    }
    let chars: Vec<char> = name.chars().collect();
    if chars.len() < 2 || chars.contains(&'·') {
        return Vec::new();
    }
    vec![chars[0].to_string(), chars[1..].iter().collect()]
}

/// Where an address is, coarsely: its district code when cleansing placed it, otherwise its
/// last comma-separated part (a postcode or town, as Latin-script addresses end).
fn locality(value: &FeatureValue) -> Option<String> {
    if !value.division.is_empty() {
        return Some(value.division.clone());
    }
    let last = value.text.rsplit([',', '，']).next()?.trim();
    (!last.is_empty() && last.len() < value.text.len()).then(|| last.to_uppercase())
}

/// Findings that say the value itself is probably wrong, which makes it weaker evidence: an
/// impossible date, a phone or name that cannot be right, a birth date or gender that
/// disagrees with the ID number. (ID numbers are judged by their validity.) Format fixes do
/// not weaken a value, and neither does an address the division table cannot place: it may
/// be abroad or newer than the table.
fn weakens(rule_id: &str) -> bool {
    [
        rules::DATE_INVALID,
        rules::DATE_IN_FUTURE,
        rules::BIRTH_DATE_TOO_EARLY,
        rules::PHONE_INVALID,
        rules::NAME_CHARACTERS,
        rules::BIRTH_DATE_VS_ID_NUMBER,
        rules::GENDER_VS_ID_NUMBER,
    ]
    .contains(&rule_id)
}

/// Whether two persons' features forbid joining them automatically: each holds a valid ID
/// number and they share none.
pub fn conflicting_id_numbers(a: &Features, b: &Features) -> bool {
    let a_ids = a.valid_id_numbers();
    let b_ids = b.valid_id_numbers();
    !a_ids.is_empty() && !b_ids.is_empty() && a_ids.is_disjoint(&b_ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanse::cleanse_record;
    use crate::model::{RawRecord, RecordKey, SourceId};

    fn clean(tags: &[(&str, &str)]) -> CleanRecord {
        let raw = RawRecord {
            key: RecordKey {
                source: SourceId::parse("D05").expect("well-formed"),
                record_id: "1".into(),
            },
            observed_at: None,
            tags: tags
                .iter()
                .map(|(tag, value)| (TagCode::new(*tag), value.to_string()))
                .collect(),
        };
        cleanse_record(raw, 1_700_000_000_000, &Catalog::shipped())
    }

    #[test]
    fn features_come_from_standardized_identity_tags() {
        let record = clean(&[
            ("name", "張偉"),
            ("id_number", "330106900102177"),
            ("gender", "M"),
            ("address", "杭州西湖区文三路1号"),
            ("ethnicity", "汉"),
            ("d05.social_security_card_number", "123"),
        ]);
        let features = Features::of_record(&record, &Catalog::shipped());
        assert_eq!(features.texts(Feature::Name).collect::<Vec<_>>(), ["张伟"]);
        assert_eq!(
            features.valid_id_numbers().into_iter().collect::<Vec<_>>(),
            ["33010619900102177X"]
        );
        assert_eq!(features.texts(Feature::Gender).collect::<Vec<_>>(), ["男"]);
        let address = features.values(Feature::Address).next().expect("address");
        assert_eq!(address.division, "330106");
        // Birth date and birthplace derived from the ID number count too.
        assert_eq!(features.texts(Feature::BirthDate).collect::<Vec<_>>(), ["1990-01-02"]);
    }

    #[test]
    fn flagged_values_are_weak() {
        let record = clean(&[
            ("name", "张伟"),
            ("id_number", "330106199001021771"),
            ("birth_date", "1990-02-30"),
        ]);
        let features = Features::of_record(&record, &Catalog::shipped());
        assert!(features.values(Feature::IdNumber).all(|value| value.weak));
        assert!(features.values(Feature::BirthDate).all(|value| value.weak));
        assert!(features.values(Feature::Name).all(|value| !value.weak));
        assert!(features.valid_id_numbers().is_empty());
    }

    #[test]
    fn a_strong_value_replaces_its_weak_copy() {
        let mut features = Features::default();
        let value = |weak| FeatureValue {
            text: "1990-01-02".into(),
            division: String::new(),
            weak,
        };
        features.insert(Feature::BirthDate, value(true));
        features.insert(Feature::BirthDate, value(false));
        features.insert(Feature::BirthDate, value(true));
        assert_eq!(features.values(Feature::BirthDate).collect::<Vec<_>>(), [&value(false)]);
    }

    #[test]
    fn blocking_keys_pair_selective_values() {
        let record = clean(&[
            ("name", "张伟"),
            ("birth_date", "1990-01-02"),
            ("phone", "138-0000-1234"),
            ("address", "杭州西湖区文三路1号"),
        ]);
        let keys = blocking_keys(&Features::of_record(&record, &Catalog::shipped()));
        let sep = '\u{1f}';
        for expected in [
            format!("nd/张伟{sep}19900102"),
            format!("pd/zhang wei{sep}19900102"),
            format!("wd/张{sep}19900102"),
            format!("wd/伟{sep}19900102"),
            format!("nl/zhang wei{sep}330106"),
            format!("dl/19900102{sep}330106"),
            "nm/zhang wei".to_string(),
            "ph/13800001234".to_string(),
        ] {
            assert!(keys.contains(&expected), "{expected:?} in {keys:?}");
        }
        assert_eq!(keys.len(), 8);
    }

    #[test]
    fn latin_names_block_on_their_words_and_postcode() {
        let mut features = Features::default();
        let value = |text: &str| FeatureValue {
            text: text.into(),
            division: String::new(),
            weak: false,
        };
        features.insert(Feature::Name, value("MITCHELL GREEN"));
        features.insert(Feature::BirthDate, value("1956-04-09"));
        features.insert(Feature::Address, value("7 WALLABY PLACE, DELMAR, CLEVELAND, SA, 2119"));
        features.insert(Feature::OtherId, value("1804974"));
        let keys = blocking_keys(&features);
        let sep = '\u{1f}';
        assert!(keys.contains("nm/GREEN MITCHELL"));
        assert!(keys.contains("sl/7 WALLABY"));
        assert!(keys.contains("oi/1804974"));
        assert!(keys.contains("os/0144789"));
        assert!(keys.contains(&format!("pd/GREEN MITCHELL{sep}19560409")));
        assert!(keys.contains(&format!("wd/GREEN{sep}19560409")));
        assert!(keys.contains(&format!("dl/19560409{sep}2119")));
        assert!(keys.contains(&format!("sd/G650{sep}19560409")));
        assert!(keys.contains(&format!("wl/GREEN{sep}2119")));
        assert!(keys.contains(&format!("dw/19560409{sep}7 WALLABY")));
    }

    #[test]
    fn soundex_codes() {
        for (word, code) in [
            ("ROBERT", "R163"),
            ("RUPERT", "R163"),
            ("ASHCRAFT", "A261"),
            ("TYMCZAK", "T522"),
            ("PFISTER", "P236"),
            ("GRIERSON", "G662"),
            ("GRIERSN", "G662"),
            ("LEE", "L000"),
        ] {
            assert_eq!(soundex(word).as_deref(), Some(code), "{word}");
        }
        assert_eq!(soundex("张"), None);
        assert_eq!(soundex("O'NEIL"), None);
    }

    #[test]
    fn different_valid_id_numbers_conflict() {
        let with_id = |id: &str| {
            let mut features = Features::default();
            features.insert(
                Feature::IdNumber,
                FeatureValue {
                    text: id.into(),
                    division: String::new(),
                    weak: false,
                },
            );
            features
        };
        let a = with_id("33010619900102177X");
        let b = with_id("110105194912310029");
        assert!(conflicting_id_numbers(&a, &b));
        assert!(!conflicting_id_numbers(&a, &a));
        assert!(!conflicting_id_numbers(&a, &Features::default()));
    }
}
