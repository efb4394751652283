//! On-disk layout of the index directory beside tantivy's own files.
//!
//! Owns: the format-version marker file, the commit payload encoding (format version and
//! watermark), classifying a directory (absent / empty / populated), and wiping a directory for
//! `recreate`.
//!
//! Must not: open tantivy indexes or writers (that is [`crate::candidate_index`]), or touch
//! anything outside the directory it is given.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::error::IndexError;
use crate::FORMAT_VERSION;

/// File beside tantivy's files holding the format version as decimal text. It is written last
/// when an index is created, so a directory without it never counts as a complete index.
pub(crate) const MARKER_FILE: &str = "popmaster-index.format";
const MARKER_TMP_FILE: &str = "popmaster-index.format.tmp";
const PAYLOAD_PREFIX: &str = "popmaster-index";

/// What a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirState {
    Absent,
    Empty,
    Populated,
}

pub(crate) fn inspect(dir: &Path) -> Result<DirState, IndexError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(DirState::Empty),
            Some(Ok(_)) => Ok(DirState::Populated),
            Some(Err(e)) => Err(IndexError::Io {
                context: "listing the index directory",
                source: e,
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DirState::Absent),
        Err(e) => Err(IndexError::Io {
            context: "reading the index directory",
            source: e,
        }),
    }
}

/// Removes everything inside `dir` (creating `dir` if absent). The directory itself is kept so
/// that mount points and permissions survive. Symlinks are removed, never followed.
pub(crate) fn clear(dir: &Path) -> Result<(), IndexError> {
    fs::create_dir_all(dir).map_err(IndexError::io("creating the index directory"))?;
    let entries = fs::read_dir(dir).map_err(IndexError::io("reading the index directory"))?;
    for entry in entries {
        let entry = entry.map_err(IndexError::io("listing the index directory"))?;
        let file_type = entry
            .file_type()
            .map_err(IndexError::io("inspecting an index directory entry"))?;
        let path = entry.path();
        if file_type.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .map_err(IndexError::io("removing an index directory entry"))?;
    }
    Ok(())
}

/// Checks the marker: absent → `Corrupt`, unreadable → `Corrupt`, other version →
/// `Incompatible`.
pub(crate) fn check_marker(dir: &Path) -> Result<(), IndexError> {
    let text = match fs::read_to_string(dir.join(MARKER_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(IndexError::corrupt("directory is not empty but has no format marker"))
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(IndexError::corrupt_because("format marker is not text", e))
        }
        Err(e) => {
            return Err(IndexError::Io {
                context: "reading the format marker",
                source: e,
            })
        }
    };
    let found: u32 = text
        .trim()
        .parse()
        .map_err(|e| IndexError::corrupt_because("format marker is not a version number", e))?;
    if found != FORMAT_VERSION {
        return Err(IndexError::Incompatible {
            found,
            expected: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Writes the marker for [`FORMAT_VERSION`] durably (temp file, fsync, rename, fsync dir).
pub(crate) fn write_marker(dir: &Path) -> Result<(), IndexError> {
    write_marker_text(dir, &format!("{FORMAT_VERSION}\n"))
}

pub(crate) fn write_marker_text(dir: &Path, text: &str) -> Result<(), IndexError> {
    let tmp = dir.join(MARKER_TMP_FILE);
    let mut file = fs::File::create(&tmp).map_err(IndexError::io("creating the format marker"))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(IndexError::io("writing the format marker"))?;
    drop(file);
    fs::rename(&tmp, dir.join(MARKER_FILE)).map_err(IndexError::io("installing the format marker"))?;
    sync_dir(dir)
}

#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IndexError::io("syncing the index directory"))
}

#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> Result<(), IndexError> {
    Ok(())
}

/// The commit payload recording `watermark`.
pub(crate) fn encode_payload(watermark: u64) -> String {
    format!("{PAYLOAD_PREFIX};format={FORMAT_VERSION};watermark={watermark}")
}

/// The watermark recorded in a commit payload. Missing or malformed payloads, or a payload of
/// another format than the marker claimed, mean the directory cannot be trusted.
pub(crate) fn decode_payload(payload: Option<&str>) -> Result<u64, IndexError> {
    let payload = payload.ok_or(IndexError::corrupt("last commit has no payload"))?;
    let mut parts = payload.split(';');
    if parts.next() != Some(PAYLOAD_PREFIX) {
        return Err(IndexError::corrupt("last commit payload is not ours"));
    }
    let format = parts
        .next()
        .and_then(|p| p.strip_prefix("format="))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or(IndexError::corrupt("last commit payload has no format"))?;
    if format != FORMAT_VERSION {
        return Err(IndexError::corrupt(
            "last commit payload format disagrees with the marker",
        ));
    }
    let watermark = parts
        .next()
        .and_then(|p| p.strip_prefix("watermark="))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(IndexError::corrupt("last commit payload has no watermark"))?;
    if parts.next().is_some() {
        return Err(IndexError::corrupt("last commit payload has trailing data"));
    }
    Ok(watermark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        for watermark in [0, 1, 42, u64::MAX] {
            assert_eq!(decode_payload(Some(&encode_payload(watermark))).ok(), Some(watermark));
        }
    }

    #[test]
    fn bad_payloads_are_corrupt() {
        let other_format = format!("popmaster-index;format={};watermark=1", FORMAT_VERSION + 1);
        let cases = [
            None,
            Some(""),
            Some("something else"),
            Some("popmaster-index"),
            Some("popmaster-index;format=x;watermark=1"),
            Some(other_format.as_str()),
            Some("popmaster-index;format=1;watermark=-1"),
            Some("popmaster-index;format=1;watermark=1;extra"),
        ];
        for payload in cases {
            let err = decode_payload(payload).expect_err("must be rejected");
            assert!(matches!(err, IndexError::Corrupt { .. }), "{payload:?}: {err:?}");
        }
    }

    #[test]
    fn inspect_and_clear() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("idx");
        assert_eq!(inspect(&dir)?, DirState::Absent);
        fs::create_dir(&dir)?;
        assert_eq!(inspect(&dir)?, DirState::Empty);
        fs::write(dir.join("junk"), b"x")?;
        fs::create_dir_all(dir.join("sub/deeper"))?;
        fs::write(dir.join("sub/deeper/junk"), b"x")?;
        assert_eq!(inspect(&dir)?, DirState::Populated);
        clear(&dir)?;
        assert_eq!(inspect(&dir)?, DirState::Empty);
        Ok(())
    }

    #[test]
    fn marker_checks() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        assert!(matches!(check_marker(dir), Err(IndexError::Corrupt { .. })));
        write_marker(dir)?;
        check_marker(dir)?;
        write_marker_text(dir, "not a number")?;
        assert!(matches!(check_marker(dir), Err(IndexError::Corrupt { .. })));
        write_marker_text(dir, &format!("{}\n", FORMAT_VERSION + 7))?;
        match check_marker(dir) {
            Err(IndexError::Incompatible { found, expected }) => {
                assert_eq!((found, expected), (FORMAT_VERSION + 7, FORMAT_VERSION));
            }
            other => panic!("expected Incompatible, got {other:?}"),
        }
        Ok(())
    }
}
