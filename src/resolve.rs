//! Resolution: decides which person a cleansed record is about, from the evidence the engine
//! gathered. Pure: the engine looks things up in the store and applies the placement.
//!
//! The first resolver links by resident ID number only: records whose ID numbers normalize to
//! the same valid number are one person; a record without a usable number is a person of its
//! own. Every person therefore holds either records of one ID number or a single record, and
//! the partition does not depend on the order records arrive in.

use crate::model::{CleanRecord, Decision, PersonId};

/// What the store knows that bears on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The person the record's ID number already belongs to, if any.
    pub id_number_owner: Option<PersonId>,
    /// The person an earlier version of this record belongs to, if it was stored before.
    pub previous: Option<Previous>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub person_id: PersonId,
    /// Whether that person holds records other than this one.
    pub person_has_other_records: bool,
}

/// Where the record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Into an existing person (possibly the one it is already in).
    Existing { person_id: PersonId, decision: Decision },
    /// Into a new person.
    New,
}

pub fn decide(record: &CleanRecord, evidence: &Evidence) -> Placement {
    if let (Some(_), Some(owner)) = (&record.id_number, &evidence.id_number_owner) {
        return Placement::Existing {
            person_id: owner.clone(),
            decision: Decision::Matched,
        };
    }
    // No person holds this record's evidence. An earlier version may keep its person only if
    // it is alone there: otherwise nothing links it to the others any more.
    match &evidence.previous {
        Some(previous) if !previous.person_has_other_records => Placement::Existing {
            person_id: previous.person_id.clone(),
            decision: Decision::Matched,
        },
        _ => Placement::New,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordKey, SourceId};

    fn record(id_number: Option<&str>) -> CleanRecord {
        CleanRecord {
            key: RecordKey {
                source: SourceId::parse("D01").expect("well-formed"),
                record_id: "1".into(),
            },
            observed_at: 0,
            tags: Default::default(),
            id_number: id_number.map(String::from),
            findings: vec![],
        }
    }

    fn previous(person: &str, others: bool) -> Option<Previous> {
        Some(Previous {
            person_id: PersonId::new(person),
            person_has_other_records: others,
        })
    }

    fn existing(person: &str) -> Placement {
        Placement::Existing {
            person_id: PersonId::new(person),
            decision: Decision::Matched,
        }
    }

    #[track_caller]
    fn check(id_number: Option<&str>, owner: Option<&str>, previous: Option<Previous>, expected: Placement) {
        let evidence = Evidence {
            id_number_owner: owner.map(PersonId::new),
            previous,
        };
        assert_eq!(decide(&record(id_number), &evidence), expected);
    }

    #[test]
    fn placements() {
        let id = Some("11010519491231002X");
        check(id, Some("P1"), None, existing("P1"));
        check(id, None, None, Placement::New);
        check(id, Some("P1"), previous("P2", true), existing("P1"));
        check(id, None, previous("P2", false), existing("P2"));
        check(id, None, previous("P2", true), Placement::New);
        check(None, None, None, Placement::New);
        check(None, None, previous("P2", false), existing("P2"));
        check(None, None, previous("P2", true), Placement::New);
    }
}
