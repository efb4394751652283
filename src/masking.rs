//! Masking of values a caller may read but is not cleared to see whole: one rule per value
//! type, all of them here (an ID number keeps its region and its last four,
//! 330106********123X; a phone its first three and last four, 138****1234; a name its first and
//! last character, 张*明). Pure functions of a value; which values are masked is the caller's
//! grant (`callers`), applied at the api edge.

use crate::catalog::ValueType;

const MASK: char = '*';
/// What a value of a type with no partial form shows: nothing of it, not even its length.
const WITHHELD: &str = "******";

/// The value as a caller who is not cleared for it sees it.
pub fn mask_value(value_type: ValueType, value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    match value_type {
        ValueType::IdNumber => keep_ends(&chars, 6, 4, 11),
        ValueType::Phone => keep_ends(&chars, 3, 4, 8),
        ValueType::Name => mask_name(&chars),
        // The first characters of an address are its province and city; the rest (street,
        // number, room) is withheld and its length hidden.
        ValueType::Address => {
            let kept: String = chars.iter().take(6).collect();
            if chars.len() <= 6 {
                WITHHELD.to_string()
            } else {
                format!("{kept}{WITHHELD}")
            }
        }
        ValueType::Identifier => keep_ends(&chars, 2, 2, 8),
        // The year only: "1990-**-**".
        ValueType::Date => match value.get(..4) {
            Some(year) if value.len() == 10 && year.bytes().all(|byte| byte.is_ascii_digit()) => {
                format!("{year}-**-**")
            }
            _ => WITHHELD.to_string(),
        },
        ValueType::Text
        | ValueType::Gender
        | ValueType::Code
        | ValueType::Integer
        | ValueType::Decimal
        | ValueType::Boolean => WITHHELD.to_string(),
    }
}

/// Keeps `head` and `tail` characters and masks each one between, when the value has at least
/// `min_len` characters (so that enough is hidden); a shorter value is withheld whole.
fn keep_ends(chars: &[char], head: usize, tail: usize, min_len: usize) -> String {
    if chars.len() < min_len {
        return WITHHELD.to_string();
    }
    let mut masked = String::with_capacity(chars.len() * 3);
    masked.extend(&chars[..head]);
    masked.extend(std::iter::repeat_n(MASK, chars.len() - head - tail));
    masked.extend(&chars[chars.len() - tail..]);
    masked
}

/// 张*明, 欧阳**华, 张*; a one-character name is withheld.
fn mask_name(chars: &[char]) -> String {
    match chars.len() {
        0 | 1 => WITHHELD.to_string(),
        2 => format!("{}{MASK}", chars[0]),
        n => {
            let mut masked = String::new();
            masked.push(chars[0]);
            masked.extend(std::iter::repeat_n(MASK, n - 2));
            masked.push(chars[n - 1]);
            masked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(value_type: ValueType, value: &str, expected: &str) {
        assert_eq!(mask_value(value_type, value), expected);
    }

    #[test]
    fn one_rule_per_value_type() {
        check(ValueType::IdNumber, "33010619900102123X", "330106********123X");
        check(ValueType::IdNumber, "330106900102123", "330106*****2123");
        check(ValueType::IdNumber, "3301", "******");
        check(ValueType::Phone, "13800001234", "138****1234");
        check(ValueType::Phone, "0571-88886666", "057******6666");
        check(ValueType::Phone, "1234567", "******");
        check(ValueType::Name, "张三明", "张*明");
        check(ValueType::Name, "欧阳小华", "欧**华");
        check(ValueType::Name, "张三", "张*");
        check(ValueType::Name, "张", "******");
        check(ValueType::Address, "浙江省杭州市西湖区文三路1号", "浙江省杭州市******");
        check(ValueType::Address, "杭州", "******");
        check(ValueType::Identifier, "E12345678", "E1*****78");
        check(ValueType::Identifier, "E123", "******");
        check(ValueType::Date, "1990-01-02", "1990-**-**");
        check(ValueType::Date, "199001", "******");
        check(ValueType::Gender, "男", "******");
        check(ValueType::Code, "01", "******");
        check(ValueType::Text, "something", "******");
        check(ValueType::Boolean, "true", "******");
    }

    #[test]
    fn a_masked_value_never_holds_the_hidden_part() {
        let id_number = "33010619900102123X";
        let masked = mask_value(ValueType::IdNumber, id_number);
        assert!(!masked.contains("19900102"), "{masked}");
        assert_eq!(masked.chars().count(), id_number.chars().count());
    }
}
