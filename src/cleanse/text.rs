//! Character-level normalization shared by every standardizer: full-width to half-width,
//! control characters removed, white space collapsed. Pure functions.

use std::borrow::Cow;

/// Maps full-width ASCII variants (U+FF01..U+FF5E) and the ideographic space to ASCII.
pub fn to_half_width(raw: &str) -> String {
    raw.chars().map(half_width).collect()
}

/// `to_half_width` of one character.
pub fn half_width(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).expect("maps into ASCII"),
        other => other,
    }
}

/// Traditional Chinese characters to simplified (OpenCC's phrase tables, via hanconv), so
/// 張偉 and 张伟 compare equal. Text without traditional characters comes back unchanged.
pub fn to_simplified(text: &str) -> String {
    // Most values hold no traditional character: skip hanconv's trie walk for them.
    if !text.chars().any(may_be_converted) {
        return text.to_string();
    }
    hanconv::t2s(text)
}

/// The characters that hanconv's t2s tables write differently, as a bit set over the Basic
/// Multilingual Plane plus a sorted list for the other planes.
struct ConvertedCharacters {
    bmp_bits: Vec<u64>,
    astral: Vec<char>,
}

impl ConvertedCharacters {
    fn insert(&mut self, c: char) {
        let code = c as usize;
        if code < 0x10000 {
            self.bmp_bits[code / 64] |= 1 << (code % 64);
        } else {
            self.astral.push(c);
        }
    }
}

static CONVERTED_CHARACTERS: std::sync::LazyLock<ConvertedCharacters> = std::sync::LazyLock::new(|| {
    let mut converted = ConvertedCharacters {
        bmp_bits: vec![0; 0x10000 / 64],
        astral: Vec::new(),
    };
    // t2s writes each key it matches in the text as the key's replacement. A key that changes
    // as long as it is has a character that changes in place, and one that changes length has
    // all its characters listed, so a key that changes the text has a listed character in the
    // text: text without any comes out of t2s as it went in. Most phrase keys start with a
    // character that is the same in both scripts (一干二淨), so listing first characters would
    // send much simplified text through the trie. A key listed twice counts if any of its
    // entries changes it, which can only add characters.
    let entries = hanconv::RawDictionary::TSPhrases
        .iter()
        .chain(hanconv::RawDictionary::TSCharacters.iter());
    for (key, replacement) in entries {
        if key == replacement {
            continue;
        }
        if key.chars().count() == replacement.chars().count() {
            for (key_char, replacement_char) in key.chars().zip(replacement.chars()) {
                if key_char != replacement_char {
                    converted.insert(key_char);
                }
            }
        } else {
            key.chars().for_each(|c| converted.insert(c));
        }
    }
    converted.astral.sort_unstable();
    converted.astral.dedup();
    converted
});

/// Whether hanconv's t2s may write `c` differently, alone or in a phrase.
fn may_be_converted(c: char) -> bool {
    let converted = &*CONVERTED_CHARACTERS;
    let code = c as usize;
    if code < 0x10000 {
        converted.bmp_bits[code / 64] & (1 << (code % 64)) != 0
    } else {
        converted.astral.binary_search(&c).is_ok()
    }
}

/// Values departments send for "not recorded". Compared after `clean_text`.
const PLACEHOLDERS: [&str; 16] = [
    "无",
    "不详",
    "未知",
    "暂无",
    "空",
    "无此项",
    "-",
    "--",
    "/",
    "\\",
    "N/A",
    "n/a",
    "NA",
    "NULL",
    "null",
    "None",
];

/// Whether a cleaned value only says "not recorded".
pub fn is_placeholder(cleaned: &str) -> bool {
    PLACEHOLDERS.contains(&cleaned) || cleaned.chars().all(|c| c == '*' || c == '?' || c == '？')
}

/// `clean_text` in one pass, also saying which of its two rules changed something: the
/// full-width mapping (NOR-001) and the white-space and control-character cleanup (NOR-002).
pub fn normalize_text(raw: &str) -> (Cow<'_, str>, bool, bool) {
    // Most values are already clean: one scan, and no copy (the standardizers write their own).
    if is_clean(raw) {
        return (Cow::Borrowed(raw), false, false);
    }
    let mut out = String::with_capacity(raw.len());
    let mut half_width_changed = false;
    let mut whitespace_changed = false;
    let mut pending_space: Option<char> = None;
    for original in raw.chars() {
        let c = half_width(original);
        if c != original {
            half_width_changed = true;
        }
        if c.is_whitespace() {
            if out.is_empty() || pending_space.is_some() {
                whitespace_changed = true;
            } else {
                pending_space = Some(c);
            }
        } else if c.is_control() || matches!(c, '\u{200B}'..='\u{200D}' | '\u{FEFF}') {
            whitespace_changed = true;
        } else {
            if let Some(space) = pending_space.take() {
                if space != ' ' {
                    whitespace_changed = true;
                }
                out.push(' ');
            }
            out.push(c);
        }
    }
    if pending_space.is_some() {
        whitespace_changed = true;
    }
    (Cow::Owned(out), half_width_changed, whitespace_changed)
}

/// Whether `normalize_text` would leave `raw` as it is: no full-width character or ideographic
/// space, no control or zero-width character, and white space only as single ASCII spaces
/// between other characters.
fn is_clean(raw: &str) -> bool {
    // Starts true so that a leading space counts as one to trim.
    let mut after_space = true;
    for c in raw.chars() {
        if c == ' ' {
            if after_space {
                return false;
            }
            after_space = true;
            continue;
        }
        let changes = if c.is_ascii() {
            // ASCII white space other than the space is all control characters.
            c.is_ascii_control()
        } else {
            matches!(c, '\u{3000}' | '\u{FF01}'..='\u{FF5E}' | '\u{200B}'..='\u{200D}' | '\u{FEFF}')
                || c.is_whitespace()
                || c.is_control()
        };
        if changes {
            return false;
        }
        after_space = false;
    }
    // A trailing space is trimmed; the empty text is clean.
    !after_space || raw.is_empty()
}

/// Half-width, no control or zero-width characters, inner white space collapsed to one space,
/// trimmed. Idempotent.
pub fn clean_text(raw: &str) -> String {
    let half = to_half_width(raw);
    let mut out = String::with_capacity(half.len());
    let mut pending_space = false;
    for c in half.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if c.is_control() || matches!(c, '\u{200B}'..='\u{200D}' | '\u{FEFF}') {
            continue;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(raw: &str, expected: &str) {
        assert_eq!(clean_text(raw), expected);
    }

    #[test]
    fn cleaning() {
        check("  张伟  ", "张伟");
        check("ＡＢＣ１２３", "ABC123");
        check("文三路\u{3000}1号", "文三路 1号");
        check("a\t\n b", "a b");
        check("a\u{0007}b\u{200B}", "ab");
        check("", "");
    }

    #[test]
    fn simplified() {
        assert_eq!(to_simplified("張偉"), "张伟");
        assert_eq!(to_simplified("瀋陽市"), "沈阳市");
        assert_eq!(to_simplified("张伟"), "张伟");
        assert_eq!(to_simplified("ABC 123"), "ABC 123");
    }

    #[test]
    fn simplified_equals_hanconv_on_every_table_key() {
        let entries = hanconv::RawDictionary::TSPhrases
            .iter()
            .chain(hanconv::RawDictionary::TSCharacters.iter());
        for (key, _) in entries {
            let text = format!("张{key}1");
            assert_eq!(to_simplified(&text), hanconv::t2s(&text), "{text}");
        }
    }

    proptest! {
        #[test]
        fn one_pass_equals_two(raw in "[ a\u{3000}\u{FF21}\t\n\u{200B}b]{0,12}|\\PC{0,30}") {
            let half_width = to_half_width(&raw);
            let (normalized, half_width_changed, whitespace_changed) = normalize_text(&raw);
            prop_assert_eq!(&normalized, &clean_text(&raw));
            prop_assert_eq!(half_width_changed, half_width != raw);
            prop_assert_eq!(whitespace_changed, clean_text(&half_width) != half_width);
            prop_assert_eq!(is_clean(&raw), !half_width_changed && !whitespace_changed && normalized == raw);
        }

        /// The pre-check only skips hanconv where it would change nothing.
        #[test]
        fn simplified_equals_hanconv(raw in "[張偉瀋陽乾圖干张伟a 1]{0,8}|\\PC{0,30}") {
            prop_assert_eq!(to_simplified(&raw), hanconv::t2s(&raw));
        }

        #[test]
        fn idempotent(raw in "\\PC{0,60}") {
            let once = clean_text(&raw);
            prop_assert_eq!(clean_text(&once), once);
        }
    }
}
