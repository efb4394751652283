//! The caller's grant applied to each call: a writer writes and deletes only its own sources'
//! records (a batch holding another source's record is refused whole); a reader asks for and
//! gets only the tags it may read, each value masked (`masking`) unless it is cleared for the
//! tag's sensitivity; a search may only use attributes the reader may read. Holds no business
//! rules and never echoes a value in a message.

use super::auth::Identity;
use crate::callers::ReaderGrant;
use crate::catalog::{Catalog, ValueType};
#[cfg(test)]
use crate::engine::ProfileView;
use crate::masking::mask_value;
use crate::model::{SourceId, TagCode};
use crate::profile::TagLineage;
use std::borrow::Cow;
use tonic::Status;

/// Refuses the whole call when one of `sources` (as sent; a malformed one is left to admission)
/// is not the caller's to write. `what` names the call's subject for the message.
pub fn check_writer<'a>(
    identity: &Identity,
    sources: impl IntoIterator<Item = &'a str>,
    what: &str,
) -> Result<(), Status> {
    for (position, raw) in sources.into_iter().enumerate() {
        let Some(source) = SourceId::parse(raw) else {
            continue;
        };
        if !identity.caller.may_write(&source) {
            return Err(Status::permission_denied(format!(
                "caller {} may not write records of source {source} ({what}, record {position}); it writes {}; nothing was applied",
                identity.caller_id(),
                identity.caller.writer_sources_words()
            )));
        }
    }
    Ok(())
}

/// The reader's grant, or PERMISSION_DENIED.
pub fn reader_grant<'a>(identity: &'a Identity, method: &str) -> Result<&'a ReaderGrant, Status> {
    identity.caller.reader.as_ref().ok_or_else(|| {
        Status::permission_denied(format!(
            "caller {} may not call {method}: it needs the reader role",
            identity.caller_id()
        ))
    })
}

/// A tag mask of a read checked against the catalog (INVALID_ARGUMENT for an unknown tag) and
/// the grant (PERMISSION_DENIED for a tag the caller may not read). An empty mask stays empty:
/// the answer is filtered by `profile` instead.
pub fn read_mask(
    identity: &Identity,
    catalog: &Catalog,
    method: &str,
    mask: Vec<String>,
) -> Result<Vec<TagCode>, Status> {
    let grant = reader_grant(identity, method)?;
    let tags = super::convert::tag_mask(catalog, mask)?;
    for tag in &tags {
        check_tag(identity, grant, catalog, tag)?;
    }
    Ok(tags)
}

fn check_tag(identity: &Identity, grant: &ReaderGrant, catalog: &Catalog, tag: &TagCode) -> Result<(), Status> {
    let readable = catalog.tag(tag.as_str()).is_some_and(|def| grant.may_read(def));
    if readable {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "caller {} may not read tag {tag}",
            identity.caller_id()
        )))
    }
}

/// Checks one tag of a lineage call: known (INVALID_ARGUMENT) and readable (PERMISSION_DENIED).
pub fn check_lineage_tag(identity: &Identity, catalog: &Catalog, tag: &TagCode) -> Result<(), Status> {
    let grant = reader_grant(identity, "ProfileService/GetTagLineage")?;
    if catalog.tag(tag.as_str()).is_none() {
        return Err(Status::invalid_argument(format!("tag {tag} is not in the catalog")));
    }
    check_tag(identity, grant, catalog, tag)
}

/// The value of `tag` as the grant shows it: whole, or masked by the tag's value type.
fn shown(grant: &ReaderGrant, catalog: &Catalog, tag: &str, value: String) -> String {
    match catalog.tag(tag) {
        Some(def) if grant.sees_unmasked(def) => value,
        Some(def) => mask_value(def.value_type, &value),
        // Not in the catalog (a catalog changed under stored data): shown to no one whole.
        None => mask_value(crate::catalog::ValueType::Text, &value),
    }
}

/// One profile tag's value as the grant shows it: `None` when the grant does not reach the tag
/// (or the tag is not in the catalog), masked when the grant says so.
pub fn profile_value<'a>(grant: &ReaderGrant, catalog: &Catalog, tag: &str, value: &'a str) -> Option<Cow<'a, str>> {
    match visibility(grant, catalog, tag) {
        Shown::Hidden => None,
        Shown::AsIs => Some(Cow::Borrowed(value)),
        Shown::Masked(value_type) => Some(Cow::Owned(mask_value(value_type, value))),
    }
}

/// How a reader sees one tag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Not at all: the grant does not reach the tag (or the catalog does not know it).
    Hidden,
    AsIs,
    /// Masked as values of this type are.
    Masked(ValueType),
}

/// How `grant` sees the values of `tag` (`profile_value` applies it to one value).
pub fn visibility(grant: &ReaderGrant, catalog: &Catalog, tag: &str) -> Shown {
    if grant.is_everything() {
        return Shown::AsIs;
    }
    match catalog.tag(tag).filter(|def| grant.may_read(def)) {
        None => Shown::Hidden,
        Some(def) if grant.sees_unmasked(def) => Shown::AsIs,
        Some(def) => Shown::Masked(def.value_type),
    }
}

/// A profile with the tags the grant does not reach removed and the rest masked as it says:
/// the reference the encoded answers (`api::encoded`) are held to in their tests.
#[cfg(test)]
pub fn profile(grant: &ReaderGrant, catalog: &Catalog, mut view: ProfileView) -> ProfileView {
    if grant.is_everything() {
        return view;
    }
    view.tags = std::mem::take(&mut view.tags)
        .into_iter()
        .filter_map(|(tag, mut entry)| {
            entry.value = profile_value(grant, catalog, tag.as_str(), &entry.value)?.into_owned();
            Some((tag, entry))
        })
        .collect();
    view
}

/// A lineage with every value (the winner, each record's raw and standardized value, each
/// distinct value) masked as the grant says. The tag itself was checked by `check_lineage_tag`.
pub fn lineage(grant: &ReaderGrant, catalog: &Catalog, tag: &TagCode, mut lineage: TagLineage) -> TagLineage {
    if grant.is_everything() {
        return lineage;
    }
    let tag = tag.as_str();
    if let Some(winner) = &mut lineage.winner {
        winner.value = shown(grant, catalog, tag, std::mem::take(&mut winner.value));
    }
    for contribution in &mut lineage.contributions {
        contribution.raw = shown(grant, catalog, tag, std::mem::take(&mut contribution.raw));
        contribution.standardized = shown(grant, catalog, tag, std::mem::take(&mut contribution.standardized));
    }
    for value in &mut lineage.values {
        value.value = shown(grant, catalog, tag, std::mem::take(&mut value.value));
    }
    // The reason names the rule, a source and counts, never a value.
    lineage
}

/// The tags of a history entry's changed list the reader may see; a steward without a reader
/// grant sees every tag name (names only, never values).
pub fn changed_tags(identity: &Identity, catalog: &Catalog, tags: Vec<TagCode>) -> Vec<TagCode> {
    match &identity.caller.reader {
        Some(grant) if !grant.is_everything() => tags
            .into_iter()
            .filter(|tag| catalog.tag(tag.as_str()).is_some_and(|def| grant.may_read(def)))
            .collect(),
        _ => tags,
    }
}

/// A lookup by a value (a profile by ID number) is a read of that value: the reader must be
/// granted its tag.
pub fn check_lookup_by(identity: &Identity, catalog: &Catalog, method: &str, tag: &str) -> Result<(), Status> {
    let grant = reader_grant(identity, method)?;
    if catalog.tag(tag).is_some_and(|def| grant.may_read(def)) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "caller {} may not look a person up by {tag}: it may not read tag {tag}",
            identity.caller_id()
        )))
    }
}

/// The canonical tag each search attribute is compared with.
pub const SEARCH_ATTRIBUTE_TAGS: [(&str, &str); 6] = [
    ("name", "name"),
    ("id_number", "id_number"),
    ("birth_date", "birth_date"),
    ("gender", "gender"),
    ("phone", "phone"),
    ("address", "address"),
];

/// A search may only use attributes whose tags the reader may read: a match on a value is a
/// read of it.
pub fn check_search(identity: &Identity, catalog: &Catalog, given: &[(&str, bool)]) -> Result<(), Status> {
    let grant = reader_grant(identity, "ProfileService/SearchPersons")?;
    for (attribute, present) in given {
        if !present {
            continue;
        }
        let tag = SEARCH_ATTRIBUTE_TAGS
            .iter()
            .find(|(name, _)| name == attribute)
            .map_or(*attribute, |(_, tag)| *tag);
        let readable = catalog.tag(tag).is_some_and(|def| grant.may_read(def));
        if !readable {
            return Err(Status::permission_denied(format!(
                "caller {} may not search by {attribute}: it may not read tag {tag}",
                identity.caller_id()
            )));
        }
    }
    Ok(())
}
