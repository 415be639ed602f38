//! Reading a safetensors file defensively: its checksum verified, its header checked against
//! the file's size, and every tensor checked against the dtype and shape its user expects before
//! a byte of it is used.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::digest::{map_file, verify_sealed};
use crate::{Digest, Error, Result};

/// A safetensors file mapped into memory and verified.
pub struct SafetensorsFile {
    path: PathBuf,
    map: memmap2::Mmap,
    digest: Option<Digest>,
}

impl SafetensorsFile {
    /// Maps `path` and checks its sealed digest when it has one (see [`crate::digest`]).
    pub fn open(path: &Path) -> Result<Self> {
        let map = map_file(path)?;
        let digest = verify_sealed(path, &map)?;
        let file = SafetensorsFile {
            path: path.to_path_buf(),
            map,
            digest,
        };
        file.parse()?; // a header that does not describe the file is refused here, once
        Ok(file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The digest it was verified against; `None` for a file that records none.
    pub fn digest(&self) -> Option<Digest> {
        self.digest
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the file is empty (it never is, once opened).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map).map_err(|e| {
            Error::damaged(
                &self.path,
                format!("not a readable safetensors file ({e}); it is truncated or corrupt"),
            )
        })
    }

    /// The header's metadata value under `key`.
    pub fn metadata(&self, key: &str) -> Result<Option<String>> {
        let (_, header) = SafeTensors::read_metadata(&self.map)
            .map_err(|e| Error::damaged(&self.path, format!("not a readable safetensors header ({e})")))?;
        Ok(header.metadata().as_ref().and_then(|m| m.get(key).cloned()))
    }

    /// The names of the tensors in the file.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.parse()?.names().into_iter().map(str::to_string).collect())
    }

    /// Tensor `name`, which must be `dtype` with `shape` (`None` for a dimension any size).
    pub fn tensor(&self, name: &str, dtype: Dtype, shape: &[Option<usize>]) -> Result<TensorView<'_>> {
        let tensors = self.parse()?;
        let view = tensors
            .tensor(name)
            .map_err(|_| Error::damaged(&self.path, format!("it holds no tensor '{name}'")))?;
        let fits = view.dtype() == dtype
            && view.shape().len() == shape.len()
            && view
                .shape()
                .iter()
                .zip(shape)
                .all(|(&n, want)| want.is_none_or(|w| w == n));
        if !fits {
            let want: Vec<String> = shape
                .iter()
                .map(|d| d.map_or("any".to_string(), |d| d.to_string()))
                .collect();
            return Err(Error::damaged(
                &self.path,
                format!(
                    "tensor '{name}' is {:?} {:?}, but {dtype:?} [{}] is expected",
                    view.dtype(),
                    view.shape(),
                    want.join(", ")
                ),
            ));
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_tensor_of_another_shape_or_dtype_is_refused_with_both_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let data = vec![0u8; 24];
        let views = vec![("x", TensorView::new(Dtype::F32, vec![2, 3], &data).unwrap())];
        let (bytes, _) = crate::digest::seal(views, HashMap::new()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let file = SafetensorsFile::open(&path).unwrap();
        assert!(file.digest().is_some());
        assert!(file.tensor("x", Dtype::F32, &[Some(2), None]).is_ok());
        let e = file
            .tensor("x", Dtype::F32, &[Some(4), Some(3)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[2, 3]") && e.contains("[4, 3]") && e.contains("t.safetensors"),
            "{e}"
        );
        let e = file
            .tensor("x", Dtype::F16, &[None, None])
            .unwrap_err()
            .to_string();
        assert!(e.contains("F16"), "{e}");
        assert!(file.tensor("y", Dtype::F32, &[None]).is_err());
    }
}
