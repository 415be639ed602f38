//! The sha256 of a model file, remembered in a sidecar file `<file>.verified` (JSON: size,
//! modification time in nanoseconds, sha256) so that checking a registered model costs a hash
//! once and a `stat` on every later run. The verdict is trusted while the file's size and
//! modification time are the ones recorded; fetching the file again changes both.
//!
//! The sidecar is only an optimisation: one that is missing, unreadable or stale is ignored and
//! the file hashed again, and one that cannot be written (a read-only models directory) is simply
//! not written.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Verified {
    size: u64,
    mtime_ns: u64,
    sha256: String,
}

/// The sha256 (lowercase hex) of the file at `path`, from its sidecar when that matches the file,
/// otherwise hashed and recorded in the sidecar.
pub(crate) fn sha256_cached(path: &Path) -> Result<String> {
    let stamp = stamp(path)?;
    let sidecar = sidecar_path(path);
    if let Some(stamp) = stamp {
        if let Some(known) = read_sidecar(&sidecar) {
            if (known.size, known.mtime_ns) == stamp && is_sha256_hex(&known.sha256) {
                return Ok(known.sha256);
            }
        }
    }
    let sha256 = sha256_file(path)?;
    // Recorded only if the file did not change while it was hashed.
    if let Some((size, mtime_ns)) = stamp.filter(|&s| self::stamp(path).ok().flatten() == Some(s)) {
        write_sidecar(
            &sidecar,
            &Verified {
                size,
                mtime_ns,
                sha256: sha256.clone(),
            },
        );
    }
    Ok(sha256)
}

/// The sha256 (lowercase hex) of the file at `path`, read in full.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    hash_into(path, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Feeds the bytes of the file at `path` to `hasher`.
pub(crate) fn hash_into(path: &Path, hasher: &mut Sha256) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    std::io::copy(&mut file, hasher).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    Ok(())
}

/// Where the verdict on `path` is kept: `<file>.verified` beside it.
pub(crate) fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    path.with_file_name(name)
}

/// The file's size and modification time in nanoseconds; no time where the system has none.
fn stamp(path: &Path) -> Result<Option<(u64, u64)>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    Ok(mtime_ns(&meta).map(|mtime| (meta.len(), mtime)))
}

fn mtime_ns(meta: &Metadata) -> Option<u64> {
    let since_epoch = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_nanos()).ok()
}

fn read_sidecar(sidecar: &Path) -> Option<Verified> {
    let text = std::fs::read_to_string(sidecar).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the sidecar through a temporary file and a rename, so that a reader never sees half of
/// one; any failure leaves no sidecar and is not an error.
fn write_sidecar(sidecar: &Path, verified: &Verified) {
    if let Ok(json) = serde_json::to_string(verified) {
        let _ = loupe_util::write_atomically(sidecar, json.as_bytes());
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn the_verdict_is_recorded_and_reused_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.gguf");
        std::fs::write(&file, "hello").unwrap();
        assert_eq!(sha256_cached(&file).unwrap(), HELLO_SHA256);
        let sidecar = dir.path().join("model.gguf.verified");
        let recorded = read_sidecar(&sidecar).expect("a sidecar");
        assert_eq!(recorded.size, 5);
        assert_eq!(recorded.sha256, HELLO_SHA256);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        // A second call believes the sidecar (shown here by a planted answer).
        let planted = Verified {
            sha256: "a".repeat(64),
            ..recorded
        };
        std::fs::write(&sidecar, serde_json::to_string(&planted).unwrap()).unwrap();
        assert_eq!(sha256_cached(&file).unwrap(), "a".repeat(64));

        // A changed file (size and time) is hashed again.
        std::fs::write(&file, "hello, world").unwrap();
        let again = sha256_cached(&file).unwrap();
        assert_eq!(again, sha256_file(&file).unwrap());
        assert_ne!(again, HELLO_SHA256);
    }

    #[test]
    fn a_garbled_sidecar_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.gguf");
        std::fs::write(&file, "hello").unwrap();
        let sidecar = sidecar_path(&file);
        for garbage in ["", "{", "[1,2]", "{\"size\":5,\"mtime_ns\":1,\"sha256\":\"zz\"}"] {
            std::fs::write(&sidecar, garbage).unwrap();
            assert_eq!(sha256_cached(&file).unwrap(), HELLO_SHA256);
        }
        // A sidecar with the right stamp but a malformed hash is not believed either.
        let meta = std::fs::metadata(&file).unwrap();
        let bad = Verified {
            size: 5,
            mtime_ns: mtime_ns(&meta).unwrap(),
            sha256: "not hex".into(),
        };
        std::fs::write(&sidecar, serde_json::to_string(&bad).unwrap()).unwrap();
        assert_eq!(sha256_cached(&file).unwrap(), HELLO_SHA256);
    }

    #[test]
    fn an_unwritable_sidecar_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.gguf");
        std::fs::write(&file, "hello").unwrap();
        // A directory in the sidecar's place: the rename onto it fails (even for root, whom
        // read-only permissions do not stop).
        let sidecar = sidecar_path(&file);
        std::fs::create_dir(&sidecar).unwrap();
        std::fs::write(sidecar.join("keep"), "x").unwrap();
        assert_eq!(sha256_cached(&file).unwrap(), HELLO_SHA256);
        assert_eq!(sha256_cached(&file).unwrap(), HELLO_SHA256);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file is left behind");
    }

    /// Run as root, permissions do not stop the write and this passes trivially; the test above
    /// covers a failing write for everyone.
    #[cfg(unix)]
    #[test]
    fn a_read_only_directory_is_not_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.gguf");
        std::fs::write(&file, "hello").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let result = sha256_cached(&file);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(result.unwrap(), HELLO_SHA256);
    }
}
