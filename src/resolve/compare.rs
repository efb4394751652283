//! Comparators: how close two values of one feature are, as a level the model has weights for.
//! strsim for the string distances; domain rules for ID numbers, dates, phones, names (pinyin
//! for Chinese names, token order for Latin ones) and addresses (the GB/T 2260 district).

use super::features::{Feature, FeatureValue, Features};
use pinyin::ToPinyin;
use serde::{Deserialize, Serialize};

/// How well two values agree. Each feature uses a subset (see `levels_of`); `Exact` is always
/// the strongest agreement and `Different` the disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    Exact,
    /// ID numbers: one digit differs.
    OneSubstitution,
    /// ID numbers: two adjacent digits swapped. Other identifiers: one edit.
    Transposition,
    /// Chinese names: the same pinyin (张伟 / 章伟).
    Phonetic,
    /// Names: one character off, or Jaro–Winkler at least 0.92.
    Close,
    /// Names: Jaro–Winkler at least 0.80.
    Similar,
    /// Dates: day and month swapped.
    DayMonthSwapped,
    /// Dates: one digit off.
    OneDigit,
    /// Dates: same year only.
    SameYear,
    /// Phones: the last 8 digits agree (an area code or prefix differs).
    LastEight,
    /// Addresses: the same place down to the street (or nearly every word).
    SameStreet,
    /// Addresses: the same district (or a third of the words).
    SameDistrict,
    /// Addresses: the same city (or a word in common).
    SameCity,
    Different,
    /// Addresses not placed in a district: most words agree, short of the same street (a
    /// house number or an address line differs). Last, because stored evidence encodes a level
    /// by its position here.
    MostlySame,
}

impl Level {
    /// Words for explanations.
    pub fn label(self) -> &'static str {
        match self {
            Level::Exact => "the same",
            Level::OneSubstitution => "one digit different",
            Level::Transposition => "two characters swapped or one edit",
            Level::Phonetic => "the same pinyin",
            Level::Close => "nearly the same",
            Level::Similar => "similar",
            Level::DayMonthSwapped => "day and month swapped",
            Level::OneDigit => "one digit different",
            Level::SameYear => "the same year only",
            Level::LastEight => "the same last 8 digits",
            Level::SameStreet => "the same street",
            Level::MostlySame => "mostly the same words",
            Level::SameDistrict => "the same district",
            Level::SameCity => "the same city",
            Level::Different => "different",
        }
    }
}

/// The levels of each feature, strongest first. The model has one m and one u per level.
pub fn levels_of(feature: Feature) -> &'static [Level] {
    match feature {
        Feature::IdNumber => &[
            Level::Exact,
            Level::OneSubstitution,
            Level::Transposition,
            Level::Different,
        ],
        Feature::OtherId => &[Level::Exact, Level::Transposition, Level::Different],
        Feature::Name => &[
            Level::Exact,
            Level::Phonetic,
            Level::Close,
            Level::Similar,
            Level::Different,
        ],
        Feature::BirthDate => &[
            Level::Exact,
            Level::DayMonthSwapped,
            Level::OneDigit,
            Level::SameYear,
            Level::Different,
        ],
        Feature::Gender => &[Level::Exact, Level::Different],
        Feature::Phone => &[Level::Exact, Level::LastEight, Level::Different],
        Feature::Address => &[
            Level::SameStreet,
            Level::MostlySame,
            Level::SameDistrict,
            Level::SameCity,
            Level::Different,
        ],
    }
}

/// The words of every address of a set of features, computed once when one record is compared
/// with many candidates.
pub struct AddressWords(Vec<Vec<String>>);

impl AddressWords {
    pub fn of(features: &Features) -> AddressWords {
        AddressWords(
            features
                .values(Feature::Address)
                .map(|value| address_words(&value.text))
                .collect(),
        )
    }
}

/// The best agreement of one feature between two sets of values, with whether the pair that
/// reached it involves a weak value. `None` when either side has no value (no evidence).
pub fn compare_feature(feature: Feature, a: &Features, b: &Features) -> Option<(Level, bool)> {
    if feature == Feature::Address {
        compare_feature_with(feature, a, &AddressWords::of(a), b)
    } else {
        compare_feature_with(feature, a, &AddressWords(Vec::new()), b)
    }
}

/// `compare_feature` with the address words of `a` already computed (`AddressWords::of(a)`).
pub fn compare_feature_with(
    feature: Feature,
    a: &Features,
    words_a: &AddressWords,
    b: &Features,
) -> Option<(Level, bool)> {
    let mut best: Option<(Level, bool)> = None;
    let words_b = if feature == Feature::Address && a.values(feature).next().is_some() {
        AddressWords::of(b)
    } else {
        AddressWords(Vec::new())
    };
    for (idx_a, x) in a.values(feature).enumerate() {
        for (idx_b, y) in b.values(feature).enumerate() {
            let level = if feature == Feature::Address {
                compare_addresses(x, y, &words_a.0[idx_a], &words_b.0[idx_b])
            } else {
                compare_values(feature, x, y)
            };
            let weak = x.weak || y.weak;
            let better = match best {
                None => true,
                Some((best_level, best_weak)) => {
                    rank(feature, level) < rank(feature, best_level) || (level == best_level && best_weak && !weak)
                }
            };
            if better {
                best = Some((level, weak));
                if rank(feature, level) == 0 && !weak {
                    // Nothing compares better than the top level, unflagged.
                    return best;
                }
            }
        }
    }
    best
}

fn rank(feature: Feature, level: Level) -> usize {
    levels_of(feature)
        .iter()
        .position(|candidate| *candidate == level)
        .unwrap_or(usize::MAX)
}

pub fn compare_values(feature: Feature, a: &FeatureValue, b: &FeatureValue) -> Level {
    match feature {
        Feature::IdNumber => compare_id_numbers(&a.text, &b.text),
        Feature::OtherId => compare_identifiers(&a.text, &b.text),
        Feature::Name => compare_names(&a.text, &b.text),
        Feature::BirthDate => compare_dates(&a.text, &b.text),
        Feature::Gender => {
            if a.text == b.text {
                Level::Exact
            } else {
                Level::Different
            }
        }
        Feature::Phone => compare_phones(&a.text, &b.text),
        Feature::Address => compare_addresses(a, b, &address_words(&a.text), &address_words(&b.text)),
    }
}

fn compare_id_numbers(a: &str, b: &str) -> Level {
    if a == b {
        return Level::Exact;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return Level::Different;
    }
    let differing: Vec<usize> = (0..a.len()).filter(|&idx| a[idx] != b[idx]).collect();
    match differing[..] {
        [_] => Level::OneSubstitution,
        [first, second] if second == first + 1 && a[first] == b[second] && a[second] == b[first] => {
            Level::Transposition
        }
        _ => Level::Different,
    }
}

fn compare_identifiers(a: &str, b: &str) -> Level {
    if a == b {
        Level::Exact
    } else if strsim::damerau_levenshtein(a, b) == 1 {
        Level::Transposition
    } else {
        Level::Different
    }
}

fn is_cjk(name: &str) -> bool {
    name.chars()
        .any(|c| ('\u{4E00}'..='\u{9FFF}').contains(&c) || ('\u{3400}'..='\u{4DBF}').contains(&c))
}

/// Toneless pinyin of a Chinese name, syllables joined by spaces; characters without pinyin
/// (the · separator, Latin letters) are kept as they are.
pub fn name_pinyin(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 2);
    for (c, pinyin) in name.chars().zip(name.to_pinyin()) {
        if !out.is_empty() {
            out.push(' ');
        }
        match pinyin {
            Some(pinyin) => out.push_str(pinyin.plain()),
            None => out.push(c),
        }
    }
    out
}

/// The words of a Latin name in sorted order, so `SMITH JOHN` and `JOHN SMITH` agree.
pub fn sorted_words(name: &str) -> String {
    let mut words: Vec<&str> = name.split_whitespace().collect();
    words.sort_unstable();
    words.join(" ")
}

fn compare_names(a: &str, b: &str) -> Level {
    if a == b {
        return Level::Exact;
    }
    if is_cjk(a) && is_cjk(b) {
        let (pinyin_a, pinyin_b) = (name_pinyin(a), name_pinyin(b));
        if pinyin_a == pinyin_b {
            return Level::Phonetic;
        }
        let (n_a, n_b) = (a.chars().count(), b.chars().count());
        if n_a == n_b && n_a >= 2 && strsim::levenshtein(a, b) == 1 {
            return Level::Close;
        }
        let similarity = strsim::jaro_winkler(&pinyin_a, &pinyin_b);
        return if similarity >= 0.92 {
            Level::Similar
        } else {
            Level::Different
        };
    }
    if sorted_words(a) == sorted_words(b) {
        // The same words: only the order of given name and surname differs.
        return Level::Exact;
    }
    let similarity = latin_name_similarity(a, b);
    if similarity >= 0.92 {
        Level::Close
    } else if similarity >= 0.8 {
        Level::Similar
    } else {
        Level::Different
    }
}

/// Jaro–Winkler of the whole names, or of their words aligned best-first (missing, swapped or
/// misspelled given names and surnames), whichever is higher. The word score averages over the
/// longer name, so a missing word costs.
fn latin_name_similarity(a: &str, b: &str) -> f64 {
    let whole = strsim::jaro_winkler(a, b);
    let words_a: Vec<&str> = a.split_whitespace().collect();
    let words_b: Vec<&str> = b.split_whitespace().collect();
    let (short, long) = if words_a.len() <= words_b.len() {
        (&words_a, &words_b)
    } else {
        (&words_b, &words_a)
    };
    if short.is_empty() {
        return whole;
    }
    let sum: f64 = short
        .iter()
        .map(|word| {
            long.iter()
                .map(|other| strsim::jaro_winkler(word, other))
                .fold(0.0, f64::max)
        })
        .sum();
    let missing_penalty = 0.9_f64.powi((long.len() - short.len()) as i32);
    whole.max(sum / short.len() as f64 * missing_penalty)
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

fn compare_dates(a: &str, b: &str) -> Level {
    let (a, b) = (digits(a), digits(b));
    if a.is_empty() || b.is_empty() {
        return Level::Different;
    }
    if a == b {
        return Level::Exact;
    }
    if a.len() == 8 && b.len() == 8 {
        if a[..4] == b[..4] && a[4..6] == b[6..8] && a[6..8] == b[4..6] {
            return Level::DayMonthSwapped;
        }
        if strsim::damerau_levenshtein(&a, &b) == 1 {
            return Level::OneDigit;
        }
        if a[..4] == b[..4] {
            return Level::SameYear;
        }
    }
    Level::Different
}

fn compare_phones(a: &str, b: &str) -> Level {
    let (a, b) = (digits(a), digits(b));
    if a == b {
        Level::Exact
    } else if a.len() >= 8 && b.len() >= 8 && a[a.len() - 8..] == b[b.len() - 8..] {
        Level::LastEight
    } else {
        Level::Different
    }
}

/// The words of an address: runs of letters or digits (Latin addresses), and for Chinese text
/// the characters two at a time.
fn address_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut chinese: Vec<char> = Vec::new();
    for c in text.chars() {
        if is_cjk(c.encode_utf8(&mut [0; 4])) {
            chinese.push(c);
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        } else if c.is_alphanumeric() {
            current.push(c.to_ascii_uppercase());
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words.extend(chinese.windows(2).map(|pair| pair.iter().collect::<String>()));
    words.sort_unstable();
    words.dedup();
    words
}

/// How much of two addresses' words agree, a misspelled word (Jaro–Winkler at least 0.9, four
/// letters or more) counting as shared.
struct Overlap {
    /// Shared words over all distinct words (Jaccard).
    jaccard: f64,
    /// Shared words over the average word count (Dice): a part one department leaves out (a
    /// second address line, a state) costs less than a part that differs.
    dice: f64,
}

/// Two addresses whose words agree at least this much (Dice) are on the same street.
const SAME_STREET_DICE: f64 = 0.75;

/// Two addresses not placed in a district whose words agree at least this much (Dice) are
/// mostly the same: about five words of seven, where two streets of one suburb share three or
/// four (suburb, postcode, state). Placed addresses do not use it: their words share the
/// province, city and district, which lifts two streets of one district to this overlap.
const MOSTLY_SAME_DICE: f64 = 0.6;

/// How many words two addresses share, counted from both sides and averaged, so the count is
/// symmetric: a word of one address may match a misspelled or split word of the other (Jaro–
/// Winkler at least 0.9, four letters or more).
fn shared_words(words_a: &[String], words_b: &[String]) -> f64 {
    // Both word lists are sorted (`address_words`), so an exact match is a binary search.
    let matched = |words: &[String], others: &[String]| -> f64 {
        words
            .iter()
            .filter(|word| {
                others.binary_search(word).is_ok()
                    || (word.chars().count() >= 4
                        && !word.bytes().all(|b| b.is_ascii_digit())
                        && others.iter().any(|other| strsim::jaro_winkler(word, other) >= 0.9))
            })
            .count() as f64
    };
    (matched(words_a, words_b) + matched(words_b, words_a)) / 2.0
}

fn address_overlap(a: &str, b: &str, words_a: &[String], words_b: &[String]) -> Overlap {
    if words_a.is_empty() || words_b.is_empty() {
        return Overlap {
            jaccard: 0.0,
            dice: 0.0,
        };
    }
    let (n_a, n_b) = (words_a.len() as f64, words_b.len() as f64);
    let shared = shared_words(words_a, words_b);
    let mut overlap = Overlap {
        jaccard: shared / (n_a + n_b - shared),
        dice: 2.0 * shared / (n_a + n_b),
    };
    // Words run together or split apart ("goodwinstreet", "tes bury") defeat the word overlap;
    // the letters and digits without the spaces still agree.
    // Only worth computing when it can lift the overlap to the same street: the word overlap
    // is short of it, and the lengths are close enough for a similarity of 0.9.
    if overlap.dice < SAME_STREET_DICE {
        let squeeze = |text: &str| -> Vec<char> { text.chars().filter(|c| c.is_alphanumeric()).collect() };
        let (a, b) = (squeeze(a), squeeze(b));
        let longer = a.len().max(b.len());
        if longer > 0 && (longer - a.len().min(b.len())) as f64 <= 0.1 * longer as f64 {
            let squeezed = strsim::generic_levenshtein(&a, &b);
            let squeezed = 1.0 - squeezed as f64 / longer as f64;
            if squeezed >= 0.9 {
                overlap.jaccard = overlap.jaccard.max(squeezed);
                overlap.dice = overlap.dice.max(squeezed);
            }
        }
    }
    overlap
}

/// Same street: the texts agree, or (within one district, when both are placed) at least three
/// quarters of the words by Dice. Otherwise, unless both are placed, mostly the same at a Dice
/// overlap of 0.6, same district at a Jaccard overlap of 0.3, same city at any shared word;
/// placed addresses compare their district codes instead.
fn compare_addresses(a: &FeatureValue, b: &FeatureValue, words_a: &[String], words_b: &[String]) -> Level {
    if a.text == b.text {
        return Level::SameStreet;
    }
    if !a.division.is_empty() && !b.division.is_empty() {
        return if a.division != b.division {
            if a.division[..4.min(a.division.len())] == b.division[..4.min(b.division.len())] {
                Level::SameCity
            } else {
                Level::Different
            }
        } else if address_overlap(&a.text, &b.text, words_a, words_b).dice >= SAME_STREET_DICE {
            Level::SameStreet
        } else {
            Level::SameDistrict
        };
    }
    level_of_words(&address_overlap(&a.text, &b.text, words_a, words_b))
}

/// The level of two addresses not both placed in a district, from how much their words agree.
fn level_of_words(overlap: &Overlap) -> Level {
    if overlap.dice >= SAME_STREET_DICE {
        Level::SameStreet
    } else if overlap.dice >= MOSTLY_SAME_DICE {
        Level::MostlySame
    } else if overlap.jaccard >= 0.3 {
        Level::SameDistrict
    } else if overlap.jaccard > 0.0 {
        Level::SameCity
    } else {
        Level::Different
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> FeatureValue {
        FeatureValue {
            text: text.into(),
            division: String::new(),
            weak: false,
        }
    }

    /// The address comparison as it was before it skipped work that cannot change its level:
    /// the word overlap computed for placed addresses in different districts, and the
    /// squeezed edit distance computed always.
    fn compare_addresses_reference(a: &FeatureValue, b: &FeatureValue) -> Level {
        let (words_a, words_b) = (address_words(&a.text), address_words(&b.text));
        if a.text == b.text {
            return Level::SameStreet;
        }
        let overlap = if words_a.is_empty() || words_b.is_empty() {
            (0.0, 0.0)
        } else {
            let (n_a, n_b) = (words_a.len() as f64, words_b.len() as f64);
            let shared = shared_words(&words_a, &words_b);
            let (mut jaccard, mut dice) = (shared / (n_a + n_b - shared), 2.0 * shared / (n_a + n_b));
            let squeeze = |text: &str| -> String { text.chars().filter(|c| c.is_alphanumeric()).collect() };
            let squeezed = strsim::normalized_levenshtein(&squeeze(&a.text), &squeeze(&b.text));
            if squeezed >= 0.9 {
                jaccard = jaccard.max(squeezed);
                dice = dice.max(squeezed);
            }
            (jaccard, dice)
        };
        let (jaccard, dice) = overlap;
        if !a.division.is_empty() && !b.division.is_empty() {
            return if a.division != b.division {
                if a.division[..4.min(a.division.len())] == b.division[..4.min(b.division.len())] {
                    Level::SameCity
                } else {
                    Level::Different
                }
            } else if dice >= SAME_STREET_DICE {
                Level::SameStreet
            } else {
                Level::SameDistrict
            };
        }
        level_of_words(&Overlap { jaccard, dice })
    }

    proptest::proptest! {
        #[test]
        fn skipping_work_leaves_the_address_level_alone(
            a in "[a-d ]{0,3}(1[0-9] )?(baker|bakr|bake r) (street|st|stret)( [a-c]{4,6})?",
            b in "[a-d ]{0,3}(1[0-9] )?(baker|bakr|bake r) (street|st|stret)( [a-c]{4,6})?",
            chinese_a in "(浙江省)?杭州市(西湖区|上城区)?(文[一二]路|学院路)[0-9]{1,3}号",
            chinese_b in "(浙江省)?杭州市(西湖区|上城区)?(文[一二]路|学院路)[0-9]{1,3}号",
            division_a in "(|330106|330102|110101)",
            division_b in "(|330106|330102|110101)",
        ) {
            for (a, b) in [(a.as_str(), b.as_str()), (chinese_a.as_str(), chinese_b.as_str())] {
                let (x, y) = (placed(a, &division_a), placed(b, &division_b));
                let (words_x, words_y) = (address_words(a), address_words(b));
                proptest::prop_assert_eq!(
                    compare_addresses(&x, &y, &words_x, &words_y),
                    compare_addresses_reference(&x, &y),
                    "{} / {}", a, b
                );
            }
        }
    }

    fn placed(text: &str, division: &str) -> FeatureValue {
        FeatureValue {
            text: text.into(),
            division: division.into(),
            weak: false,
        }
    }

    #[test]
    fn id_numbers() {
        let id = "33010619900102177X";
        assert_eq!(compare_id_numbers(id, id), Level::Exact);
        assert_eq!(compare_id_numbers(id, "33010619900102178X"), Level::OneSubstitution);
        assert_eq!(compare_id_numbers(id, "33010619900102717X"), Level::Transposition);
        assert_eq!(compare_id_numbers(id, "110105194912310029"), Level::Different);
        assert_eq!(compare_id_numbers(id, "330106900102177"), Level::Different);
    }

    #[test]
    fn other_identifiers() {
        assert_eq!(compare_identifiers("1804974", "1804974"), Level::Exact);
        assert_eq!(compare_identifiers("1804974", "1809474"), Level::Transposition);
        assert_eq!(compare_identifiers("1804974", "180497"), Level::Transposition);
        assert_eq!(compare_identifiers("1804974", "6089216"), Level::Different);
    }

    #[test]
    fn chinese_names() {
        assert_eq!(compare_names("张伟", "张伟"), Level::Exact);
        assert_eq!(compare_names("张伟", "章伟"), Level::Phonetic);
        assert_eq!(compare_names("张伟", "张玮"), Level::Phonetic);
        assert_eq!(compare_names("张伟", "张华"), Level::Close);
        assert_eq!(compare_names("张伟", "李娜"), Level::Different);
        assert_eq!(compare_names("阿依古丽·买买提", "阿依古丽·买买提"), Level::Exact);
    }

    #[test]
    fn latin_names() {
        assert_eq!(compare_names("MITCHELL GREEN", "GREEN MITCHELL"), Level::Exact);
        assert_eq!(compare_names("MITCHELL GREEN", "MITCHEL GREEN"), Level::Close);
        assert_eq!(compare_names("MITCHELL GREEN", "GREEN"), Level::Similar);
        assert_eq!(compare_names("MITCHELL GREEN", "HARLEY MCCARTHY"), Level::Different);
    }

    #[test]
    fn pinyin_is_toneless_and_spaced() {
        assert_eq!(name_pinyin("张伟"), "zhang wei");
        assert_eq!(name_pinyin("章伟"), "zhang wei");
        assert_eq!(name_pinyin("阿·买"), "a · mai");
    }

    #[test]
    fn dates() {
        assert_eq!(compare_dates("1990-01-02", "19900102"), Level::Exact);
        assert_eq!(compare_dates("1990-01-02", "1990-02-01"), Level::DayMonthSwapped);
        assert_eq!(compare_dates("1990-01-02", "1990-01-03"), Level::OneDigit);
        assert_eq!(compare_dates("1990-01-02", "1990-10-02"), Level::OneDigit);
        assert_eq!(compare_dates("1990-01-02", "1990-07-19"), Level::SameYear);
        assert_eq!(compare_dates("1990-01-02", "1985-07-19"), Level::Different);
        assert_eq!(compare_dates("", "1985-07-19"), Level::Different);
    }

    #[test]
    fn phones() {
        assert_eq!(compare_phones("13800001234", "13800001234"), Level::Exact);
        assert_eq!(compare_phones("0571-88001234", "021-88001234"), Level::LastEight);
        assert_eq!(compare_phones("13800001234", "13900005678"), Level::Different);
    }

    #[test]
    fn chinese_addresses_use_the_district() {
        let home = placed("浙江省杭州市西湖区文三路1号", "330106");
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &placed("浙江省杭州市西湖区文三路1号", "330106")
            ),
            Level::SameStreet
        );
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &placed("浙江省杭州市西湖区文三路2号", "330106")
            ),
            Level::SameStreet
        );
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &placed("浙江省杭州市西湖区灵隐路9号", "330106")
            ),
            Level::SameDistrict
        );
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &placed("浙江省杭州市上城区解放路9号", "330102")
            ),
            Level::SameCity
        );
        assert_eq!(
            compare_values(Feature::Address, &home, &placed("北京市东城区东四1号", "110101")),
            Level::Different
        );
    }

    #[test]
    fn latin_addresses_use_their_words() {
        let home = value("7, WALLABY PLACE, DELMAR, CLEVELAND, SA, 2119");
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &value("7, WALABY PLACE, DELMAR, CLEVELAND, SA, 2119")
            ),
            Level::SameStreet
        );
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &value("7, WALLABYPLACE, DEL MAR, CLEVELAND, SA, 2119")
            ),
            Level::SameStreet
        );
        // A second address line one department leaves out, a state another gets wrong.
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &value("7, WALLABY PLACE, CLEVELAND, QLD, 2119")
            ),
            Level::SameStreet
        );
        // Another house number and state, and an address line one department left out.
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &value("9, WALLABY PLACE, CLEVELAND, NSW, 2119")
            ),
            Level::MostlySame
        );
        assert_eq!(
            compare_values(Feature::Address, &home, &value("12, KING STREET, CLEVELAND, SA, 2119")),
            Level::SameDistrict
        );
        assert_eq!(
            compare_values(
                Feature::Address,
                &home,
                &value("177, PRIDHAM STREET, MILTON, MARSDEN, NSW, 3165")
            ),
            Level::Different
        );
    }

    #[test]
    fn address_comparison_is_symmetric() {
        let pairs = [
            (
                "23, BATH PLACE, EVENTIDE HOME, CASINO, SA, 5118",
                "23, BAT H PACE, CASNIO, SA, 5118",
            ),
            (
                "95, LEAHY PLACE, CRESTFIELD, SHENTON PARK, NSW, 6302",
                "95, LEAHY LPLACE, CRESTKIELD, SHENTO MPARK, NSW, 6320",
            ),
            ("杭州西湖区文三路1号", "杭州市西湖区文三路一号"),
        ];
        for (a, b) in pairs {
            let (a, b) = (value(a), value(b));
            assert_eq!(
                compare_values(Feature::Address, &a, &b),
                compare_values(Feature::Address, &b, &a),
                "{} / {}",
                a.text,
                b.text
            );
        }
    }

    #[test]
    fn the_best_pair_of_values_counts() {
        let mut a = Features::default();
        let mut b = Features::default();
        a.insert(Feature::Phone, value("13800001234"));
        a.insert(Feature::Phone, value("13900005678"));
        b.insert(Feature::Phone, value("13900005678"));
        assert_eq!(compare_feature(Feature::Phone, &a, &b), Some((Level::Exact, false)));
        assert_eq!(compare_feature(Feature::Name, &a, &b), None);
    }
}
