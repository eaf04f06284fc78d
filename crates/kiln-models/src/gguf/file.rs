//! A memory-mapped GGUF file: its metadata, its tensor table and its tensors' data.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

#[cfg(doc)]
use super::DEFAULT_ALIGNMENT;
use super::dequant::dequantize;
use super::ggml_type::GgmlType;
use super::parse::parse;
use super::value::{FromGgufValue, GgufArray, GgufValue, ScalarDisplay};
use crate::{ModelError, Result};

/// The description of one tensor in a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub(super) name: String,
    pub(super) dims: Vec<u64>,
    pub(super) ggml_type: GgmlType,
    pub(super) offset: u64,
    pub(super) n_elements: usize,
    pub(super) n_bytes: Option<usize>,
}

impl GgufTensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions as stored in the file, fastest-varying first (`dims()[0]` is ggml's `ne[0]`,
    /// the length of a row).
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// Row-major shape, outermost first: [`dims`](Self::dims) reversed. A ggml tensor with
    /// `ne = [576, 49152]` has shape `[49152, 576]`.
    pub fn shape(&self) -> Vec<usize> {
        // `open` checked that every dimension and their product fit in `usize`.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The element type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Offset of the tensor's data from the start of the file's data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of elements (the product of the dimensions).
    pub fn n_elements(&self) -> usize {
        self.n_elements
    }

    /// Size of the tensor's data in bytes, or `None` when the type is unknown.
    pub fn n_bytes(&self) -> Option<usize> {
        self.n_bytes
    }
}

/// A memory-mapped GGUF file: its metadata and tensor table, with tensor data read on demand.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    alignment: u64,
    data_offset: usize,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("file_len", &self.mmap.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and memory-maps a GGUF file, parsing its header, metadata and tensor table.
    ///
    /// Tensor data is not read, but every tensor's data range is checked to lie inside the file,
    /// so a truncated file fails here.
    ///
    /// The file must not be modified or truncated while the returned value is alive: its data is
    /// read through the memory map, and changing the file underneath changes what is read (or,
    /// if it shrinks, makes reads fault).
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`] when the file cannot be opened or mapped; [`ModelError::Gguf`] when it
    /// is not a GGUF v2/v3 little-endian file, is truncated or is malformed (the message names
    /// what was being read).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            return Err(ModelError::Gguf {
                path: path.clone(),
                message: "truncated file: the file is empty, expected a GGUF header".into(),
            });
        }
        let mmap = map_read_only(&file).map_err(io_err)?;
        let parsed = parse(&mmap).map_err(|message| ModelError::Gguf {
            path: path.clone(),
            message,
        })?;
        Ok(Self {
            path,
            mmap,
            version: parsed.version,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            by_name: parsed.by_name,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data: `general.alignment`, or [`DEFAULT_ALIGNMENT`].
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section (the first tensor's data) in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset as u64
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The metadata value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The metadata value of `key`.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing.
    pub fn value(&self, key: &str) -> Result<&GgufValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.error(format!("metadata key `{key}` is missing")))
    }

    /// The metadata value of `key` as `T`.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or of another type.
    pub(crate) fn get_as<'a, T: FromGgufValue<'a>>(&'a self, key: &str) -> Result<T> {
        let value = self.value(key)?;
        T::from_value(value).ok_or_else(|| self.mistyped(key, value, T::EXPECTED))
    }

    /// An integer metadata value as `u32`. Integers of any width are accepted if the value
    /// fits (GGUF writers differ in the width they use for counts).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing, not an integer, or out of range.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_as(key)
    }

    /// An integer metadata value as `u64`; integers of any width are accepted if not negative.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing, not an integer, or negative.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_as(key)
    }

    /// An integer metadata value as `i64`; integers of any width are accepted if they fit.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing, not an integer, or out of range.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get_as(key)
    }

    /// A float metadata value as `f32` (a `float64` value is rounded).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not a float.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_as(key)
    }

    /// A float metadata value as `f64`.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not a float.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get_as(key)
    }

    /// A `bool` metadata value.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not a `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.get_as(key)
    }

    /// A string metadata value.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get_as(key)
    }

    /// An array metadata value of any element type.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not an array.
    pub fn get_array(&self, key: &str) -> Result<&GgufArray> {
        self.get_as(key)
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        self.get_as(key)
    }

    /// An array of `float32` (e.g. `tokenizer.ggml.scores`).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not an array of `float32`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        self.get_as(key)
    }

    /// An array of `int32` (e.g. `tokenizer.ggml.token_type`).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not an array of `int32`.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        self.get_as(key)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The description of the tensor called `name`.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the tensor when the file has none of that name.
    pub fn tensor_info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.by_name
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .ok_or_else(|| self.error(format!("no tensor named `{name}`")))
    }

    /// The raw bytes of the tensor called `name`, as stored in the file.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the tensor when it does not exist or its type is unknown
    /// (so that its size is unknown).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        self.bytes_of(info)
    }

    /// The tensor called `name`, dequantized to `f32`, with its row-major shape (outermost
    /// first, see [`GgufTensorInfo::shape`]).
    ///
    /// Supported types are those for which [`GgmlType::can_dequantize`] holds. Values equal
    /// those of ggml's reference dequantization (`dequantize_row_*`): the same `f32` operations
    /// are done in the same order.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the tensor when it does not exist or its type cannot be
    /// dequantized (the message names the type).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self.tensor_info(name)?;
        if !info.ggml_type.can_dequantize() {
            return Err(self.error(format!(
                "tensor `{name}` has type {}, which cannot be dequantized (supported: F32, F16, \
                 BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)",
                info.ggml_type
            )));
        }
        let bytes = self.bytes_of(info)?;
        let mut values = vec![0f32; info.n_elements];
        dequantize(info.ggml_type, bytes, &mut values).map_err(|message| {
            self.error(format!("tensor `{name}` ({}): {message}", info.ggml_type))
        })?;
        Ok((values, info.shape()))
    }

    fn bytes_of(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let n_bytes = info.n_bytes.ok_or_else(|| {
            self.error(format!(
                "tensor `{}` has {}, so its size is unknown",
                info.name, info.ggml_type
            ))
        })?;
        // `open` checked this range; the checks here only keep this function total.
        let start = usize::try_from(info.offset)
            .ok()
            .and_then(|o| o.checked_add(self.data_offset));
        start
            .and_then(|s| Some(s..s.checked_add(n_bytes)?))
            .and_then(|range| self.mmap.get(range))
            .ok_or_else(|| {
                self.error(format!(
                    "truncated file: the data of tensor `{}` lies past the end of the file",
                    info.name
                ))
            })
    }

    fn error(&self, message: String) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            message,
        }
    }

    fn mistyped(&self, key: &str, value: &GgufValue, expected: &str) -> ModelError {
        let found = match value {
            GgufValue::Array(array) => format!("{} ({} elements)", value.type_name(), array.len()),
            GgufValue::String(s) if s.len() > 64 => format!("a string of {} bytes", s.len()),
            other => format!("{} {}", other.type_name(), ScalarDisplay(other)),
        };
        self.error(format!(
            "metadata key `{key}`: expected {expected}, found {found}"
        ))
    }
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map_read_only(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the file was opened read-only and the map is only ever read, through `&[u8]`.
    // Memory maps are undefined behaviour in Rust's model only if the file is modified or
    // truncated by someone else while mapped; `GgufFile::open` documents that the file must not
    // change while the `GgufFile` is alive. All reads of the map are bounds-checked against the
    // length recorded when mapping.
    unsafe { Mmap::map(file) }
}
