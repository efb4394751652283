//! Gender: maps the forms sources send (男性, M, female, GB/T 2261.1 codes) to the four GB/T 2261.1
//! names. Pure; never looks at the ID number (CON-002 and ASS-002 are the record cleanser's) and
//! never refuses a value: one it does not know is kept and flagged.

use super::rules::{GENDER_CODE, GENDER_UNRECOGNIZED};
use super::Standardized;

/// GB/T 2261.1 code 1.
pub const MALE: &str = "男";
/// GB/T 2261.1 code 2.
pub const FEMALE: &str = "女";
/// GB/T 2261.1 code 0: the gender is not known.
pub const UNKNOWN: &str = "未知的性别";
/// GB/T 2261.1 code 9: the gender was not stated.
pub const UNSTATED: &str = "未说明的性别";

/// Every accepted form and its name. Letters compare ignoring ASCII case, so only the lower-case
/// spelling is listed. The names map to themselves.
const FORMS: &[(&str, &str)] = &[
    (MALE, MALE),
    ("男性", MALE),
    ("m", MALE),
    ("male", MALE),
    ("1", MALE),
    (FEMALE, FEMALE),
    ("女性", FEMALE),
    ("f", FEMALE),
    ("female", FEMALE),
    ("2", FEMALE),
    (UNKNOWN, UNKNOWN),
    ("0", UNKNOWN),
    (UNSTATED, UNSTATED),
    ("9", UNSTATED),
];

/// The GB/T 2261.1 name of a cleaned gender value. `GENDER_CODE` fires when the value changes;
/// a value that is not an accepted form is kept as given and `GENDER_UNRECOGNIZED` fires.
pub fn standardize_gender(cleaned: &str) -> Standardized {
    let name = FORMS
        .iter()
        .find(|(form, _)| form.eq_ignore_ascii_case(cleaned))
        .map(|&(_, name)| name);
    match name {
        Some(name) if name == cleaned => Standardized::unchanged(cleaned),
        Some(name) => Standardized {
            value: Some(name.to_string()),
            rules: vec![GENDER_CODE],
        },
        None => Standardized {
            value: Some(cleaned.to_string()),
            rules: vec![GENDER_UNRECOGNIZED],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(cleaned: &str, value: &str, rules: &[&str]) {
        let standardized = standardize_gender(cleaned);
        assert_eq!(standardized.value.as_deref(), Some(value), "value of {cleaned:?}");
        assert_eq!(standardized.rules, rules, "rules of {cleaned:?}");
    }

    #[test]
    fn names_are_kept() {
        check("男", MALE, &[]);
        check("女", FEMALE, &[]);
        check("未知的性别", UNKNOWN, &[]);
        check("未说明的性别", UNSTATED, &[]);
    }

    #[test]
    fn forms_become_names() {
        check("男性", MALE, &[GENDER_CODE]);
        check("女性", FEMALE, &[GENDER_CODE]);
        check("M", MALE, &[GENDER_CODE]);
        check("m", MALE, &[GENDER_CODE]);
        check("F", FEMALE, &[GENDER_CODE]);
        check("f", FEMALE, &[GENDER_CODE]);
        check("male", MALE, &[GENDER_CODE]);
        check("Male", MALE, &[GENDER_CODE]);
        check("MALE", MALE, &[GENDER_CODE]);
        check("mAlE", MALE, &[GENDER_CODE]);
        check("female", FEMALE, &[GENDER_CODE]);
        check("Female", FEMALE, &[GENDER_CODE]);
        check("FEMALE", FEMALE, &[GENDER_CODE]);
    }

    #[test]
    fn gb_t_2261_1_codes() {
        check("0", UNKNOWN, &[GENDER_CODE]);
        check("1", MALE, &[GENDER_CODE]);
        check("2", FEMALE, &[GENDER_CODE]);
        check("9", UNSTATED, &[GENDER_CODE]);
    }

    #[test]
    fn unrecognized_values_are_kept_and_flagged() {
        check("3", "3", &[GENDER_UNRECOGNIZED]);
        check("01", "01", &[GENDER_UNRECOGNIZED]);
        check("男女", "男女", &[GENDER_UNRECOGNIZED]);
        check("男 ", "男 ", &[GENDER_UNRECOGNIZED]);
        check("mal", "mal", &[GENDER_UNRECOGNIZED]);
        check("males", "males", &[GENDER_UNRECOGNIZED]);
        check("x", "x", &[GENDER_UNRECOGNIZED]);
        check("未知", "未知", &[GENDER_UNRECOGNIZED]);
        check("Ｍ", "Ｍ", &[GENDER_UNRECOGNIZED]);
        check("", "", &[GENDER_UNRECOGNIZED]);
    }

    #[test]
    fn every_form_in_either_case_gives_a_name_that_is_kept() {
        for (form, name) in FORMS {
            for spelling in [form.to_string(), form.to_ascii_uppercase()] {
                assert_eq!(
                    standardize_gender(&spelling).value.as_deref(),
                    Some(*name),
                    "{spelling:?}"
                );
            }
            assert_eq!(standardize_gender(name), Standardized::unchanged(name));
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(raw in "\\PC{0,30}") {
            let once = standardize_gender(&raw);
            let value = once.value.clone().expect("gender never refuses a value");
            let twice = standardize_gender(&value);
            prop_assert_eq!(twice.value.as_deref(), Some(value.as_str()));
            if once.rules == [GENDER_UNRECOGNIZED] {
                prop_assert_eq!(value, raw);
                prop_assert_eq!(twice.rules, vec![GENDER_UNRECOGNIZED]);
            } else {
                prop_assert!(twice.rules.is_empty(), "{:?}", twice.rules);
            }
        }
    }
}
