//! Analysis: turns already-standardized identity values into the exact terms the index stores
//! and the query looks up.
//!
//! Owns: match normalization (lowercase, letters/digits only), name character n-grams, name
//! pinyin (toneless, with heteronyms), address bigrams, and exact-term cleanup for ID numbers,
//! birth dates and phones. Index side and query side call the very same functions, which is what
//! makes matching symmetric.
//!
//! Must not: touch tantivy, do I/O, or log anything (every value here is personal data).
//! Any change to what these functions emit changes the terms inside existing indexes on disk:
//! bump [`crate::FORMAT_VERSION`] whenever output changes (this includes upgrading the `pinyin`
//! crate if its reading table changes).

use std::collections::BTreeSet;

use pinyin::ToPinyinMulti;

/// Names longer than this (after normalization) are cut; real names are far shorter.
pub(crate) const MAX_NAME_CHARS: usize = 64;
/// Addresses longer than this (after normalization) are cut.
pub(crate) const MAX_ADDRESS_CHARS: usize = 256;
/// Exact values (ID number, birth date, phone) longer than this are not indexed or queried:
/// they cannot be standardized values.
pub(crate) const MAX_EXACT_BYTES: usize = 128;
/// At most this many readings of one polyphonic character are used (the table lists the common
/// ones first; the tail is mostly archaic readings that would only add noise).
const MAX_READINGS_PER_CHAR: usize = 3;
/// At most this many whole-name pinyin spellings per name (product of heteronym readings).
const MAX_FULL_PINYIN_VARIANTS: usize = 8;

/// Terms derived from one or more names of a person (index side) or one queried name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct NameTerms {
    /// The whole normalized name.
    pub(crate) exact: BTreeSet<String>,
    /// Single Han characters.
    pub(crate) unigrams: BTreeSet<String>,
    /// Adjacent character pairs (Han and Latin alike).
    pub(crate) bigrams: BTreeSet<String>,
    /// Whole-name toneless pinyin without separators, e.g. `zhangwei`. A name written in Latin
    /// letters contributes itself, so `Zhang Wei` meets `张伟`.
    pub(crate) pinyin_full: BTreeSet<String>,
    /// Adjacent syllable pairs separated by a space, e.g. `zhang wei`.
    pub(crate) pinyin_bigrams: BTreeSet<String>,
}

impl NameTerms {
    /// Terms of a single name.
    pub(crate) fn of(name: &str) -> Self {
        let mut terms = NameTerms::default();
        terms.add_name(name);
        terms
    }

    /// Adds the terms of one more name (a person can have several).
    pub(crate) fn add_name(&mut self, name: &str) {
        let chars = match_chars(name, MAX_NAME_CHARS);
        if chars.is_empty() {
            return;
        }
        self.exact.insert(chars.iter().collect());
        // Latin letters get no unigrams: with a 26-letter alphabet they would match nearly
        // every Latin-named person and only cost time.
        self.unigrams
            .extend(chars.iter().filter(|c| is_han(**c)).map(char::to_string));
        self.bigrams
            .extend(chars.windows(2).map(|pair| pair.iter().collect::<String>()));
        if let Some(units) = pinyin_units(&chars) {
            self.pinyin_full.extend(full_spellings(&units));
            for pair in units.windows(2) {
                for first in &pair[0] {
                    for second in &pair[1] {
                        self.pinyin_bigrams.insert(format!("{first} {second}"));
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }
}

/// Terms derived from addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AddressTerms {
    /// The whole normalized address.
    pub(crate) exact: BTreeSet<String>,
    /// Adjacent character pairs.
    pub(crate) bigrams: BTreeSet<String>,
}

impl AddressTerms {
    pub(crate) fn of(address: &str) -> Self {
        let mut terms = AddressTerms::default();
        terms.add_address(address);
        terms
    }

    pub(crate) fn add_address(&mut self, address: &str) {
        let chars = match_chars(address, MAX_ADDRESS_CHARS);
        if chars.is_empty() {
            return;
        }
        self.exact.insert(chars.iter().collect());
        self.bigrams
            .extend(chars.windows(2).map(|pair| pair.iter().collect::<String>()));
    }
}

/// The term for an exact-match value (ID number, birth date, phone): trimmed, ASCII upper-cased
/// (the ID check character `x`/`X`), or `None` when empty or implausibly long.
pub(crate) fn exact_term(value: &str) -> Option<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_EXACT_BYTES {
        return None;
    }
    Some(trimmed.to_ascii_uppercase())
}

/// Distinct exact terms of several values.
pub(crate) fn exact_terms<'a>(values: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    values.into_iter().filter_map(|v| exact_term(v)).collect()
}

/// Lowercased letters and digits of `text`, at most `max` of them. Spaces, punctuation and the
/// middle dot of transliterated names (`·`) are dropped; `ü` is spelled `v` as pinyin input does.
fn match_chars(text: &str, max: usize) -> Vec<char> {
    text.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .map(|c| if c == 'ü' { 'v' } else { c })
        .take(max)
        .collect()
}

/// CJK unified ideographs (basic block, extensions A–G, compatibility ideographs) and `〇`.
fn is_han(c: char) -> bool {
    matches!(
        u32::from(c),
        0x3007
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xF900..=0xFAFF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2EBEF
            | 0x30000..=0x3134F
    )
}

/// Toneless readings of a Han character, most common first, `ü` spelled `v`.
fn han_readings(c: char) -> Option<Vec<String>> {
    let multi = c.to_pinyin_multi()?;
    let mut readings: Vec<String> = Vec::new();
    for reading in multi {
        let plain = reading.plain().replace('ü', "v");
        if !readings.contains(&plain) {
            readings.push(plain);
        }
        if readings.len() == MAX_READINGS_PER_CHAR {
            break;
        }
    }
    (!readings.is_empty()).then_some(readings)
}

/// The name as pinyin units: one per Han character (its readings), one per run of ASCII letters
/// or digits (the run itself, already a romanization). `None` if some character has no pinyin
/// form (e.g. a non-Chinese script), in which case the name gets no pinyin terms at all.
fn pinyin_units(chars: &[char]) -> Option<Vec<Vec<String>>> {
    let mut units = Vec::new();
    let mut latin = String::new();
    for &c in chars {
        if c.is_ascii_alphanumeric() {
            latin.push(c);
            continue;
        }
        if !latin.is_empty() {
            units.push(vec![std::mem::take(&mut latin)]);
        }
        units.push(han_readings(c)?);
    }
    if !latin.is_empty() {
        units.push(vec![latin]);
    }
    (!units.is_empty()).then_some(units)
}

/// Whole-name spellings: the product of the units' readings, left to right, capped at
/// [`MAX_FULL_PINYIN_VARIANTS`] (beyond the cap a unit contributes its first reading only).
fn full_spellings(units: &[Vec<String>]) -> Vec<String> {
    let mut spellings = vec![String::new()];
    for readings in units {
        if spellings.len() * readings.len() <= MAX_FULL_PINYIN_VARIANTS {
            spellings = spellings
                .iter()
                .flat_map(|prefix| readings.iter().map(move |r| format!("{prefix}{r}")))
                .collect();
        } else if let Some(first) = readings.first() {
            for spelling in &mut spellings {
                spelling.push_str(first);
            }
        }
    }
    spellings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn han_name_grams() {
        let t = NameTerms::of("张伟明");
        assert_eq!(t.exact, set(&["张伟明"]));
        assert_eq!(t.unigrams, set(&["张", "伟", "明"]));
        assert_eq!(t.bigrams, set(&["张伟", "伟明"]));
        // 明 also has the rare reading "meng"; heteronyms are kept on purpose.
        assert!(t.pinyin_full.contains("zhangweiming"), "{:?}", t.pinyin_full);
        assert!(t.pinyin_bigrams.contains("zhang wei"), "{:?}", t.pinyin_bigrams);
        assert!(t.pinyin_bigrams.contains("wei ming"), "{:?}", t.pinyin_bigrams);
    }

    #[test]
    fn homophones_share_pinyin() {
        let cases = [
            ("张伟", "章伟"),
            ("李娜", "黎娜"),
            ("王芳", "汪芳"),
            ("吕强", "Lv Qiang"),
        ];
        for (a, b) in cases {
            let (ta, tb) = (NameTerms::of(a), NameTerms::of(b));
            assert!(
                !ta.pinyin_full.is_disjoint(&tb.pinyin_full),
                "{a} / {b}: {:?} vs {:?}",
                ta.pinyin_full,
                tb.pinyin_full
            );
        }
    }

    #[test]
    fn heteronyms_are_kept_and_bounded() {
        // 曾 reads céng and zēng; both spellings must be present.
        let t = NameTerms::of("曾明");
        assert!(t.pinyin_full.contains("zengming"), "{:?}", t.pinyin_full);
        assert!(t.pinyin_full.contains("cengming"), "{:?}", t.pinyin_full);
        // A long name of polyphonic characters stays within the cap.
        let t = NameTerms::of("曾单解朴乐行");
        assert!(t.pinyin_full.len() <= MAX_FULL_PINYIN_VARIANTS);
        assert!(!t.pinyin_full.is_empty());
    }

    #[test]
    fn latin_name_grams() {
        let t = NameTerms::of("  Anna-Maria  SMITH ");
        assert_eq!(t.exact, set(&["annamariasmith"]));
        assert!(t.unigrams.is_empty(), "no Latin unigrams");
        assert!(t.bigrams.contains("an") && t.bigrams.contains("th"));
        assert_eq!(t.pinyin_full, set(&["annamariasmith"]));
        assert!(t.pinyin_bigrams.is_empty());
    }

    #[test]
    fn transliterated_name_drops_middle_dot() {
        let t = NameTerms::of("阿依·古丽");
        assert_eq!(t.exact, set(&["阿依古丽"]));
        assert!(t.bigrams.contains("依古"));
    }

    #[test]
    fn empty_and_punctuation_only_inputs_give_nothing() {
        for input in ["", "   ", "·-·", "\u{3000}"] {
            assert!(NameTerms::of(input).is_empty(), "{input:?}");
            assert_eq!(AddressTerms::of(input), AddressTerms::default(), "{input:?}");
        }
    }

    #[test]
    fn overlong_name_is_cut() {
        let long: String = std::iter::repeat_n('张', 1000).collect();
        let t = NameTerms::of(&long);
        let exact = t.exact.iter().next().expect("one exact term");
        assert_eq!(exact.chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn address_bigrams() {
        let t = AddressTerms::of("示例市 虚构路 8号");
        assert_eq!(t.exact, set(&["示例市虚构路8号"]));
        assert!(t.bigrams.contains("虚构") && t.bigrams.contains("8号"));
        assert_eq!(t.bigrams.len(), 7);
    }

    #[test]
    fn exact_term_cleanup() {
        let cases: [(&str, Option<&str>); 5] = [
            (" 11010119900101123x ", Some("11010119900101123X")),
            ("1990-01-01", Some("1990-01-01")),
            ("13800000000", Some("13800000000")),
            ("   ", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(exact_term(input).as_deref(), want, "{input:?}");
        }
        assert_eq!(exact_term(&"1".repeat(MAX_EXACT_BYTES + 1)), None);
    }
}
