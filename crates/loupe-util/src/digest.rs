//! Checksums: xxh3-64 (about as fast as reading memory, so verifying costs little next to using
//! the data), of whole files and of "sealed" safetensors files that carry their own.
//!
//! A sealed safetensors file holds its digest in its header metadata under
//! [`CONTENT_DIGEST_KEY`]: the xxh3 of the whole file with that value written as zeros. It
//! covers the header (names, shapes, dtypes, metadata) and every data byte, and any tool that
//! reads safetensors (SAELens, PyTorch) reads the file as usual.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use safetensors::View;
use xxhash_rust::xxh3::Xxh3;

use crate::{Error, Result};

/// The header metadata key of a sealed safetensors file's digest.
pub const CONTENT_DIGEST_KEY: &str = "loupe.xxh3";

/// The digest's value while the file is hashed: 16 zeros, as long as any digest.
const PLACEHOLDER: &str = "0000000000000000";

/// An xxh3-64 digest, shown as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digest(pub u64);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // Lowercase only, as written: a flipped case bit is a changed byte too.
        if s.len() != 16
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!("'{s}' is not 16 lowercase hex digits"));
        }
        u64::from_str_radix(s, 16)
            .map(Digest)
            .map_err(|_| format!("'{s}' is not 16 hex digits"))
    }
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(xxhash_rust::xxh3::xxh3_64(bytes))
    }

    /// Size and digest of a file.
    pub fn of_file(path: &Path) -> Result<(u64, Self)> {
        let map = map_file(path)?;
        Ok((map.len() as u64, Digest::of(&map)))
    }
}

/// Maps a file into memory for reading (an empty file maps to an empty slice).
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    // SAFETY: loupe writes files once, through a rename, and never changes them in place; a file
    // changed under us by something else is at worst read wrong, which the digest then reports.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, "cannot read", e))
}

/// Serializes tensors as a sealed safetensors file (see the module docs): returns its bytes and
/// digest. `metadata` must not use [`CONTENT_DIGEST_KEY`].
pub fn seal<S, V, I>(
    tensors: I,
    metadata: HashMap<String, String>,
) -> std::result::Result<(Vec<u8>, Digest), String>
where
    S: AsRef<str> + Ord + std::fmt::Display,
    V: View,
    I: IntoIterator<Item = (S, V)>,
{
    if metadata.contains_key(CONTENT_DIGEST_KEY) {
        return Err(format!(
            "metadata key {CONTENT_DIGEST_KEY} is reserved for the digest"
        ));
    }
    let mut metadata = metadata;
    metadata.insert(CONTENT_DIGEST_KEY.to_string(), PLACEHOLDER.to_string());
    let mut bytes = safetensors::serialize(tensors, Some(metadata)).map_err(|e| e.to_string())?;
    let at = digest_position(&bytes)
        .ok_or("the serialized header does not hold the digest field where expected")?;
    let digest = Digest::of(&bytes);
    bytes[at..at + 16].copy_from_slice(digest.to_string().as_bytes());
    Ok((bytes, digest))
}

/// Checks a sealed safetensors file's bytes against the digest its header holds: `Ok(Some)`
/// when it matches, `Ok(None)` when the file holds no digest (written by another tool, or by
/// loupe before it recorded them), and [`Error::Damaged`] otherwise.
pub fn verify_sealed(path: &Path, bytes: &[u8]) -> Result<Option<Digest>> {
    let header_len = header_len(path, bytes)?;
    let Some(at) = digest_position(bytes) else {
        // A digest field with a few bits flipped is damage, not a file that never had one.
        if has_near_miss(&bytes[8..8 + header_len], digest_field().as_bytes()) {
            return Err(Error::damaged(
                path,
                "its checksum field is damaged; some bytes changed on disk since it was written. \
                 Restore it from a copy or write it again",
            ));
        }
        return Ok(None);
    };
    let recorded: Digest = std::str::from_utf8(&bytes[at..at + 16])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::damaged(path, "its recorded checksum is not a checksum"))?;
    debug_assert!(at + 16 <= 8 + header_len);
    let mut hasher = Xxh3::new();
    hasher.update(&bytes[..at]);
    hasher.update(PLACEHOLDER.as_bytes());
    hasher.update(&bytes[at + 16..]);
    let actual = Digest(hasher.digest());
    if actual != recorded {
        return Err(Error::damaged(
            path,
            format!(
                "its contents do not match the checksum recorded when it was written ({actual} instead of {recorded}); \
                 some bytes changed on disk since. Restore it from a copy or write it again"
            ),
        ));
    }
    Ok(Some(actual))
}

/// The length of a safetensors header, checked against the file's size.
fn header_len(path: &Path, bytes: &[u8]) -> Result<usize> {
    let Some(len) = bytes.get(..8) else {
        return Err(Error::damaged(
            path,
            format!(
                "it is {} bytes long, too short for a safetensors file",
                bytes.len()
            ),
        ));
    };
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if len > (bytes.len() - 8) as u64 {
        return Err(Error::damaged(
            path,
            format!(
                "its header claims {len} bytes but the file has {} after the length; it is truncated or corrupt",
                bytes.len() - 8
            ),
        ));
    }
    Ok(len as usize)
}

/// The digest field's opening, `"loupe.xxh3":"`, as safetensors writes it (compact JSON; inside
/// another string value the quotes would be escaped, so it occurs only as the field itself).
fn digest_field() -> String {
    format!("\"{CONTENT_DIGEST_KEY}\":\"")
}

/// Where the 16 digits of the digest start in a safetensors file, if its header has them.
fn digest_position(bytes: &[u8]) -> Option<usize> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(len).ok()?)?)?;
    let key = digest_field();
    let start = header.windows(key.len()).position(|w| w == key.as_bytes())? + key.len();
    (header.get(start + 16) == Some(&b'"')).then_some(8 + start)
}

/// Whether `header` holds `field` with at most 3 bits changed (or with its value's closing quote
/// changed, when the field itself is intact).
fn has_near_miss(header: &[u8], field: &[u8]) -> bool {
    header.windows(field.len()).any(|w| {
        w.iter()
            .zip(field)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum::<u32>()
            <= 3
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;

    fn sealed() -> Vec<u8> {
        let data: Vec<u8> = (0..48u8).collect();
        let views = vec![(
            "w".to_string(),
            TensorView::new(Dtype::F32, vec![3, 4], &data).unwrap(),
        )];
        let metadata = HashMap::from([("note".to_string(), "a \"quoted\" value".to_string())]);
        seal(views, metadata).unwrap().0
    }

    #[test]
    fn a_sealed_file_verifies_and_reads_as_plain_safetensors() {
        let bytes = sealed();
        let digest = verify_sealed(Path::new("w.safetensors"), &bytes)
            .unwrap()
            .unwrap();
        assert_ne!(digest, Digest(0));
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("w").unwrap().shape(), &[3, 4]);
    }

    /// Caught by the checksum, or (a changed header length) by the header no longer parsing,
    /// which `SafetensorsFile::open` checks next.
    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = sealed();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                let result = verify_sealed(Path::new("w.safetensors"), &damaged);
                let unreadable = safetensors::SafeTensors::deserialize(&damaged).is_err();
                assert!(
                    result.is_err() || unreadable,
                    "byte {i} bit {bit} passed: {result:?}"
                );
            }
        }
    }

    #[test]
    fn a_file_without_a_digest_is_reported_as_such() {
        let data = [0u8; 4];
        let views = vec![("w", TensorView::new(Dtype::F32, vec![1], &data).unwrap())];
        let bytes = safetensors::serialize(views, None).unwrap();
        assert_eq!(verify_sealed(Path::new("w"), &bytes).unwrap(), None);
    }

    #[test]
    fn a_header_longer_than_the_file_is_damage_not_a_panic() {
        let mut bytes = sealed();
        bytes[..8].copy_from_slice(&(1u64 << 50).to_le_bytes());
        let e = verify_sealed(Path::new("w"), &bytes).unwrap_err().to_string();
        assert!(e.contains("truncated or corrupt"), "{e}");
        assert!(verify_sealed(Path::new("w"), &bytes[..5]).is_err());
    }
}
