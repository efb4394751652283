//! The interchange format of DESIGN.md: one JSON record a line (JSONL). Parsing and writing
//! only; whether the source and tags exist is the catalog's question, asked at ingest.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One line of a JSONL file. `null` and empty tag values both mean "not recorded".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterchangeRecord {
    pub source: String,
    pub record_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, Option<TagText>>,
}

/// ETL exports send numbers and booleans unquoted; they are kept as their JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TagText {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl TagText {
    pub fn into_string(self) -> String {
        match self {
            TagText::Text(text) => text,
            TagText::Number(number) => number.to_string(),
            TagText::Bool(flag) => flag.to_string(),
        }
    }
}

impl From<&str> for TagText {
    fn from(text: &str) -> Self {
        TagText::Text(text.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseLineError {
    #[error("line {line}: not a JSON record of the interchange format: {message}")]
    Malformed { line: u64, message: String },
}

/// Parses one line; `line` is 1-based, for the error. Blank lines give `Ok(None)`.
pub fn parse_line(text: &str, line: u64) -> Result<Option<InterchangeRecord>, ParseLineError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|error| ParseLineError::Malformed {
            line,
            message: redact_quoted(&error.to_string()),
        })
}

/// serde_json quotes offending values ("invalid type: string \"张伟\""); a value may be
/// personal data, so it is dropped. Field names, in backticks, stay.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

impl InterchangeRecord {
    /// Tags whose value is present: `null` and empty strings dropped.
    pub fn present_tags(self) -> BTreeMap<String, String> {
        self.tags
            .into_iter()
            .filter_map(|(tag, value)| {
                let value = value?.into_string();
                (!value.is_empty()).then_some((tag, value))
            })
            .collect()
    }

    /// The record as the engine takes it after admission, for benches and tests that feed the
    /// engine directly; the caller knows the record is admissible (a well-formed source).
    pub fn to_raw_record(&self) -> crate::model::RawRecord {
        let observed_at = self
            .observed_at
            .as_deref()
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.timestamp_millis());
        let source =
            crate::model::SourceId::parse(&self.source).expect("an admissible record has a well-formed source");
        crate::model::RawRecord {
            key: crate::model::RecordKey {
                source,
                record_id: self.record_id.clone(),
            },
            observed_at,
            tags: self
                .clone()
                .present_tags()
                .into_iter()
                .map(|(tag, value)| (crate::model::TagCode::new(tag), value))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn design_example_parses() {
        let line = r#"{"source": "D07", "record_id": "2024-000123", "observed_at": "2024-05-01T08:00:00+08:00",
            "tags": {"name": "張偉", "id_number": "33010619900102123x", "phone": null, "address": "", "d07.seats": 5}}"#;
        let record = parse_line(line, 1).expect("parses").expect("not blank");
        assert_eq!(record.source, "D07");
        let tags = record.present_tags();
        assert_eq!(tags.len(), 3);
        assert_eq!(tags["d07.seats"], "5");
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let error = parse_line("{\"source\": \"D07\"", 42).expect_err("truncated");
        assert!(error.to_string().starts_with("line 42:"), "{error}");
        let error =
            parse_line(r#"{"source":"D07","record_id":"1","tags":{},"extra":1}"#, 7).expect_err("unknown field");
        assert!(error.to_string().contains("extra"), "{error}");
        assert!(parse_line("   ", 3).expect("blank is fine").is_none());
        let error =
            parse_line(r#"{"source":"D07","record_id":"1","tags":"13800001234"}"#, 9).expect_err("tags not a map");
        assert!(!error.to_string().contains("13800001234"), "{error}");
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_line(&text, 1);
        }

        #[test]
        fn round_trips(source in "D[0-9]{2}", record_id in "\\PC{1,20}", name in "\\PC{0,10}") {
            let record = InterchangeRecord {
                source, record_id, observed_at: None,
                tags: [("name".to_string(), Some(TagText::Text(name)))].into_iter().collect(),
            };
            let line = serde_json::to_string(&record).expect("serializes");
            prop_assert_eq!(parse_line(&line, 1).expect("parses"), Some(record));
        }
    }
}
