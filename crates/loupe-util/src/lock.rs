//! One writer per directory: an exclusive advisory lock held for a command's lifetime.
//!
//! The lock is an OS file lock (`flock` on Unix, `LockFileEx` on Windows) on `.loupe-lock` inside
//! the directory. The OS drops it when the process exits, however it exits, so a killed run never
//! leaves a stale lock; the file itself stays and only says who held it last.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The lock file's name inside a locked directory. Readers and `loupe verify` skip it.
pub const LOCK_FILE: &str = ".loupe-lock";

/// An exclusive write lock on a directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    // Held open: closing the file releases the lock.
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it for writing, or fails at once with
    /// [`Error::Locked`] naming the directory and the process holding it. `what` says who holds
    /// it (e.g. "loupe capture"), for the message another writer gets.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "cannot create the directory", e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, "cannot open the lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "it has not said which yet".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, "cannot lock", e)),
        }
        let say_who = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "pid {}, {what}", std::process::id())
        };
        // The lock is held; a full disk that keeps us from saying who holds it changes nothing.
        let _ = say_who(&mut file);
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = DirLock::acquire(&run, "loupe test").unwrap();
        // A second open file description conflicts with the first, even in the same process.
        let e = DirLock::acquire(&run, "loupe other").unwrap_err();
        let message = e.to_string();
        assert!(matches!(e, Error::Locked { .. }), "{message}");
        assert!(
            message.contains(&format!("pid {}, loupe test", std::process::id())),
            "{message}"
        );
        assert!(message.contains("run"), "{message}");
        drop(first);
        DirLock::acquire(&run, "loupe other").unwrap();
    }
}
