//! Resident ID numbers (GB 11643-1999): normalization of the forms departments send, the
//! legacy 15-digit upgrade, and the ISO 7064 MOD 11-2 check digit. Pure functions.

use super::text::half_width;

/// Weights of the first 17 digits for the MOD 11-2 check digit.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// Why a value is not a usable resident ID number. Carries no digits of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberProblem {
    /// Not 15 or 18 characters of digits (and a final X) after removing separators.
    #[error("not 15 or 18 digits")]
    Malformed,
    /// The region code cannot be a GB/T 2260 province.
    #[error("region code is not a province")]
    BadRegion,
    /// The embedded birth date is not a real date.
    #[error("embedded birth date is not a real date")]
    BadBirthDate,
    /// The 18th character does not match the MOD 11-2 check digit of the first 17.
    #[error("check digit does not match")]
    BadCheckDigit,
}

/// The MOD 11-2 check character of the first 17 digits.
pub fn check_digit(first17: &[u8; 17]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(digit, weight)| u32::from(digit - b'0') * weight)
        .sum();
    CHECK_CHARS[(sum % 11) as usize]
}

/// Normalizes an ID number as departments send it: full-width characters, spaces and dashes,
/// lower-case x, legacy 15-digit numbers (upgraded to 18 with the century 19 and a computed
/// check digit). Returns the valid 18-character number or the first problem found.
pub fn normalize_id_number(raw: &str) -> Result<String, IdNumberProblem> {
    // Only 15 or 18 ASCII characters can make a number, so the compact form is gathered in a
    // fixed buffer: a longer value or a non-ASCII character is malformed whatever follows.
    let mut compact = [0u8; 18];
    let mut len = 0;
    for c in raw.chars().map(half_width) {
        if c.is_whitespace() || c == '-' {
            continue;
        }
        if !c.is_ascii() || len == compact.len() {
            return Err(IdNumberProblem::Malformed);
        }
        compact[len] = c.to_ascii_uppercase() as u8;
        len += 1;
    }
    let bytes = &compact[..len];
    match bytes.len() {
        18 => {
            let (body, last) = bytes.split_at(17);
            if !body.iter().all(u8::is_ascii_digit) || !(last[0].is_ascii_digit() || last[0] == b'X') {
                return Err(IdNumberProblem::Malformed);
            }
            check_region_and_birth(bytes)?;
            let first17: &[u8; 17] = body.try_into().expect("split at 17");
            if check_digit(first17) != last[0] {
                return Err(IdNumberProblem::BadCheckDigit);
            }
            Ok(ascii_string(bytes))
        }
        15 => {
            if !bytes.iter().all(u8::is_ascii_digit) {
                return Err(IdNumberProblem::Malformed);
            }
            let mut full = [0u8; 18];
            full[..6].copy_from_slice(&bytes[..6]);
            full[6..8].copy_from_slice(b"19");
            full[8..17].copy_from_slice(&bytes[6..]);
            check_region_and_birth(&full)?;
            let first17: &[u8; 17] = full[..17].try_into().expect("17 digits");
            full[17] = check_digit(first17);
            Ok(ascii_string(&full))
        }
        _ => Err(IdNumberProblem::Malformed),
    }
}

/// The birth date a valid 18-character number carries (digits 7 to 14), `None` for one that
/// `normalize_id_number` did not accept.
pub fn birth_date(number: &str) -> Option<chrono::NaiveDate> {
    let digits = number.as_bytes().get(6..14)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (year, month, day) = date_fields(digits);
    chrono::NaiveDate::from_ymd_opt(year, month, day)
}

/// Year, month and day of eight ASCII digits YYYYMMDD.
fn date_fields(digits: &[u8]) -> (i32, u32, u32) {
    let number = |range: std::ops::Range<usize>| {
        digits[range]
            .iter()
            .fold(0, |value, digit| value * 10 + u32::from(digit - b'0'))
    };
    let year = i32::try_from(number(0..4)).expect("four digits");
    (year, number(4..6), number(6..8))
}

/// Text of bytes known to be ASCII.
fn ascii_string(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes).expect("ASCII").to_string()
}

/// Checks the region and birth date of the first 14 characters of a number, all digits.
fn check_region_and_birth(digits: &[u8]) -> Result<(), IdNumberProblem> {
    // GB/T 2260 province codes start with 1..8 (8 for Hong Kong, Macao, Taiwan).
    if !(b'1'..=b'8').contains(&digits[0]) {
        return Err(IdNumberProblem::BadRegion);
    }
    let (year, month, day) = date_fields(&digits[6..14]);
    if !(1800..=2199).contains(&year) || chrono::NaiveDate::from_ymd_opt(year, month, day).is_none() {
        return Err(IdNumberProblem::BadBirthDate);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(raw: &str, expected: Result<&str, IdNumberProblem>) {
        assert_eq!(normalize_id_number(raw).as_deref().map_err(|e| *e), expected);
    }

    #[test]
    fn forms_departments_send() {
        check("11010519491231002X", Ok("11010519491231002X"));
        check("11010519491231002x", Ok("11010519491231002X"));
        check("１１０１０５１９４９１２３１００２Ｘ", Ok("11010519491231002X"));
        check("110105 19491231 002X", Ok("11010519491231002X"));
        check("110105-19491231-002x", Ok("11010519491231002X"));
        // Legacy 15 digits: century 19 inserted, check digit computed.
        check("110105491231002", Ok("11010519491231002X"));
    }

    #[test]
    fn problems() {
        check("11010519491231002", Err(IdNumberProblem::Malformed));
        check("1101051949123100X2", Err(IdNumberProblem::Malformed));
        check("11010519491231002Y", Err(IdNumberProblem::Malformed));
        check("110105194912310021", Err(IdNumberProblem::BadCheckDigit));
        check("910105194912310029", Err(IdNumberProblem::BadRegion));
        check("110105194913310028", Err(IdNumberProblem::BadBirthDate));
        check("110105491331002", Err(IdNumberProblem::BadBirthDate));
        check("", Err(IdNumberProblem::Malformed));
    }

    #[test]
    fn birth_dates() {
        let date = chrono::NaiveDate::from_ymd_opt(1949, 12, 31);
        assert_eq!(birth_date("11010519491231002X"), date);
        assert_eq!(birth_date("110105194913310028"), None);
        assert_eq!(birth_date("1101051949"), None);
    }

    /// An independent reference: the check digit as the standard writes it,
    /// (12 - (sum mod 11)) mod 11 with 10 written X.
    fn reference_check(first17: &str) -> char {
        let sum: u32 = first17
            .chars()
            .enumerate()
            .map(|(i, c)| c.to_digit(10).expect("digit") * ((1u32 << (17 - i)) % 11))
            .sum();
        match (12 - sum % 11) % 11 {
            10 => 'X',
            d => char::from_digit(d, 10).expect("digit"),
        }
    }

    proptest! {
        #[test]
        fn never_panics(raw in "\\PC{0,40}") {
            let _ = normalize_id_number(&raw);
        }

        /// The birth date read from a valid number is the one its digits spell.
        #[test]
        fn birth_date_is_the_written_one(raw in "[1-8][0-9]{5}(1[89]|20)[0-9]{2}[01][0-9][0-3][0-9][0-9]{3}[0-9X]") {
            if let Ok(number) = normalize_id_number(&raw) {
                let written = chrono::NaiveDate::parse_from_str(&number[6..14], "%Y%m%d").ok();
                prop_assert!(written.is_some());
                prop_assert_eq!(birth_date(&number), written);
            }
        }

        #[test]
        fn idempotent(raw in "[0-9xX ]{14,20}") {
            if let Ok(once) = normalize_id_number(&raw) {
                prop_assert_eq!(normalize_id_number(&once), Ok(once.clone()));
            }
        }

        #[test]
        fn agrees_with_reference(first17 in "[1-6][0-9]{5}19[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}", last in "[0-9X]") {
            let expected = reference_check(&first17).to_string() == last;
            let candidate = format!("{first17}{last}");
            prop_assert_eq!(normalize_id_number(&candidate).is_ok(), expected);
        }
    }
}
