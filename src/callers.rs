//! Who may call the service: the callers file (TOML), its validation against the catalog, and
//! the grants it gives (write some sources; read some tags, unmasked up to a clearance; steward;
//! operator). Tokens are never stored: the file holds the SHA-256 of each token, and a
//! presented token is hashed and looked up. Pure apart from reading the file; never logs a
//! token, and knows nothing of gRPC.

use crate::catalog::{Catalog, Sensitivity, TagDef};
use crate::model::SourceId;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The longest caller id: it goes into logs and error messages.
const CALLER_ID_CHARS_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CallersError {
    #[error("cannot read callers file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("callers file: {0}")]
    Parse(String),
    #[error("callers file, caller {caller}: {message}")]
    Invalid { caller: String, message: String },
}

/// The SHA-256 of a token: what the callers file holds.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hash_from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte_idx, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * byte_idx..2 * byte_idx + 2], 16).ok()?;
    }
    Some(hash)
}

/// One caller as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    id: String,
    /// SHA-256 of each token the caller may present, in hex. Two during a rotation.
    tokens_sha256: Vec<String>,
    /// The sources whose records the caller may write and delete.
    #[serde(default)]
    writer: Vec<String>,
    reader: Option<RawReader>,
    #[serde(default)]
    steward: bool,
    #[serde(default)]
    operator: bool,
    /// Calls a second this caller may make on average (token bucket); absent: the server's
    /// `auth.calls_per_second`.
    calls_per_second: Option<f64>,
    /// Calls the bucket holds for a burst; absent: the server's `auth.calls_burst`.
    calls_burst: Option<u32>,
    /// Calls of this caller open at once; absent: the server's `auth.concurrent_calls_max`.
    concurrent_calls_max: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReader {
    /// Tag codes, or a department's tags as `d07.*`. Absent: every tag under the ceiling.
    tags: Option<Vec<String>>,
    /// The most sensitive level the caller may read. Absent: L4 (with a tag list) .
    sensitivity_max: Option<Sensitivity>,
    /// The most sensitive level whose values the caller sees unmasked (default L2).
    unmasked_max: Option<Sensitivity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    caller: Vec<RawCaller>,
}

/// A pattern of the reader's tag list: one tag, or every tag of a department.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TagPattern {
    Exact(String),
    /// `d07.*`: the prefix `d07.`.
    Department(String),
}

impl TagPattern {
    fn matches(&self, code: &str) -> bool {
        match self {
            TagPattern::Exact(exact) => exact == code,
            TagPattern::Department(prefix) => code.starts_with(prefix.as_str()),
        }
    }
}

/// What a reader may read, and what it sees unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderGrant {
    /// None: every tag under the ceiling.
    tags: Option<Vec<TagPattern>>,
    sensitivity_max: Sensitivity,
    unmasked_max: Sensitivity,
}

impl ReaderGrant {
    /// Every tag, every value unmasked: the open mode's grant.
    pub fn everything() -> ReaderGrant {
        ReaderGrant {
            tags: None,
            sensitivity_max: Sensitivity::L4,
            unmasked_max: Sensitivity::L4,
        }
    }

    pub fn may_read(&self, tag: &TagDef) -> bool {
        tag.sensitivity <= self.sensitivity_max
            && self
                .tags
                .as_ref()
                .is_none_or(|patterns| patterns.iter().any(|pattern| pattern.matches(&tag.code)))
    }

    /// Whether the caller sees the tag's values as stored (otherwise masked by its value type).
    pub fn sees_unmasked(&self, tag: &TagDef) -> bool {
        tag.sensitivity <= self.unmasked_max
    }

    /// Whether every tag is in reach and unmasked, so an unrestricted read needs no filtering.
    pub fn is_everything(&self) -> bool {
        self.tags.is_none() && self.sensitivity_max == Sensitivity::L4 && self.unmasked_max == Sensitivity::L4
    }
}

/// Which sources a caller writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterScope {
    None,
    /// The open mode: every source.
    All,
    Sources(BTreeSet<SourceId>),
}

/// The per-caller bounds of the rate limiter; `None` takes the server's default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CallerLimits {
    pub calls_per_second: Option<f64>,
    pub calls_burst: Option<u32>,
    pub concurrent_calls_max: Option<u32>,
}

/// An authenticated caller and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub id: String,
    pub writer: WriterScope,
    pub reader: Option<ReaderGrant>,
    pub steward: bool,
    pub operator: bool,
    pub limits: CallerLimits,
    /// The open mode's caller, which no limit applies to.
    pub unlimited: bool,
}

/// The caller id the open mode gives every call.
pub const OPEN_CALLER_ID: &str = "open";

impl Caller {
    /// The open mode (no callers file, loopback only): every role, every tag unmasked.
    pub fn open() -> Caller {
        Caller {
            id: OPEN_CALLER_ID.to_string(),
            writer: WriterScope::All,
            reader: Some(ReaderGrant::everything()),
            steward: true,
            operator: true,
            limits: CallerLimits::default(),
            unlimited: true,
        }
    }

    pub fn may_write(&self, source: &SourceId) -> bool {
        match &self.writer {
            WriterScope::None => false,
            WriterScope::All => true,
            WriterScope::Sources(sources) => sources.contains(source),
        }
    }

    pub fn is_writer(&self) -> bool {
        self.writer != WriterScope::None
    }

    /// The sources it writes, for messages ("D07, D12"), or "no source".
    pub fn writer_sources_words(&self) -> String {
        match &self.writer {
            WriterScope::None => "no source".into(),
            WriterScope::All => "every source".into(),
            WriterScope::Sources(sources) => sources.iter().map(SourceId::as_str).collect::<Vec<_>>().join(", "),
        }
    }
}

/// Every caller of one version of the callers file, by token hash.
#[derive(Debug, Default)]
pub struct Callers {
    by_token: HashMap<[u8; 32], Arc<Caller>>,
    n_callers: usize,
}

impl Callers {
    pub fn parse(text: &str, catalog: &Catalog) -> Result<Callers, CallersError> {
        // toml's messages quote the offending line, which for a token hash is harmless (it is a
        // hash) and helps find the mistake.
        let raw: RawFile = toml::from_str(text).map_err(|error| CallersError::Parse(error.to_string()))?;
        let mut callers = Callers::default();
        let mut ids = HashSet::new();
        for raw_caller in raw.caller {
            let caller_id = raw_caller.id.clone();
            let invalid = |message: String| CallersError::Invalid {
                caller: caller_id.clone(),
                message,
            };
            let well_formed_id = !caller_id.is_empty()
                && caller_id.chars().count() <= CALLER_ID_CHARS_MAX
                && caller_id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '@'));
            if !well_formed_id {
                return Err(CallersError::Invalid {
                    caller: caller_id.chars().take(CALLER_ID_CHARS_MAX).collect(),
                    message: format!("an id is 1 to {CALLER_ID_CHARS_MAX} ASCII letters, digits, '-', '_', '.' or '@'"),
                });
            }
            if !ids.insert(caller_id.clone()) {
                return Err(invalid("listed twice".into()));
            }
            if raw_caller.tokens_sha256.is_empty() {
                return Err(invalid(
                    "tokens_sha256 is empty: the caller could never authenticate".into(),
                ));
            }
            let caller = Arc::new(Caller {
                id: caller_id.clone(),
                writer: writer_scope(&raw_caller.writer, catalog).map_err(invalid)?,
                reader: raw_caller
                    .reader
                    .map(|reader| reader_grant(reader, catalog))
                    .transpose()
                    .map_err(invalid)?,
                steward: raw_caller.steward,
                operator: raw_caller.operator,
                limits: caller_limits(
                    raw_caller.calls_per_second,
                    raw_caller.calls_burst,
                    raw_caller.concurrent_calls_max,
                )
                .map_err(invalid)?,
                unlimited: false,
            });
            if !caller.is_writer() && caller.reader.is_none() && !caller.steward && !caller.operator {
                return Err(invalid(
                    "has no role: give it writer sources, a reader grant, steward or operator".into(),
                ));
            }
            for (token_idx, hex) in raw_caller.tokens_sha256.iter().enumerate() {
                let hash = hash_from_hex(&hex.to_ascii_lowercase()).ok_or_else(|| {
                    invalid(format!(
                        "tokens_sha256[{token_idx}] is not 64 hex digits (the SHA-256 of a token, see `popmaster token`)"
                    ))
                })?;
                if let Some(other) = callers.by_token.insert(hash, Arc::clone(&caller)) {
                    return Err(invalid(format!(
                        "tokens_sha256[{token_idx}] is also a token of caller {}",
                        other.id
                    )));
                }
            }
            callers.n_callers += 1;
        }
        Ok(callers)
    }

    /// The caller a token belongs to, if any.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Caller>> {
        self.by_token.get(&hash_token(token)).cloned()
    }

    pub fn n_callers(&self) -> usize {
        self.n_callers
    }
}

fn writer_scope(sources: &[String], catalog: &Catalog) -> Result<WriterScope, String> {
    if sources.is_empty() {
        return Ok(WriterScope::None);
    }
    let mut scope = BTreeSet::new();
    for raw in sources {
        let source = SourceId::parse(raw)
            .filter(|source| catalog.source(source).is_some())
            .ok_or_else(|| format!("writer names {raw:?}, which is not a source of the catalog (D01..D63)"))?;
        scope.insert(source);
    }
    Ok(WriterScope::Sources(scope))
}

fn reader_grant(raw: RawReader, catalog: &Catalog) -> Result<ReaderGrant, String> {
    if raw.tags.is_none() && raw.sensitivity_max.is_none() {
        return Err(
            "reader needs a tag list, a sensitivity_max, or both (sensitivity_max = \"L4\" reads every tag)".into(),
        );
    }
    let tags = match raw.tags {
        None => None,
        Some(codes) => {
            let mut patterns = Vec::with_capacity(codes.len());
            for code in codes {
                let pattern = match code.strip_suffix(".*") {
                    Some(department) => {
                        let source = SourceId::parse(department)
                            .filter(|source| catalog.source(source).is_some())
                            .ok_or_else(|| format!("reader tag {code:?} names no department of the catalog"))?;
                        TagPattern::Department(format!("{}.", source.as_str().to_ascii_lowercase()))
                    }
                    None if catalog.tag(&code).is_some() => TagPattern::Exact(code),
                    None => return Err(format!("reader tag {code:?} is not in the catalog")),
                };
                patterns.push(pattern);
            }
            Some(patterns)
        }
    };
    Ok(ReaderGrant {
        tags,
        sensitivity_max: raw.sensitivity_max.unwrap_or(Sensitivity::L4),
        unmasked_max: raw.unmasked_max.unwrap_or(Sensitivity::L2),
    })
}

fn caller_limits(
    calls_per_second: Option<f64>,
    calls_burst: Option<u32>,
    concurrent_calls_max: Option<u32>,
) -> Result<CallerLimits, String> {
    if calls_per_second.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
        return Err("calls_per_second must be a positive number".into());
    }
    if calls_burst == Some(0) {
        return Err("calls_burst must be at least 1".into());
    }
    if concurrent_calls_max == Some(0) {
        return Err("concurrent_calls_max must be at least 1".into());
    }
    Ok(CallerLimits {
        calls_per_second,
        calls_burst,
        concurrent_calls_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse(text: &str) -> Result<Callers, CallersError> {
        Callers::parse(text, &Catalog::shipped())
    }

    #[track_caller]
    fn check_refused(text: &str, expected: &str) {
        let error = parse(text).expect_err("refused").to_string();
        assert!(error.contains(expected), "{error}");
    }

    #[test]
    fn tokens_are_known_by_their_sha256() {
        assert_eq!(to_hex(&hash_token("test")), TOKEN_HASH);
        let callers = parse(&format!(
            "[[caller]]\nid = \"etl-d07\"\ntokens_sha256 = [\"{}\"]\nwriter = [\"d07\"]\n",
            TOKEN_HASH.to_ascii_uppercase()
        ))
        .expect("valid");
        let caller = callers.authenticate("test").expect("known token");
        assert_eq!(caller.id, "etl-d07");
        assert!(caller.may_write(&SourceId::parse("D07").expect("source")));
        assert!(!caller.may_write(&SourceId::parse("D08").expect("source")));
        assert!(callers.authenticate("tesT").is_none());
        assert!(callers.authenticate("").is_none());
    }

    #[test]
    fn reader_grants() {
        let catalog = Catalog::shipped();
        let callers = parse(&format!(
            "[[caller]]\nid = \"portal\"\ntokens_sha256 = [\"{TOKEN_HASH}\"]\n\
             [caller.reader]\ntags = [\"name\", \"id_number\", \"gender\", \"d07.*\"]\nsensitivity_max = \"L3\"\n"
        ))
        .expect("valid");
        let grant = callers
            .authenticate("test")
            .expect("known")
            .reader
            .clone()
            .expect("reader");
        let tag = |code: &str| catalog.tag(code).expect("catalog tag").clone();
        assert!(grant.may_read(&tag("name")));
        assert!(!grant.may_read(&tag("id_number")), "L4 is above the ceiling");
        assert!(!grant.may_read(&tag("phone")), "not listed");
        let d07_tag = catalog
            .tags()
            .iter()
            .find(|def| def.owner_source == "D07" && def.sensitivity <= Sensitivity::L3)
            .expect("a D07 tag");
        assert!(grant.may_read(d07_tag));
        assert!(grant.sees_unmasked(&tag("gender")), "L2 is unmasked by default");
        assert!(!grant.sees_unmasked(&tag("name")), "L3 is masked by default");
        assert!(!grant.is_everything());
        assert!(ReaderGrant::everything().is_everything());
    }

    #[test]
    fn mistakes_are_named() {
        let head = format!("[[caller]]\nid = \"c1\"\ntokens_sha256 = [\"{TOKEN_HASH}\"]\n");
        check_refused(&head, "has no role");
        check_refused(&format!("{head}writer = [\"D99\"]\n"), "\"D99\", which is not a source");
        check_refused(
            &format!("{head}[caller.reader]\nunmasked_max = \"L3\"\n"),
            "reader needs a tag list",
        );
        check_refused(
            &format!("{head}[caller.reader]\ntags = [\"nickname\"]\n"),
            "reader tag \"nickname\" is not in the catalog",
        );
        check_refused(&format!("{head}steward = true\nrole = \"x\"\n"), "unknown field `role`");
        check_refused(
            "[[caller]]\nid = \"c1\"\ntokens_sha256 = [\"abc\"]\noperator = true\n",
            "tokens_sha256[0] is not 64 hex digits",
        );
        check_refused(
            "[[caller]]\nid = \"c1\"\ntokens_sha256 = []\noperator = true\n",
            "tokens_sha256 is empty",
        );
        check_refused(
            &format!(
                "{head}operator = true\n[[caller]]\nid = \"c2\"\ntokens_sha256 = [\"{TOKEN_HASH}\"]\nsteward = true\n"
            ),
            "also a token of caller c1",
        );
        check_refused(
            &format!(
                "{head}operator = true\n[[caller]]\nid = \"c1\"\ntokens_sha256 = [\"{}\"]\nsteward = true\n",
                "0".repeat(64)
            ),
            "listed twice",
        );
        check_refused(
            &format!("[[caller]]\nid = \"a b\"\ntokens_sha256 = [\"{TOKEN_HASH}\"]\noperator = true\n"),
            "an id is 1 to 64",
        );
        check_refused(
            &format!("{head}operator = true\ncalls_per_second = 0.0\n"),
            "calls_per_second",
        );
        check_refused(&format!("{head}operator = true\ncalls_burst = 0\n"), "calls_burst");
        check_refused(
            &format!("{head}operator = true\nconcurrent_calls_max = 0\n"),
            "concurrent_calls_max",
        );
    }

    #[test]
    fn an_empty_file_has_no_callers() {
        assert_eq!(parse("").expect("valid").n_callers(), 0);
    }
}
