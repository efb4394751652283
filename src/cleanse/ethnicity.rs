//! Ethnicity: maps GB 3304 codes, short names and traditional spellings to the GB 3304 name
//! (01 and 汉 become 汉族). Pure and table-driven; never refuses a value: one it does not know
//! is kept and flagged. It does not guess (蒙族, 哈族 and letter codes such as HA are not read).

use super::rules::{ETHNICITY_NAME, ETHNICITY_UNKNOWN};
use super::Standardized;

/// GB 3304 digit code and name of every group, in code order: the 56 groups, then 97 (other)
/// and 98 (Chinese nationals of foreign descent).
const GROUPS: [(&str, &str); 58] = [
    ("01", "汉族"),
    ("02", "蒙古族"),
    ("03", "回族"),
    ("04", "藏族"),
    ("05", "维吾尔族"),
    ("06", "苗族"),
    ("07", "彝族"),
    ("08", "壮族"),
    ("09", "布依族"),
    ("10", "朝鲜族"),
    ("11", "满族"),
    ("12", "侗族"),
    ("13", "瑶族"),
    ("14", "白族"),
    ("15", "土家族"),
    ("16", "哈尼族"),
    ("17", "哈萨克族"),
    ("18", "傣族"),
    ("19", "黎族"),
    ("20", "傈僳族"),
    ("21", "佤族"),
    ("22", "畲族"),
    ("23", "高山族"),
    ("24", "拉祜族"),
    ("25", "水族"),
    ("26", "东乡族"),
    ("27", "纳西族"),
    ("28", "景颇族"),
    ("29", "柯尔克孜族"),
    ("30", "土族"),
    ("31", "达斡尔族"),
    ("32", "仫佬族"),
    ("33", "羌族"),
    ("34", "布朗族"),
    ("35", "撒拉族"),
    ("36", "毛南族"),
    ("37", "仡佬族"),
    ("38", "锡伯族"),
    ("39", "阿昌族"),
    ("40", "普米族"),
    ("41", "塔吉克族"),
    ("42", "怒族"),
    ("43", "乌孜别克族"),
    ("44", "俄罗斯族"),
    ("45", "鄂温克族"),
    ("46", "德昂族"),
    ("47", "保安族"),
    ("48", "裕固族"),
    ("49", "京族"),
    ("50", "塔塔尔族"),
    ("51", "独龙族"),
    ("52", "鄂伦春族"),
    ("53", "赫哲族"),
    ("54", "门巴族"),
    ("55", "珞巴族"),
    ("56", "基诺族"),
    ("97", "其他"),
    ("98", "外国血统中国籍人士"),
];

/// The GB 3304 name of a cleaned ethnicity value. `ETHNICITY_NAME` fires when the value changes;
/// a value that names no group is kept as given and `ETHNICITY_UNKNOWN` fires.
///
/// Accepted: the code with or without its leading zero (1, 01, 97), the name (汉族), the name
/// without 族 (汉, 维吾尔), and either of these in traditional characters (漢族, 維吾爾).
pub fn standardize_ethnicity(cleaned: &str) -> Standardized {
    match group_of(cleaned) {
        Some((_, name)) if name == cleaned => Standardized::unchanged(cleaned),
        Some((_, name)) => Standardized {
            value: Some(name.to_string()),
            rules: vec![ETHNICITY_NAME],
        },
        None => Standardized {
            value: Some(cleaned.to_string()),
            rules: vec![ETHNICITY_UNKNOWN],
        },
    }
}

/// The two-digit GB 3304 code of a group, from any form `standardize_ethnicity` accepts
/// (`code_of("汉族")`, `code_of("漢")` and `code_of("1")` are all `Some("01")`).
pub fn code_of(name: &str) -> Option<&'static str> {
    group_of(name).map(|(code, _)| code)
}

fn group_of(text: &str) -> Option<(&'static str, &'static str)> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return group_of_code(text);
    }
    // Every name is Chinese, so other ASCII text (letter codes, pinyin) names no group.
    if text.is_ascii() {
        return None;
    }
    if let Some(group) = group_of_name(text) {
        return Some(group);
    }
    // Only text that held a traditional character is looked up again, so simplified text that
    // names no group costs one scan of the table, not two.
    let simplified: String = text.chars().map(simplified_char).collect();
    if simplified == text {
        return None;
    }
    group_of_name(&simplified)
}

fn group_of_code(digits: &str) -> Option<(&'static str, &'static str)> {
    let number = match digits.as_bytes() {
        [ones] => ones - b'0',
        [tens, ones] => (tens - b'0') * 10 + (ones - b'0'),
        _ => return None,
    };
    let idx = match number {
        1..=56 => usize::from(number) - 1,
        97 => 56,
        98 => 57,
        _ => return None,
    };
    Some(GROUPS[idx])
}

fn group_of_name(text: &str) -> Option<(&'static str, &'static str)> {
    // 其它 is the common variant spelling of 其他.
    let text = if text == "其它" { "其他" } else { text };
    GROUPS
        .iter()
        .find(|(_, name)| *name == text || name.strip_suffix('族') == Some(text))
        .copied()
}

/// The simplified form of the traditional (and variant) characters that occur in the group
/// names; every other character is returned as it is. The test `traditional_spellings` checks
/// this against OpenCC's simplified-to-traditional tables.
fn simplified_char(c: char) -> char {
    match c {
        '漢' => '汉',
        '維' => '维',
        '爾' => '尔',
        '彞' => '彝',
        '壯' => '壮',
        '鮮' => '鲜',
        '滿' => '满',
        '瑤' => '瑶',
        '薩' => '萨',
        // 畬 (yú) is a different character that is often typed for 畲 (shē).
        '畬' => '畲',
        '東' => '东',
        '鄉' => '乡',
        '納' => '纳',
        '頗' => '颇',
        '達' => '达',
        '錫' => '锡',
        '烏' => '乌',
        '別' => '别',
        '羅' => '罗',
        '溫' => '温',
        '獨' => '独',
        '龍' => '龙',
        '倫' => '伦',
        '門' => '门',
        '諾' => '诺',
        '國' => '国',
        '統' => '统',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(cleaned: &str, value: &str, rules: &[&str]) {
        let standardized = standardize_ethnicity(cleaned);
        assert_eq!(standardized.value.as_deref(), Some(value), "value of {cleaned:?}");
        assert_eq!(standardized.rules, rules, "rules of {cleaned:?}");
    }

    #[test]
    fn names_are_kept() {
        check("汉族", "汉族", &[]);
        check("维吾尔族", "维吾尔族", &[]);
        check("柯尔克孜族", "柯尔克孜族", &[]);
        check("基诺族", "基诺族", &[]);
        check("其他", "其他", &[]);
        check("外国血统中国籍人士", "外国血统中国籍人士", &[]);
    }

    #[test]
    fn codes_become_names() {
        check("01", "汉族", &[ETHNICITY_NAME]);
        check("1", "汉族", &[ETHNICITY_NAME]);
        check("05", "维吾尔族", &[ETHNICITY_NAME]);
        check("9", "布依族", &[ETHNICITY_NAME]);
        check("10", "朝鲜族", &[ETHNICITY_NAME]);
        check("22", "畲族", &[ETHNICITY_NAME]);
        check("30", "土族", &[ETHNICITY_NAME]);
        check("56", "基诺族", &[ETHNICITY_NAME]);
        check("97", "其他", &[ETHNICITY_NAME]);
        check("98", "外国血统中国籍人士", &[ETHNICITY_NAME]);
    }

    #[test]
    fn short_names_become_names() {
        check("汉", "汉族", &[ETHNICITY_NAME]);
        check("回", "回族", &[ETHNICITY_NAME]);
        check("维吾尔", "维吾尔族", &[ETHNICITY_NAME]);
        check("蒙古", "蒙古族", &[ETHNICITY_NAME]);
        check("土", "土族", &[ETHNICITY_NAME]);
        check("土家", "土家族", &[ETHNICITY_NAME]);
        check("高山", "高山族", &[ETHNICITY_NAME]);
        check("京", "京族", &[ETHNICITY_NAME]);
        check("水", "水族", &[ETHNICITY_NAME]);
        check("其它", "其他", &[ETHNICITY_NAME]);
    }

    #[test]
    fn traditional_forms_become_names() {
        check("漢族", "汉族", &[ETHNICITY_NAME]);
        check("漢", "汉族", &[ETHNICITY_NAME]);
        check("維吾爾族", "维吾尔族", &[ETHNICITY_NAME]);
        check("維吾爾", "维吾尔族", &[ETHNICITY_NAME]);
        check("朝鮮族", "朝鲜族", &[ETHNICITY_NAME]);
        check("滿族", "满族", &[ETHNICITY_NAME]);
        check("畬族", "畲族", &[ETHNICITY_NAME]);
        check("烏孜別克族", "乌孜别克族", &[ETHNICITY_NAME]);
        check("外國血統中國籍人士", "外国血统中国籍人士", &[ETHNICITY_NAME]);
    }

    #[test]
    fn unknown_values_are_kept_and_flagged() {
        check("0", "0", &[ETHNICITY_UNKNOWN]);
        check("00", "00", &[ETHNICITY_UNKNOWN]);
        check("57", "57", &[ETHNICITY_UNKNOWN]);
        check("96", "96", &[ETHNICITY_UNKNOWN]);
        check("99", "99", &[ETHNICITY_UNKNOWN]);
        check("001", "001", &[ETHNICITY_UNKNOWN]);
        check("族", "族", &[ETHNICITY_UNKNOWN]);
        check("汉族人", "汉族人", &[ETHNICITY_UNKNOWN]);
        check("汉 族", "汉 族", &[ETHNICITY_UNKNOWN]);
        check("蒙族", "蒙族", &[ETHNICITY_UNKNOWN]);
        check("穿青人", "穿青人", &[ETHNICITY_UNKNOWN]);
        check("HA", "HA", &[ETHNICITY_UNKNOWN]);
        check("Han", "Han", &[ETHNICITY_UNKNOWN]);
        check("其", "其", &[ETHNICITY_UNKNOWN]);
        check("", "", &[ETHNICITY_UNKNOWN]);
    }

    #[test]
    fn code_of_accepts_every_form() {
        assert_eq!(code_of("汉族"), Some("01"));
        assert_eq!(code_of("漢"), Some("01"));
        assert_eq!(code_of("1"), Some("01"));
        assert_eq!(code_of("基诺族"), Some("56"));
        assert_eq!(code_of("外国血统中国籍人士"), Some("98"));
        assert_eq!(code_of("火星族"), None);
        assert_eq!(code_of("0"), None);
    }

    #[test]
    fn table_is_in_code_order_and_unambiguous() {
        for (idx, (code, name)) in GROUPS.iter().enumerate() {
            let expected_code = if idx < 56 {
                format!("{:02}", idx + 1)
            } else {
                format!("{}", idx + 41)
            };
            assert_eq!(*code, expected_code, "{name}");
            assert_eq!(idx < 56, name.ends_with('族'), "{name}");
            assert_eq!(group_of_name(name), Some((*code, *name)), "a short name shadows {name}");
            if let Some(short) = name.strip_suffix('族') {
                assert_eq!(group_of_name(short), Some((*code, *name)), "{short} is ambiguous");
            }
        }
    }

    #[test]
    fn every_group_by_code_name_short_name_and_traditional_spelling() {
        for (code, name) in GROUPS {
            let short = name.strip_suffix('族').unwrap_or(name);
            let unpadded = code.trim_start_matches('0');
            let forms = [
                code.to_string(),
                unpadded.to_string(),
                short.to_string(),
                hanconv::s2t(name),
                hanconv::s2tw(name),
                hanconv::s2hk(name),
                hanconv::s2t(short),
            ];
            for form in forms {
                assert_eq!(standardize_ethnicity(&form).value.as_deref(), Some(name), "{form:?}");
                assert_eq!(code_of(&form), Some(code), "{form:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(raw in "\\PC{0,30}") {
            let once = standardize_ethnicity(&raw);
            let value = once.value.clone().expect("ethnicity never refuses a value");
            let twice = standardize_ethnicity(&value);
            prop_assert_eq!(twice.value.as_deref(), Some(value.as_str()));
            if once.rules == [ETHNICITY_UNKNOWN] {
                prop_assert_eq!(value, raw);
                prop_assert_eq!(twice.rules, vec![ETHNICITY_UNKNOWN]);
            } else {
                prop_assert!(twice.rules.is_empty(), "{:?}", twice.rules);
            }
        }

        #[test]
        fn codes_are_idempotent(raw in "[0-9]{1,3}") {
            let once = standardize_ethnicity(&raw);
            let value = once.value.expect("ethnicity never refuses a value");
            prop_assert_eq!(standardize_ethnicity(&value).value, Some(value));
        }
    }
}
