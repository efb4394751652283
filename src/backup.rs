//! The backup directory format: a dump file of framed key/value pairs, each frame with its
//! own CRC, and a manifest saying what the dump holds (with a checksum of the whole dump).
//! Owns writing a backup durably (temporary names, fsync, rename, manifest last) and reading
//! one back with every check. Knows nothing of what keys mean and never touches the store.
//!
//! ```text
//! store.dump      "PMDUMP\r\n" then the backup format (u32 LE), then one frame per pair:
//!                 [key length u32 LE][value length u32 LE][crc32c u32 LE][key][value]
//!                 (the CRC covers both lengths, the key and the value), keys ascending
//! manifest.json   BackupManifest; written last: a directory without it is no backup
//! ```

use serde::{Deserialize, Serialize};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The format of the dump and manifest this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
pub const DUMP_FILE: &str = "store.dump";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Suffix of the files of a backup still being written.
const PARTIAL_SUFFIX: &str = ".partial";
const MAGIC: &[u8; 8] = b"PMDUMP\r\n";
const HEADER_BYTES: u64 = 12;
const FRAME_HEADER_BYTES: u64 = 12;

/// What a backup holds. Written last, as the mark of a finished backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupManifest {
    pub backup_format: u32,
    /// The store format of the pairs: a restore needs a build that reads it.
    pub store_format: u32,
    /// The write-ahead-log sequence of the last batch the backup holds.
    pub applied_sequence: u64,
    /// The last change-feed sequence the backup holds.
    pub change_sequence: u64,
    pub n_records: u64,
    pub n_persons: u64,
    /// Pairs in the dump.
    pub n_keys: u64,
    /// Bytes of keys and values in the dump.
    pub n_bytes: u64,
    /// Size of the dump file.
    pub dump_bytes: u64,
    /// crc32c of the whole dump file.
    pub dump_crc32c: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// What the store says about itself at the backup, for the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSummary {
    pub store_format: u32,
    pub applied_sequence: u64,
    pub change_sequence: u64,
    pub n_records: u64,
    pub n_persons: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path} is not an absolute path (it names a directory on the server's machine)")]
    NotAbsolute { path: String },
    #[error("{path} already holds a backup; give a new directory")]
    HoldsBackup { path: String },
    #[error("{path} is not empty; give a new or empty directory")]
    NotEmpty { path: String },
    #[error("{path} is not a directory")]
    NotADirectory { path: String },
    #[error("{path} holds no finished backup: {MANIFEST_FILE} is missing")]
    NoManifest { path: String },
    #[error("{MANIFEST_FILE} in {path} cannot be read: {message}")]
    Manifest { path: String, message: String },
    #[error("the backup has backup format {found}, this build reads {expected}")]
    BackupFormat { found: u32, expected: u32 },
    #[error(
        "the backup has store format {found}, this build restores formats {oldest} to {newest}; restore it with a build of that format"
    )]
    StoreFormat { found: u32, oldest: u32, newest: u32 },
    #[error("{DUMP_FILE} is damaged at byte {offset} (pair {pair_idx}): {problem}")]
    Damaged {
        offset: u64,
        pair_idx: u64,
        problem: String,
    },
    #[error("{DUMP_FILE} does not match {MANIFEST_FILE}: {what}")]
    Mismatch { what: String },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: String,
        source: std::io::Error,
    },
}

fn io_error<'p>(context: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> BackupError + 'p {
    move |source| BackupError::Io {
        context,
        path: path.display().to_string(),
        source,
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn partial(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{PARTIAL_SUFFIX}"))
}

/// A new file only its owner may read: a backup holds every resident's values.
fn create_private(path: &Path) -> Result<File, BackupError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io_error("cannot create", path))
}

/// Checks that `dir` can take a backup or a restore: an absolute path, and absent or an empty
/// directory. Writes nothing.
pub fn check_target(dir: &Path) -> Result<(), BackupError> {
    if !dir.is_absolute() {
        return Err(BackupError::NotAbsolute { path: display(dir) });
    }
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(BackupError::NotADirectory { path: display(dir) }),
        Ok(_) => {
            if dir.join(MANIFEST_FILE).exists() {
                return Err(BackupError::HoldsBackup { path: display(dir) });
            }
            let mut entries = std::fs::read_dir(dir).map_err(io_error("cannot list", dir))?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(BackupError::NotEmpty { path: display(dir) }),
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("cannot read", dir)(error)),
    }
}

/// Creates a target `check_target` accepted, if absent, so that its name survives a power loss.
/// It will hold every resident's values: only its owner may enter it.
pub fn create_target(dir: &Path) -> Result<(), BackupError> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_error("cannot create directory", dir))?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// fsyncs a directory, so that the names created in it survive a power loss.
pub fn fsync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("cannot fsync directory", dir))
}

/// Writes one backup: pairs in ascending key order, then `finish`. Dropped unfinished, it
/// removes what it wrote, so the directory can be used again.
pub struct BackupWriter {
    dir: PathBuf,
    dump: BufWriter<File>,
    crc: u32,
    n_keys: u64,
    n_bytes: u64,
    dump_bytes: u64,
    last_key: Option<Vec<u8>>,
    finished: bool,
}

impl BackupWriter {
    /// Starts a backup in `dir`, which must be absent or empty (see `check_target`).
    pub fn create(dir: &Path) -> Result<BackupWriter, BackupError> {
        check_target(dir)?;
        create_target(dir)?;
        let file = create_private(&partial(dir, DUMP_FILE))?;
        let mut writer = BackupWriter {
            dir: dir.to_path_buf(),
            dump: BufWriter::with_capacity(1 << 20, file),
            crc: 0,
            n_keys: 0,
            n_bytes: 0,
            dump_bytes: 0,
            last_key: None,
            finished: false,
        };
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&BACKUP_FORMAT.to_le_bytes());
        writer.write(&header)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.dump_bytes += bytes.len() as u64;
        let path = partial(&self.dir, DUMP_FILE);
        self.dump.write_all(bytes).map_err(io_error("cannot write", &path))
    }

    /// Appends one pair; keys must come in ascending order.
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        assert!(
            self.last_key.as_deref().is_none_or(|last| last < key),
            "a dump's keys ascend"
        );
        let key_len = u32::try_from(key.len()).expect("keys are far below 4 GiB");
        let value_len = u32::try_from(value.len()).expect("values are far below 4 GiB");
        let mut frame_header = Vec::with_capacity(FRAME_HEADER_BYTES as usize);
        frame_header.extend_from_slice(&key_len.to_le_bytes());
        frame_header.extend_from_slice(&value_len.to_le_bytes());
        let crc = frame_crc(&frame_header, key, value);
        frame_header.extend_from_slice(&crc.to_le_bytes());
        self.write(&frame_header)?;
        self.write(key)?;
        self.write(value)?;
        self.n_keys += 1;
        self.n_bytes += (key.len() + value.len()) as u64;
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    pub fn n_keys(&self) -> u64 {
        self.n_keys
    }

    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }

    /// Makes the dump durable, writes the manifest, and gives both their final names (the
    /// manifest last), fsyncing the directory.
    pub fn finish(mut self, store: StoreSummary) -> Result<BackupManifest, BackupError> {
        let dump_path = partial(&self.dir, DUMP_FILE);
        self.dump.flush().map_err(io_error("cannot write", &dump_path))?;
        self.dump
            .get_ref()
            .sync_all()
            .map_err(io_error("cannot fsync", &dump_path))?;
        let manifest = BackupManifest {
            backup_format: BACKUP_FORMAT,
            store_format: store.store_format,
            applied_sequence: store.applied_sequence,
            change_sequence: store.change_sequence,
            n_records: store.n_records,
            n_persons: store.n_persons,
            n_keys: self.n_keys,
            n_bytes: self.n_bytes,
            dump_bytes: self.dump_bytes,
            dump_crc32c: self.crc,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let manifest_path = partial(&self.dir, MANIFEST_FILE);
        let mut json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        json.push(b'\n');
        let mut file = create_private(&manifest_path)?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(io_error("cannot write", &manifest_path))?;
        let final_dump = self.dir.join(DUMP_FILE);
        std::fs::rename(&dump_path, &final_dump).map_err(io_error("cannot rename", &dump_path))?;
        fsync_dir(&self.dir)?;
        let final_manifest = self.dir.join(MANIFEST_FILE);
        std::fs::rename(&manifest_path, &final_manifest).map_err(io_error("cannot rename", &manifest_path))?;
        fsync_dir(&self.dir)?;
        self.finished = true;
        Ok(manifest)
    }
}

impl Drop for BackupWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for name in [DUMP_FILE, MANIFEST_FILE] {
            let _ = std::fs::remove_file(partial(&self.dir, name));
        }
    }
}

fn frame_crc(frame_header: &[u8], key: &[u8], value: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&frame_header[..8]);
    let crc = crc32c::crc32c_append(crc, key);
    crc32c::crc32c_append(crc, value)
}

/// Reads and checks the manifest of the backup in `dir`: it exists, parses, and names formats
/// this build reads (`store_formats`, the caller's: an older format is upgraded when the
/// restored store is opened).
pub fn read_manifest(dir: &Path, store_formats: std::ops::RangeInclusive<u32>) -> Result<BackupManifest, BackupError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NoManifest { path: display(dir) })
        }
        Err(error) => return Err(io_error("cannot read", &path)(error)),
    };
    let manifest: BackupManifest = serde_json::from_slice(&bytes).map_err(|error| BackupError::Manifest {
        path: display(dir),
        message: error.to_string(),
    })?;
    if manifest.backup_format != BACKUP_FORMAT {
        return Err(BackupError::BackupFormat {
            found: manifest.backup_format,
            expected: BACKUP_FORMAT,
        });
    }
    if !store_formats.contains(&manifest.store_format) {
        return Err(BackupError::StoreFormat {
            found: manifest.store_format,
            oldest: *store_formats.start(),
            newest: *store_formats.end(),
        });
    }
    Ok(manifest)
}

/// Reads the dump of the backup in `dir` from start to end, checking every frame's CRC, the
/// key order, and at the end the count, sizes and checksum the manifest gives; hands each
/// pair to `visit` with the dump bytes read so far. A visitor sees the pairs before the end
/// is checked: to write nothing from a damaged backup, run once to verify, then again.
pub fn read_dump<E: From<BackupError>>(
    dir: &Path,
    manifest: &BackupManifest,
    mut visit: impl FnMut(&[u8], &[u8], u64) -> Result<(), E>,
) -> Result<(), E> {
    let path = dir.join(DUMP_FILE);
    let file = File::open(&path).map_err(io_error("cannot open", &path))?;
    let file_bytes = file.metadata().map_err(io_error("cannot read", &path))?.len();
    if file_bytes != manifest.dump_bytes {
        return Err(BackupError::Mismatch {
            what: format!(
                "the dump is {file_bytes} bytes, the manifest says {}",
                manifest.dump_bytes
            ),
        }
        .into());
    }
    let mut reader = DumpReader {
        reader: BufReader::with_capacity(1 << 20, file),
        path: &path,
        offset: 0,
        crc: 0,
        file_bytes,
    };
    let mut header = [0u8; HEADER_BYTES as usize];
    reader.read_exact(&mut header, 0, "the header is cut short")?;
    if &header[..8] != MAGIC {
        return Err(reader.damaged(0, 0, "it does not start like a popmaster dump").into());
    }
    let format = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
    if format != manifest.backup_format {
        return Err(BackupError::Mismatch {
            what: format!(
                "the dump has backup format {format}, the manifest says {}",
                manifest.backup_format
            ),
        }
        .into());
    }
    let mut last_key: Option<Vec<u8>> = None;
    let mut n_keys = 0u64;
    let mut n_bytes = 0u64;
    while reader.offset < file_bytes {
        let frame_offset = reader.offset;
        let mut frame_header = [0u8; FRAME_HEADER_BYTES as usize];
        reader.read_exact(&mut frame_header, n_keys, "a frame header is cut short")?;
        let key_len = u64::from(u32::from_le_bytes(frame_header[..4].try_into().expect("4 bytes")));
        let value_len = u64::from(u32::from_le_bytes(frame_header[4..8].try_into().expect("4 bytes")));
        let crc = u32::from_le_bytes(frame_header[8..].try_into().expect("4 bytes"));
        // Lengths are checked against the file before anything is allocated for them.
        if key_len + value_len > file_bytes - reader.offset {
            return Err(reader
                .damaged(frame_offset, n_keys, "the frame's lengths run past the end of the dump")
                .into());
        }
        let mut key = vec![0u8; key_len as usize];
        reader.read_exact(&mut key, n_keys, "a key is cut short")?;
        let mut value = vec![0u8; value_len as usize];
        reader.read_exact(&mut value, n_keys, "a value is cut short")?;
        if frame_crc(&frame_header, &key, &value) != crc {
            return Err(reader
                .damaged(frame_offset, n_keys, "the frame fails its checksum")
                .into());
        }
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(reader.damaged(frame_offset, n_keys, "keys are out of order").into());
        }
        visit(&key, &value, reader.offset)?;
        n_keys += 1;
        n_bytes += key_len + value_len;
        last_key = Some(key);
    }
    let mismatch = |what: &str, found: u64, expected: u64| BackupError::Mismatch {
        what: format!("the dump holds {found} {what}, the manifest says {expected}"),
    };
    if n_keys != manifest.n_keys {
        return Err(mismatch("pairs", n_keys, manifest.n_keys).into());
    }
    if n_bytes != manifest.n_bytes {
        return Err(mismatch("bytes of keys and values", n_bytes, manifest.n_bytes).into());
    }
    if reader.crc != manifest.dump_crc32c {
        return Err(BackupError::Mismatch {
            what: format!(
                "the dump's checksum is {:#010x}, the manifest says {:#010x}",
                reader.crc, manifest.dump_crc32c
            ),
        }
        .into());
    }
    Ok(())
}

struct DumpReader<'p> {
    reader: BufReader<File>,
    path: &'p Path,
    offset: u64,
    crc: u32,
    file_bytes: u64,
}

impl DumpReader<'_> {
    fn damaged(&self, offset: u64, pair_idx: u64, problem: &str) -> BackupError {
        BackupError::Damaged {
            offset,
            pair_idx,
            problem: problem.to_string(),
        }
    }

    fn read_exact(&mut self, buffer: &mut [u8], pair_idx: u64, cut_short: &str) -> Result<(), BackupError> {
        if self.offset + buffer.len() as u64 > self.file_bytes {
            return Err(self.damaged(self.offset, pair_idx, cut_short));
        }
        self.reader
            .read_exact(buffer)
            .map_err(io_error("cannot read", self.path))?;
        self.crc = crc32c::crc32c_append(self.crc, buffer);
        self.offset += buffer.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: StoreSummary = StoreSummary {
        store_format: 4,
        applied_sequence: 7,
        change_sequence: 9,
        n_records: 2,
        n_persons: 1,
    };

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    fn pairs() -> Pairs {
        (0..50u32)
            .map(|n| (format!("k/{n:03}").into_bytes(), vec![n as u8; (n % 7) as usize]))
            .collect()
    }

    fn write_backup(dir: &Path) -> BackupManifest {
        let mut writer = BackupWriter::create(dir).expect("create");
        for (key, value) in pairs() {
            writer.append(&key, &value).expect("append");
        }
        writer.finish(SUMMARY).expect("finish")
    }

    fn read_all(dir: &Path) -> Result<Pairs, BackupError> {
        let manifest = read_manifest(dir, 4..=4)?;
        let mut read = Vec::new();
        read_dump::<BackupError>(dir, &manifest, |key, value, _| {
            read.push((key.to_vec(), value.to_vec()));
            Ok(())
        })?;
        Ok(read)
    }

    #[test]
    fn a_backup_reads_back_whole() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("backup");
        let manifest = write_backup(&dir);
        assert_eq!((manifest.n_keys, manifest.applied_sequence), (50, 7));
        assert_eq!(read_all(&dir).expect("reads"), pairs());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [MANIFEST_FILE, DUMP_FILE], "no partial file left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(DUMP_FILE)), 0o600);
            assert_eq!(mode(&dir.join(MANIFEST_FILE)), 0o600);
        }
        assert!(matches!(
            BackupWriter::create(&dir).err(),
            Some(BackupError::HoldsBackup { .. })
        ));
    }

    #[test]
    fn targets_are_refused_unless_absent_or_empty() {
        let temp = tempfile::tempdir().expect("temp dir");
        let error = BackupWriter::create(Path::new("relative/dir")).err().expect("refused");
        assert!(matches!(error, BackupError::NotAbsolute { .. }), "{error}");
        std::fs::write(temp.path().join("file"), b"x").expect("write");
        let error = BackupWriter::create(temp.path()).err().expect("refused");
        assert!(matches!(error, BackupError::NotEmpty { .. }), "{error}");
        let error = BackupWriter::create(&temp.path().join("file")).err().expect("refused");
        assert!(matches!(error, BackupError::NotADirectory { .. }), "{error}");
        // An abandoned backup leaves nothing behind.
        let dir = temp.path().join("abandoned");
        let mut writer = BackupWriter::create(&dir).expect("create");
        writer.append(b"a", b"1").expect("append");
        drop(writer);
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0);
        let error = read_manifest(&dir, 4..=4).expect_err("refused");
        assert!(matches!(error, BackupError::NoManifest { .. }), "{error}");
    }

    #[test]
    fn a_backup_of_an_older_store_format_is_read_when_the_build_upgrades_it() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("backup");
        write_backup(&dir);
        assert_eq!(read_manifest(&dir, 4..=6).expect("upgradable").store_format, 4);
        let error = read_manifest(&dir, 5..=6).expect_err("too old");
        assert_eq!(
            error.to_string(),
            "the backup has store format 4, this build restores formats 5 to 6; restore it with a build of that format"
        );
    }

    #[test]
    fn every_flipped_byte_of_the_dump_is_found() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("backup");
        write_backup(&dir);
        let dump = dir.join(DUMP_FILE);
        let clean = std::fs::read(&dump).expect("read");
        for position in 0..clean.len() {
            let mut damaged = clean.clone();
            damaged[position] ^= 0x10;
            std::fs::write(&dump, &damaged).expect("write");
            let error = read_all(&dir).err();
            assert!(
                matches!(error, Some(BackupError::Damaged { .. } | BackupError::Mismatch { .. })),
                "byte {position}: {error:?}"
            );
        }
        std::fs::write(&dump, &clean[..clean.len() - 3]).expect("write");
        let error = read_all(&dir).expect_err("refused");
        assert!(error.to_string().contains("the manifest says"), "{error}");
    }

    #[test]
    fn a_damaged_manifest_is_named() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("backup");
        let manifest = write_backup(&dir);
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, text.replace("\"n_keys\": 50", "\"n_keys\": 51")).expect("write");
        let error = read_all(&dir).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "store.dump does not match manifest.json: the dump holds 50 pairs, the manifest says 51"
        );
        std::fs::write(&path, &text[..text.len() / 2]).expect("write");
        let error = read_all(&dir).expect_err("refused");
        assert!(matches!(error, BackupError::Manifest { .. }), "{error}");
        let newer = BackupManifest {
            store_format: 5,
            ..manifest
        };
        std::fs::write(&path, serde_json::to_vec(&newer).expect("json")).expect("write");
        let error = read_all(&dir).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "the backup has store format 5, this build restores formats 4 to 4; restore it with a build of that format"
        );
    }
}
