//! Dates: reads the forms departments send and writes them YYYY-MM-DD. Pure functions of the
//! value and of the day it is judged against; never reads the clock, never compares a date with
//! other tags of the record (birth date against ID number is someone else's rule).
//!
//! Read: 1990-01-02, 1990-1-2, 1990/1/2, 1990.1.2, 1990 01 02, 19900102, 1990年1月2日 (spaces
//! allowed around each part, 日 or 号 or nothing at the end), 一九九〇年一月二日, and any of those
//! followed by a time of day (1990-01-02 08:00:00, 1990-01-02T08:00:00+08:00, ...) or the
//! 14-digit 19900102080000. The time and any UTC offset are checked and dropped: the date is the
//! one written, not converted to China time.
//!
//! Refused as DATE_INVALID, the value kept as given:
//! - a year and month without a day (1990-01, 1990年1月): not a calendar date, and making it
//!   the 1st would invent precision;
//! - two-digit years (90-1-2, 900102) and day- or month-first orders (02/01/1990): ambiguous;
//! - years before 1000: 0001-01-01 and 0000-00-00 are software defaults, not dates;
//! - anything that is not a real calendar date (1990-02-30) or carries other text.

use chrono::{Datelike, NaiveDate};

use super::rules;
use super::Standardized;

const YEAR_MIN: i32 = 1000;
const FRACTION_DIGITS_MAX: usize = 9;

/// Reads a date in any accepted form; `None` when it is unreadable, partial or not a real
/// calendar date.
pub fn parse_date(cleaned: &str) -> Option<NaiveDate> {
    let mut scanner = Scanner { rest: cleaned };
    let (year, month, day) = match scanner.digit_run() {
        0 => chinese_numeral_date(&mut scanner)?,
        4 => separated_date(&mut scanner)?,
        8 => scanner.compact_date()?,
        14 => {
            let date = scanner.compact_date()?;
            if !scanner.compact_time() {
                return None;
            }
            date
        }
        _ => return None,
    };
    if !scanner.rest_is_time_of_day() || year < YEAR_MIN {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)
}

/// Standardizes a date that has passed `text::clean_text`. `today` is the day the record was
/// received: a later date fires DATE_IN_FUTURE (the standardized value is kept). Empty input
/// stands for "not recorded" and gives no value.
pub fn standardize_date(cleaned: &str, today: NaiveDate) -> Standardized {
    if cleaned.trim().is_empty() {
        return Standardized {
            value: None,
            rules: Vec::new(),
        };
    }
    let Some(date) = parse_date(cleaned) else {
        return Standardized {
            value: Some(cleaned.to_string()),
            rules: vec![rules::DATE_INVALID],
        };
    };
    let value = format_date(date);
    let mut fired = Vec::new();
    if value != cleaned {
        fired.push(rules::DATE_FORMAT);
    }
    if date > today {
        fired.push(rules::DATE_IN_FUTURE);
    }
    Standardized {
        value: Some(value),
        rules: fired,
    }
}

/// YYYY-MM-DD, for years of four digits (all that `parse_date` gives).
pub fn format_date(date: NaiveDate) -> String {
    let mut out = String::with_capacity(10);
    let year = u32::try_from(date.year()).expect("parse_date gives years 1000..=9999");
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, date.month(), 2);
    out.push('-');
    push_digits(&mut out, date.day(), 2);
    out
}

fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = value / 10u32.pow(place) % 10;
        out.push(char::from_digit(digit, 10).expect("a single decimal digit"));
    }
}

/// 1990-1-2, 1990/01/02, 1990.1.2, 1990 1 2, 1990年1月2日: the scanner stands on four digits.
fn separated_date(scanner: &mut Scanner) -> Option<(i32, u32, u32)> {
    let year = scanner.number(4, 4)?;
    let spaced = scanner.skip_spaces();
    let separator = match scanner.peek() {
        Some(c @ ('-' | '/' | '.' | '年')) => {
            scanner.advance(c);
            c
        }
        _ if spaced => ' ',
        _ => return None,
    };
    scanner.skip_spaces();
    let month = scanner.number(1, 2)?;
    let spaced = scanner.skip_spaces();
    let second_separator_read = match separator {
        '年' => scanner.eat('月'),
        ' ' => spaced,
        other => scanner.eat(other),
    };
    if !second_separator_read {
        return None;
    }
    scanner.skip_spaces();
    let day = scanner.number(1, 2)?;
    if separator == '年' {
        let before_suffix = *scanner;
        scanner.skip_spaces();
        if !(scanner.eat('日') || scanner.eat('号')) {
            *scanner = before_suffix;
        }
    }
    Some((i32::try_from(year).expect("four digits"), month, day))
}

/// 一九九〇年一月二日, 二〇〇一年十二月三十一日.
fn chinese_numeral_date(scanner: &mut Scanner) -> Option<(i32, u32, u32)> {
    let mut year = 0;
    for _ in 0..4 {
        let c = scanner.peek()?;
        year = year * 10 + chinese_digit(c)?;
        scanner.advance(c);
    }
    scanner.skip_spaces();
    if !scanner.eat('年') {
        return None;
    }
    scanner.skip_spaces();
    let month = chinese_number(scanner)?;
    scanner.skip_spaces();
    if !scanner.eat('月') {
        return None;
    }
    scanner.skip_spaces();
    let day = chinese_number(scanner)?;
    let before_suffix = *scanner;
    scanner.skip_spaces();
    if !(scanner.eat('日') || scanner.eat('号')) {
        *scanner = before_suffix;
    }
    Some((i32::try_from(year).expect("four digits"), month, day))
}

fn chinese_digit(c: char) -> Option<u32> {
    let digit = match c {
        '〇' | '零' | '○' => 0,
        '一' => 1,
        '二' => 2,
        '三' => 3,
        '四' => 4,
        '五' => 5,
        '六' => 6,
        '七' => 7,
        '八' => 8,
        '九' => 9,
        _ => return None,
    };
    Some(digit)
}

/// 1 to 99 written with 十: 三, 十, 十二, 二十, 三十一.
fn chinese_number(scanner: &mut Scanner) -> Option<u32> {
    let tens = if scanner.eat('十') {
        1
    } else {
        let c = scanner.peek()?;
        let digit = chinese_digit(c).filter(|digit| *digit != 0)?;
        scanner.advance(c);
        if !scanner.eat('十') {
            return Some(digit);
        }
        digit
    };
    let units = match scanner.peek().and_then(chinese_digit) {
        Some(digit) if digit != 0 => {
            scanner.advance(scanner.peek().expect("just peeked"));
            digit
        }
        _ => 0,
    };
    Some(tens * 10 + units)
}

/// A cursor over the value; every step either consumes what it read or leaves the cursor.
#[derive(Clone, Copy)]
struct Scanner<'a> {
    rest: &'a str,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    /// Steps over `c`, which the caller has just peeked.
    fn advance(&mut self, c: char) {
        self.rest = &self.rest[c.len_utf8()..];
    }

    fn eat(&mut self, expected: char) -> bool {
        match self.rest.strip_prefix(expected) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn skip_spaces(&mut self) -> bool {
        let trimmed = self.rest.trim_start_matches(' ');
        let skipped = trimmed.len() != self.rest.len();
        self.rest = trimmed;
        skipped
    }

    fn digit_run(&self) -> usize {
        self.rest.bytes().take_while(u8::is_ascii_digit).count()
    }

    /// The whole run of ASCII digits ahead, when it is `min..=max` long (`max` at most 9).
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let len = self.digit_run();
        if len < min || len > max {
            return None;
        }
        let (digits, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(digits_value(digits))
    }

    /// Exactly `len` digits, whatever follows.
    fn fixed_digits(&mut self, len: usize) -> Option<u32> {
        let digits = self.rest.get(..len)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.rest = &self.rest[len..];
        Some(digits_value(digits))
    }

    /// YYYYMMDD.
    fn compact_date(&mut self) -> Option<(i32, u32, u32)> {
        let year = self.fixed_digits(4)?;
        let month = self.fixed_digits(2)?;
        let day = self.fixed_digits(2)?;
        Some((i32::try_from(year).expect("four digits"), month, day))
    }

    /// HHMMSS or HHMM, a valid time.
    fn compact_time(&mut self) -> bool {
        let (hour, minute, second) = match self.digit_run() {
            4 => (self.fixed_digits(2), self.fixed_digits(2), Some(0)),
            6 => (self.fixed_digits(2), self.fixed_digits(2), self.fixed_digits(2)),
            _ => return false,
        };
        matches!((hour, minute, second), (Some(h), Some(m), Some(s)) if h <= 23 && m <= 59 && s <= 60)
    }

    /// True when nothing follows the date, or only a time of day: a space or T, then 8:00,
    /// 08:00:00, 08:00:00.000 or 080000, then optionally Z or an offset (+08:00, +0800, -05).
    fn rest_is_time_of_day(&mut self) -> bool {
        if self.rest.is_empty() {
            return true;
        }
        let spaced = self.skip_spaces();
        if !(self.eat('T') || spaced) {
            return false;
        }
        let time_read = match self.digit_run() {
            1 | 2 => self.colon_time(),
            _ => self.compact_time(),
        };
        if !time_read {
            return false;
        }
        self.skip_spaces();
        if self.eat('Z') {
            return self.rest.is_empty();
        }
        if self.eat('+') || self.eat('-') {
            let offset_read = match self.digit_run() {
                2 => {
                    let hours = self.fixed_digits(2);
                    let minutes = if self.eat(':') { self.number(2, 2) } else { Some(0) };
                    matches!((hours, minutes), (Some(h), Some(m)) if h <= 23 && m <= 59)
                }
                4 => matches!((self.fixed_digits(2), self.fixed_digits(2)), (Some(h), Some(m)) if h <= 23 && m <= 59),
                _ => false,
            };
            return offset_read && self.rest.is_empty();
        }
        self.rest.is_empty()
    }

    /// 8:00, 08:00:00, 08:00:00.123456.
    fn colon_time(&mut self) -> bool {
        let Some(hour) = self.number(1, 2) else { return false };
        if !self.eat(':') {
            return false;
        }
        let Some(minute) = self.number(2, 2) else { return false };
        let mut second = 0;
        if self.eat(':') {
            let Some(read) = self.number(2, 2) else { return false };
            second = read;
            if (self.eat('.') || self.eat(',')) && self.number(1, FRACTION_DIGITS_MAX).is_none() {
                return false;
            }
        }
        hour <= 23 && minute <= 59 && second <= 60
    }
}

fn digits_value(digits: &str) -> u32 {
    digits.bytes().fold(0, |value, b| value * 10 + u32::from(b - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, 1).expect("real date")
    }

    /// `expected` is the standardized value; `rules` the rules that fire.
    #[track_caller]
    fn check(cleaned: &str, expected: &str, expected_rules: &[&str]) {
        let standardized = standardize_date(cleaned, today());
        assert_eq!(standardized.value.as_deref(), Some(expected), "value of {cleaned:?}");
        assert_eq!(standardized.rules, expected_rules, "rules of {cleaned:?}");
    }

    const FORMAT: &[&str] = &[rules::DATE_FORMAT];
    const INVALID: &[&str] = &[rules::DATE_INVALID];

    #[test]
    fn common_date_formats() {
        check("1990-01-02", "1990-01-02", &[]);
        check("1990-1-2", "1990-01-02", FORMAT);
        check("19900102", "1990-01-02", FORMAT);
        check("1990/1/2", "1990-01-02", FORMAT);
        check("1990/01/02", "1990-01-02", FORMAT);
        check("1990.1.2", "1990-01-02", FORMAT);
        check("1990 01 02", "1990-01-02", FORMAT);
        check("1990 - 01 - 02", "1990-01-02", FORMAT);
        check("1990年1月2日", "1990-01-02", FORMAT);
        check("1990年01月02日", "1990-01-02", FORMAT);
        check("1990 年 1 月 2 日", "1990-01-02", FORMAT);
        check("1990年1月2号", "1990-01-02", FORMAT);
        check("1990年1月2", "1990-01-02", FORMAT);
        check("一九九〇年一月二日", "1990-01-02", FORMAT);
        check("二〇〇一年十二月三十一日", "2001-12-31", FORMAT);
        check("二零零一年十月二十日", "2001-10-20", FORMAT);
        check("2000-02-29", "2000-02-29", &[]);
    }

    #[test]
    fn dates_with_a_time_of_day() {
        check("1990-01-02T08:00:00+08:00", "1990-01-02", FORMAT);
        check("1990-01-02T08:00:00Z", "1990-01-02", FORMAT);
        check("1990-01-02T23:30:00-05:00", "1990-01-02", FORMAT);
        check("1990-01-02 08:00:00", "1990-01-02", FORMAT);
        check("1990-01-02 00:00:00.0", "1990-01-02", FORMAT);
        check("1990-01-02 08:00:00.123456 +0800", "1990-01-02", FORMAT);
        check("1990/1/2 8:00", "1990-01-02", FORMAT);
        check("1990年1月2日 08:00", "1990-01-02", FORMAT);
        check("19900102080000", "1990-01-02", FORMAT);
        check("19900102T080000", "1990-01-02", FORMAT);
        check("1990-01-02 25:00:00", "1990-01-02 25:00:00", INVALID);
        check("1990-01-02 08:00 CST", "1990-01-02 08:00 CST", INVALID);
        check("19900102250000", "19900102250000", INVALID);
        check("1990-01-02T", "1990-01-02T", INVALID);
    }

    #[test]
    fn refused_forms_keep_the_value() {
        check("1990-01", "1990-01", INVALID);
        check("1990年1月", "1990年1月", INVALID);
        check("1990", "1990", INVALID);
        check("90-1-2", "90-1-2", INVALID);
        check("900102", "900102", INVALID);
        check("02/01/1990", "02/01/1990", INVALID);
        check("02011990", "02011990", INVALID);
        check("1990-02-30", "1990-02-30", INVALID);
        check("1990-13-01", "1990-13-01", INVALID);
        check("1990-00-10", "1990-00-10", INVALID);
        check("1900-02-29", "1900-02-29", INVALID);
        check("1990-1/2", "1990-1/2", INVALID);
        check("1990-001-02", "1990-001-02", INVALID);
        check("0000-00-00", "0000-00-00", INVALID);
        check("0001-01-01", "0001-01-01", INVALID);
        check("1990年1月2日左右", "1990年1月2日左右", INVALID);
        check("一九九〇年十三月二日", "一九九〇年十三月二日", INVALID);
        check("生日", "生日", INVALID);
    }

    #[test]
    fn future_dates_are_standardized_and_flagged() {
        check("2024-06-01", "2024-06-01", &[]);
        check("2024-06-02", "2024-06-02", &[rules::DATE_IN_FUTURE]);
        check("2099/1/1", "2099-01-01", &[rules::DATE_FORMAT, rules::DATE_IN_FUTURE]);
        check("9999-12-31", "9999-12-31", &[rules::DATE_IN_FUTURE]);
    }

    #[test]
    fn parse_date_gives_the_date() {
        assert_eq!(parse_date("1990年1月2日"), NaiveDate::from_ymd_opt(1990, 1, 2));
        assert_eq!(parse_date("1990-01"), None);
        assert_eq!(standardize_date("", today()).value, None);
    }

    fn is_iso_date(value: &str) -> bool {
        let bytes = value.as_bytes();
        bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(idx, b)| idx == 4 || idx == 7 || b.is_ascii_digit())
    }

    proptest! {
        #[test]
        fn never_panics_and_idempotent(raw in "\\PC{0,40}") {
            let once = standardize_date(&raw, today());
            if let Some(value) = &once.value {
                let twice = standardize_date(value, today());
                prop_assert_eq!(twice.value.as_ref(), Some(value));
                prop_assert!(!twice.rules.contains(&rules::DATE_FORMAT), "{:?}", twice.rules);
            }
        }

        #[test]
        fn readable_dates_are_yyyy_mm_dd(raw in "[0-9]{4}[-/. 年][0-9]{1,2}[-/. 月][0-9]{1,2}[日号]?( [0-9]{1,2}:[0-9]{2}(:[0-9]{2})?)?") {
            let standardized = standardize_date(&raw, today());
            let value = standardized.value.expect("non-empty");
            match parse_date(&raw) {
                Some(date) => {
                    prop_assert!(is_iso_date(&value), "{:?}", value);
                    prop_assert!(!standardized.rules.contains(&rules::DATE_INVALID));
                    prop_assert_eq!(parse_date(&value), Some(date));
                }
                None => {
                    prop_assert_eq!(value, raw);
                    prop_assert_eq!(standardized.rules, vec![rules::DATE_INVALID]);
                }
            }
        }

        #[test]
        fn every_form_reads_back(days in 0i64..3_000_000) {
            let date = NaiveDate::from_ymd_opt(1000, 1, 1).expect("real date") + chrono::Days::new(days as u64);
            prop_assume!(date.year() <= 9999);
            let (y, m, d) = (date.year(), date.month(), date.day());
            for form in [
                format!("{y:04}-{m:02}-{d:02}"),
                format!("{y}-{m}-{d}"),
                format!("{y}{m:02}{d:02}"),
                format!("{y}/{m}/{d}"),
                format!("{y}.{m:02}.{d:02}"),
                format!("{y}年{m}月{d}日"),
                format!("{y}-{m:02}-{d:02}T12:34:56+08:00"),
            ] {
                prop_assert_eq!(parse_date(&form), Some(date), "{}", form);
                prop_assert_eq!(standardize_date(&form, today()).value, Some(format!("{y:04}-{m:02}-{d:02}")));
            }
        }
    }
}
