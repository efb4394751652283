//! Person names: traditional characters become simplified, spaces inside Chinese names are
//! removed, minority-name separators are written `·` (U+00B7), Latin-script names are
//! upper-cased. Digits and symbols are flagged, never removed. Pure functions of one value:
//! never judges whether two names belong to one person.
//!
//! A name is read as one of three kinds, by the letters it holds:
//! - Chinese: at least one Han character. Latin letters in it are upper-cased (NAME_LATIN) and
//!   flagged (NAME_CHARACTERS): in Chinese records they are mostly a letter a clerk appended to
//!   tell namesakes apart (王伟A), not part of the name. A space is removed only between two Han
//!   characters (张 伟, 欧阳 娜娜), so 王伟 TOM keeps its space. A separator between two parts
//!   becomes `·`; one at the start or end separates nothing, so it is kept as written and flagged.
//! - Latin: no Han, every letter Latin (ASCII, and accented letters such as pinyin tone marks).
//!   Upper-cased with single spaces; dots stay dots (J. SMITH), a typographic apostrophe `’`
//!   becomes `'`.
//! - Other scripts (Uyghur or Tibetan script, Cyrillic, kana, ...): kept as written.
//!
//! Standardizing an output again changes nothing and fires no NOR- rule.

use super::rules;
use super::text::to_simplified;
use super::Standardized;

/// hanconv's t2s is not idempotent on its own output (乾圖 becomes 乾图, then 干图), so it runs
/// until nothing changes; three rounds cover every chain in its tables, one spare.
const SIMPLIFY_ROUNDS_MAX: usize = 4;

/// Standardizes a name that has passed `text::clean_text`. Empty input stands for "not
/// recorded" and gives no value.
pub fn standardize_name(cleaned: &str) -> Standardized {
    if cleaned.trim().is_empty() {
        return Standardized {
            value: None,
            rules: Vec::new(),
        };
    }
    let mut fired = Vec::new();
    let value = if cleaned.chars().any(is_han) {
        chinese_name(cleaned, &mut fired)
    } else if is_latin_name(cleaned) {
        latin_name(cleaned, &mut fired)
    } else {
        if cleaned.chars().any(is_flagged_character) {
            fired.push(rules::NAME_CHARACTERS);
        }
        cleaned.to_string()
    };
    Standardized {
        value: Some(value),
        rules: fired,
    }
}

/// Han ideographs: the unified blocks, the compatibility blocks, planes 2 and 3 (extensions
/// B to H), and 〇. Every character hanconv reads or writes lies in these ranges, so
/// simplification never changes what counts as Han.
fn is_han(c: char) -> bool {
    matches!(c,
        '\u{3007}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{3FFFF}')
}

/// The marks written between the parts of a transliterated minority name: middle dot, bullet,
/// full stop, katakana middle dots, hyphenation point, ideographic full stop, and the look-alike
/// operators and small full stops that input methods produce.
fn is_name_separator(c: char) -> bool {
    matches!(
        c,
        '\u{00B7}'
            | '\u{2022}'
            | '.'
            | '\u{30FB}'
            | '\u{2027}'
            | '\u{3002}'
            | '\u{FF65}'
            | '\u{2219}'
            | '\u{22C5}'
            | '\u{FE52}'
            | '\u{FF0E}'
    )
}

fn is_latin_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || (matches!(c, '\u{00C0}'..='\u{024F}' | '\u{1E00}'..='\u{1EFF}') && c.is_alphabetic())
}

/// Combining diacritical marks (a decomposed é, pinyin tones typed as marks); not letters to
/// `char::is_alphabetic`, but part of one.
fn is_combining_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE20}'..='\u{FE2F}')
}

/// A digit (of any script, Roman numerals included) or a symbol: anything but letters,
/// combining marks, white space, name separators, hyphens and apostrophes. 〇 is a Han
/// character in names, not a digit.
fn is_flagged_character(c: char) -> bool {
    if c == '\u{3007}' {
        return false;
    }
    if c.is_numeric() {
        return true;
    }
    !(c.is_alphabetic()
        || is_combining_mark(c)
        || c.is_whitespace()
        || is_name_separator(c)
        || matches!(c, '-' | '\'' | '\u{2019}'))
}

fn is_latin_name(cleaned: &str) -> bool {
    let mut has_letter = false;
    for c in cleaned.chars() {
        if c.is_alphabetic() {
            if !is_latin_letter(c) {
                return false;
            }
            has_letter = true;
        }
    }
    has_letter
}

/// Pushes `c`, upper-cased when it is a Latin letter; tells whether that changed it.
fn push_upper_latin(out: &mut String, c: char) -> bool {
    if !is_latin_letter(c) {
        out.push(c);
        return false;
    }
    let mut changed = false;
    for upper in c.to_uppercase() {
        changed |= upper != c;
        out.push(upper);
    }
    changed
}

fn chinese_name(cleaned: &str, fired: &mut Vec<&'static str>) -> String {
    let mut out = String::with_capacity(cleaned.len());
    let mut gaps = GapOutcome::default();
    let mut latin_changed = false;
    let mut has_latin = false;
    let mut has_flagged = false;
    // A gap is a run of white space and separators; what it becomes depends on both neighbours.
    let mut gap_start = None;
    let mut previous = None;
    for (idx, c) in cleaned.char_indices() {
        if c.is_whitespace() || is_name_separator(c) {
            gap_start.get_or_insert(idx);
            continue;
        }
        if let Some(start) = gap_start.take() {
            gaps.close(&mut out, &cleaned[start..idx], previous, Some(c));
        }
        has_latin |= is_latin_letter(c);
        has_flagged |= is_flagged_character(c);
        latin_changed |= push_upper_latin(&mut out, c);
        previous = Some(c);
    }
    if let Some(start) = gap_start {
        gaps.close(&mut out, &cleaned[start..], previous, None);
    }

    // Simplify last: removing spaces first lets hanconv see whole words, and the result is
    // then a fixed point of both steps.
    let mut simplified_changed = false;
    for _ in 0..SIMPLIFY_ROUNDS_MAX {
        let simplified = to_simplified(&out);
        if simplified == out {
            break;
        }
        out = simplified;
        simplified_changed = true;
    }

    let fixes = [
        (simplified_changed, rules::NAME_SIMPLIFIED),
        (gaps.separator_changed, rules::NAME_SEPARATOR),
        (latin_changed, rules::NAME_LATIN),
        (gaps.spaces_changed, rules::NAME_SPACES),
        (has_latin || has_flagged || gaps.edge_separator, rules::NAME_CHARACTERS),
    ];
    fired.extend(fixes.iter().filter(|(fires, _)| *fires).map(|(_, rule)| *rule));
    out
}

#[derive(Default)]
struct GapOutcome {
    separator_changed: bool,
    spaces_changed: bool,
    edge_separator: bool,
}

impl GapOutcome {
    /// Writes what the gap between `before` and `after` becomes (`None`: the start or the end).
    fn close(&mut self, out: &mut String, gap: &str, before: Option<char>, after: Option<char>) {
        let at_edge = before.is_none() || after.is_none();
        if gap.chars().any(is_name_separator) {
            if at_edge {
                out.push_str(gap);
                self.edge_separator = true;
            } else {
                out.push('\u{00B7}');
                self.separator_changed |= gap != "\u{00B7}";
            }
        } else if at_edge || before.is_some_and(is_han) && after.is_some_and(is_han) {
            self.spaces_changed = true;
        } else {
            out.push(' ');
            self.spaces_changed |= gap != " ";
        }
    }
}

fn latin_name(cleaned: &str, fired: &mut Vec<&'static str>) -> String {
    let mut out = String::with_capacity(cleaned.len());
    let mut pending_space = false;
    for c in cleaned.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if c == '\u{2019}' {
            out.push('\'');
        } else {
            push_upper_latin(&mut out, c);
        }
    }
    if out != cleaned {
        fired.push(rules::NAME_LATIN);
    }
    if out.chars().any(is_flagged_character) {
        fired.push(rules::NAME_CHARACTERS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(cleaned: &str, expected: &str, expected_rules: &[&str]) {
        let standardized = standardize_name(cleaned);
        assert_eq!(standardized.value.as_deref(), Some(expected), "value of {cleaned:?}");
        assert_eq!(standardized.rules, expected_rules, "rules of {cleaned:?}");
    }

    #[test]
    fn chinese_names() {
        check("张伟", "张伟", &[]);
        check("欧阳娜娜", "欧阳娜娜", &[]);
        check("張偉", "张伟", &[rules::NAME_SIMPLIFIED]);
        check("张 伟", "张伟", &[rules::NAME_SPACES]);
        check("欧阳 娜娜", "欧阳娜娜", &[rules::NAME_SPACES]);
        check("歐陽 娜娜", "欧阳娜娜", &[rules::NAME_SIMPLIFIED, rules::NAME_SPACES]);
        check("李〇", "李〇", &[]);
        // A chain in the conversion tables: simplified until nothing changes.
        check("乾圖", "干图", &[rules::NAME_SIMPLIFIED]);
        // Spaces go first, so the converter sees the whole word.
        check("乾 隆", "乾隆", &[rules::NAME_SPACES]);
    }

    #[test]
    fn minority_name_separators() {
        check("阿卜杜拉·买买提", "阿卜杜拉·买买提", &[]);
        check("阿卜杜拉.买买提", "阿卜杜拉·买买提", &[rules::NAME_SEPARATOR]);
        check("阿卜杜拉•买买提", "阿卜杜拉·买买提", &[rules::NAME_SEPARATOR]);
        check("阿卜杜拉・买买提", "阿卜杜拉·买买提", &[rules::NAME_SEPARATOR]);
        check("阿卜杜拉‧买买提", "阿卜杜拉·买买提", &[rules::NAME_SEPARATOR]);
        check("阿卜杜拉。买买提", "阿卜杜拉·买买提", &[rules::NAME_SEPARATOR]);
        check("阿卜杜拉･买买提", "阿卜杜拉·买买提", &[rules::NAME_SEPARATOR]);
        check("热依拉 · 迪丽", "热依拉·迪丽", &[rules::NAME_SEPARATOR]);
        check("热依拉 .迪丽", "热依拉·迪丽", &[rules::NAME_SEPARATOR]);
        check("热依拉..迪丽", "热依拉·迪丽", &[rules::NAME_SEPARATOR]);
        check("阿卜杜拉·买买提·艾力", "阿卜杜拉·买买提·艾力", &[]);
        check(
            "阿卜杜拉 买买提.艾力",
            "阿卜杜拉买买提·艾力",
            &[rules::NAME_SEPARATOR, rules::NAME_SPACES],
        );
        // A separator at an edge separates nothing: kept as written, flagged.
        check("阿卜杜拉。", "阿卜杜拉。", &[rules::NAME_CHARACTERS]);
        check("·买买提", "·买买提", &[rules::NAME_CHARACTERS]);
    }

    #[test]
    fn chinese_names_with_latin_letters_digits_or_symbols() {
        check("王伟A", "王伟A", &[rules::NAME_CHARACTERS]);
        check("王伟a", "王伟A", &[rules::NAME_LATIN, rules::NAME_CHARACTERS]);
        check("王伟 tom", "王伟 TOM", &[rules::NAME_LATIN, rules::NAME_CHARACTERS]);
        check(
            "阿卜杜拉.smith",
            "阿卜杜拉·SMITH",
            &[rules::NAME_SEPARATOR, rules::NAME_LATIN, rules::NAME_CHARACTERS],
        );
        check("张伟2", "张伟2", &[rules::NAME_CHARACTERS]);
        check("张伟Ⅱ", "张伟Ⅱ", &[rules::NAME_CHARACTERS]);
        check("张伟(曾用名)", "张伟(曾用名)", &[rules::NAME_CHARACTERS]);
        check("张 伟?", "张伟?", &[rules::NAME_SPACES, rules::NAME_CHARACTERS]);
        check("张-伟", "张-伟", &[]);
    }

    #[test]
    fn latin_names() {
        check("JOHN SMITH", "JOHN SMITH", &[]);
        check("john smith", "JOHN SMITH", &[rules::NAME_LATIN]);
        check("john  smith", "JOHN SMITH", &[rules::NAME_LATIN]);
        check(" john smith ", "JOHN SMITH", &[rules::NAME_LATIN]);
        check("Mary-Jane O'Brien", "MARY-JANE O'BRIEN", &[rules::NAME_LATIN]);
        check("O’Brien", "O'BRIEN", &[rules::NAME_LATIN]);
        check("j. smith", "J. SMITH", &[rules::NAME_LATIN]);
        check("Zhāng Wěi", "ZHĀNG WĚI", &[rules::NAME_LATIN]);
        check("José Müller", "JOSÉ MÜLLER", &[rules::NAME_LATIN]);
        check(
            "john smith 3",
            "JOHN SMITH 3",
            &[rules::NAME_LATIN, rules::NAME_CHARACTERS],
        );
        check("JOHN_SMITH", "JOHN_SMITH", &[rules::NAME_CHARACTERS]);
    }

    #[test]
    fn other_scripts_and_oddities() {
        check("Иван Петров", "Иван Петров", &[]);
        check("ئابدۇ.مەمەت", "ئابدۇ.مەمەت", &[]);
        check("12345", "12345", &[rules::NAME_CHARACTERS]);
        check("???", "???", &[rules::NAME_CHARACTERS]);
        assert_eq!(standardize_name("").value, None);
    }

    proptest! {
        #[test]
        fn never_panics_and_idempotent(raw in "\\PC{0,40}") {
            super::super::assert_fix_idempotent(standardize_name, &raw)?;
        }

        #[test]
        fn idempotent_on_name_like_text(raw in "[张王伟娜欧阳張偉歐陽乾圖隆薴麼么 ·.•・‧。･a-zA-Zéß’'0-9-]{0,16}") {
            super::super::assert_fix_idempotent(standardize_name, &raw)?;
        }

        #[test]
        fn idempotent_on_latin_letters(raw in "[\\u{00C0}-\\u{024F}\\u{1E00}-\\u{1EFF}a-z ]{0,16}") {
            super::super::assert_fix_idempotent(standardize_name, &raw)?;
        }

        #[test]
        fn han_names_keep_no_inner_space_or_foreign_separator(raw in "[张伟娜 ·.•。]{1,12}") {
            let value = standardize_name(&raw).value.unwrap_or_default();
            let inner = value.trim_matches(|c: char| c == ' ' || is_name_separator(c));
            prop_assert!(!inner.contains(' '), "{:?}", value);
            prop_assert!(inner.chars().all(|c| !is_name_separator(c) || c == '\u{00B7}'), "{:?}", value);
            prop_assert!(!inner.contains("··"), "{:?}", value);
        }
    }
}
