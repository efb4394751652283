//! The free-space guard of the write path. sled 0.34.7 does not survive a full disk: a write
//! that meets `ENOSPC` can leave a store it refuses to open again ("Read corrupted data"). So
//! the engine refuses every write while the data directory's file system has less than
//! `storage.min_free_bytes` free, and accepts them again once space is freed; reads go on.
//!
//! Owns: reading the free space (at most once a second) and the decision. Must not: know what
//! a write is.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reading of the free space is trusted.
const READING_TTL: Duration = Duration::from_secs(1);

pub(super) struct DiskGuard {
    dir: PathBuf,
    min_free_bytes: u64,
    free_space: fn(&Path) -> Option<u64>,
    last: Mutex<Option<(Instant, Option<u64>)>>,
}

impl DiskGuard {
    pub(super) fn new(dir: &Path, min_free_bytes: u64) -> DiskGuard {
        DiskGuard::with_reader(dir, min_free_bytes, free_bytes)
    }

    fn with_reader(dir: &Path, min_free_bytes: u64, free_space: fn(&Path) -> Option<u64>) -> DiskGuard {
        DiskGuard {
            dir: dir.to_path_buf(),
            min_free_bytes,
            free_space,
            last: Mutex::new(None),
        }
    }

    /// `Err` with the free bytes when a write must be refused. A file system whose free space
    /// cannot be read is not held against the writes.
    pub(super) fn check(&self) -> Result<(), u64> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let free = {
            let mut last = self.last.lock().expect("lock poisoned");
            match *last {
                Some((at, free)) if at.elapsed() < READING_TTL => free,
                _ => {
                    let free = (self.free_space)(&self.dir);
                    *last = Some((Instant::now(), free));
                    free
                }
            }
        };
        match free {
            Some(free) if free < self.min_free_bytes => Err(free),
            _ => Ok(()),
        }
    }

    pub(super) fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs that
    // statvfs fills in; nothing is kept after the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if result != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_below_the_minimum_and_allowed_above() {
        let dir = tempfile::tempdir().expect("temp dir");
        let full = DiskGuard::with_reader(dir.path(), 1_000, |_| Some(999));
        assert_eq!(full.check(), Err(999));
        let roomy = DiskGuard::with_reader(dir.path(), 1_000, |_| Some(1_000));
        assert_eq!(roomy.check(), Ok(()));
        let unknown = DiskGuard::with_reader(dir.path(), 1_000, |_| None);
        assert_eq!(unknown.check(), Ok(()));
        let off = DiskGuard::with_reader(dir.path(), 0, |_| Some(0));
        assert_eq!(off.check(), Ok(()));
    }

    #[test]
    fn the_real_file_system_reports_its_free_space() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(DiskGuard::new(dir.path(), u64::MAX).check().map_err(|_| ()), Err(()));
    }
}
