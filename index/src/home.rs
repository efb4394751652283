//! [`IndexHome`]: the directory that holds the candidate index's generations, so a rebuilt
//! index can be swapped in atomically while the old one keeps answering.
//!
//! Owns: the generation directories (`g<number>`), the `CURRENT` file naming the one in use
//! (replaced by an fsynced temp file and a rename, so a crash leaves either the old or the new
//! name), removing generations that are not current (an interrupted rebuild, a retired index),
//! and clearing an index home of the older one-directory layout.
//!
//! Must not: open tantivy indexes (that is [`crate::CandidateIndex`]) or decide when to
//! rebuild (that is the caller's, who knows the source of truth).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::info;

use crate::error::IndexError;
use crate::layout;

const CURRENT_FILE: &str = "CURRENT";
const CURRENT_TMP_FILE: &str = "CURRENT.tmp";
const GENERATION_PREFIX: char = 'g';

/// The index home directory and the generation in use.
#[derive(Debug)]
pub struct IndexHome {
    root: PathBuf,
    current: u64,
}

impl IndexHome {
    /// Opens (creating if needed) the index home at `root`. Keeps the generation `CURRENT`
    /// names and removes every other generation (left by a rebuild that never finished, or by
    /// a crash before a retired one was removed). A home without `CURRENT` starts at
    /// generation 1; whatever else it held (the older layout kept the index in `root`
    /// itself) is removed, since the index is derived.
    pub fn open(root: &Path) -> Result<IndexHome, IndexError> {
        fs::create_dir_all(root).map_err(IndexError::io("creating the index home"))?;
        let current = match read_current(root)? {
            Some(current) => current,
            None => {
                if layout::inspect(root)? == layout::DirState::Populated {
                    info!(dir = %root.display(), "index home has no generation file; clearing it");
                    layout::clear(root)?;
                }
                let home = IndexHome {
                    root: root.to_path_buf(),
                    current: 1,
                };
                fs::create_dir_all(home.generation_dir(1)).map_err(IndexError::io("creating a generation"))?;
                home.write_current(1)?;
                return Ok(home);
            }
        };
        let home = IndexHome {
            root: root.to_path_buf(),
            current,
        };
        for generation in home.generations()? {
            if generation != current {
                info!(generation, "removing an index generation that is not in use");
                home.remove_generation(generation)?;
            }
        }
        Ok(home)
    }

    /// The directory of the generation in use.
    pub fn current_dir(&self) -> PathBuf {
        self.generation_dir(self.current)
    }

    /// The generation in use.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// An empty directory for the next generation, and its number. Until
    /// [`promote`](Self::promote) it is not in use: a restart removes it.
    pub fn prepare_next(&self) -> Result<(u64, PathBuf), IndexError> {
        let next = self
            .generations()?
            .into_iter()
            .max()
            .unwrap_or(self.current)
            .max(self.current)
            + 1;
        let dir = self.generation_dir(next);
        layout::clear(&dir)?;
        Ok((next, dir))
    }

    /// Makes `generation` the one in use, durably. The previous one is left on disk for the
    /// caller to [`remove_generation`](Self::remove_generation) once nothing reads it.
    pub fn promote(&mut self, generation: u64) -> Result<(), IndexError> {
        self.write_current(generation)?;
        self.current = generation;
        Ok(())
    }

    /// Deletes a generation's directory. The one in use is refused.
    pub fn remove_generation(&self, generation: u64) -> Result<(), IndexError> {
        if generation == self.current {
            return Err(IndexError::InvalidInput {
                reason: "the generation in use cannot be removed",
            });
        }
        match fs::remove_dir_all(self.generation_dir(generation)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(IndexError::Io {
                context: "removing an index generation",
                source: error,
            }),
        }
    }

    fn generation_dir(&self, generation: u64) -> PathBuf {
        self.root.join(format!("{GENERATION_PREFIX}{generation}"))
    }

    fn generations(&self) -> Result<Vec<u64>, IndexError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(IndexError::io("reading the index home"))? {
            let entry = entry.map_err(IndexError::io("listing the index home"))?;
            if let Some(generation) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix(GENERATION_PREFIX))
                .and_then(|number| number.parse::<u64>().ok())
            {
                found.push(generation);
            }
        }
        Ok(found)
    }

    fn write_current(&self, generation: u64) -> Result<(), IndexError> {
        let tmp = self.root.join(CURRENT_TMP_FILE);
        let mut file = fs::File::create(&tmp).map_err(IndexError::io("creating the generation file"))?;
        file.write_all(format!("{GENERATION_PREFIX}{generation}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(IndexError::io("writing the generation file"))?;
        drop(file);
        fs::rename(&tmp, self.root.join(CURRENT_FILE)).map_err(IndexError::io("installing the generation file"))?;
        layout::sync_dir(&self.root)
    }
}

fn read_current(root: &Path) -> Result<Option<u64>, IndexError> {
    let text = match fs::read_to_string(root.join(CURRENT_FILE)) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(IndexError::Io {
                context: "reading the generation file",
                source: error,
            })
        }
    };
    let generation = text
        .trim()
        .strip_prefix(GENERATION_PREFIX)
        .and_then(|number| number.parse::<u64>().ok());
    match generation {
        Some(generation) => Ok(Some(generation)),
        None => {
            // Unreadable: start over at a generation past any that exists.
            info!(dir = %root.display(), "index generation file is unreadable; clearing the index home");
            layout::clear(root)?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_home_starts_at_generation_one() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let home = IndexHome::open(&tmp.path().join("index"))?;
        assert_eq!(home.current(), 1);
        assert!(home.current_dir().is_dir());
        assert_eq!(IndexHome::open(&tmp.path().join("index"))?.current(), 1);
        Ok(())
    }

    #[test]
    fn promote_survives_reopen_and_unfinished_generations_are_removed() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("index");
        let mut home = IndexHome::open(&root)?;
        let (second, dir) = home.prepare_next()?;
        fs::write(dir.join("segment"), b"x")?;
        home.promote(second)?;
        home.remove_generation(1)?;
        assert!(home.remove_generation(second).is_err(), "the generation in use stays");
        let (third, unfinished) = home.prepare_next()?;
        fs::write(unfinished.join("segment"), b"x")?;
        drop(home);

        let home = IndexHome::open(&root)?;
        assert_eq!(home.current(), second);
        assert!(home.current_dir().join("segment").is_file());
        assert!(
            !root.join(format!("g{third}")).exists(),
            "an unfinished rebuild is removed"
        );
        assert!(!root.join("g1").exists());
        Ok(())
    }

    #[test]
    fn the_older_layout_and_a_damaged_generation_file_are_cleared() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("index");
        fs::create_dir_all(&root)?;
        fs::write(root.join("meta.json"), b"{}")?;
        let home = IndexHome::open(&root)?;
        assert_eq!(home.current(), 1);
        assert!(!root.join("meta.json").exists());

        fs::write(root.join(CURRENT_FILE), b"nonsense")?;
        let home = IndexHome::open(&root)?;
        assert_eq!(home.current(), 1);
        assert!(home.current_dir().is_dir());
        Ok(())
    }
}
