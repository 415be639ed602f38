//! A check of a GGUF file's header against the file's size, made before candle reads the file.
//!
//! candle's `gguf_file::Content::read` trusts the header: it allocates as many entries as a count
//! claims and as many bytes as a length claims, so one flipped high bit in a count (2^45 metadata
//! entries) ends the process with a capacity-overflow panic or an allocation abort rather than an
//! error. This pass walks the same header with a reader that checks every count and length against
//! the bytes left in the file before using it and skips values instead of storing them, then checks
//! that every tensor's data lies inside the file. A file that passes is read by candle with
//! allocations bounded by the file's size.
//!
//! The format (ggml's docs/gguf.md), all little-endian: the magic "GGUF"; a u32 version (1 to 3);
//! the tensor count; the metadata count; each metadata entry (key string, u32 value type, value);
//! each tensor info (name string, u32 n_dims, n_dims dims, u32 ggml type, u64 offset into the data);
//! padding to the alignment (`general.alignment`, default 32); the tensor data. Counts, string
//! lengths, array lengths and dims are u64 from version 2 on and u32 in version 1. A string is its
//! length then its bytes; an array is its u32 element type, its length, then the elements.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use candle_core::quantized::GgmlDType;
use loupe_util::Problems as _;

use crate::{Error, Result};

/// candle's alignment when a file does not set `general.alignment`.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// The spec limits keys to 65,535 bytes; tensor names are far shorter (64 bytes in ggml).
const MAX_NAME_BYTES: u64 = 65_535;
/// Arrays may nest; no model nests them more than once. candle reads them recursively, so deep
/// nesting would overflow its stack.
const MAX_ARRAY_NESTING: usize = 8;

/// Checks the GGUF file at `path` as the module docs say; an error names what is wrong.
pub(crate) fn check(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| Error::file(path, format!("cannot read its size: {e}")))?
        .len();
    let mut reader = Reader {
        inner: BufReader::new(file),
        pos: 0,
        len,
    };
    check_header(&mut reader).map_err(|problem| match problem {
        Problem::Io(e) => Error::file(path, format!("cannot read: {e}")),
        Problem::Corrupt(what) => Error::file(
            path,
            format!("{what}; the file is corrupt or truncated: delete it and fetch it again"),
        ),
    })
}

enum Problem {
    Io(std::io::Error),
    /// What in the header does not fit the file.
    Corrupt(String),
}

type Checked<T> = std::result::Result<T, Problem>;

fn corrupt<T>(what: String) -> Checked<T> {
    Err(Problem::Corrupt(what))
}

fn check_header(r: &mut Reader) -> Checked<()> {
    let magic: [u8; 4] = r.bytes("the magic number")?;
    if &magic != b"GGUF" {
        return corrupt(format!(
            "not a GGUF file: it starts with the bytes {:02x?}, not \"GGUF\"",
            magic
        ));
    }
    let version = r.u32("the version")?;
    // Version 1 wrote counts and lengths as u32, later versions as u64.
    let wide = match version {
        1 => false,
        2 | 3 => true,
        v => return corrupt(format!("GGUF version {v} is not one that loupe reads (1 to 3)")),
    };
    let tensor_count = r.count(wide, "the tensor count")?;
    let kv_count = r.count(wide, "the metadata count")?;
    // Each entry takes at least its length prefixes and type tags, so a count is checked against
    // the bytes left before anything is read for it.
    let min_kv = len_size(wide) + 4 + 1;
    let min_tensor = len_size(wide) + 4 + 4 + 8;
    r.fits(kv_count, min_kv, "metadata entries", "the header")?;
    r.fits(tensor_count, min_tensor, "tensors", "the header")?;

    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..kv_count {
        let key = r.name(wide, &format!("metadata key {i}"))?;
        let key_text = shown(&key);
        let value_type = r.u32(&format!("the type of metadata '{key_text}'"))?;
        // candle keeps the last value of a repeated key, and strips trailing NULs from strings.
        if trim_nul(&key) == b"general.alignment" {
            alignment = alignment_value(r, value_type, wide, &key_text)?;
            if alignment == 0 {
                return corrupt("general.alignment is 0".into());
            }
        } else {
            skip_value(r, value_type, wide, &key_text, 0)?;
        }
    }

    let mut tensors = Vec::new();
    for i in 0..tensor_count {
        let name = shown(&r.name(wide, &format!("the name of tensor {i}"))?);
        let n_dims = r.u32(&format!("the dimension count of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return corrupt(format!(
                "tensor '{name}' claims {n_dims} dimensions; ggml tensors have at most {MAX_DIMS}"
            ));
        }
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let dim = r.count(wide, &format!("the shape of tensor '{name}'"))?;
            elements = elements.checked_mul(dim).ok_or_else(|| {
                Problem::Corrupt(format!(
                    "tensor '{name}' claims a shape with more than 2^64 elements"
                ))
            })?;
        }
        let type_code = r.u32(&format!("the type of tensor '{name}'"))?;
        let Some(dtype) = ggml_dtype(type_code) else {
            return corrupt(format!(
                "tensor '{name}' has ggml type {type_code}, which is not a type candle reads"
            ));
        };
        let offset = r.u64(&format!("the data offset of tensor '{name}'"))?;
        let (block, block_bytes) = (dtype.block_size() as u64, dtype.type_size() as u64);
        if !elements.is_multiple_of(block) {
            return corrupt(format!(
                "tensor '{name}' has {} elements, not a whole number of {dtype:?} blocks of {block}",
                number(elements)
            ));
        }
        let bytes = (elements / block).checked_mul(block_bytes).ok_or_else(|| {
            Problem::Corrupt(format!(
                "tensor '{name}' claims {} elements, more than 2^64 bytes",
                number(elements)
            ))
        })?;
        tensors.push((name, offset, bytes));
    }

    // The data starts at the first multiple of the alignment after the header.
    let header_end = r.pos;
    let data_start = header_end
        .div_ceil(alignment)
        .checked_mul(alignment)
        .filter(|&start| start <= r.len);
    let data_len = match data_start {
        Some(start) => r.len - start,
        None if tensors.is_empty() => 0,
        None => {
            return corrupt(format!(
                "the header ends at byte {} and its alignment of {} puts the tensor data past the \
                 end of the file ({} bytes)",
                number(header_end),
                number(alignment),
                number(r.len)
            ))
        }
    };
    // Tensors do not share data, so together they fit in the data region too; this also bounds
    // what dequantizing every tensor can allocate.
    let mut total: u64 = 0;
    for (name, offset, bytes) in &tensors {
        let end = offset.checked_add(*bytes).filter(|&end| end <= data_len);
        if end.is_none() {
            return corrupt(format!(
                "tensor '{name}' claims {} bytes at offset {} of the tensor data, past its end \
                 (the file holds {} bytes of tensor data)",
                number(*bytes),
                number(*offset),
                number(data_len)
            ));
        }
        total = total.saturating_add(*bytes);
    }
    if total > data_len {
        return corrupt(format!(
            "the tensors claim {} bytes of data together, more than the {} bytes the file holds",
            number(total),
            number(data_len)
        ));
    }
    Ok(())
}

/// Bytes of a count or length: u64, or u32 in version 1.
fn len_size(wide: bool) -> u64 {
    if wide {
        8
    } else {
        4
    }
}

/// Size in bytes of one value of a fixed-size type; `None` for strings and arrays.
fn fixed_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1), // u8, i8, bool
        2 | 3 => Some(2),     // u16, i16
        4..=6 => Some(4),     // u32, i32, f32
        10..=12 => Some(8),   // u64, i64, f64
        _ => None,
    }
}

/// The fewest bytes one value of `value_type` takes, or `None` for an unknown type.
fn min_size(value_type: u32, wide: bool) -> Option<u64> {
    match value_type {
        8 => Some(len_size(wide)),     // string: its length
        9 => Some(4 + len_size(wide)), // array: element type and length
        t => fixed_size(t),
    }
}

fn skip_value(r: &mut Reader, value_type: u32, wide: bool, key: &str, depth: usize) -> Checked<()> {
    if let Some(size) = fixed_size(value_type) {
        return r.skip(size, &format!("metadata '{key}'"));
    }
    match value_type {
        8 => {
            let len = r.count(wide, &format!("the length of metadata '{key}'"))?;
            r.fits(len, 1, "bytes of string", &format!("metadata '{key}'"))?;
            r.skip(len, &format!("metadata '{key}'"))
        }
        9 => {
            if depth >= MAX_ARRAY_NESTING {
                return corrupt(format!(
                    "metadata '{key}' nests arrays more than {MAX_ARRAY_NESTING} deep"
                ));
            }
            let element_type = r.u32(&format!("the element type of metadata '{key}'"))?;
            let len = r.count(wide, &format!("the length of metadata '{key}'"))?;
            let Some(min) = min_size(element_type, wide) else {
                return corrupt(format!(
                    "metadata '{key}' is an array of unknown value type {element_type}"
                ));
            };
            r.fits(len, min, "array elements", &format!("metadata '{key}'"))?;
            match fixed_size(element_type) {
                // `fits` has checked that len * size does not overflow.
                Some(size) => r.skip(len * size, &format!("metadata '{key}'")),
                None => {
                    for _ in 0..len {
                        skip_value(r, element_type, wide, key, depth + 1)?;
                    }
                    Ok(())
                }
            }
        }
        t => corrupt(format!("metadata '{key}' has unknown value type {t}")),
    }
}

/// The value of `general.alignment` as candle reads it: an integer of up to 32 bits that is not
/// negative; any other value leaves the default.
fn alignment_value(r: &mut Reader, value_type: u32, wide: bool, key: &str) -> Checked<u64> {
    let what = "general.alignment";
    let value = match value_type {
        0 => Some(u64::from(r.bytes::<1>(what)?[0])),
        1 => Some(i8::from_le_bytes(r.bytes(what)?) as i64).and_then(non_negative),
        2 => Some(u64::from(u16::from_le_bytes(r.bytes(what)?))),
        3 => Some(i16::from_le_bytes(r.bytes(what)?) as i64).and_then(non_negative),
        4 => Some(u64::from(r.u32(what)?)),
        5 => Some(i32::from_le_bytes(r.bytes(what)?) as i64).and_then(non_negative),
        t => {
            skip_value(r, t, wide, key, 0)?;
            None
        }
    };
    Ok(value.unwrap_or(DEFAULT_ALIGNMENT))
}

fn non_negative(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

/// The candle type of a ggml type code (the `ggml_type` enum; 4 and 5 were removed types).
fn ggml_dtype(code: u32) -> Option<GgmlDType> {
    Some(match code {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..end]
}

/// A key or name for an error message: lossy UTF-8, cut short.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(trim_nul(bytes));
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(80).collect::<String>())
    } else {
        text.into_owned()
    }
}

/// `n` with thousands separators, and its power of two when it is huge (as corrupt counts are).
fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n >= 1 << 32 {
        out.push_str(&format!(" (about 2^{})", 63 - n.leading_zeros()));
    }
    out
}

/// Reads the header, knowing how many bytes are left; never allocates more than a name's bytes.
struct Reader {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Reader {
    fn left(&self) -> u64 {
        self.len - self.pos
    }

    /// An error unless `count` items of at least `min_bytes` each fit in the bytes left.
    fn fits(&self, count: u64, min_bytes: u64, items: &str, whose: &str) -> Checked<()> {
        match count.checked_mul(min_bytes) {
            Some(bytes) if bytes <= self.left() => Ok(()),
            _ => {
                let each = if min_bytes > 1 {
                    format!(" (each at least {min_bytes} bytes)")
                } else {
                    String::new()
                };
                corrupt(format!(
                    "{whose} claims {} {items}{each} but the file has only {} bytes left at byte {}",
                    number(count),
                    number(self.left()),
                    number(self.pos)
                ))
            }
        }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Checked<[u8; N]> {
        if (N as u64) > self.left() {
            return corrupt(format!(
                "the file ends at byte {} inside {what}",
                number(self.len)
            ));
        }
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(Problem::Io)?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Checked<u32> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Checked<u64> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    /// A count or length: u64, or u32 in version 1.
    fn count(&mut self, wide: bool, what: &str) -> Checked<u64> {
        if wide {
            self.u64(what)
        } else {
            Ok(u64::from(self.u32(what)?))
        }
    }

    fn skip(&mut self, n: u64, what: &str) -> Checked<()> {
        if n > self.left() {
            return corrupt(format!(
                "{what} claims {} bytes but the file has only {} bytes left at byte {}",
                number(n),
                number(self.left()),
                number(self.pos)
            ));
        }
        // n <= left <= the file's size, which is far below i64::MAX for any real file; a larger
        // skip goes through an absolute seek.
        match i64::try_from(n) {
            Ok(n) => self.inner.seek_relative(n).map_err(Problem::Io)?,
            Err(_) => {
                self.inner
                    .seek(std::io::SeekFrom::Start(self.pos + n))
                    .map_err(Problem::Io)?;
            }
        }
        self.pos += n;
        Ok(())
    }

    /// A key or tensor name: a string of at most [`MAX_NAME_BYTES`] that fits in the file.
    fn name(&mut self, wide: bool, what: &str) -> Checked<Vec<u8>> {
        let len = self.count(wide, &format!("the length of {what}"))?;
        if len > MAX_NAME_BYTES {
            return corrupt(format!(
                "{what} claims to be {} bytes long; GGUF names are at most {} bytes",
                number(len),
                number(MAX_NAME_BYTES)
            ));
        }
        self.fits(len, 1, "bytes", what)?;
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf).map_err(Problem::Io)?;
        self.pos += len;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a GGUF file by hand: `wide` for version 3 (u64 lengths), else version 1 (u32).
    struct Builder {
        bytes: Vec<u8>,
        wide: bool,
    }

    impl Builder {
        fn new(wide: bool, tensors: u64, kvs: u64) -> Self {
            let mut b = Builder {
                bytes: b"GGUF".to_vec(),
                wide,
            };
            b.u32(if wide { 3 } else { 1 });
            b.len(tensors);
            b.len(kvs);
            b
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.bytes.extend(v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.bytes.extend(v.to_le_bytes());
            self
        }
        fn len(&mut self, v: u64) -> &mut Self {
            if self.wide {
                self.u64(v)
            } else {
                self.u32(v as u32)
            }
        }
        fn string(&mut self, s: &str) -> &mut Self {
            self.len(s.len() as u64);
            self.bytes.extend(s.as_bytes());
            self
        }
        /// One f32 tensor of `n` elements at `offset`.
        fn tensor(&mut self, name: &str, n: u64, offset: u64) -> &mut Self {
            self.string(name).u32(1).len(n).u32(0).u64(offset)
        }
        /// Pads to `alignment` and appends `n` bytes of tensor data.
        fn data(&mut self, alignment: usize, n: usize) -> Vec<u8> {
            let mut bytes = self.bytes.clone();
            bytes.resize(bytes.len().div_ceil(alignment) * alignment + n, 0);
            bytes
        }
    }

    fn check_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, bytes).unwrap();
        check(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn versions_1_and_3_are_walked() {
        for wide in [false, true] {
            let mut b = Builder::new(wide, 1, 2);
            b.string("general.name").u32(8).string("tiny");
            b.string("tokenizer.ggml.tokens").u32(9).u32(8).len(2);
            b.string("a").string("b");
            b.tensor("w", 8, 0);
            let bytes = b.data(32, 32);
            assert_eq!(
                check_bytes(&bytes),
                Ok(()),
                "version {}",
                if wide { 3 } else { 1 }
            );
            let err = check_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
            assert!(err.contains("tensor 'w' claims 32 bytes at offset 0"), "{err}");
        }
    }

    #[test]
    fn the_alignment_is_read_as_candle_reads_it() {
        let mut b = Builder::new(true, 1, 1);
        b.string("general.alignment").u32(4).u32(64);
        b.tensor("w", 8, 0);
        // 32 bytes of data after padding to 64: the file must reach that far.
        let bytes = b.data(64, 32);
        assert_eq!(check_bytes(&bytes), Ok(()));
        let short = b.data(32, 32);
        assert!(check_bytes(&short).is_err());

        let mut b = Builder::new(true, 0, 1);
        b.string("general.alignment").u32(4).u32(0);
        let err = check_bytes(&b.data(1, 0)).unwrap_err();
        assert!(err.contains("general.alignment is 0"), "{err}");
    }

    #[test]
    fn deeply_nested_arrays_are_refused() {
        let mut b = Builder::new(true, 0, 1);
        b.string("deep").u32(9);
        for _ in 0..100 {
            b.u32(9).len(1);
        }
        b.u32(4).len(0);
        let err = check_bytes(&b.data(1, 0)).unwrap_err();
        assert!(err.contains("nests arrays more than 8 deep"), "{err}");
    }

    #[test]
    fn tensors_that_overlap_beyond_the_data_are_refused() {
        let mut b = Builder::new(true, 2, 0);
        b.tensor("a", 8, 0).tensor("b", 8, 0);
        let err = check_bytes(&b.data(32, 32)).unwrap_err();
        assert!(
            err.contains("the tensors claim 64 bytes of data together"),
            "{err}"
        );
    }

    #[test]
    fn shapes_are_checked() {
        let mut b = Builder::new(true, 1, 0);
        b.string("w").u32(5);
        let err = check_bytes(&b.data(1, 64)).unwrap_err();
        assert!(err.contains("claims 5 dimensions"), "{err}");

        let mut b = Builder::new(true, 1, 0);
        b.string("w").u32(2).u64(1 << 40).u64(1 << 40).u32(0).u64(0);
        let err = check_bytes(&b.data(32, 0)).unwrap_err();
        assert!(err.contains("more than 2^64 elements"), "{err}");

        // 33 elements of Q4_0 (blocks of 32).
        let mut b = Builder::new(true, 1, 0);
        b.string("w").u32(1).u64(33).u32(2).u64(0);
        let err = check_bytes(&b.data(32, 64)).unwrap_err();
        assert!(err.contains("not a whole number of Q4_0 blocks of 32"), "{err}");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1_234), "1,234");
        assert_eq!(number(1_234_567), "1,234,567");
        assert_eq!(number(1 << 45), "35,184,372,088,832 (about 2^45)");
    }

    #[test]
    fn trailing_nuls_are_ignored_in_names() {
        assert_eq!(trim_nul(b"general.alignment\0\0"), b"general.alignment");
        assert_eq!(trim_nul(b"\0"), b"");
    }
}
