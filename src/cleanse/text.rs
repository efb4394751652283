//! Character-level normalization shared by every standardizer: full-width to half-width,
//! control characters removed, white space collapsed. Pure functions.

/// Maps full-width ASCII variants (U+FF01..U+FF5E) and the ideographic space to ASCII.
pub fn to_half_width(raw: &str) -> String {
    raw.chars()
        .map(|c| match c {
            '\u{3000}' => ' ',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).expect("maps into ASCII"),
            other => other,
        })
        .collect()
}

/// Traditional Chinese characters to simplified (OpenCC's phrase tables, via hanconv), so
/// 張偉 and 张伟 compare equal. Text without traditional characters comes back unchanged.
pub fn to_simplified(text: &str) -> String {
    hanconv::t2s(text)
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
pub fn normalize_text(raw: &str) -> (String, bool, bool) {
    let mut out = String::with_capacity(raw.len());
    let mut half_width_changed = false;
    let mut whitespace_changed = false;
    let mut pending_space: Option<char> = None;
    for original in raw.chars() {
        let c = match original {
            '\u{3000}' => ' ',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(original as u32 - 0xFEE0).expect("maps into ASCII"),
            other => other,
        };
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
    (out, half_width_changed, whitespace_changed)
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

    proptest! {
        #[test]
        fn one_pass_equals_two(raw in "[ a\u{3000}\u{FF21}\t\n\u{200B}b]{0,12}|\\PC{0,30}") {
            let half_width = to_half_width(&raw);
            let (normalized, half_width_changed, whitespace_changed) = normalize_text(&raw);
            prop_assert_eq!(&normalized, &clean_text(&raw));
            prop_assert_eq!(half_width_changed, half_width != raw);
            prop_assert_eq!(whitespace_changed, clean_text(&half_width) != half_width);
        }

        #[test]
        fn idempotent(raw in "\\PC{0,60}") {
            let once = clean_text(&raw);
            prop_assert_eq!(clean_text(&once), once);
        }
    }
}
