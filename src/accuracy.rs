//! Accuracy measurement: how well a clustering (the record -> person mapping `popmaster export`
//! writes) agrees with ground truth, in pairwise precision, recall and F1, and the mapping of
//! FEBRL-format benchmark files into the interchange format so they can be loaded through the
//! real service. Pure functions over readers; never touches the store or the network.
//!
//! Pairwise counting: a predicted pair is two records the clustering puts in one person, a true
//! pair two records the truth says are one person. Pairs are counted from group sizes
//! (n(n-1)/2 per person, per true person and per intersection of the two), never enumerated, so
//! a million records cost one pass. For linking two sources only pairs with one record of each
//! count, as the FEBRL benchmark is scored.
//!
//! Input errors name the line and column, never a value: the files hold personal data.

use crate::catalog::Catalog;
use crate::cleanse::cleanse_record;
use crate::interchange::{parse_line, InterchangeRecord, TagText};
use crate::model::{RawRecord, RecordKey, SourceId, TagCode};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read};

/// A record as export and truth files name it: source and record id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordRef {
    pub source: String,
    pub record_id: String,
}

impl RecordRef {
    pub fn new(source: impl Into<String>, record_id: impl Into<String>) -> Self {
        RecordRef {
            source: source.into(),
            record_id: record_id.into(),
        }
    }
}

/// Why an input file cannot be used. Names lines and columns only, never a value.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("the header has no column `{column}` (expected columns: {expected})")]
    MissingColumn { column: &'static str, expected: String },
    #[error("line {line}: {problem}")]
    Line { line: u64, problem: String },
    #[error(transparent)]
    Jsonl(#[from] crate::interchange::ParseLineError),
    #[error("{0}")]
    Csv(String),
}

/// Reads a CSV file with a header, picking `columns` by name (in that order) from every row,
/// values trimmed (FEBRL's own files put a space after each comma). Rows come with their
/// 1-based line number.
fn read_columns<R: Read>(
    reader: R,
    columns: &'static [&'static str],
) -> Result<impl Iterator<Item = Result<(u64, Vec<String>), InputError>>, InputError> {
    let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
    let header = csv.headers().map_err(csv_error)?.clone();
    let positions = columns
        .iter()
        .map(|&column| {
            header
                .iter()
                .position(|name| name == column)
                .ok_or_else(|| InputError::MissingColumn {
                    column,
                    expected: columns.join(","),
                })
        })
        .collect::<Result<Vec<usize>, InputError>>()?;
    Ok(csv.into_records().map(move |row| {
        let row = row.map_err(csv_error)?;
        let line = row.position().map_or(0, csv::Position::line);
        let values = positions
            .iter()
            .map(|&position| row.get(position).unwrap_or_default().to_string())
            .collect();
        Ok((line, values))
    }))
}

/// csv's messages carry positions, not field contents (nothing here deserializes values), so
/// they are safe to show; the common cases are reworded to name the line.
fn csv_error(error: csv::Error) -> InputError {
    let message = error.to_string();
    match error.into_kind() {
        csv::ErrorKind::Io(io) => InputError::Io(io),
        csv::ErrorKind::UnequalLengths {
            pos: Some(pos),
            expected_len,
            len,
        } => InputError::Line {
            line: pos.line(),
            problem: format!("{len} fields where the header has {expected_len}"),
        },
        csv::ErrorKind::Utf8 { pos: Some(pos), err } => InputError::Line {
            line: pos.line(),
            problem: format!("field {} is not valid UTF-8", err.field() + 1),
        },
        _ => InputError::Csv(message),
    }
}

fn require_value(line: u64, column: &str, value: &str) -> Result<(), InputError> {
    if value.is_empty() {
        return Err(InputError::Line {
            line,
            problem: format!("`{column}` is empty"),
        });
    }
    Ok(())
}

/// The columns of a FEBRL-format file, by header name.
pub const FEBRL_COLUMNS: &[&str] = &[
    "rec_id",
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
];

/// Reads a FEBRL-format CSV (every value as text; columns found by header name, others ignored)
/// as interchange records of `source`, in file order:
///
/// - `record_id` = `rec_id` (opaque to popmaster; it must be present and unique in the file);
/// - `name` = given name and surname, space-separated (either may be missing);
/// - `birth_date` = `date_of_birth` as sent: judging it is cleansing's job;
/// - `address` = street number, address lines, suburb, state and postcode, ", "-separated,
///   empty parts left out: the order an Australian envelope writes them;
/// - `other_id` = `soc_sec_id`, the identifier that is not a resident ID number.
///
/// No `observed_at`: the files do not say when a record was observed.
pub fn read_febrl<R: Read>(
    reader: R,
    source: &str,
) -> Result<impl Iterator<Item = Result<InterchangeRecord, InputError>>, InputError> {
    let source = source.to_string();
    let mut line_of_id: HashMap<String, u64> = HashMap::new();
    let rows = read_columns(reader, FEBRL_COLUMNS)?;
    Ok(rows.map(move |row| {
        let (line, values) = row?;
        let [rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id] =
            <[String; 11]>::try_from(values).expect("one value per FEBRL column");
        require_value(line, "rec_id", &rec_id)?;
        if let Some(first) = line_of_id.insert(rec_id.clone(), line) {
            return Err(InputError::Line {
                line,
                problem: format!("`rec_id` repeats the one on line {first}"),
            });
        }
        let name = [given_name, surname].join(" ").trim().to_string();
        let address_parts = [street_number, address_1, address_2, suburb, state, postcode];
        let address = (address_parts.iter())
            .filter(|part| !part.is_empty())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let tags: BTreeMap<String, Option<TagText>> = [
            ("name", name),
            ("birth_date", date_of_birth),
            ("address", address),
            ("other_id", soc_sec_id),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(tag, value)| (tag.to_string(), Some(TagText::Text(value))))
        .collect();
        Ok(InterchangeRecord {
            source: source.clone(),
            record_id: rec_id,
            observed_at: None,
            tags,
        })
    }))
}

/// A clustering: the person of each record, as `popmaster export` writes it
/// (`source,record_id,person_id`). Person ids are interned: only equality matters.
#[derive(Debug, Default, Clone)]
pub struct Mapping {
    person_of: HashMap<RecordRef, u32>,
}

impl Mapping {
    pub fn read_csv<R: Read>(reader: R) -> Result<Mapping, InputError> {
        let groups = read_groups(reader, &["source", "record_id", "person_id"])?;
        Ok(Mapping { person_of: groups })
    }

    /// Builds a mapping from (record, person) rows, such as the export RPC streams; a record
    /// given twice keeps its last person.
    pub fn from_rows<P: AsRef<str>>(rows: impl IntoIterator<Item = (RecordRef, P)>) -> Mapping {
        let mut interner = Interner::default();
        let person_of = rows
            .into_iter()
            .map(|(record, person)| (record, interner.id(person.as_ref())))
            .collect();
        Mapping { person_of }
    }
}

/// Reads `source,record_id,<group>` rows (the mapping and the synthetic truth share the shape).
fn read_groups<R: Read>(reader: R, columns: &'static [&'static str]) -> Result<HashMap<RecordRef, u32>, InputError> {
    let mut interner = Interner::default();
    let mut groups = HashMap::new();
    let mut line_of: HashMap<RecordRef, u64> = HashMap::new();
    for row in read_columns(reader, columns)? {
        let (line, values) = row?;
        let [source, record_id, group] = <[String; 3]>::try_from(values).expect("three columns");
        for (column, value) in columns.iter().zip([&source, &record_id, &group]) {
            require_value(line, column, value)?;
        }
        let record = RecordRef { source, record_id };
        if let Some(first) = line_of.insert(record.clone(), line) {
            return Err(InputError::Line {
                line,
                problem: format!("the record of line {first} again"),
            });
        }
        groups.insert(record, interner.id(&group));
    }
    Ok(groups)
}

#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn id(&mut self, name: &str) -> u32 {
        let next = u32::try_from(self.ids.len()).expect("fewer than 4 billion groups");
        *self.ids.entry(name.to_string()).or_insert(next)
    }
}

/// What the true pairs are about: records of one source (deduplication) or pairs across two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairTask {
    /// Both records of a pair, and of every counted pair, come from this source.
    Dedupe { source: String },
    /// `rec_id_1` is a record of `left` and `rec_id_2` one of `right`; only pairs with one
    /// record of each source count, predicted or true.
    Link { left: String, right: String },
}

/// Ground truth.
#[derive(Debug, Clone)]
pub enum Truth {
    /// Pairs of records about one person (FEBRL's `rec_id_1,rec_id_2`), each unordered pair
    /// once. A record in no pair is a person of its own.
    Pairs {
        task: PairTask,
        pairs: HashSet<(RecordRef, RecordRef)>,
    },
    /// The true person of every record (`source,record_id,true_person`, what
    /// `popmaster generate --truth` writes); every pair of records counts.
    Persons(HashMap<RecordRef, u32>),
}

impl Truth {
    /// Reads `rec_id_1,rec_id_2` true pairs for `task`. A pair listed twice, in either order,
    /// counts once; a record paired with itself is an error.
    pub fn read_pairs<R: Read>(reader: R, task: PairTask) -> Result<Truth, InputError> {
        let (left, right) = match &task {
            PairTask::Dedupe { source } => (source.clone(), source.clone()),
            PairTask::Link { left, right } => (left.clone(), right.clone()),
        };
        let mut pairs = HashSet::new();
        for row in read_columns(reader, &["rec_id_1", "rec_id_2"])? {
            let (line, values) = row?;
            let [first, second] = <[String; 2]>::try_from(values).expect("two columns");
            require_value(line, "rec_id_1", &first)?;
            require_value(line, "rec_id_2", &second)?;
            if left == right && first == second {
                return Err(InputError::Line {
                    line,
                    problem: "a record paired with itself".to_string(),
                });
            }
            let (first, second) = (RecordRef::new(&left, first), RecordRef::new(&right, second));
            // For deduplication (first, second) and (second, first) are one pair.
            let pair = if left == right && second < first {
                (second, first)
            } else {
                (first, second)
            };
            pairs.insert(pair);
        }
        Ok(Truth::Pairs { task, pairs })
    }

    /// Reads `source,record_id,true_person`.
    pub fn read_persons<R: Read>(reader: R) -> Result<Truth, InputError> {
        Ok(Truth::Persons(read_groups(
            reader,
            &["source", "record_id", "true_person"],
        )?))
    }

    pub fn from_persons<P: AsRef<str>>(persons: impl IntoIterator<Item = (RecordRef, P)>) -> Truth {
        Truth::Persons(Mapping::from_rows(persons).person_of)
    }
}

/// Pair counts and the measures computed from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Records taking part: in the mapping or the truth (and in scope).
    pub n_records: u64,
    pub n_true_pairs: u64,
    pub n_predicted_pairs: u64,
    pub n_true_positives: u64,
}

impl PairCounts {
    pub fn false_positives(&self) -> u64 {
        self.n_predicted_pairs - self.n_true_positives
    }

    pub fn false_negatives(&self) -> u64 {
        self.n_true_pairs - self.n_true_positives
    }

    /// Share of predicted pairs that are true; undefined without predicted pairs.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.n_true_positives, self.n_predicted_pairs)
    }

    /// Share of true pairs predicted; undefined without true pairs.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.n_true_positives, self.n_true_pairs)
    }

    /// 2TP / (2TP + FP + FN): the harmonic mean of precision and recall, and 0 when nothing
    /// true was predicted (also when precision is undefined); undefined only without any pair.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.n_true_positives, self.n_true_pairs + self.n_predicted_pairs)
    }

    /// The counts of pairs in `self` but not in `other`, where `other` counts a sub-population.
    fn minus(&self, other: &PairCounts) -> PairCounts {
        PairCounts {
            n_records: self.n_records - other.n_records,
            n_true_pairs: self.n_true_pairs - other.n_true_pairs,
            n_predicted_pairs: self.n_predicted_pairs - other.n_predicted_pairs,
            n_true_positives: self.n_true_positives - other.n_true_positives,
        }
    }
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

fn pairs_among(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// The result of comparing a mapping with the truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub overall: PairCounts,
    /// Pairs with at least one record of the subset, when one was given.
    pub subset: Option<PairCounts>,
    /// Records of the truth that the mapping does not hold (rejected, or never loaded): each
    /// counts as a person of its own.
    pub n_truth_records_unmapped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error("the mapping holds no record of source {0}: is it the source the records were loaded as?")]
    SourceNotInMapping(String),
    #[error("linking needs two different sources; give one source to deduplicate")]
    SameSourceTwice,
}

/// Compares `mapping` with `truth`. `subset`, if given, adds the counts of pairs with at least
/// one record in it (such as records without a usable ID number).
pub fn evaluate(
    mapping: &Mapping,
    truth: &Truth,
    subset: Option<&HashSet<RecordRef>>,
) -> Result<Evaluation, EvaluationError> {
    let everyone = |_: &RecordRef| true;
    let overall = count_pairs(mapping, truth, &everyone)?;
    let subset = match subset {
        Some(subset) => {
            let outside = count_pairs(mapping, truth, &|record: &RecordRef| !subset.contains(record))?;
            Some(overall.minus(&outside))
        }
        None => None,
    };
    let n_truth_records_unmapped = match truth {
        Truth::Pairs { pairs, .. } => {
            let records: HashSet<&RecordRef> = pairs.iter().flat_map(|(a, b)| [a, b]).collect();
            records.iter().filter(|r| !mapping.person_of.contains_key(**r)).count()
        }
        Truth::Persons(persons) => persons.keys().filter(|r| !mapping.person_of.contains_key(*r)).count(),
    } as u64;
    Ok(Evaluation {
        overall,
        subset,
        n_truth_records_unmapped,
    })
}

/// Counts pairs among the records `keep` accepts.
fn count_pairs(
    mapping: &Mapping,
    truth: &Truth,
    keep: &dyn Fn(&RecordRef) -> bool,
) -> Result<PairCounts, EvaluationError> {
    match truth {
        Truth::Pairs { task, pairs } => count_against_pairs(mapping, task, pairs, keep),
        Truth::Persons(persons) => Ok(count_against_persons(mapping, persons, keep)),
    }
}

fn count_against_pairs(
    mapping: &Mapping,
    task: &PairTask,
    pairs: &HashSet<(RecordRef, RecordRef)>,
    keep: &dyn Fn(&RecordRef) -> bool,
) -> Result<PairCounts, EvaluationError> {
    let sources: Vec<&str> = match task {
        PairTask::Dedupe { source } => vec![source],
        PairTask::Link { left, right } if left == right => return Err(EvaluationError::SameSourceTwice),
        PairTask::Link { left, right } => vec![left, right],
    };
    for source in &sources {
        if !mapping.person_of.keys().any(|record| record.source == *source) {
            return Err(EvaluationError::SourceNotInMapping(source.to_string()));
        }
    }
    // Per person: how many of its kept records come from each source of the task.
    let mut per_person: HashMap<u32, [u64; 2]> = HashMap::new();
    let mut records: HashSet<&RecordRef> = HashSet::new();
    for (record, person) in &mapping.person_of {
        let Some(side) = sources.iter().position(|source| *source == record.source) else {
            continue;
        };
        if keep(record) {
            per_person.entry(*person).or_default()[side] += 1;
            records.insert(record);
        }
    }
    let n_predicted_pairs = per_person
        .values()
        .map(|[first, second]| match task {
            PairTask::Dedupe { .. } => pairs_among(*first),
            PairTask::Link { .. } => first * second,
        })
        .sum();
    let mut counts = PairCounts {
        n_predicted_pairs,
        ..PairCounts::default()
    };
    for (first, second) in pairs.iter().filter(|(first, second)| keep(first) && keep(second)) {
        records.extend([first, second]);
        counts.n_true_pairs += 1;
        let person = |record| mapping.person_of.get(record);
        if person(first).is_some() && person(first) == person(second) {
            counts.n_true_positives += 1;
        }
    }
    counts.n_records = records.len() as u64;
    Ok(counts)
}

fn count_against_persons(
    mapping: &Mapping,
    persons: &HashMap<RecordRef, u32>,
    keep: &dyn Fn(&RecordRef) -> bool,
) -> PairCounts {
    let mut predicted: HashMap<u32, u64> = HashMap::new();
    let mut true_sizes: HashMap<u32, u64> = HashMap::new();
    let mut both: HashMap<(u32, u32), u64> = HashMap::new();
    let mut n_records = 0u64;
    for (record, person) in mapping.person_of.iter().filter(|(record, _)| keep(record)) {
        n_records += 1;
        *predicted.entry(*person).or_default() += 1;
        if let Some(true_person) = persons.get(record) {
            *both.entry((*person, *true_person)).or_default() += 1;
        }
    }
    for (record, true_person) in persons.iter().filter(|(record, _)| keep(record)) {
        n_records += u64::from(!mapping.person_of.contains_key(record));
        *true_sizes.entry(*true_person).or_default() += 1;
    }
    let sum_pairs = |sizes: &mut dyn Iterator<Item = u64>| sizes.map(pairs_among).sum();
    PairCounts {
        n_records,
        n_true_pairs: sum_pairs(&mut true_sizes.into_values()),
        n_predicted_pairs: sum_pairs(&mut predicted.into_values()),
        n_true_positives: sum_pairs(&mut both.into_values()),
    }
}

/// The records of an interchange JSONL file that carry no usable resident ID number, judged as
/// the service judges them: the record is cleansed with `catalog` and has no valid ID number
/// afterwards (none sent, a placeholder, or one failing its checks). The ID-number rule can
/// never link these records, so their accuracy is the matcher's alone.
pub fn records_without_usable_id_number<R: BufRead>(
    reader: R,
    catalog: &Catalog,
) -> Result<HashSet<RecordRef>, InputError> {
    let mut without = HashSet::new();
    // "Today" only matters to date checks, never to the ID number's validity.
    let received_at = chrono::Utc::now().timestamp_millis();
    for (index, line) in reader.lines().enumerate() {
        let line_number = index as u64 + 1;
        let text = line?;
        let Some(record) = parse_line(&text, line_number)? else {
            continue;
        };
        let source = SourceId::parse(&record.source).ok_or_else(|| InputError::Line {
            line: line_number,
            problem: "`source` is not a source code like D07".to_string(),
        })?;
        let reference = RecordRef::new(&record.source, &record.record_id);
        let raw = RawRecord {
            key: RecordKey {
                source,
                record_id: record.record_id.clone(),
            },
            observed_at: None,
            tags: (record.present_tags().into_iter())
                .map(|(tag, value)| (TagCode::new(tag), value))
                .collect(),
        };
        if cleanse_record(raw, received_at, catalog).id_number.is_none() {
            without.insert(reference);
        }
    }
    Ok(without)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn febrl(text: &str) -> Result<Vec<InterchangeRecord>, InputError> {
        read_febrl(text.as_bytes(), "D15")?.collect()
    }

    fn tags(record: &InterchangeRecord) -> Vec<(String, String)> {
        record.clone().present_tags().into_iter().collect()
    }

    const HEADER: &str =
        "rec_id,given_name,surname,street_number,address_1,address_2,suburb,postcode,state,date_of_birth,soc_sec_id\n";

    #[test]
    fn febrl_rows_become_interchange_records() {
        let text = format!(
            "{HEADER}rec-1-org,mitchell,green,7,wallaby place,delmar,cleveland,2119,sa,19560409,0804974\n\
             rec-1-dup-0,,green,,wallaby place,,cleveland,2119,,1956O409,\n\
             x9,,,,,,,,,,\n"
        );
        let records = febrl(&text).expect("reads");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].source, "D15");
        assert_eq!(records[0].record_id, "rec-1-org");
        assert_eq!(records[0].observed_at, None);
        let expected = [
            ("address", "7, wallaby place, delmar, cleveland, sa, 2119"),
            ("birth_date", "19560409"),
            ("name", "mitchell green"),
            ("other_id", "0804974"),
        ];
        assert_eq!(tags(&records[0]), expected.map(|(t, v)| (t.to_string(), v.to_string())));
        let expected = [
            ("address", "wallaby place, cleveland, 2119"),
            ("birth_date", "1956O409"),
            ("name", "green"),
        ];
        assert_eq!(tags(&records[1]), expected.map(|(t, v)| (t.to_string(), v.to_string())));
        assert!(tags(&records[2]).is_empty());
    }

    #[test]
    fn febrl_as_shipped_with_spaces_after_commas_reads_the_same() {
        let spaced = "rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, \
                      date_of_birth, soc_sec_id\nrec-7-org, toby, webb, 6, kent street, , towradgi, 3107, nsw, \
                      19940503, 1232838\n";
        let compact = format!("{HEADER}rec-7-org,toby,webb,6,kent street,,towradgi,3107,nsw,19940503,1232838\n");
        assert_eq!(febrl(spaced).expect("spaced"), febrl(&compact).expect("compact"));
    }

    #[test]
    fn febrl_columns_are_found_by_name_in_any_order() {
        let text = "soc_sec_id,date_of_birth,state,postcode,suburb,address_2,address_1,street_number,surname,\
                    given_name,rec_id,extra\n1,19000101,act,2600,turner,,,,lee,ann,r1,ignored\n";
        let records = febrl(text).expect("reads");
        assert_eq!(records[0].record_id, "r1");
        assert_eq!(tags(&records[0])[2], ("name".to_string(), "ann lee".to_string()));
    }

    #[test]
    fn febrl_errors_name_the_line_or_column_and_no_value() {
        let error = febrl("rec_id,given_name\nr1,ann\n").expect_err("missing columns");
        assert!(error.to_string().contains("no column `surname`"), "{error}");
        let text = format!("{HEADER}r1,ann,lee,,,,,,,,\n,bob,secretname,,,,,,,,\n");
        let error = febrl(&text).expect_err("empty rec_id");
        assert_eq!(error.to_string(), "line 3: `rec_id` is empty");
        let text = format!("{HEADER}r1,ann,lee,,,,,,,,\nr1,bob,secretname,,,,,,,,\n");
        let error = febrl(&text).expect_err("repeated rec_id");
        assert_eq!(error.to_string(), "line 3: `rec_id` repeats the one on line 2");
        let text = format!("{HEADER}r1,ann,secretname\n");
        let error = febrl(&text).expect_err("short row");
        assert_eq!(error.to_string(), "line 2: 3 fields where the header has 11");
    }

    fn r(source: &str, id: &str) -> RecordRef {
        RecordRef::new(source, id)
    }

    /// Records a1 a2 a3 (person X), b1 b2 (Y), c1 (Z), all of source D15, clustered as
    /// {a1 a2} {a3 b1 b2} {c1}.
    fn small_example() -> (Mapping, Truth) {
        let truth = Truth::from_persons(
            [
                ("a1", "X"),
                ("a2", "X"),
                ("a3", "X"),
                ("b1", "Y"),
                ("b2", "Y"),
                ("c1", "Z"),
            ]
            .map(|(id, person)| (r("D15", id), person)),
        );
        let mapping = Mapping::from_rows(
            [
                ("a1", "P1"),
                ("a2", "P1"),
                ("a3", "P2"),
                ("b1", "P2"),
                ("b2", "P2"),
                ("c1", "P3"),
            ]
            .map(|(id, person)| (r("D15", id), person)),
        );
        (mapping, truth)
    }

    #[test]
    fn persons_truth_counts_by_hand() {
        let (mapping, truth) = small_example();
        let evaluation = evaluate(&mapping, &truth, None).expect("evaluates");
        // True pairs: 3 among a*, 1 among b*. Predicted: 1 in P1, 3 in P2. Both: a1a2, b1b2.
        let expected = PairCounts {
            n_records: 6,
            n_true_pairs: 4,
            n_predicted_pairs: 4,
            n_true_positives: 2,
        };
        assert_eq!(evaluation.overall, expected);
        assert_eq!((expected.false_positives(), expected.false_negatives()), (2, 2));
        assert_eq!(expected.precision(), Some(0.5));
        assert_eq!(expected.recall(), Some(0.5));
        assert_eq!(expected.f1(), Some(0.5));
        assert_eq!(evaluation.subset, None);
        assert_eq!(evaluation.n_truth_records_unmapped, 0);
    }

    #[test]
    fn subset_counts_pairs_touching_it() {
        let (mapping, truth) = small_example();
        let subset: HashSet<RecordRef> = [r("D15", "a3")].into();
        let evaluation = evaluate(&mapping, &truth, Some(&subset)).expect("evaluates");
        // With a3: true a1a3, a2a3; predicted a3b1, a3b2; none both.
        let expected = PairCounts {
            n_records: 1,
            n_true_pairs: 2,
            n_predicted_pairs: 2,
            n_true_positives: 0,
        };
        assert_eq!(evaluation.subset, Some(expected));
        assert_eq!(expected.f1(), Some(0.0));
    }

    #[test]
    fn pairs_truth_for_deduplication_counts_by_hand() {
        let (mapping, _) = small_example();
        let pairs = "rec_id_1,rec_id_2\na1,a2\na1,a3\na3,a2\nb1,b2\nb2,b1\n";
        let task = PairTask::Dedupe { source: "D15".into() };
        let truth = Truth::read_pairs(pairs.as_bytes(), task).expect("reads");
        let evaluation = evaluate(&mapping, &truth, None).expect("evaluates");
        // The same partition as `small_example`'s persons (b2,b1 repeats b1,b2).
        let expected = PairCounts {
            n_records: 6,
            n_true_pairs: 4,
            n_predicted_pairs: 4,
            n_true_positives: 2,
        };
        assert_eq!(evaluation.overall, expected);
        let subset: HashSet<RecordRef> = [r("D15", "a3")].into();
        let evaluation = evaluate(&mapping, &truth, Some(&subset)).expect("evaluates");
        assert_eq!(
            evaluation.subset.map(|c| (c.n_true_pairs, c.n_predicted_pairs)),
            Some((2, 2))
        );
    }

    #[test]
    fn linking_counts_only_pairs_across_the_two_sources() {
        // True: l1-r1, l2-r2, l3-r3. Clustered {l1 r1} {l2 l3 r2} {r3}, plus a record of
        // another source in the first person, which is out of scope.
        let mapping = Mapping::from_rows(
            [
                ("D15", "l1", "P1"),
                ("D18", "r1", "P1"),
                ("D07", "z1", "P1"),
                ("D15", "l2", "P2"),
                ("D15", "l3", "P2"),
                ("D18", "r2", "P2"),
                ("D18", "r3", "P3"),
            ]
            .map(|(source, id, person)| (r(source, id), person)),
        );
        let task = PairTask::Link {
            left: "D15".into(),
            right: "D18".into(),
        };
        let truth = Truth::read_pairs("rec_id_1,rec_id_2\nl1,r1\nl2,r2\nl3,r3\n".as_bytes(), task).expect("reads");
        let counts = evaluate(&mapping, &truth, None).expect("evaluates").overall;
        // Predicted across: l1r1, l2r2, l3r2 (l2l3 is within one source).
        let expected = PairCounts {
            n_records: 6,
            n_true_pairs: 3,
            n_predicted_pairs: 3,
            n_true_positives: 2,
        };
        assert_eq!(counts, expected);
        assert_eq!(counts.precision(), Some(2.0 / 3.0));
        assert_eq!(counts.recall(), Some(2.0 / 3.0));
    }

    #[test]
    fn truth_records_missing_from_the_mapping_are_persons_of_their_own() {
        let mapping = Mapping::from_rows([(r("D15", "a1"), "P1"), (r("D15", "b1"), "P2")]);
        let task = PairTask::Dedupe { source: "D15".into() };
        let truth = Truth::read_pairs("rec_id_1,rec_id_2\na1,a2\n".as_bytes(), task).expect("reads");
        let evaluation = evaluate(&mapping, &truth, None).expect("evaluates");
        assert_eq!(evaluation.n_truth_records_unmapped, 1);
        assert_eq!(evaluation.overall.n_records, 3);
        assert_eq!(evaluation.overall.false_negatives(), 1);
        assert_eq!(evaluation.overall.precision(), None);
        assert_eq!(evaluation.overall.f1(), Some(0.0));
    }

    #[test]
    fn a_source_the_mapping_lacks_is_named() {
        let mapping = Mapping::from_rows([(r("D15", "a1"), "P1")]);
        let task = PairTask::Link {
            left: "D15".into(),
            right: "D18".into(),
        };
        let truth = Truth::read_pairs("rec_id_1,rec_id_2\na1,b1\n".as_bytes(), task).expect("reads");
        let error = evaluate(&mapping, &truth, None).expect_err("D18 is absent");
        assert!(error.to_string().contains("no record of source D18"), "{error}");
    }

    #[test]
    fn mapping_and_truth_files_are_checked_row_by_row() {
        let error = Mapping::read_csv("source,record_id\nD15,a1\n".as_bytes()).expect_err("no person_id");
        assert!(error.to_string().contains("no column `person_id`"), "{error}");
        let text = "source,record_id,person_id\nD15,a1,P1\nD15,a2,\n";
        let error = Mapping::read_csv(text.as_bytes()).expect_err("empty person");
        assert_eq!(error.to_string(), "line 3: `person_id` is empty");
        let text = "source,record_id,person_id\nD15,a1,P1\nD15,a1,P2\n";
        let error = Mapping::read_csv(text.as_bytes()).expect_err("repeated record");
        assert_eq!(error.to_string(), "line 3: the record of line 2 again");
        let task = PairTask::Dedupe { source: "D15".into() };
        let error = Truth::read_pairs("rec_id_1,rec_id_2\na1,a1\n".as_bytes(), task).expect_err("self pair");
        assert_eq!(error.to_string(), "line 2: a record paired with itself");
        let error = Truth::read_persons("source,record_id,true_person\nD15,a1,7,8\n".as_bytes()).expect_err("long row");
        assert_eq!(error.to_string(), "line 2: 4 fields where the header has 3");
    }

    #[test]
    fn records_without_a_usable_id_number_are_judged_by_cleansing() {
        let valid = crate::synth::Generator::new(
            crate::synth::SynthConfig {
                n_persons: 1,
                records_per_person_mean: 1.0,
                missing_id_rate: 0.0,
                error_rate: 0.0,
                ..Default::default()
            },
            &Catalog::shipped(),
        )
        .find_map(|synth| {
            let tags = synth.record.present_tags();
            tags.get("id_number").cloned()
        })
        .expect("an error-free record carries its ID number");
        let mut broken = valid.clone().into_bytes();
        broken[16] = if broken[16] == b'0' { b'1' } else { b'0' };
        let broken = String::from_utf8(broken).expect("ASCII");
        let lines = [
            format!(r#"{{"source":"D15","record_id":"ok","tags":{{"name":"张伟","id_number":"{valid}"}}}}"#),
            format!(r#"{{"source":"D15","record_id":"bad","tags":{{"name":"张伟","id_number":"{broken}"}}}}"#),
            r#"{"source":"D15","record_id":"none","tags":{"name":"张伟","id_number":"不详"}}"#.to_string(),
            String::new(),
            r#"{"source":"D15","record_id":"absent","tags":{"name":"张伟"}}"#.to_string(),
        ];
        let without =
            records_without_usable_id_number(lines.join("\n").as_bytes(), &Catalog::shipped()).expect("reads");
        let expected: HashSet<RecordRef> = ["bad", "none", "absent"].map(|id| r("D15", id)).into();
        assert_eq!(without, expected);
        let error = records_without_usable_id_number("{}\n".as_bytes(), &Catalog::shipped()).expect_err("malformed");
        assert!(error.to_string().starts_with("line 1:"), "{error}");
    }

    /// A random partition of `n` records over up to `n_groups` groups, as group labels.
    fn partition() -> impl Strategy<Value = Vec<u8>> {
        (1usize..60, 1u8..20).prop_flat_map(|(n, n_groups)| proptest::collection::vec(0..n_groups, n))
    }

    proptest! {
        #[test]
        fn a_clustering_equal_to_the_truth_scores_one(labels in partition(), relabel in 0u8..255) {
            let records: Vec<RecordRef> = (0..labels.len()).map(|i| r("D15", &i.to_string())).collect();
            let truth = Truth::from_persons(records.iter().cloned().zip(labels.iter().map(|l| format!("T{l}"))));
            // The same partition under other names.
            let renamed = labels.iter().map(|l| format!("P{}", l.wrapping_add(relabel)));
            let mapping = Mapping::from_rows(records.iter().cloned().zip(renamed));
            let counts = evaluate(&mapping, &truth, None).expect("evaluates").overall;
            prop_assert_eq!(counts.false_positives(), 0);
            prop_assert_eq!(counts.false_negatives(), 0);
            if counts.n_true_pairs > 0 {
                prop_assert_eq!(counts.f1(), Some(1.0));
                prop_assert_eq!(counts.precision(), Some(1.0));
                prop_assert_eq!(counts.recall(), Some(1.0));
            } else {
                prop_assert_eq!(counts.f1(), None);
            }
        }

        #[test]
        fn pairs_and_persons_truth_agree(truth_labels in partition(), seed in any::<u64>(), subset_mod in 1usize..5) {
            let n = truth_labels.len();
            let records: Vec<RecordRef> = (0..n).map(|i| r("D15", &i.to_string())).collect();
            let clustered = (0..n).map(|i| format!("P{}", (seed >> (i % 64)) % 4));
            let mapping = Mapping::from_rows(records.iter().cloned().zip(clustered));
            let persons = Truth::from_persons(records.iter().cloned().zip(truth_labels.iter().map(u8::to_string)));
            let mut listed = String::from("rec_id_1,rec_id_2\n");
            for i in 0..n {
                for j in i + 1..n {
                    if truth_labels[i] == truth_labels[j] {
                        listed.push_str(&format!("{i},{j}\n"));
                    }
                }
            }
            let task = PairTask::Dedupe { source: "D15".into() };
            let pairs = Truth::read_pairs(listed.as_bytes(), task).expect("reads");
            let subset: HashSet<RecordRef> = records.iter().step_by(subset_mod).cloned().collect();
            let by_persons = evaluate(&mapping, &persons, Some(&subset)).expect("evaluates");
            let by_pairs = evaluate(&mapping, &pairs, Some(&subset)).expect("evaluates");
            prop_assert_eq!(by_persons.overall, by_pairs.overall);
            prop_assert_eq!(by_persons.subset, by_pairs.subset);
        }
    }
}
