//! Yes/no and numeric values: yes/no forms become `true` or `false`, numbers lose their
//! thousands separators, spaces and a leading `+`. Pure. Numbers are rewritten as text and never
//! go through a float, so every digit a source sent is kept; a value that is not a yes/no or not a
//! number is refused (`value: None`), never guessed.
//!
//! The caller decides which tags these apply to, and must run them before the placeholder rule
//! (COM-003), which would otherwise read a yes/no tag's 无 ("no") as "not recorded".

use super::rules::{BOOLEAN_FORM, BOOLEAN_INVALID, NUMBER_FORM, NUMBER_INVALID};
use super::Standardized;

/// Every accepted yes/no form. Letters compare ignoring ASCII case, so only the lower-case
/// spelling is listed.
const BOOLEAN_FORMS: &[(&str, bool)] = &[
    ("true", true),
    ("是", true),
    ("有", true),
    ("y", true),
    ("yes", true),
    ("1", true),
    ("√", true),
    ("✓", true),
    ("✔", true),
    ("false", false),
    ("否", false),
    ("无", false),
    ("無", false),
    ("n", false),
    ("no", false),
    ("0", false),
    ("×", false),
    ("✗", false),
    ("✘", false),
];

/// `true` or `false` from a cleaned yes/no value. `BOOLEAN_FORM` fires when the value changes;
/// anything else is refused and `BOOLEAN_INVALID` fires.
pub fn standardize_boolean(cleaned: &str) -> Standardized {
    let found = BOOLEAN_FORMS
        .iter()
        .find(|(form, _)| form.eq_ignore_ascii_case(cleaned))
        .map(|&(_, truth)| if truth { "true" } else { "false" });
    match found {
        Some(truth) if truth == cleaned => Standardized::unchanged(cleaned),
        Some(truth) => Standardized {
            value: Some(truth.to_string()),
            rules: vec![BOOLEAN_FORM],
        },
        None => refused(BOOLEAN_INVALID),
    }
}

/// The plain decimal form of a cleaned number: optional `-`, digits, optional `.` and digits.
/// `NUMBER_FORM` fires when the value changes; anything else is refused and `NUMBER_INVALID` fires.
///
/// Accepted and rewritten:
/// - a leading `+` or `-` (also U+2212 −), optionally followed by one space;
/// - thousands separators `,` or ` ` in the integer part, in groups of three (`1,234,567`,
///   `1 234`), one kind per number; `1,23` is refused, as it may be a decimal comma;
/// - leading zeros of the integer part are dropped (`007` → `7`, `.5` → `0.5`), a bare trailing
///   point is dropped (`12.` → `12`), and zero loses its sign (`-0` → `0`);
/// - decimal tags keep their fraction digits as written, trailing zeros too (`1.50` stays: the
///   source may mean the precision);
/// - integer tags accept a fraction of zeros only and drop it (`3.0` → `3`); `3.5` is refused.
///
/// Refused: exponents (`1e5`), non-ASCII digits, units (`12元`), percent, and anything else.
pub fn standardize_number(cleaned: &str, integer: bool) -> Standardized {
    match plain_number(cleaned, integer) {
        Some(number) if number == cleaned => Standardized {
            value: Some(number),
            rules: Vec::new(),
        },
        Some(number) => Standardized {
            value: Some(number),
            rules: vec![NUMBER_FORM],
        },
        None => refused(NUMBER_INVALID),
    }
}

fn refused(rule: &'static str) -> Standardized {
    Standardized {
        value: None,
        rules: vec![rule],
    }
}

fn plain_number(text: &str, integer: bool) -> Option<String> {
    let (negative, unsigned) = if let Some(rest) = text.strip_prefix('-').or_else(|| text.strip_prefix('\u{2212}')) {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix('+') {
        (false, rest)
    } else {
        (false, text)
    };
    let unsigned = if unsigned.len() < text.len() {
        unsigned.strip_prefix(' ').unwrap_or(unsigned)
    } else {
        unsigned
    };
    let (integer_part, fraction) = match unsigned.split_once('.') {
        Some((integer_part, fraction)) => (integer_part, fraction),
        None => (unsigned, ""),
    };
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let integer_digits = ungrouped(integer_part)?;
    if integer_digits.is_empty() && fraction.is_empty() {
        return None;
    }
    let fraction = if integer && fraction.bytes().all(|b| b == b'0') {
        ""
    } else if integer {
        return None;
    } else {
        fraction
    };
    let integer_digits = match integer_digits.trim_start_matches('0') {
        "" => "0",
        significant => significant,
    };
    let is_zero = integer_digits == "0" && fraction.bytes().all(|b| b == b'0');
    let mut number = String::with_capacity(1 + integer_digits.len() + 1 + fraction.len());
    if negative && !is_zero {
        number.push('-');
    }
    number.push_str(integer_digits);
    if !fraction.is_empty() {
        number.push('.');
        number.push_str(fraction);
    }
    Some(number)
}

/// The digits of an integer part, without its thousands separators; `None` when it holds
/// anything but digits or the separators are not between groups of three.
fn ungrouped(integer_part: &str) -> Option<String> {
    let Some(separator) = integer_part.chars().find(|c| !c.is_ascii_digit()) else {
        return Some(integer_part.to_string());
    };
    if separator != ',' && separator != ' ' {
        return None;
    }
    let mut digits = String::with_capacity(integer_part.len());
    for (group_idx, group) in integer_part.split(separator).enumerate() {
        let group_len_ok = if group_idx == 0 {
            (1..=3).contains(&group.len())
        } else {
            group.len() == 3
        };
        if !group_len_ok || !group.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.push_str(group);
    }
    Some(digits)
}

#[cfg(test)]
mod boolean_tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(cleaned: &str, value: Option<&str>, rules: &[&str]) {
        let standardized = standardize_boolean(cleaned);
        assert_eq!(standardized.value.as_deref(), value, "value of {cleaned:?}");
        assert_eq!(standardized.rules, rules, "rules of {cleaned:?}");
    }

    #[test]
    fn true_forms() {
        check("true", Some("true"), &[]);
        check("TRUE", Some("true"), &[BOOLEAN_FORM]);
        check("True", Some("true"), &[BOOLEAN_FORM]);
        check("是", Some("true"), &[BOOLEAN_FORM]);
        check("有", Some("true"), &[BOOLEAN_FORM]);
        check("Y", Some("true"), &[BOOLEAN_FORM]);
        check("y", Some("true"), &[BOOLEAN_FORM]);
        check("yes", Some("true"), &[BOOLEAN_FORM]);
        check("YES", Some("true"), &[BOOLEAN_FORM]);
        check("Yes", Some("true"), &[BOOLEAN_FORM]);
        check("1", Some("true"), &[BOOLEAN_FORM]);
        check("√", Some("true"), &[BOOLEAN_FORM]);
        check("✓", Some("true"), &[BOOLEAN_FORM]);
        check("✔", Some("true"), &[BOOLEAN_FORM]);
    }

    #[test]
    fn false_forms() {
        check("false", Some("false"), &[]);
        check("FALSE", Some("false"), &[BOOLEAN_FORM]);
        check("False", Some("false"), &[BOOLEAN_FORM]);
        check("否", Some("false"), &[BOOLEAN_FORM]);
        check("无", Some("false"), &[BOOLEAN_FORM]);
        check("無", Some("false"), &[BOOLEAN_FORM]);
        check("N", Some("false"), &[BOOLEAN_FORM]);
        check("n", Some("false"), &[BOOLEAN_FORM]);
        check("no", Some("false"), &[BOOLEAN_FORM]);
        check("NO", Some("false"), &[BOOLEAN_FORM]);
        check("0", Some("false"), &[BOOLEAN_FORM]);
        check("×", Some("false"), &[BOOLEAN_FORM]);
        check("✗", Some("false"), &[BOOLEAN_FORM]);
        check("✘", Some("false"), &[BOOLEAN_FORM]);
    }

    #[test]
    fn other_values_are_refused() {
        check("2", None, &[BOOLEAN_INVALID]);
        check("01", None, &[BOOLEAN_INVALID]);
        check("t", None, &[BOOLEAN_INVALID]);
        check("x", None, &[BOOLEAN_INVALID]);
        check("yess", None, &[BOOLEAN_INVALID]);
        check("是否", None, &[BOOLEAN_INVALID]);
        check("不是", None, &[BOOLEAN_INVALID]);
        check("未知", None, &[BOOLEAN_INVALID]);
        check("ｙｅｓ", None, &[BOOLEAN_INVALID]);
        check("", None, &[BOOLEAN_INVALID]);
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(raw in "\\PC{0,30}") {
            let once = standardize_boolean(&raw);
            match once.value {
                Some(value) => prop_assert_eq!(standardize_boolean(&value), Standardized::unchanged(&value)),
                None => prop_assert_eq!(once.rules, vec![BOOLEAN_INVALID]),
            }
        }
    }
}

#[cfg(test)]
mod number_tests {
    use super::*;
    use proptest::prelude::*;

    const INTEGER: bool = true;
    const DECIMAL: bool = false;

    #[track_caller]
    fn check(cleaned: &str, integer: bool, value: Option<&str>, rules: &[&str]) {
        let standardized = standardize_number(cleaned, integer);
        assert_eq!(standardized.value.as_deref(), value, "value of {cleaned:?}");
        assert_eq!(standardized.rules, rules, "rules of {cleaned:?}");
    }

    #[test]
    fn plain_numbers_are_kept() {
        check("0", INTEGER, Some("0"), &[]);
        check("1234", INTEGER, Some("1234"), &[]);
        check("-17", INTEGER, Some("-17"), &[]);
        check("1234", DECIMAL, Some("1234"), &[]);
        check("1.5", DECIMAL, Some("1.5"), &[]);
        check("1.50", DECIMAL, Some("1.50"), &[]);
        check("12.0", DECIMAL, Some("12.0"), &[]);
        check("-0.25", DECIMAL, Some("-0.25"), &[]);
        check("0.00", DECIMAL, Some("0.00"), &[]);
        check(
            "98765432109876543210.123456789012345678",
            DECIMAL,
            Some("98765432109876543210.123456789012345678"),
            &[],
        );
    }

    #[test]
    fn signs() {
        check("+5", INTEGER, Some("5"), &[NUMBER_FORM]);
        check("+ 5", INTEGER, Some("5"), &[NUMBER_FORM]);
        check("- 5", INTEGER, Some("-5"), &[NUMBER_FORM]);
        check("\u{2212}5", INTEGER, Some("-5"), &[NUMBER_FORM]);
        check("+1.5", DECIMAL, Some("1.5"), &[NUMBER_FORM]);
        check("-0", INTEGER, Some("0"), &[NUMBER_FORM]);
        check("-0.0", DECIMAL, Some("0.0"), &[NUMBER_FORM]);
        check("-0.0", INTEGER, Some("0"), &[NUMBER_FORM]);
        check("+-5", INTEGER, None, &[NUMBER_INVALID]);
        check("--5", INTEGER, None, &[NUMBER_INVALID]);
        check("5-", INTEGER, None, &[NUMBER_INVALID]);
        check("-  5", INTEGER, None, &[NUMBER_INVALID]);
        check("-", INTEGER, None, &[NUMBER_INVALID]);
        check("+", DECIMAL, None, &[NUMBER_INVALID]);
    }

    #[test]
    fn thousands_separators() {
        check("1,234", INTEGER, Some("1234"), &[NUMBER_FORM]);
        check("12,345,678", INTEGER, Some("12345678"), &[NUMBER_FORM]);
        check("-1,234", INTEGER, Some("-1234"), &[NUMBER_FORM]);
        check("1,234.56", DECIMAL, Some("1234.56"), &[NUMBER_FORM]);
        check("1 234", INTEGER, Some("1234"), &[NUMBER_FORM]);
        check("1 234 567.5", DECIMAL, Some("1234567.5"), &[NUMBER_FORM]);
        check("1,23", DECIMAL, None, &[NUMBER_INVALID]);
        check("1,2345", INTEGER, None, &[NUMBER_INVALID]);
        check("1234,567", INTEGER, None, &[NUMBER_INVALID]);
        check(",123", INTEGER, None, &[NUMBER_INVALID]);
        check("1,,234", INTEGER, None, &[NUMBER_INVALID]);
        check("1,234,", INTEGER, None, &[NUMBER_INVALID]);
        check("1,234 567", INTEGER, None, &[NUMBER_INVALID]);
        check("1.234,5", DECIMAL, None, &[NUMBER_INVALID]);
        check("1.234 5", DECIMAL, None, &[NUMBER_INVALID]);
        check("1 2", INTEGER, None, &[NUMBER_INVALID]);
    }

    #[test]
    fn leading_zeros_and_points() {
        check("007", INTEGER, Some("7"), &[NUMBER_FORM]);
        check("000", INTEGER, Some("0"), &[NUMBER_FORM]);
        check("00.5", DECIMAL, Some("0.5"), &[NUMBER_FORM]);
        check(".5", DECIMAL, Some("0.5"), &[NUMBER_FORM]);
        check("-.5", DECIMAL, Some("-0.5"), &[NUMBER_FORM]);
        check("12.", DECIMAL, Some("12"), &[NUMBER_FORM]);
        check("12.", INTEGER, Some("12"), &[NUMBER_FORM]);
        check(".", DECIMAL, None, &[NUMBER_INVALID]);
        check("-.", DECIMAL, None, &[NUMBER_INVALID]);
        check("1.2.3", DECIMAL, None, &[NUMBER_INVALID]);
    }

    #[test]
    fn integer_tags_take_zero_fractions_only() {
        check("3.0", INTEGER, Some("3"), &[NUMBER_FORM]);
        check("3.000", INTEGER, Some("3"), &[NUMBER_FORM]);
        check("1,234.00", INTEGER, Some("1234"), &[NUMBER_FORM]);
        check(".0", INTEGER, Some("0"), &[NUMBER_FORM]);
        check("3.5", INTEGER, None, &[NUMBER_INVALID]);
        check("3.01", INTEGER, None, &[NUMBER_INVALID]);
        check(".5", INTEGER, None, &[NUMBER_INVALID]);
    }

    #[test]
    fn non_numbers_are_refused() {
        check("", DECIMAL, None, &[NUMBER_INVALID]);
        check("abc", DECIMAL, None, &[NUMBER_INVALID]);
        check("1e5", DECIMAL, None, &[NUMBER_INVALID]);
        check("0x1F", INTEGER, None, &[NUMBER_INVALID]);
        check("12元", DECIMAL, None, &[NUMBER_INVALID]);
        check("50%", DECIMAL, None, &[NUMBER_INVALID]);
        check("三", INTEGER, None, &[NUMBER_INVALID]);
        check("١٢", INTEGER, None, &[NUMBER_INVALID]);
        check("１２", INTEGER, None, &[NUMBER_INVALID]);
        check("NaN", DECIMAL, None, &[NUMBER_INVALID]);
        check("inf", DECIMAL, None, &[NUMBER_INVALID]);
        check(" 12", INTEGER, None, &[NUMBER_INVALID]);
        check("1_000", INTEGER, None, &[NUMBER_INVALID]);
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(raw in "\\PC{0,30}", integer: bool) {
            let once = standardize_number(&raw, integer);
            match once.value {
                Some(value) => prop_assert_eq!(standardize_number(&value, integer), Standardized::unchanged(&value)),
                None => prop_assert_eq!(once.rules, vec![NUMBER_INVALID]),
            }
        }

        #[test]
        fn numeric_forms_keep_their_digits(raw in "[+-]? ?[0-9]{0,3}(,[0-9]{3}){0,3}(\\.[0-9]{0,4})?", integer: bool) {
            let once = standardize_number(&raw, integer);
            let Some(value) = once.value else {
                return Ok(());
            };
            prop_assert_eq!(standardize_number(&value, integer), Standardized::unchanged(&value));
            let significant = |text: &str| -> String {
                let digits: String = text.chars().filter(char::is_ascii_digit).collect();
                digits.trim_start_matches('0').trim_end_matches('0').to_string()
            };
            prop_assert_eq!(significant(&value), significant(&raw));
        }
    }
}
