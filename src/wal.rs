//! The write-ahead log: every admitted batch is appended here and fdatasync'ed before it is
//! applied to the store or acknowledged. It is what makes an acknowledgement durable against
//! kill -9 and power loss, which sled 0.34 alone does not promise (see docs/ARCHITECTURE.md).
//!
//! Segments `<first sequence, 20 digits>.wal` hold frames `[len u32 LE][crc32c u32 LE][payload]`.
//! Owns framing, fsync, recovery of a torn tail and trimming; knows nothing of records' meaning.
//! The same log, with entries of its own (`LogEntry`), is the audit journal.

use crate::model::{Actor, EpochMillis, RawRecord, SourceId, StewardAction};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// What a log holds: entries numbered densely from 1, each one frame.
pub trait LogEntry: Serialize + Sized {
    /// What the log is called in its errors.
    const LOG: &'static str;
    fn sequence(&self) -> u64;
    fn decode(payload: &[u8]) -> Result<Self, postcard::Error>;
}

impl LogEntry for WalEntry {
    const LOG: &'static str = "write-ahead log";

    fn sequence(&self) -> u64 {
        self.sequence
    }

    fn decode(payload: &[u8]) -> Result<Self, postcard::Error> {
        decode_entry(payload)
    }
}

const FRAME_HEADER_BYTES: usize = 8;
/// A frame larger than this is damage, not data: batches are bounded far below it.
const FRAME_BYTES_MAX: u32 = 1 << 30;

/// One batch, as logged: the admitted records, and the rule that refused each of the others
/// (by source), so the quality report counts rejections as durably as records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalEntry {
    pub sequence: u64,
    pub received_at: EpochMillis,
    pub records: Vec<RawRecord>,
    pub rejected: Vec<(SourceId, String)>,
    /// A newly trained match model (encoded by the engine) that takes effect before this
    /// entry's records: logged like a batch, so a replay decides with the same model.
    pub model: Option<Vec<u8>>,
    /// A steward's action or a record deletion, applied before the entry's records.
    pub steward: Option<StewardAction>,
    /// Who asked for it: its audit entry is written with it. `None` for a write of the service
    /// itself, and in entries logged before the field existed.
    pub actor: Option<Actor>,
}

/// An entry as logged before it named its actor: still read, so a log left by a crash of the
/// previous version replays.
#[derive(Serialize, Deserialize)]
struct EntryWithoutActor {
    sequence: u64,
    received_at: EpochMillis,
    records: Vec<RawRecord>,
    rejected: Vec<(SourceId, String)>,
    model: Option<Vec<u8>>,
    steward: Option<StewardAction>,
}

/// Decodes a frame's payload: an entry, or an entry of the format before it named its actor.
fn decode_entry(payload: &[u8]) -> Result<WalEntry, postcard::Error> {
    match postcard::from_bytes::<WalEntry>(payload) {
        Ok(entry) => Ok(entry),
        Err(error) => match postcard::take_from_bytes::<EntryWithoutActor>(payload) {
            Ok((old, [])) => Ok(WalEntry {
                sequence: old.sequence,
                received_at: old.received_at,
                records: old.records,
                rejected: old.rejected,
                model: old.model,
                steward: old.steward,
                actor: None,
            }),
            _ => Err(error),
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{log} segment {segment} is damaged at byte {offset} (not its last segment, so this is not a torn write): {problem}")]
    Corrupt {
        log: &'static str,
        segment: String,
        offset: u64,
        problem: String,
    },
    #[error("log io: {0}")]
    Io(#[from] std::io::Error),
    /// What reached the disk of the last append is unknown (its fdatasync failed, or its
    /// partial write could not be cut off): nothing more may be appended.
    #[error("log tail unknown after a failed append: {0}")]
    TailUnknown(std::io::Error),
}

pub struct Wal<E: LogEntry = WalEntry> {
    dir: PathBuf,
    current: File,
    current_bytes: u64,
    segment_bytes_max: u64,
    segments: Vec<(u64, PathBuf)>,
    next_sequence: u64,
    entries: PhantomData<fn(E)>,
}

/// What recovery found.
pub struct Recovered<E: LogEntry = WalEntry> {
    pub wal: Wal<E>,
    /// Entries with a sequence above the one the caller has already applied, in order.
    pub pending: Vec<E>,
    /// Bytes cut off the end of the last segment: a write that was never acknowledged.
    pub torn_tail_bytes: u64,
}

impl<E: LogEntry> Wal<E> {
    /// Opens the log in `dir`, cutting off a torn last frame, and returns the entries after
    /// `applied_sequence` for the caller to replay.
    pub fn open(dir: &Path, segment_bytes_max: u64, applied_sequence: u64) -> Result<Recovered<E>, WalError> {
        std::fs::create_dir_all(dir)?;
        let mut segments = list_segments(dir)?;
        let mut pending = Vec::new();
        let mut last_sequence = applied_sequence;
        let mut torn_tail_bytes = 0;
        let n_segments = segments.len();
        for (segment_idx, (_, path)) in segments.iter().enumerate() {
            let is_last = segment_idx + 1 == n_segments;
            let (entries, valid_bytes, damage) = read_segment::<E>(path)?;
            for entry in entries {
                last_sequence = last_sequence.max(entry.sequence());
                if entry.sequence() > applied_sequence {
                    pending.push(entry);
                }
            }
            if let Some(problem) = damage {
                if !is_last {
                    return Err(WalError::Corrupt {
                        log: E::LOG,
                        segment: file_name(path),
                        offset: valid_bytes,
                        problem,
                    });
                }
                let file = OpenOptions::new().write(true).open(path)?;
                torn_tail_bytes = file.metadata()?.len() - valid_bytes;
                file.set_len(valid_bytes)?;
                file.sync_all()?;
                tracing::warn!(torn_tail_bytes, log = E::LOG, %problem, "cut a torn write (never acknowledged) off the end of the log");
            }
        }
        // A segment is named by the sequence its first entry takes: a newest segment left empty
        // (a stop between its creation and its first frame, the older ones trimmed since)
        // still says where the sequence stands.
        if let Some(&(first, _)) = segments.last() {
            last_sequence = last_sequence.max(first.saturating_sub(1));
        }
        let next_sequence = last_sequence + 1;
        let (current, current_bytes) = match segments.last() {
            Some((_, path)) => {
                let file = OpenOptions::new().append(true).open(path)?;
                let len = file.metadata()?.len();
                (file, len)
            }
            None => {
                let (file, path) = create_segment(dir, next_sequence)?;
                segments.push((next_sequence, path));
                (file, 0)
            }
        };
        Ok(Recovered {
            wal: Wal {
                dir: dir.to_path_buf(),
                current,
                current_bytes,
                segment_bytes_max,
                segments,
                next_sequence,
                entries: PhantomData,
            },
            pending,
            torn_tail_bytes,
        })
    }

    /// The sequence the next entry must carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Appends entries and returns once they are on stable storage (one fdatasync for all of
    /// them: group commit). A write that fails (a full disk, say) is cut off the file and the
    /// log takes the same entries again; `TailUnknown` means it must not be appended to again.
    pub fn append(&mut self, entries: &[E]) -> Result<(), WalError> {
        if self.current_bytes >= self.segment_bytes_max {
            self.rotate()?;
        }
        let mut buffer = Vec::new();
        let mut next_sequence = self.next_sequence;
        for entry in entries {
            assert_eq!(entry.sequence(), next_sequence, "log sequences are dense and ordered");
            next_sequence += 1;
            let payload = postcard::to_stdvec(entry).expect("in-memory serialization of plain data cannot fail");
            let len = u32::try_from(payload.len()).expect("batches are bounded far below 4 GiB");
            buffer.extend_from_slice(&len.to_le_bytes());
            buffer.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            buffer.extend_from_slice(&payload);
        }
        if let Err(error) = self.current.write_all(&buffer) {
            return match self.current.set_len(self.current_bytes) {
                Ok(()) => Err(WalError::Io(error)),
                Err(_) => Err(WalError::TailUnknown(error)),
            };
        }
        self.current.sync_data().map_err(WalError::TailUnknown)?;
        self.next_sequence = next_sequence;
        self.current_bytes += buffer.len() as u64;
        Ok(())
    }

    /// Deletes segments whose every entry is at or below `applied_sequence` (already durable
    /// in the store). The segment being written is never deleted.
    pub fn trim(&mut self, applied_sequence: u64) -> Result<usize, WalError> {
        let mut n_removed = 0;
        while self.segments.len() > 1 && self.segments[1].0 <= applied_sequence + 1 {
            let (_, path) = self.segments.remove(0);
            std::fs::remove_file(&path)?;
            n_removed += 1;
        }
        if n_removed > 0 {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(n_removed)
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        let (file, path) = create_segment(&self.dir, self.next_sequence)?;
        self.segments.push((self.next_sequence, path));
        self.current = file;
        self.current_bytes = 0;
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn create_segment(dir: &Path, first_sequence: u64) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(format!("{first_sequence:020}.wal"));
    let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
    file.sync_all()?;
    // The new name must survive a power loss too.
    File::open(dir)?.sync_all()?;
    Ok((file, path))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let first_sequence = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".wal"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(first_sequence) = first_sequence {
            segments.push((first_sequence, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Reads every whole, intact frame; returns them, the length of the intact prefix, and what
/// stopped the read early, if anything.
fn read_segment<E: LogEntry>(path: &Path) -> Result<(Vec<E>, u64, Option<String>), WalError> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut entries = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        match read_full(&mut reader, &mut header)? {
            0 => return Ok((entries, offset, None)),
            n if n < FRAME_HEADER_BYTES => return Ok((entries, offset, Some("truncated frame header".into()))),
            _ => {}
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > FRAME_BYTES_MAX {
            return Ok((entries, offset, Some(format!("frame length {len} is implausible"))));
        }
        let mut payload = vec![0u8; len as usize];
        if read_full(&mut reader, &mut payload)? < payload.len() {
            return Ok((entries, offset, Some("truncated frame".into())));
        }
        if crc32c::crc32c(&payload) != crc {
            return Ok((entries, offset, Some("checksum mismatch".into())));
        }
        match E::decode(&payload) {
            Ok(entry) => entries.push(entry),
            // Whole and intact, yet not an entry this build reads (a log of another version):
            // not a torn write to cut off, wherever it is.
            Err(error) => {
                return Err(WalError::Corrupt {
                    log: E::LOG,
                    segment: file_name(path),
                    offset,
                    problem: format!("an intact frame this build cannot read: {error}"),
                })
            }
        }
        offset += (FRAME_HEADER_BYTES + payload.len()) as u64;
    }
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordKey, SourceId, TagCode};
    use proptest::prelude::*;

    fn entry(sequence: u64) -> WalEntry {
        WalEntry {
            sequence,
            received_at: 1_700_000_000_000,
            records: vec![RawRecord {
                key: RecordKey {
                    source: SourceId::parse("D01").expect("well-formed"),
                    record_id: format!("r{sequence}"),
                },
                observed_at: Some(0),
                tags: [(TagCode::new("name"), "测试".to_string())].into_iter().collect(),
            }],
            rejected: vec![],
            model: None,
            steward: None,
            actor: None,
        }
    }

    #[test]
    fn entries_carry_their_actor_and_entries_of_the_format_before_it_still_decode() {
        let mut with_actor = entry(7);
        with_actor.actor = Some(Actor {
            caller: "etl-d07".into(),
            purpose: String::new(),
            action: "IngestService/StreamRecords".into(),
            detail: "batch 3: 1 records".into(),
        });
        let payload = postcard::to_stdvec(&with_actor).expect("encode");
        assert_eq!(decode_entry(&payload).expect("decode"), with_actor);

        let before = entry(8);
        let old = EntryWithoutActor {
            sequence: before.sequence,
            received_at: before.received_at,
            records: before.records.clone(),
            rejected: before.rejected.clone(),
            model: None,
            steward: None,
        };
        let payload = postcard::to_stdvec(&old).expect("encode");
        assert_eq!(decode_entry(&payload).expect("decode"), before);
        // Damage is still damage.
        assert!(decode_entry(&payload[..payload.len() - 3]).is_err());
    }

    fn append_all(wal: &mut Wal, range: std::ops::RangeInclusive<u64>) {
        for sequence in range {
            wal.append(&[entry(sequence)]).expect("append");
        }
    }

    #[test]
    fn reopen_returns_entries_after_the_applied_sequence() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::<WalEntry>::open(dir.path(), 1 << 20, 0).expect("open").wal;
        append_all(&mut wal, 1..=5);
        drop(wal);
        let recovered = Wal::<WalEntry>::open(dir.path(), 1 << 20, 3).expect("reopen");
        let sequences: Vec<u64> = recovered.pending.iter().map(|entry| entry.sequence).collect();
        assert_eq!(sequences, vec![4, 5]);
        assert_eq!(recovered.wal.next_sequence(), 6);
        assert_eq!(recovered.torn_tail_bytes, 0);
    }

    /// A stop between creating a segment and writing its first frame, after the older
    /// segments were trimmed, leaves an empty newest segment: its name still says where the
    /// sequence stands, whatever the caller has applied.
    #[test]
    fn an_empty_newest_segment_keeps_the_sequence_going() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::<WalEntry>::open(dir.path(), 64, 0).expect("open").wal;
        append_all(&mut wal, 1..=10);
        wal.rotate().expect("rotate");
        assert!(wal.trim(10).expect("trim") > 0);
        drop(wal);
        let mut wal = Wal::<WalEntry>::open(dir.path(), 64, 0).expect("reopen").wal;
        assert_eq!(wal.next_sequence(), 11);
        append_all(&mut wal, 11..=14);
        drop(wal);
        let recovered = Wal::<WalEntry>::open(dir.path(), 64, 0).expect("reopen");
        let sequences: Vec<u64> = recovered.pending.iter().map(|entry| entry.sequence).collect();
        assert_eq!(sequences, vec![11, 12, 13, 14]);
    }

    #[test]
    fn rotation_and_trim_keep_unapplied_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::<WalEntry>::open(dir.path(), 64, 0).expect("open").wal;
        append_all(&mut wal, 1..=10);
        assert!(wal.segments.len() > 3);
        assert!(wal.trim(6).expect("trim") > 0);
        drop(wal);
        let recovered = Wal::<WalEntry>::open(dir.path(), 64, 6).expect("reopen");
        let sequences: Vec<u64> = recovered.pending.iter().map(|entry| entry.sequence).collect();
        assert_eq!(sequences, vec![7, 8, 9, 10]);
    }

    #[test]
    fn the_store_may_be_ahead_of_a_trimmed_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let recovered = Wal::<WalEntry>::open(dir.path(), 1 << 20, 41).expect("open");
        assert_eq!(recovered.wal.next_sequence(), 42);
    }

    #[test]
    fn damage_in_an_older_segment_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::<WalEntry>::open(dir.path(), 64, 0).expect("open").wal;
        append_all(&mut wal, 1..=4);
        let first = wal.segments[0].1.clone();
        drop(wal);
        let mut bytes = std::fs::read(&first).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&first, bytes).expect("write");
        let error = Wal::<WalEntry>::open(dir.path(), 64, 0).err().expect("refused");
        assert!(matches!(error, WalError::Corrupt { .. }), "{error}");
    }

    /// A last frame that is whole and intact but not an entry (a log of another version) is
    /// refused, not cut off as if it were a torn write.
    #[test]
    fn an_intact_frame_that_is_no_entry_is_refused_not_cut() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::<WalEntry>::open(dir.path(), 1 << 20, 0).expect("open").wal;
        wal.append(&[entry(1)]).expect("append");
        let path = wal.segments[0].1.clone();
        drop(wal);
        let payload = [0xFFu8; 12];
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let mut bytes = std::fs::read(&path).expect("read");
        let before = bytes.len();
        bytes.extend_from_slice(&frame);
        std::fs::write(&path, bytes).expect("write");
        let error = Wal::<WalEntry>::open(dir.path(), 1 << 20, 0).err().expect("refused");
        assert!(error.to_string().contains("cannot read"), "{error}");
        assert_eq!(
            std::fs::metadata(&path).expect("segment").len() as usize,
            before + frame.len()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A torn or bit-flipped tail never panics, loses nothing before the damage, and the
        /// log stays appendable.
        #[test]
        fn torn_tail_recovers_the_intact_prefix(cut in 0usize..400, flip in proptest::option::of((0usize..400, 0u8..8))) {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut wal = Wal::<WalEntry>::open(dir.path(), 1 << 20, 0).expect("open").wal;
            let mut frame_ends = Vec::new();
            for sequence in 1..=5 {
                wal.append(&[entry(sequence)]).expect("append");
                frame_ends.push(wal.current_bytes);
            }
            let path = wal.segments[0].1.clone();
            drop(wal);
            let mut bytes = std::fs::read(&path).expect("read");
            let total = bytes.len();
            let damage_at = match flip {
                Some((position, bit)) => {
                    let position = total - 1 - position % total;
                    bytes[position] ^= 1 << bit;
                    position
                }
                None => {
                    let keep = total - cut % total;
                    bytes.truncate(keep);
                    keep
                }
            };
            std::fs::write(&path, &bytes).expect("write");
            let intact = frame_ends.iter().filter(|end| **end as usize <= damage_at).count() as u64;
            let recovered = Wal::<WalEntry>::open(dir.path(), 1 << 20, 0).expect("recovers");
            let sequences: Vec<u64> = recovered.pending.iter().map(|entry| entry.sequence).collect();
            prop_assert_eq!(sequences, (1..=intact).collect::<Vec<_>>());
            let mut wal = recovered.wal;
            let next = wal.next_sequence();
            prop_assert_eq!(next, intact + 1);
            wal.append(&[entry(next)]).expect("append after recovery");
        }
    }
}
