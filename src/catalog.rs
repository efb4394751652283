//! The catalog: the source departments and the tag catalog (type, sensitivity, identity role,
//! survivorship rule, owner). Loaded once at start from CSV files; the copy shipped in
//! `catalog/` is compiled in as the default, and an operator may point at their own.
//! Owns the "is this source / tag allowed" question; never touches records or storage.

use crate::model::{SourceId, TagCode};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const SHIPPED_SOURCES: &str = include_str!("../catalog/sources.csv");
const SHIPPED_TAGS: &str = include_str!("../catalog/tags.csv");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Text,
    Name,
    IdNumber,
    Date,
    Gender,
    Phone,
    Address,
    Code,
    Integer,
    Decimal,
    Boolean,
    Identifier,
}

/// Sensitivity level, L1 (public) to L4 (highly sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Sensitivity {
    L1,
    L2,
    L3,
    L4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityRole {
    None,
    IdNumber,
    Name,
    BirthDate,
    Gender,
    Phone,
    Address,
    HukouAddress,
    Ethnicity,
    SecondaryId,
}

/// How a profile picks a tag's winning value among the person's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Survivorship {
    /// The most authoritative source wins; among its records, the most recent.
    SourcePriority,
    /// The most recently observed value wins, whatever its source.
    MostRecent,
    /// The value most of the person's records carry wins (ties: the most recent). It depends
    /// on all the records at once, so every change of such a tag re-reads them.
    MostFrequent,
    /// The longest value wins, as the most detailed (ties: the most recent).
    MostComplete,
}

impl Survivorship {
    /// The rule's name as the catalog file writes it.
    pub fn label(self) -> &'static str {
        match self {
            Survivorship::SourcePriority => "source_priority",
            Survivorship::MostRecent => "most_recent",
            Survivorship::MostFrequent => "most_frequent",
            Survivorship::MostComplete => "most_complete",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SourceDef {
    pub code: String,
    pub name: String,
    /// 1 is the most authoritative source for identity data.
    pub authority_rank: u32,
    /// Canonical tags every record of this source must carry (`;`-separated in the file).
    #[serde(deserialize_with = "semicolon_list")]
    pub required_tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TagDef {
    pub code: String,
    pub label: String,
    pub value_type: ValueType,
    pub sensitivity: Sensitivity,
    pub identity_role: IdentityRole,
    pub survivorship: Survivorship,
    /// Empty for canonical tags, which every source may send.
    #[serde(default)]
    pub owner_source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("catalog file {file}, line {line}: {message}")]
    Invalid {
        file: &'static str,
        line: u64,
        message: String,
    },
    #[error("catalog is inconsistent: {0}")]
    Inconsistent(String),
}

/// The loaded, validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    sources: BTreeMap<SourceId, SourceDef>,
    tags: Vec<TagDef>,
    /// Looked up for every value of every record: a fast non-cryptographic hash (the keys
    /// come from the operator's catalog, not from callers).
    tag_index: rustc_hash::FxHashMap<String, usize>,
}

impl Catalog {
    /// The catalog shipped with this build.
    pub fn shipped() -> Catalog {
        Catalog::parse(SHIPPED_SOURCES, SHIPPED_TAGS).expect("the shipped catalog is validated by its tests")
    }

    /// The shipped catalog with some tags' survivorship rules replaced (for tests of the rules
    /// the shipped catalog does not use).
    #[cfg(test)]
    pub fn shipped_with_rules(rules: &[(&str, Survivorship)]) -> Catalog {
        let mut tags = String::new();
        for line in SHIPPED_TAGS.lines() {
            let mut fields: Vec<&str> = line.split(',').collect();
            if let Some((_, rule)) = rules.iter().find(|(code, _)| Some(code) == fields.first()) {
                fields[5] = rule.label();
            }
            tags.push_str(&fields.join(","));
            tags.push('\n');
        }
        Catalog::parse(SHIPPED_SOURCES, &tags).expect("only rules changed")
    }

    /// Loads `sources.csv` and `tags.csv` from an operator's directory.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CatalogError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        Catalog::parse(&read("sources.csv")?, &read("tags.csv")?)
    }

    pub fn parse(sources_csv: &str, tags_csv: &str) -> Result<Catalog, CatalogError> {
        let sources: Vec<SourceDef> = read_csv("sources.csv", sources_csv)?;
        let tags: Vec<TagDef> = read_csv("tags.csv", tags_csv)?;
        let mut by_code = BTreeMap::new();
        let mut ranks = HashMap::new();
        for source in sources {
            let id = SourceId::parse(&source.code).ok_or_else(|| {
                CatalogError::Inconsistent(format!("source code {:?} is not D followed by two digits", source.code))
            })?;
            if let Some(other) = ranks.insert(source.authority_rank, source.code.clone()) {
                return Err(CatalogError::Inconsistent(format!(
                    "sources {other} and {} share authority_rank {}",
                    source.code, source.authority_rank
                )));
            }
            if by_code.insert(id, source.clone()).is_some() {
                return Err(CatalogError::Inconsistent(format!(
                    "source {} is listed twice",
                    source.code
                )));
            }
        }
        let mut tag_index = rustc_hash::FxHashMap::default();
        for (tag_idx, tag) in tags.iter().enumerate() {
            if tag_index.insert(tag.code.clone(), tag_idx).is_some() {
                return Err(CatalogError::Inconsistent(format!("tag {} is listed twice", tag.code)));
            }
            if !tag.owner_source.is_empty() {
                let owner = SourceId::parse(&tag.owner_source)
                    .filter(|owner| by_code.contains_key(owner))
                    .ok_or_else(|| {
                        CatalogError::Inconsistent(format!(
                            "tag {} names owner {}, which is not a source",
                            tag.code, tag.owner_source
                        ))
                    })?;
                let prefix = format!("{}.", owner.as_str().to_ascii_lowercase());
                if !tag.code.starts_with(&prefix) {
                    return Err(CatalogError::Inconsistent(format!(
                        "department tag {} must start with {prefix}",
                        tag.code
                    )));
                }
            } else if tag.code.contains('.') {
                return Err(CatalogError::Inconsistent(format!(
                    "tag {} looks like a department tag but has no owner_source",
                    tag.code
                )));
            }
        }
        for source in by_code.values() {
            for required in &source.required_tags {
                let known = tag_index
                    .get(required)
                    .is_some_and(|&tag_idx| tags[tag_idx].owner_source.is_empty());
                if !known {
                    return Err(CatalogError::Inconsistent(format!(
                        "source {} requires tag {required}, which is not a canonical tag",
                        source.code
                    )));
                }
            }
        }
        if !tag_index.contains_key("id_number") || !tag_index.contains_key("name") {
            return Err(CatalogError::Inconsistent(
                "the canonical tags name and id_number are required".into(),
            ));
        }
        Ok(Catalog {
            sources: by_code,
            tags,
            tag_index,
        })
    }

    pub fn source(&self, source: &SourceId) -> Option<&SourceDef> {
        self.sources.get(source)
    }

    pub fn sources(&self) -> impl Iterator<Item = &SourceDef> {
        self.sources.values()
    }

    pub fn tag(&self, code: &str) -> Option<&TagDef> {
        self.tag_index.get(code).map(|&tag_idx| &self.tags[tag_idx])
    }

    pub fn tags(&self) -> &[TagDef] {
        &self.tags
    }

    /// Authority of a source for `source_priority` survivorship; unknown sources rank last.
    pub fn authority_rank(&self, source: &SourceId) -> u32 {
        self.sources.get(source).map_or(u32::MAX, |def| def.authority_rank)
    }

    /// Whether `source` may send `tag`: canonical tags are open to all, department tags to
    /// their owner only.
    pub fn check_tag(&self, source: &SourceId, tag: &TagCode) -> Result<&TagDef, crate::model::Rejection> {
        let def = self
            .tag(tag.as_str())
            .ok_or_else(|| crate::model::Rejection::UnknownTag { tag: tag.to_string() })?;
        if !def.owner_source.is_empty() && def.owner_source != source.as_str() {
            return Err(crate::model::Rejection::ForeignTag {
                tag: tag.to_string(),
                owner: def.owner_source.clone(),
                source_id: source.to_string(),
            });
        }
        Ok(def)
    }
}

fn read_csv<T: serde::de::DeserializeOwned>(file: &'static str, text: &str) -> Result<Vec<T>, CatalogError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for row in reader.deserialize() {
        let row = row.map_err(|error| CatalogError::Invalid {
            file,
            line: error.position().map_or(0, |p| p.line()),
            message: error.to_string(),
        })?;
        rows.push(row);
    }
    Ok(rows)
}

fn semicolon_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let raw = String::deserialize(deserializer)?;
    Ok(raw
        .split(';')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalog_is_valid_and_complete() {
        let catalog = Catalog::parse(SHIPPED_SOURCES, SHIPPED_TAGS).expect("shipped catalog parses");
        assert_eq!(catalog.sources().count(), 63);
        let n_tags = catalog.tags().len();
        assert!((2_050..=2_150).contains(&n_tags), "about 2,100 tags, found {n_tags}");
        for canonical in [
            "name",
            "id_number",
            "birth_date",
            "gender",
            "phone",
            "address",
            "hukou_address",
            "ethnicity",
        ] {
            let tag = catalog.tag(canonical).expect("canonical tag present");
            assert!(tag.owner_source.is_empty(), "{canonical} is canonical");
        }
        for source in catalog.sources() {
            let prefix = format!("{}.", source.code.to_ascii_lowercase());
            assert!(
                catalog.tags().iter().any(|tag| tag.code.starts_with(&prefix)),
                "source {} has department tags",
                source.code
            );
        }
    }

    #[track_caller]
    fn check_rejection(source: &str, tag: &str, expected_code: &str) {
        let catalog = Catalog::shipped();
        let source = SourceId::parse(source).expect("well-formed source");
        let result = catalog.check_tag(&source, &TagCode::new(tag));
        assert_eq!(result.err().map(|rejection| rejection.code()), Some(expected_code));
    }

    #[test]
    fn tag_checks() {
        let catalog = Catalog::shipped();
        let d07 = SourceId::parse("D07").expect("well-formed");
        assert!(catalog.check_tag(&d07, &TagCode::new("name")).is_ok());
        check_rejection("D07", "no_such_tag", "unknown_tag");
        check_rejection("D07", "d01.no_such_tag", "unknown_tag");
        let d01_tag = catalog
            .tags()
            .iter()
            .find(|tag| tag.owner_source == "D01")
            .expect("D01 has tags")
            .code
            .clone();
        check_rejection("D07", &d01_tag, "foreign_tag");
    }

    #[test]
    fn inconsistent_catalogs_are_refused() {
        let sources = "code,name,authority_rank,required_tags\nD01,公安厅,1,name\nD02,民政厅,1,name\n";
        let tags = "code,label,value_type,sensitivity,identity_role,survivorship,owner_source\n\
                    name,姓名,name,L3,name,source_priority,\nid_number,公民身份号码,id_number,L4,id_number,source_priority,\n";
        let error = Catalog::parse(sources, tags).expect_err("shared rank");
        assert!(error.to_string().contains("share authority_rank 1"), "{error}");

        let sources = "code,name,authority_rank,required_tags\nD01,公安厅,1,name\n";
        let tags_bad_owner = format!("{tags}d02.x,某,text,L1,none,most_recent,D02\n");
        let error = Catalog::parse(sources, &tags_bad_owner).expect_err("unknown owner");
        assert!(error.to_string().contains("names owner D02"), "{error}");

        let tags_bad_type = format!("{tags}d01.x,某,blob,L1,none,most_recent,D01\n");
        let error = Catalog::parse(sources, &tags_bad_type).expect_err("bad type");
        assert!(error.to_string().contains("tags.csv"), "{error}");
    }
}
