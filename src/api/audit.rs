//! The audit at the gRPC edge: what each call leaves in the audit log (its caller, purpose,
//! method and outcome from the auth layer; the persons, tags and shares from the handler, as an
//! `AuditNote` in the response's extensions or, for streams, entry by entry), and the two
//! operator calls that read the log back (`QueryAudit`, `GetShareCounts`). Entries hold ids and
//! tag codes, never a value; writing them is the engine's.

use super::auth::{Identity, Refusal};
use super::error::to_status;
use super::{blocking, from_hex, now_millis, to_hex};
use crate::engine::Engine;
use crate::pb;
use crate::store::{AuditQuery, AuditRecord, TagList};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tonic::Status;

/// The caller of a call refused before its token was accepted.
pub const UNAUTHENTICATED_CALLER: &str = "unauthenticated";

/// What a handler tells the audit about its call: whom it read or changed, which tags it
/// returned, how many profiles it shared.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub persons: Vec<String>,
    pub tags: TagList,
    pub shares: u64,
    pub detail: String,
    /// The call's entry was written with the change it made, in the change's store transaction
    /// (the change was logged with its actor): the layer writes none of its own.
    pub written: bool,
}

/// The tag lists of recent profile reads, most recent first. A reader's reads of full
/// profiles share the same two thousand tags call after call: those take the one list held
/// here (`TagList`, one allocation, hashed once for the store) instead of a new list of two
/// thousand strings each.
#[derive(Default)]
pub struct RecentTagLists {
    lists: Mutex<VecDeque<TagList>>,
}

/// Lists `RecentTagLists` holds; a list shorter than `SHORT_TAG_LIST` is not held.
const RECENT_TAG_LISTS_MAX: usize = 16;
const SHORT_TAG_LIST: usize = 16;

impl RecentTagLists {
    /// `tags` as a list: a held list when one holds exactly these tags.
    pub fn list(&self, tags: &[&str]) -> TagList {
        let new = || TagList::from(tags.iter().map(|tag| tag.to_string()).collect::<Vec<_>>());
        if tags.len() < SHORT_TAG_LIST {
            return new();
        }
        let mut lists = self.lists.lock().expect("lock poisoned");
        if let Some(idx) = lists.iter().position(|list| list.holds(tags.iter().copied())) {
            let list = lists.remove(idx).expect("held");
            lists.push_front(list.clone());
            return list;
        }
        let list = new();
        lists.push_front(list.clone());
        lists.truncate(RECENT_TAG_LISTS_MAX);
        list
    }
}

impl AuditNote {
    pub fn persons(persons: impl IntoIterator<Item = impl ToString>) -> AuditNote {
        AuditNote {
            persons: persons.into_iter().map(|person| person.to_string()).collect(),
            ..AuditNote::default()
        }
    }

    /// A change whose entry was written with it.
    pub fn written_with_change() -> AuditNote {
        AuditNote {
            written: true,
            ..AuditNote::default()
        }
    }

    /// A read that shared one person's profile with `tags`.
    pub fn shared_profile(person_id: String, tags: TagList) -> AuditNote {
        AuditNote {
            persons: vec![person_id],
            tags,
            shares: 1,
            detail: String::new(),
            written: false,
        }
    }

    /// A read that shared one profile of each of `persons` (a person named twice was shared
    /// twice), the union of their tags being `tags`.
    pub fn shared_profiles(persons: Vec<String>, tags: TagList) -> AuditNote {
        AuditNote {
            shares: persons.len() as u64,
            persons,
            tags,
            detail: String::new(),
            written: false,
        }
    }

    pub fn with_tags(mut self, tags: impl IntoIterator<Item = impl ToString>) -> AuditNote {
        self.tags = tags.into_iter().map(|tag| tag.to_string()).collect::<Vec<_>>().into();
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> AuditNote {
        self.detail = detail.into();
        self
    }
}

/// A response with its note for the audit layer.
pub fn noted<T>(message: T, note: AuditNote) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    response.extensions_mut().insert(note);
    response
}

fn outcome(code: tonic::Code, message: &str) -> String {
    if code == tonic::Code::Ok {
        "OK".to_string()
    } else {
        format!("{}: {message}", crate::metrics::code_name(code))
    }
}

/// Writes audit entries through the engine's audit writer.
pub struct Auditor {
    engine: Arc<Engine>,
}

impl Auditor {
    pub fn new(engine: Arc<Engine>) -> Auditor {
        Auditor { engine }
    }

    /// One finished call (or the opening of a stream). An error means the entry was not
    /// written, and the answer must not go out.
    pub async fn call(
        &self,
        identity: &Identity,
        method: &str,
        code: tonic::Code,
        message: &str,
        note: AuditNote,
    ) -> Result<(), Status> {
        self.write(AuditRecord {
            at: now_millis(),
            caller: identity.caller_id().to_string(),
            purpose: identity.purpose.clone().unwrap_or_default(),
            action: method.to_string(),
            outcome: outcome(code, message),
            persons: note.persons,
            tags: note.tags,
            shares: if code == tonic::Code::Ok { note.shares } else { 0 },
            detail: note.detail,
        })
        .await
    }

    /// A call the auth layer refused; `detail` says where a call without a valid token came
    /// from.
    pub async fn refused(
        &self,
        method: &str,
        refusal: &Refusal,
        purpose: Option<&str>,
        detail: String,
    ) -> Result<(), Status> {
        self.write(AuditRecord {
            at: now_millis(),
            caller: refusal
                .caller
                .as_ref()
                .map_or(UNAUTHENTICATED_CALLER, |caller| caller.id.as_str())
                .to_string(),
            purpose: purpose.unwrap_or_default().to_string(),
            action: method.to_string(),
            outcome: outcome(refusal.status.code(), refusal.status.message()),
            persons: Vec::new(),
            tags: TagList::default(),
            shares: 0,
            detail,
        })
        .await
    }

    async fn write(&self, record: AuditRecord) -> Result<(), Status> {
        self.engine.audit().append(record).await.map_err(|error| {
            tracing::error!(%error, "an audit entry could not be written; the call is refused");
            Status::unavailable("the audit log cannot be written, so nothing is served; retry later")
        })
    }
}

fn time_bound(field: &str, text: &str, default: i64) -> Result<i64, Status> {
    if text.trim().is_empty() {
        return Ok(default);
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.timestamp_millis())
        .map_err(|_| {
            Status::invalid_argument(format!(
                "{field} is not an RFC 3339 time such as 2026-11-01T00:00:00+08:00"
            ))
        })
}

/// The audit log's largest page.
pub const AUDIT_PAGE_MAX: usize = 1_000;

pub async fn query_audit(engine: Arc<Engine>, request: pb::QueryAuditRequest) -> Result<pb::AuditPage, Status> {
    let query = AuditQuery {
        caller: (!request.caller.trim().is_empty()).then(|| request.caller.trim().to_string()),
        person: (!request.person_id.trim().is_empty()).then(|| request.person_id.trim().to_string()),
        from: time_bound("from", &request.from, 0)?,
        to: time_bound("to", &request.to, i64::MAX)?,
    };
    if query.from >= query.to {
        return Err(Status::invalid_argument("from must be before to"));
    }
    let page_size = match request.page_size {
        0 => 100,
        n => (n as usize).min(AUDIT_PAGE_MAX),
    };
    let after = if request.page_token.is_empty() {
        None
    } else {
        // A token names a place in the keys the query reads (the index of its person or
        // caller, or the entries by time): a token of another query is refused.
        let token = from_hex(&request.page_token)
            .filter(|token| query.accepts_token(token))
            .ok_or_else(|| Status::invalid_argument("page_token is not one this service gave for this query"))?;
        Some(token)
    };
    let page = blocking(move || engine.audit().query(&query, after.as_deref(), page_size))
        .await
        .map_err(to_status)?;
    Ok(pb::AuditPage {
        entries: page
            .entries
            .into_iter()
            .map(|entry| pb::AuditEntry {
                at: super::convert::format_millis(entry.at),
                caller: entry.caller,
                purpose: entry.purpose,
                action: entry.action,
                outcome: entry.outcome,
                person_ids: entry.persons,
                tags: entry.tags.to_vec(),
                shares: entry.shares,
                detail: entry.detail,
            })
            .collect(),
        next_page_token: page.next.map(|token| to_hex(&token)).unwrap_or_default(),
    })
}

pub async fn share_counts(engine: Arc<Engine>, request: pb::GetShareCountsRequest) -> Result<pb::ShareCounts, Status> {
    let month = request.month.trim().to_string();
    let well_formed = month.is_empty()
        || (month.len() == 7
            && month.as_bytes()[4] == b'-'
            && month
                .bytes()
                .enumerate()
                .all(|(idx, byte)| idx == 4 || byte.is_ascii_digit()));
    if !well_formed {
        return Err(Status::invalid_argument("month is not YYYY-MM, such as 2026-11"));
    }
    let counts = blocking(move || {
        engine
            .audit()
            .share_counts((!month.is_empty()).then_some(month.as_str()))
    })
    .await
    .map_err(to_status)?;
    Ok(pb::ShareCounts {
        counts: counts
            .into_iter()
            .map(|count| pb::ShareCount {
                month: count.month,
                caller: count.caller,
                n_shares: count.n_shares,
                n_calls: count.n_calls,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|idx| format!("{prefix}{idx:04}")).collect()
    }

    fn borrowed(tags: &[String]) -> Vec<&str> {
        tags.iter().map(String::as_str).collect()
    }

    #[test]
    fn reads_of_the_same_tags_share_one_list_and_others_get_their_own() {
        let lists = RecentTagLists::default();
        let full = tags("d01.tag_", 2_091);
        let first = lists.list(&borrowed(&full));
        let again = lists.list(&borrowed(&full));
        assert!(first.is_same_list(&again));
        assert_eq!(&*first, full.as_slice());

        let mut one_less = full.clone();
        one_less.pop();
        let other = lists.list(&borrowed(&one_less));
        assert!(!other.is_same_list(&first));
        assert_eq!(&*other, one_less.as_slice());
        let mut one_changed = full.clone();
        one_changed[7] = "d02.other".into();
        assert_eq!(&*lists.list(&borrowed(&one_changed)), one_changed.as_slice());

        let short = tags("name_", 3);
        assert_eq!(&*lists.list(&borrowed(&short)), short.as_slice());
    }

    #[test]
    fn only_the_most_recent_lists_are_held() {
        let lists = RecentTagLists::default();
        let first_tags = tags("first_", 20);
        let first = lists.list(&borrowed(&first_tags));
        for n in 0..RECENT_TAG_LISTS_MAX {
            lists.list(&borrowed(&tags(&format!("other{n}_"), 20)));
        }
        let after = lists.list(&borrowed(&first_tags));
        assert!(!after.is_same_list(&first), "pushed out by newer lists");
        assert_eq!(after, first);
        assert!(lists.list(&borrowed(&first_tags)).is_same_list(&after));
    }
}
