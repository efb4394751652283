//! The audit log's keys: append-only entries by time (`u/<at><serial>`), never rewritten or
//! deleted by the service, and each month's share counters per caller
//! (`m/shares/<YYYY-MM>\0<caller>`), written in the same batch as the entries they count. One
//! audit writer (the engine's) appends; its keys are disjoint from the write path's, so the two
//! never conflict. Decides nothing about what is audited.

use super::{decode, layout, Store, StoreError, Txn};
use crate::model::EpochMillis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One audited call: who, why, what, on whom, with which tags, and how it ended. Holds ids and
/// tag codes, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: EpochMillis,
    /// The caller id; `unauthenticated` when no valid token came.
    pub caller: String,
    pub purpose: String,
    /// The method, e.g. `ProfileService/GetProfile`.
    pub action: String,
    /// The gRPC status code name (`OK`, `PERMISSION_DENIED`...), with the refusal's message.
    pub outcome: String,
    pub persons: Vec<String>,
    /// The tags returned (reads) or asked for.
    pub tags: Vec<String>,
    /// Profiles shared to the caller by this call (each person returned counts once).
    pub shares: u64,
    /// What else identifies the call: a batch and its sequence, a record key, a directory.
    pub detail: String,
}

/// What a query of the audit log asks for. Empty filters match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub caller: Option<String>,
    pub person: Option<String>,
    /// Inclusive, in milliseconds since the epoch.
    pub from: EpochMillis,
    /// Exclusive.
    pub to: EpochMillis,
}

/// A page of a query: the entries found, and where the next page starts (`None` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    pub next: Option<Vec<u8>>,
}

/// One caller's shares in one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareCount {
    pub month: String,
    pub caller: String,
    pub n_shares: u64,
    pub n_calls: u64,
}

/// The month an entry counts in, in China Standard Time (UTC+8), the province's calendar.
pub fn month_of(at: EpochMillis) -> String {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("a valid offset");
    chrono::DateTime::from_timestamp_millis(at)
        .map(|time| time.with_timezone(&offset).format("%Y-%m").to_string())
        .unwrap_or_else(|| "0000-00".into())
}

/// How many audit entries one query reads at most before it returns a page (possibly short)
/// with a token to go on: a query over a year of reads must not hold a thread for minutes.
pub const AUDIT_SCAN_MAX: usize = 50_000;

impl Txn<'_> {
    /// Writes one audit entry in this transaction (no share counting): how the write path
    /// audits a change in the change's own transaction.
    pub fn put_audit_entry(&mut self, serial: u64, record: &AuditRecord) -> Result<(), StoreError> {
        self.put(layout::audit(record.at, serial), record)
    }
}

impl Store {
    /// The serial the next audit entry takes (serials order entries of the same millisecond).
    pub fn next_audit_serial(&self) -> Result<u64, StoreError> {
        self.begin().counter(layout::META_AUDIT_SERIAL)
    }

    /// Appends `records` (serials from `first_serial` on) and adds their shares to the month
    /// counters, in one atomic batch.
    pub fn append_audit(&self, first_serial: u64, records: &[AuditRecord]) -> Result<(), StoreError> {
        let mut txn = self.begin();
        let mut shares: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for (offset, record) in records.iter().enumerate() {
            txn.put(layout::audit(record.at, first_serial + offset as u64), record)?;
            if record.shares > 0 {
                let counts = shares.entry((month_of(record.at), record.caller.clone())).or_default();
                counts.0 += record.shares;
                counts.1 += 1;
            }
        }
        for ((month, caller), (n_shares, n_calls)) in shares {
            let key = layout::share_count(&month, &caller);
            let (before_shares, before_calls): (u64, u64) = match txn.get(&key)? {
                Some(bytes) => decode("share count", &bytes)?,
                None => (0, 0),
            };
            txn.put_small(key, &(before_shares + n_shares, before_calls + n_calls))?;
        }
        txn.put_small(
            layout::META_AUDIT_SERIAL.to_vec(),
            &(first_serial + records.len() as u64),
        )?;
        txn.commit()
    }

    /// The entries matching `query`, oldest first, from `after` (a `next` of an earlier page)
    /// on: at most `page_size`, reading at most `AUDIT_SCAN_MAX` entries.
    pub fn audit_page(
        &self,
        query: &AuditQuery,
        after: Option<&[u8]>,
        page_size: usize,
    ) -> Result<AuditPage, StoreError> {
        let txn = self.begin();
        let end = layout::audit(query.to, 0);
        let mut start = match after {
            Some(after) => after.to_vec(),
            None => layout::audit(query.from, 0),
        };
        let mut entries = Vec::new();
        let mut n_scanned = 0usize;
        loop {
            let page = self.kv.scan(layout::AUDIT, Some(&start), 1_024)?;
            let exhausted = page.len() < 1_024;
            for (key, stored) in page {
                if key >= end {
                    return Ok(AuditPage { entries, next: None });
                }
                let mut next = key.clone();
                next.push(0);
                start = next;
                n_scanned += 1;
                let record: AuditRecord = decode("audit entry", &txn.join_parts(&key, &stored)?)?;
                let matches = query.caller.as_ref().is_none_or(|caller| *caller == record.caller)
                    && query
                        .person
                        .as_ref()
                        .is_none_or(|person| record.persons.iter().any(|held| held == person));
                if matches {
                    entries.push(record);
                }
                if entries.len() == page_size || n_scanned == AUDIT_SCAN_MAX {
                    return Ok(AuditPage {
                        entries,
                        next: Some(start),
                    });
                }
            }
            if exhausted {
                return Ok(AuditPage { entries, next: None });
            }
        }
    }

    /// The share counters of one month (`YYYY-MM`), or of every month, by month and caller.
    pub fn share_counts(&self, month: Option<&str>) -> Result<Vec<ShareCount>, StoreError> {
        let prefix = layout::share_count_prefix(month);
        let txn = self.begin();
        let mut counts = Vec::new();
        for (key, value) in txn.scan_all(&prefix)? {
            let Some((month, caller)) = layout::parse_share_count(&key) else {
                continue;
            };
            let (n_shares, n_calls): (u64, u64) = decode("share count", &value)?;
            counts.push(ShareCount {
                month,
                caller,
                n_shares,
                n_calls,
            });
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::MemKv;

    fn entry(at: EpochMillis, caller: &str, persons: &[&str], shares: u64) -> AuditRecord {
        AuditRecord {
            at,
            caller: caller.into(),
            purpose: "case-1".into(),
            action: "ProfileService/GetProfile".into(),
            outcome: "OK".into(),
            persons: persons.iter().map(ToString::to_string).collect(),
            tags: vec!["name".into()],
            shares,
            detail: String::new(),
        }
    }

    #[test]
    fn months_are_china_standard_time() {
        // 2026-01-31T16:00:00Z is 2026-02-01 00:00 in UTC+8.
        assert_eq!(month_of(1_769_875_200_000), "2026-02");
        assert_eq!(month_of(1_769_875_199_999), "2026-01");
    }

    #[test]
    fn entries_append_page_and_count_shares() {
        let store = Store::open(Box::new(MemKv::default())).expect("store");
        assert_eq!(store.next_audit_serial().expect("serial"), 0);
        let jan = 1_768_000_000_000; // 2026-01-10
        let feb = 1_770_700_000_000; // 2026-02-10
        store
            .append_audit(
                0,
                &[
                    entry(jan, "portal", &["P1"], 1),
                    entry(jan, "portal", &["P2", "P3"], 2),
                    entry(jan + 1, "police", &["P1"], 1),
                ],
            )
            .expect("append");
        store
            .append_audit(3, &[entry(feb, "portal", &["P1"], 1), entry(feb, "ops", &[], 0)])
            .expect("append");
        assert_eq!(store.next_audit_serial().expect("serial"), 5);

        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let all = store.audit_page(&everything, None, 100).expect("page");
        assert_eq!(all.entries.len(), 5);
        assert_eq!(all.next, None);
        let by_person = AuditQuery {
            person: Some("P1".into()),
            ..everything.clone()
        };
        let first = store.audit_page(&by_person, None, 2).expect("page");
        assert_eq!(
            first.entries.iter().map(|e| e.caller.as_str()).collect::<Vec<_>>(),
            ["portal", "police"]
        );
        let rest = store.audit_page(&by_person, first.next.as_deref(), 2).expect("page");
        assert_eq!(rest.entries.len(), 1);
        assert_eq!(rest.entries[0].at, feb);
        let january_portal = AuditQuery {
            caller: Some("portal".into()),
            from: jan,
            to: feb,
            ..AuditQuery::default()
        };
        assert_eq!(
            store
                .audit_page(&january_portal, None, 100)
                .expect("page")
                .entries
                .len(),
            2
        );

        let counts = store.share_counts(None).expect("counts");
        let summary: Vec<(&str, &str, u64, u64)> = counts
            .iter()
            .map(|c| (c.month.as_str(), c.caller.as_str(), c.n_shares, c.n_calls))
            .collect();
        assert_eq!(
            summary,
            [
                ("2026-01", "police", 1, 1),
                ("2026-01", "portal", 3, 2),
                ("2026-02", "portal", 1, 1)
            ]
        );
        assert_eq!(store.share_counts(Some("2026-02")).expect("counts").len(), 1);
    }
}
