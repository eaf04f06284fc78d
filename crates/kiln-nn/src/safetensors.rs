//! Host tensors and safetensors files: reading any float tensor as f32, writing f32 tensors
//! atomically (a temporary file in the same folder, then a rename).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::{NnError, Result};

/// A tensor on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Copies a tensor to the host.
    pub fn of<const D: usize>(t: Tensor<D>) -> Self {
        Self {
            shape: t.dims().to_vec(),
            data: t.into_data().convert::<f32>().iter::<f32>().collect(),
        }
    }

    /// A tensor on `device` with these values (an empty tensor when the rank is not `D`).
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        let shape: [usize; D] = self.shape.clone().try_into().unwrap_or([0; D]);
        Tensor::from_data(TensorData::new(self.data.clone(), shape), device)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
///
/// # Errors
/// I/O errors naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| NnError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| NnError::io(path, e))
}

/// Writes f32 tensors as a safetensors file (atomically), with PEFT's `{"format": "pt"}`
/// metadata.
///
/// # Errors
/// I/O or serialization errors naming the file.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), b, t.shape.clone())
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (k, b, shape) in &bytes {
        let view =
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b).map_err(|e| {
                NnError::Safetensors {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{k}`: {e}"),
                }
            })?;
        views.push((k.clone(), view));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::serialize(views, Some(meta)).map_err(|e| NnError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &data)
}

/// Reads every tensor of a safetensors file as f32 (F32, F16 and BF16 are accepted).
///
/// # Errors
/// I/O errors, a malformed file or another dtype, naming the file and tensor.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = fs::read(path).map_err(|e| NnError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| NnError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(NnError::Safetensors {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{name}` has unsupported dtype {other:?}"),
                });
            }
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounded fuzzing of the safetensors reader: mutations of a valid file's header (and
    /// truncations) read to tensors whose data fills their shape, or to an error naming the
    /// file; never a panic.
    #[test]
    fn mutated_headers_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "a.lora_A.weight".to_string(),
            HostTensor {
                shape: vec![2, 3],
                data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            },
        );
        tensors.insert(
            "b".to_string(),
            HostTensor {
                shape: vec![4],
                data: vec![0.5; 4],
            },
        );
        write_safetensors(&path, &tensors).unwrap();
        let seed = fs::read(&path).unwrap();
        assert_eq!(read_safetensors(&path).unwrap(), tensors);
        let header = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut read = 0;
        for _ in 0..400 {
            let mut b = seed.clone();
            if next() % 5 == 0 {
                b.truncate((next() % b.len() as u64) as usize);
            } else {
                for _ in 0..1 + next() % 3 {
                    let at = (next() % header as u64) as usize;
                    b[at] = match next() % 5 {
                        0 => b'9',
                        1 => b'"',
                        2 => 0xFF,
                        _ => next() as u8,
                    };
                }
            }
            fs::write(&path, &b).unwrap();
            match read_safetensors(&path) {
                Ok(got) => {
                    read += 1;
                    for (name, t) in &got {
                        assert_eq!(t.data.len(), t.shape.iter().product::<usize>(), "{name}");
                    }
                }
                Err(e) => assert!(e.to_string().contains("t.safetensors"), "{e}"),
            }
        }
        assert!(read > 0, "no mutation kept the file readable");
    }
}
