//! Phone numbers: country prefixes and separators removed, mainland mobiles written as their 11
//! digits, landlines written AREA-NUMBER (0571-88886666) or AREA-NUMBER-EXTENSION
//! (0571-88886666-123). Pure functions of one value: never decides whether two people share a
//! phone.
//!
//! - Mobile: 11 digits, 1[3-9]. Landline: an area code (010 and 02X have three digits, 0[3-9]XX
//!   four) and a local number of 7 or 8 digits starting 2-9 (0 and 1 start no subscriber number).
//! - Country prefixes: +86 and 0086 are always the country code; after them a landline's area
//!   code may lack its 0 (+86 10 6234 5678 is 010-62345678). A bare 86 is removed only when the
//!   digits are not a number as they stand and are one without it.
//! - Extensions: after 转, 分机, ext, x or #, or as a last dash-separated group of at most six
//!   digits after a complete landline (so 0571-8888666-6 is read as written: extension 6).
//!   Written with a dash; a caller comparing numbers compares the part before the second dash.
//!   A mobile with an extension is invalid.
//! - Anything else (no area code, 10 digits, letters, two numbers in one value, a foreign
//!   country code) fires PHONE_INVALID; the value is kept with only its separators removed, so
//!   a value holding two numbers still shows both.

use super::rules;
use super::Standardized;

/// Longer values are not one phone number; the digit buffers stop here.
const DIGITS_MAX: usize = 24;
const EXTENSION_DIGITS_MAX: usize = 6;
/// Byte positions are kept for the first digits only: enough to find where the number starts
/// after the longest country prefix (0086).
const PREFIX_DIGITS_MAX: usize = 4;

/// Standardizes a phone number that has passed `text::clean_text`. Empty input stands for "not
/// recorded" and gives no value.
pub fn standardize_phone(cleaned: &str) -> Standardized {
    if cleaned.trim().is_empty() {
        return Standardized {
            value: None,
            rules: Vec::new(),
        };
    }
    let scan = Scan::of(cleaned);
    let Some(number) = read_number(&scan) else {
        return invalid(cleaned);
    };
    let value = number.write();
    let mut fired = Vec::new();
    let national_start = if number.prefix_len == 0 {
        0
    } else {
        fired.push(rules::PHONE_COUNTRY_CODE);
        scan.digit_positions[number.prefix_len]
    };
    if value != cleaned[national_start..] {
        fired.push(rules::PHONE_SEPARATORS);
    }
    Standardized {
        value: Some(value),
        rules: fired,
    }
}

/// Not a number: kept with its separators removed, unless that leaves nothing (a value of
/// dashes) or would make it read as a number (0571-88886666 e x t 12 would become ...ext12):
/// then it is kept as given, so that standardizing the value again gives the same value.
fn invalid(cleaned: &str) -> Standardized {
    let compact: String = cleaned.chars().filter(|c| !is_separator(*c)).collect();
    let separators_removed = compact.len() != cleaned.len();
    if separators_removed && (compact.is_empty() || read_number(&Scan::of(&compact)).is_some()) {
        return Standardized {
            value: Some(cleaned.to_string()),
            rules: vec![rules::PHONE_INVALID],
        };
    }
    let mut fired = Vec::with_capacity(2);
    if separators_removed {
        fired.push(rules::PHONE_SEPARATORS);
    }
    fired.push(rules::PHONE_INVALID);
    Standardized {
        value: Some(compact),
        rules: fired,
    }
}

/// White space, dashes, dots and brackets.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || is_dash(c)
        || matches!(
            c,
            '.' | '(' | ')' | '[' | ']' | '{' | '}' | '（' | '）' | '【' | '】' | '〔' | '〕' | '［' | '］'
        )
}

fn is_dash(c: char) -> bool {
    matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FF0D}' | '\u{FE63}')
}

/// The byte length of an extension marker at the start of `rest`.
fn extension_marker_len(rest: &str) -> Option<usize> {
    if rest.get(..3).is_some_and(|marker| marker.eq_ignore_ascii_case("ext")) {
        return Some(3);
    }
    ["分机", "分機", "转", "轉", "x", "X", "#"]
        .iter()
        .find(|marker| rest.starts_with(**marker))
        .map(|marker| marker.len())
}

#[derive(Clone, Copy)]
struct Digits {
    bytes: [u8; DIGITS_MAX],
    len: usize,
    overflowed: bool,
}

impl Digits {
    const EMPTY: Digits = Digits {
        bytes: [0; DIGITS_MAX],
        len: 0,
        overflowed: false,
    };

    fn push(&mut self, digit: u8) {
        match self.bytes.get_mut(self.len) {
            Some(slot) => {
                *slot = digit;
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }

    fn from_slice(digits: &[u8]) -> Digits {
        let mut out = Digits::EMPTY;
        digits.iter().for_each(|digit| out.push(*digit));
        out
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What one pass over the value found.
struct Scan {
    /// The digits before any extension marker.
    main: Digits,
    extension: Digits,
    extension_marked: bool,
    /// A + before the first digit.
    plus: bool,
    /// A character that is no digit, separator, leading + or extension marker.
    unknown_character: bool,
    /// Byte position in the value of each of the first main digits.
    digit_positions: [usize; PREFIX_DIGITS_MAX + 1],
    /// Index in `main` where the last group began, when a dash separated it from the one
    /// before; 0 otherwise.
    last_dash_group_start: usize,
}

impl Scan {
    fn of(cleaned: &str) -> Scan {
        let mut scan = Scan {
            main: Digits::EMPTY,
            extension: Digits::EMPTY,
            extension_marked: false,
            plus: false,
            unknown_character: false,
            digit_positions: [0; PREFIX_DIGITS_MAX + 1],
            last_dash_group_start: 0,
        };
        // The gap since the last main digit: None when there is none, Some(true) when it holds a dash.
        let mut gap_has_dash: Option<bool> = None;
        let mut position = 0;
        while let Some(c) = cleaned[position..].chars().next() {
            let mut width = c.len_utf8();
            if c.is_ascii_digit() {
                let digit = c as u8;
                if scan.extension_marked {
                    scan.extension.push(digit);
                } else {
                    if let Some(dash) = gap_has_dash.take() {
                        scan.last_dash_group_start = if dash { scan.main.len } else { 0 };
                    }
                    if let Some(slot) = scan.digit_positions.get_mut(scan.main.len) {
                        *slot = position;
                    }
                    scan.main.push(digit);
                }
            } else if is_separator(c) {
                if !scan.extension_marked && scan.main.len > 0 {
                    gap_has_dash = Some(gap_has_dash.unwrap_or(false) || is_dash(c));
                }
            } else if c == '+' && scan.main.len == 0 && !scan.plus && !scan.extension_marked {
                scan.plus = true;
            } else if let Some(marker_len) =
                extension_marker_len(&cleaned[position..]).filter(|_| scan.main.len > 0 && scan.extension.len == 0)
            {
                // 转分机 and ext. are one marker: a second one before any extension digit is absorbed.
                scan.extension_marked = true;
                width = marker_len;
            } else {
                scan.unknown_character = true;
            }
            position += width;
        }
        scan
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mobile,
    Landline { area_len: usize },
}

fn classify(national: &[u8]) -> Option<Kind> {
    if is_mobile(national) {
        return Some(Kind::Mobile);
    }
    let area_len = match national {
        [b'0', b'1', b'0', ..] | [b'0', b'2', ..] => 3,
        [b'0', b'3'..=b'9', ..] => 4,
        _ => return None,
    };
    let local = national.get(area_len..)?;
    let local_ok = (7..=8).contains(&local.len()) && matches!(local[0], b'2'..=b'9');
    local_ok.then_some(Kind::Landline { area_len })
}

fn is_mobile(national: &[u8]) -> bool {
    national.len() == 11 && national[0] == b'1' && matches!(national[1], b'3'..=b'9')
}

/// A valid number, ready to write.
struct Number {
    /// How many leading digits of the value were a country code.
    prefix_len: usize,
    national: Digits,
    kind: Kind,
    extension: Digits,
}

impl Number {
    fn write(&self) -> String {
        let mut out = String::with_capacity(self.national.len + self.extension.len + 2);
        for (idx, digit) in self.national.as_slice().iter().enumerate() {
            if matches!(self.kind, Kind::Landline { area_len } if area_len == idx) {
                out.push('-');
            }
            out.push(char::from(*digit));
        }
        if self.extension.len > 0 {
            out.push('-');
            self.extension
                .as_slice()
                .iter()
                .for_each(|digit| out.push(char::from(*digit)));
        }
        out
    }
}

fn read_number(scan: &Scan) -> Option<Number> {
    if scan.unknown_character || scan.main.overflowed || scan.extension.overflowed {
        return None;
    }
    let digits = scan.main.as_slice();
    let (prefix_len, international) = if scan.plus {
        // Another country's number is not one this service can check.
        (if digits.starts_with(b"86") { 2 } else { return None }, true)
    } else if digits.starts_with(b"0086") {
        (4, true)
    } else if digits.starts_with(b"86") && classify(digits).is_none() && classify(&digits[2..]).is_some() {
        (2, false)
    } else {
        (0, false)
    };
    let after_prefix = &digits[prefix_len..];
    let mut national = Digits::EMPTY;
    // Written internationally, a landline drops the 0 of its area code.
    if international && after_prefix.first().is_some_and(|digit| *digit != b'0') && !is_mobile(after_prefix) {
        national.push(b'0');
    }
    after_prefix.iter().for_each(|digit| national.push(*digit));

    if scan.extension_marked {
        let extension_len = scan.extension.len;
        let kind = classify(national.as_slice())?;
        let landline = matches!(kind, Kind::Landline { .. });
        return (landline && (1..=EXTENSION_DIGITS_MAX).contains(&extension_len)).then_some(Number {
            prefix_len,
            national,
            kind,
            extension: scan.extension,
        });
    }
    // 0571-88886666-123: the last dash-separated group is an extension when what comes before
    // it is a complete landline. This is tried before the digits as one number so that the
    // written form 0571-8888666-6 reads back as it was written, not as 0571-88886666.
    let extension_len = digits.len() - scan.last_dash_group_start;
    if scan.last_dash_group_start > prefix_len && (1..=EXTENSION_DIGITS_MAX).contains(&extension_len) {
        let (main, extension) = national.as_slice().split_at(national.len - extension_len);
        if let Some(kind @ Kind::Landline { .. }) = classify(main) {
            return Some(Number {
                prefix_len,
                national: Digits::from_slice(main),
                kind,
                extension: Digits::from_slice(extension),
            });
        }
    }
    classify(national.as_slice()).map(|kind| Number {
        prefix_len,
        national,
        kind,
        extension: Digits::EMPTY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(cleaned: &str, expected: &str, expected_rules: &[&str]) {
        let standardized = standardize_phone(cleaned);
        assert_eq!(standardized.value.as_deref(), Some(expected), "value of {cleaned:?}");
        assert_eq!(standardized.rules, expected_rules, "rules of {cleaned:?}");
    }

    const COUNTRY: &str = rules::PHONE_COUNTRY_CODE;
    const SEPARATORS: &str = rules::PHONE_SEPARATORS;
    const INVALID: &str = rules::PHONE_INVALID;

    #[test]
    fn mobiles() {
        check("13800001234", "13800001234", &[]);
        check("19912345678", "19912345678", &[]);
        check("138-0000-1234", "13800001234", &[SEPARATORS]);
        check("138 0000 1234", "13800001234", &[SEPARATORS]);
        check("138.0000.1234", "13800001234", &[SEPARATORS]);
        check("+86 138-0000-1234", "13800001234", &[COUNTRY, SEPARATORS]);
        check("+8613800001234", "13800001234", &[COUNTRY]);
        check("+86-13800001234", "13800001234", &[COUNTRY]);
        check("(+86)13800001234", "13800001234", &[COUNTRY]);
        check("0086 13800001234", "13800001234", &[COUNTRY]);
        check("008613800001234", "13800001234", &[COUNTRY]);
        check("8613800001234", "13800001234", &[COUNTRY]);
        check("86 138 0000 1234", "13800001234", &[COUNTRY, SEPARATORS]);
    }

    #[test]
    fn landlines() {
        check("0571-88886666", "0571-88886666", &[]);
        check("057188886666", "0571-88886666", &[SEPARATORS]);
        check("(0571) 8888 6666", "0571-88886666", &[SEPARATORS]);
        check("（0571）88886666", "0571-88886666", &[SEPARATORS]);
        check("0571 8888666", "0571-8888666", &[SEPARATORS]);
        check("010-62345678", "010-62345678", &[]);
        check("01062345678", "010-62345678", &[SEPARATORS]);
        check("021 6234 5678", "021-62345678", &[SEPARATORS]);
        check("+86 571 8888 6666", "0571-88886666", &[COUNTRY, SEPARATORS]);
        check("+86 10 6234 5678", "010-62345678", &[COUNTRY, SEPARATORS]);
        check("+86 (0)571 8888 6666", "0571-88886666", &[COUNTRY, SEPARATORS]);
        check("0086-0571-88886666", "0571-88886666", &[COUNTRY]);
        check("86 0571 88886666", "0571-88886666", &[COUNTRY, SEPARATORS]);
    }

    #[test]
    fn extensions() {
        check("0571-88886666-123", "0571-88886666-123", &[]);
        check("0571-88886666转123", "0571-88886666-123", &[SEPARATORS]);
        check("0571-88886666 转 123", "0571-88886666-123", &[SEPARATORS]);
        check("0571-88886666分机123", "0571-88886666-123", &[SEPARATORS]);
        check("0571-88886666 ext. 123", "0571-88886666-123", &[SEPARATORS]);
        check("0571-88886666 EXT 8", "0571-88886666-8", &[SEPARATORS]);
        check("0571-88886666x123", "0571-88886666-123", &[SEPARATORS]);
        check("0571-88886666#123", "0571-88886666-123", &[SEPARATORS]);
        check("0571-8888666-12", "0571-8888666-12", &[]);
        // Written as a 7-digit number and an extension: read as written.
        check("0571-8888666-6", "0571-8888666-6", &[]);
        check("0300-2000000x0", "0300-2000000-0", &[SEPARATORS]);
        check("0571-8888-6666", "0571-88886666", &[SEPARATORS]);
        check("010-6234-5678", "010-62345678", &[SEPARATORS]);
        // A space is no extension separator.
        check("0571-88886666 123", "057188886666123", &[SEPARATORS, INVALID]);
        check("0571-88886666转", "057188886666转", &[SEPARATORS, INVALID]);
        check(
            "0571-88886666转1234567",
            "057188886666转1234567",
            &[SEPARATORS, INVALID],
        );
        check("13800001234转123", "13800001234转123", &[INVALID]);
    }

    #[test]
    fn invalid_numbers_keep_their_digits() {
        check("8888 6666", "88886666", &[SEPARATORS, INVALID]);
        check("88886666", "88886666", &[INVALID]);
        check("1380000123", "1380000123", &[INVALID]);
        check("12345678901", "12345678901", &[INVALID]);
        check("0571-0888666", "05710888666", &[SEPARATORS, INVALID]);
        check("0123-8888666", "01238888666", &[SEPARATORS, INVALID]);
        check("400-820-8820", "4008208820", &[SEPARATORS, INVALID]);
        check("+852 9123 4567", "+85291234567", &[SEPARATORS, INVALID]);
        check("+86 8888 6666", "+8688886666", &[SEPARATORS, INVALID]);
        check("13800001234/13900005678", "13800001234/13900005678", &[INVALID]);
        check(
            "138 0000 1234, 139 0000 5678",
            "13800001234,13900005678",
            &[SEPARATORS, INVALID],
        );
        check("138abc01234", "138abc01234", &[INVALID]);
        check("手机 13800001234", "手机13800001234", &[SEPARATORS, INVALID]);
        check("138+00001234", "138+00001234", &[INVALID]);
        check("+", "+", &[INVALID]);
        check("--", "--", &[INVALID]);
        check("0571-88886666 e x t 12", "0571-88886666 e x t 12", &[INVALID]);
        check("１３８００００１２３４", "１３８００００１２３４", &[INVALID]);
        assert_eq!(standardize_phone("").value, None);
    }

    proptest! {
        #[test]
        fn never_panics_and_idempotent(raw in "\\PC{0,40}") {
            super::super::assert_fix_idempotent(standardize_phone, &raw)?;
        }

        #[test]
        fn idempotent_on_phone_like_text(raw in "[+]?(86|0086)?[ (]?0?[0-9]{1,4}[)]?[ -]?[0-9 .-]{4,12}([-#x转]|ext)?[0-9]{0,7}") {
            super::super::assert_fix_idempotent(standardize_phone, &raw)?;
        }

        #[test]
        fn valid_numbers_are_digits_and_dashes(raw in "[0-9 ()+.-]{0,20}") {
            let standardized = standardize_phone(&raw);
            if let Some(value) = standardized.value.filter(|_| !standardized.rules.contains(&INVALID)) {
                let is_mobile = value.len() == 11 && value.bytes().all(|b| b.is_ascii_digit());
                let is_landline = value.starts_with('0')
                    && value.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                    && (1..=2).contains(&value.matches('-').count());
                prop_assert!(is_mobile || is_landline, "{:?} from {:?}", value, raw);
            }
        }
    }
}
