//! Reader for GGUF model files (versions 2 and 3, little-endian), with dequantization to `f32`.
//!
//! A GGUF file holds a header, a table of typed metadata key/value pairs, a table of tensor
//! descriptions, and the tensor data, each tensor aligned to `general.alignment` bytes (32 when
//! the key is absent). [`GgufFile::open`] memory-maps the file and parses the header, metadata and
//! tensor table; tensor data is only touched when a tensor is read.
//!
//! ```no_run
//! # fn main() -> kiln_models::Result<()> {
//! use kiln_models::gguf::GgufFile;
//!
//! let gguf = GgufFile::open("model.gguf")?;
//! let arch = gguf.get_str("general.architecture")?;
//! let layers = gguf.get_u32(&format!("{arch}.block_count"))?;
//! let (values, shape) = gguf.tensor_f32("token_embd.weight")?;
//! assert_eq!(values.len(), shape.iter().product::<usize>());
//! # let _ = layers;
//! # Ok(())
//! # }
//! ```
//!
//! Dimensions are stored in the file fastest-varying first (ggml's `ne[0]` is the length of a
//! row). [`GgufTensorInfo::dims`] returns them in that order; [`GgufTensorInfo::shape`] and
//! [`GgufFile::tensor_f32`] return the reversed, row-major shape (outermost first), as PyTorch
//! and Burn use it.
//!
//! Every read is bounds-checked: malformed or truncated input yields [`ModelError::Gguf`] naming
//! the file and what was being read, never a panic.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;

use crate::{ModelError, Result};

/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

const MAGIC: [u8; 4] = *b"GGUF";
/// Most dimensions a tensor may have (ggml itself uses 4).
const MAX_DIMS: usize = 8;
/// Deepest nesting of metadata arrays accepted.
const MAX_ARRAY_DEPTH: usize = 16;
/// Largest `general.alignment` accepted.
const MAX_ALIGNMENT: u64 = 1 << 30;

/// Elements of the k-quant super-block.
const QK_K: usize = 256;

/// A tensor element type of ggml, as stored in GGUF tensor descriptions.
///
/// All types ggml defines are named so that they print with their usual names; only some can be
/// dequantized (see [`GgmlType::can_dequantize`]). Ids this crate does not know are kept as
/// [`GgmlType::Unknown`].
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit blocks of 32 with an f16 scale.
    Q4_0,
    /// 4-bit blocks of 32 with an f16 scale and minimum.
    Q4_1,
    /// 5-bit blocks of 32 with an f16 scale.
    Q5_0,
    /// 5-bit blocks of 32 with an f16 scale and minimum.
    Q5_1,
    /// 8-bit blocks of 32 with an f16 scale.
    Q8_0,
    /// 8-bit blocks of 32 with f32 scale and sum (an intermediate format of ggml).
    Q8_1,
    /// 2-bit k-quant super-blocks of 256.
    Q2_K,
    /// 3-bit k-quant super-blocks of 256.
    Q3_K,
    /// 4-bit k-quant super-blocks of 256.
    Q4_K,
    /// 5-bit k-quant super-blocks of 256.
    Q5_K,
    /// 6-bit k-quant super-blocks of 256.
    Q6_K,
    /// 8-bit k-quant super-blocks of 256 with an f32 scale.
    Q8_K,
    /// i-quant, 2.06 bits per weight.
    IQ2_XXS,
    /// i-quant, 2.31 bits per weight.
    IQ2_XS,
    /// i-quant, 3.06 bits per weight.
    IQ3_XXS,
    /// i-quant, 1.56 bits per weight.
    IQ1_S,
    /// i-quant, 4.5 bits per weight, non-linear, blocks of 32.
    IQ4_NL,
    /// i-quant, 3.44 bits per weight.
    IQ3_S,
    /// i-quant, 2.5 bits per weight.
    IQ2_S,
    /// i-quant, 4.25 bits per weight, non-linear.
    IQ4_XS,
    /// 8-bit signed integer.
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 64-bit IEEE float.
    F64,
    /// i-quant, 1.75 bits per weight.
    IQ1_M,
    /// bfloat16.
    BF16,
    /// Ternary quantization, 1.69 bits per weight.
    TQ1_0,
    /// Ternary quantization, 2.06 bits per weight.
    TQ2_0,
    /// Microscaling 4-bit float, blocks of 32.
    MXFP4,
    /// A type id this crate does not know.
    Unknown(u32),
}

impl GgmlType {
    /// The type with the given GGUF id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2_K,
            11 => Self::Q3_K,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            15 => Self::Q8_K,
            16 => Self::IQ2_XXS,
            17 => Self::IQ2_XS,
            18 => Self::IQ3_XXS,
            19 => Self::IQ1_S,
            20 => Self::IQ4_NL,
            21 => Self::IQ3_S,
            22 => Self::IQ2_S,
            23 => Self::IQ4_XS,
            24 => Self::I8,
            25 => Self::I16,
            26 => Self::I32,
            27 => Self::I64,
            28 => Self::F64,
            29 => Self::IQ1_M,
            30 => Self::BF16,
            34 => Self::TQ1_0,
            35 => Self::TQ2_0,
            39 => Self::MXFP4,
            other => Self::Unknown(other),
        }
    }

    /// The GGUF id of the type.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::Q8_K => 15,
            Self::IQ2_XXS => 16,
            Self::IQ2_XS => 17,
            Self::IQ3_XXS => 18,
            Self::IQ1_S => 19,
            Self::IQ4_NL => 20,
            Self::IQ3_S => 21,
            Self::IQ2_S => 22,
            Self::IQ4_XS => 23,
            Self::I8 => 24,
            Self::I16 => 25,
            Self::I32 => 26,
            Self::I64 => 27,
            Self::F64 => 28,
            Self::IQ1_M => 29,
            Self::BF16 => 30,
            Self::TQ1_0 => 34,
            Self::TQ2_0 => 35,
            Self::MXFP4 => 39,
            Self::Unknown(id) => id,
        }
    }

    /// The usual name of the type (`"Q4_K"`), or `None` for [`GgmlType::Unknown`].
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2_K => "Q2_K",
            Self::Q3_K => "Q3_K",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
            Self::Q8_K => "Q8_K",
            Self::IQ2_XXS => "IQ2_XXS",
            Self::IQ2_XS => "IQ2_XS",
            Self::IQ3_XXS => "IQ3_XXS",
            Self::IQ1_S => "IQ1_S",
            Self::IQ4_NL => "IQ4_NL",
            Self::IQ3_S => "IQ3_S",
            Self::IQ2_S => "IQ2_S",
            Self::IQ4_XS => "IQ4_XS",
            Self::I8 => "I8",
            Self::I16 => "I16",
            Self::I32 => "I32",
            Self::I64 => "I64",
            Self::F64 => "F64",
            Self::IQ1_M => "IQ1_M",
            Self::BF16 => "BF16",
            Self::TQ1_0 => "TQ1_0",
            Self::TQ2_0 => "TQ2_0",
            Self::MXFP4 => "MXFP4",
            Self::Unknown(_) => return None,
        })
    }

    /// Elements per block and bytes per block, or `None` for [`GgmlType::Unknown`].
    ///
    /// A tensor's first dimension (`ne[0]`) is a whole number of blocks; its data takes
    /// `elements / block_elements * block_bytes` bytes.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        Some(match self {
            Self::F32 => (1, 4),
            Self::F16 => (1, 2),
            Self::Q4_0 => (32, 2 + 16),
            Self::Q4_1 => (32, 2 + 2 + 16),
            Self::Q5_0 => (32, 2 + 4 + 16),
            Self::Q5_1 => (32, 2 + 2 + 4 + 16),
            Self::Q8_0 => (32, 2 + 32),
            Self::Q8_1 => (32, 4 + 4 + 32),
            Self::Q2_K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Self::Q3_K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Self::Q4_K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Self::Q5_K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Self::Q6_K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            Self::Q8_K => (QK_K, 4 + QK_K + QK_K / 8),
            Self::IQ2_XXS => (QK_K, 2 + QK_K / 4),
            Self::IQ2_XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            Self::IQ3_XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            Self::IQ1_S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            Self::IQ4_NL => (32, 2 + 16),
            Self::IQ3_S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            Self::IQ2_S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            Self::IQ4_XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            Self::I8 => (1, 1),
            Self::I16 => (1, 2),
            Self::I32 => (1, 4),
            Self::I64 => (1, 8),
            Self::F64 => (1, 8),
            Self::IQ1_M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            Self::BF16 => (1, 2),
            Self::TQ1_0 => (QK_K, 2 + 4 * 13),
            Self::TQ2_0 => (QK_K, 2 + 64),
            Self::MXFP4 => (32, 1 + 16),
            Self::Unknown(_) => return None,
        })
    }

    /// Whether [`GgufFile::tensor_f32`] can decode tensors of this type: F32, F16, BF16, Q4_0,
    /// Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            Self::F32
                | Self::F16
                | Self::BF16
                | Self::Q4_0
                | Self::Q4_1
                | Self::Q5_0
                | Self::Q5_1
                | Self::Q8_0
                | Self::Q2_K
                | Self::Q3_K
                | Self::Q4_K
                | Self::Q5_K
                | Self::Q6_K
                | Self::Q8_K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown ggml type {}", self.id()),
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float32`.
    F32(f32),
    /// `float64`.
    F64(f64),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values of one type.
    Array(GgufArray),
}

impl GgufValue {
    /// The value's GGUF type, e.g. `"u32"` or `"array of string"`.
    pub fn type_name(&self) -> String {
        match self {
            Self::U8(_) => "u8".into(),
            Self::I8(_) => "i8".into(),
            Self::U16(_) => "u16".into(),
            Self::I16(_) => "i16".into(),
            Self::U32(_) => "u32".into(),
            Self::I32(_) => "i32".into(),
            Self::U64(_) => "u64".into(),
            Self::I64(_) => "i64".into(),
            Self::F32(_) => "f32".into(),
            Self::F64(_) => "f64".into(),
            Self::Bool(_) => "bool".into(),
            Self::String(_) => "string".into(),
            Self::Array(array) => format!("array of {}", array.element_type_name()),
        }
    }

    /// The value as `u64` if it is an integer of any width that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as `i64` if it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => i64::try_from(v).ok(),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as `f64` if it is a `float32` or `float64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a `bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is an array.
    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            Self::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// A metadata array: elements of one type, stored contiguously.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    /// `uint8` elements.
    U8(Vec<u8>),
    /// `int8` elements.
    I8(Vec<i8>),
    /// `uint16` elements.
    U16(Vec<u16>),
    /// `int16` elements.
    I16(Vec<i16>),
    /// `uint32` elements.
    U32(Vec<u32>),
    /// `int32` elements.
    I32(Vec<i32>),
    /// `uint64` elements.
    U64(Vec<u64>),
    /// `int64` elements.
    I64(Vec<i64>),
    /// `float32` elements.
    F32(Vec<f32>),
    /// `float64` elements.
    F64(Vec<f64>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// String elements.
    String(Vec<String>),
    /// Array elements, each with its own element type.
    Array(Vec<GgufArray>),
}

impl GgufArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GGUF type of the elements, e.g. `"string"`.
    pub fn element_type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }
}

/// The description of one tensor in a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    offset: u64,
    n_elements: usize,
    n_bytes: Option<usize>,
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

    /// An integer metadata value as `u32`. Integers of any width are accepted if the value
    /// fits (GGUF writers differ in the width they use for counts).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing, not an integer, or out of range.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let value = self.value(key)?;
        value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| self.mistyped(key, value, "u32"))
    }

    /// An integer metadata value as `u64`; integers of any width are accepted if not negative.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing, not an integer, or negative.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let value = self.value(key)?;
        value
            .as_u64()
            .ok_or_else(|| self.mistyped(key, value, "u64"))
    }

    /// An integer metadata value as `i64`; integers of any width are accepted if they fit.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing, not an integer, or out of range.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        let value = self.value(key)?;
        value
            .as_i64()
            .ok_or_else(|| self.mistyped(key, value, "i64"))
    }

    /// A float metadata value as `f32` (a `float64` value is rounded).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not a float.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let value = self.value(key)?;
        match *value {
            GgufValue::F32(v) => Ok(v),
            GgufValue::F64(v) => Ok(v as f32),
            _ => Err(self.mistyped(key, value, "f32")),
        }
    }

    /// A float metadata value as `f64`.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not a float.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let value = self.value(key)?;
        value
            .as_f64()
            .ok_or_else(|| self.mistyped(key, value, "f64"))
    }

    /// A `bool` metadata value.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not a `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let value = self.value(key)?;
        value
            .as_bool()
            .ok_or_else(|| self.mistyped(key, value, "bool"))
    }

    /// A string metadata value.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let value = self.value(key)?;
        value
            .as_str()
            .ok_or_else(|| self.mistyped(key, value, "string"))
    }

    /// An array metadata value of any element type.
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not an array.
    pub fn get_array(&self, key: &str) -> Result<&GgufArray> {
        let value = self.value(key)?;
        value
            .as_array()
            .ok_or_else(|| self.mistyped(key, value, "array"))
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        let value = self.value(key)?;
        match value {
            GgufValue::Array(GgufArray::String(v)) => Ok(v),
            _ => Err(self.mistyped(key, value, "array of string")),
        }
    }

    /// An array of `float32` (e.g. `tokenizer.ggml.scores`).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not an array of `float32`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        let value = self.value(key)?;
        match value {
            GgufValue::Array(GgufArray::F32(v)) => Ok(v),
            _ => Err(self.mistyped(key, value, "array of f32")),
        }
    }

    /// An array of `int32` (e.g. `tokenizer.ggml.token_type`).
    ///
    /// # Errors
    ///
    /// [`ModelError::Gguf`] naming the key when it is missing or not an array of `int32`.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        let value = self.value(key)?;
        match value {
            GgufValue::Array(GgufArray::I32(v)) => Ok(v),
            _ => Err(self.mistyped(key, value, "array of i32")),
        }
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

/// Prints a scalar metadata value.
struct ScalarDisplay<'a>(&'a GgufValue);

impl fmt::Display for ScalarDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            GgufValue::U8(v) => write!(f, "{v}"),
            GgufValue::I8(v) => write!(f, "{v}"),
            GgufValue::U16(v) => write!(f, "{v}"),
            GgufValue::I16(v) => write!(f, "{v}"),
            GgufValue::U32(v) => write!(f, "{v}"),
            GgufValue::I32(v) => write!(f, "{v}"),
            GgufValue::U64(v) => write!(f, "{v}"),
            GgufValue::I64(v) => write!(f, "{v}"),
            GgufValue::F32(v) => write!(f, "{v}"),
            GgufValue::F64(v) => write!(f, "{v}"),
            GgufValue::Bool(v) => write!(f, "{v}"),
            GgufValue::String(v) => write!(f, "{v:?}"),
            GgufValue::Array(_) => f.write_str("[..]"),
        }
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

// ---------------------------------------------------------------------------------------------
// Parsing

/// A parse error message (the file path is added by the caller).
type ParseResult<T> = std::result::Result<T, String>;

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: usize,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Describes what is being read, for error messages; only called on error.
type What<'w> = &'w dyn Fn() -> String;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self, needed: u64, what: What<'_>) -> String {
        format!(
            "truncated file: needed {needed} bytes at offset {} for {}, but the file has {} bytes",
            self.pos,
            what(),
            self.buf.len()
        )
    }

    fn take(&mut self, n: usize, what: What<'_>) -> ParseResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(n as u64, what));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: What<'_>) -> ParseResult<[u8; N]> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: What<'_>) -> ParseResult<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: What<'_>) -> ParseResult<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Takes `n` items of `size` bytes.
    fn take_items(&mut self, n: u64, size: usize, what: What<'_>) -> ParseResult<&'a [u8]> {
        let needed = n.saturating_mul(size as u64);
        match usize::try_from(needed) {
            Ok(needed) if needed <= self.remaining() => self.take(needed, what),
            _ => Err(self.truncated(needed, what)),
        }
    }

    /// Capacity to reserve for `n` items of at least `min_size` bytes each: never more than the
    /// rest of the file can hold, whatever `n` claims.
    fn capacity(&self, n: u64, min_size: usize) -> usize {
        usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.remaining() / min_size)
    }

    fn string(&mut self, what: What<'_>) -> ParseResult<String> {
        let len = self.u64(what)?;
        let bytes = self.take_items(len, 1, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("invalid UTF-8 in {}: {e}", what()))
    }

    fn value(&mut self, type_id: u32, depth: usize, what: What<'_>) -> ParseResult<GgufValue> {
        Ok(match type_id {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => GgufValue::Bool(parse_bool(self.array::<1>(what)?[0], what)?),
            8 => GgufValue::String(self.string(what)?),
            9 => GgufValue::Array(self.gguf_array(depth, what)?),
            10 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(format!("unknown metadata value type {other} in {}", what())),
        })
    }

    fn gguf_array(&mut self, depth: usize, what: What<'_>) -> ParseResult<GgufArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(format!(
                "{}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels",
                what()
            ));
        }
        let elem_type = self.u32(&|| format!("the element type of {}", what()))?;
        let elem_size = match elem_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => 8,  // a string has at least its length
            9 => 12, // an array has at least its element type and length
            other => {
                return Err(format!(
                    "unknown metadata value type {other} for the elements of {}",
                    what()
                ));
            }
        };
        let n = self.u64(&|| format!("the length of {}", what()))?;
        let items_what = || format!("the {n} elements of {}", what());
        macro_rules! numbers {
            ($variant:ident, $t:ty) => {{
                let bytes = self.take_items(n, elem_size, &items_what)?;
                GgufArray::$variant(
                    bytes
                        .as_chunks::<{ size_of::<$t>() }>()
                        .0
                        .iter()
                        .map(|c| <$t>::from_le_bytes(*c))
                        .collect(),
                )
            }};
        }
        Ok(match elem_type {
            0 => numbers!(U8, u8),
            1 => numbers!(I8, i8),
            2 => numbers!(U16, u16),
            3 => numbers!(I16, i16),
            4 => numbers!(U32, u32),
            5 => numbers!(I32, i32),
            6 => numbers!(F32, f32),
            10 => numbers!(U64, u64),
            11 => numbers!(I64, i64),
            12 => numbers!(F64, f64),
            7 => {
                let bytes = self.take_items(n, 1, &items_what)?;
                GgufArray::Bool(
                    bytes
                        .iter()
                        .map(|&b| parse_bool(b, what))
                        .collect::<ParseResult<_>>()?,
                )
            }
            8 => {
                let mut items = Vec::with_capacity(self.capacity(n, elem_size));
                for i in 0..n {
                    items.push(self.string(&|| format!("element {i} of {}", what()))?);
                }
                GgufArray::String(items)
            }
            _ => {
                let mut items = Vec::with_capacity(self.capacity(n, elem_size));
                for i in 0..n {
                    let item_what = || format!("element {i} of {}", what());
                    items.push(self.gguf_array(depth + 1, &item_what)?);
                }
                GgufArray::Array(items)
            }
        })
    }
}

fn parse_bool(byte: u8, what: What<'_>) -> ParseResult<bool> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(format!("invalid bool value {other} in {}", what())),
    }
}

/// Parses everything but the tensor data, and checks that every tensor's data lies in `buf`.
fn parse(buf: &[u8]) -> ParseResult<Parsed> {
    let mut c = Cursor { buf, pos: 0 };

    let magic: [u8; 4] = c.array(&|| "the magic number".into())?;
    if magic != MAGIC {
        return Err(format!(
            "not a GGUF file: the magic number is {magic:02x?}, expected {MAGIC:02x?} (\"GGUF\")"
        ));
    }
    let version = c.u32(&|| "the format version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err("GGUF version 1 is not supported (only versions 2 and 3)".into());
        }
        v if matches!(v.swap_bytes(), 1..=3) => {
            return Err("big-endian GGUF files are not supported".into());
        }
        v => {
            return Err(format!(
                "unsupported GGUF version {v} (only versions 2 and 3)"
            ));
        }
    }
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.u64(&|| "the metadata entry count".into())?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&|| format!("the key of metadata entry {i}"))?;
        let type_id = c.u32(&|| format!("the value type of metadata key `{key}`"))?;
        let value = c.value(type_id, 0, &|| format!("the value of metadata key `{key}`"))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(format!("duplicate metadata key `{key}`"));
        }
    }

    // Smallest tensor description: empty name (8), n_dims (4), type (4), offset (8).
    let mut raw = Vec::with_capacity(c.capacity(n_tensors, 24));
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor {i}"))?;
        let n_dims = c.u32(&|| format!("the number of dimensions of tensor `{name}`"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions, more than the {MAX_DIMS} supported"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor `{name}`"))?);
        }
        let type_id = c.u32(&|| format!("the type of tensor `{name}`"))?;
        let offset = c.u64(&|| format!("the data offset of tensor `{name}`"))?;
        raw.push((name, dims, GgmlType::from_id(type_id), offset));
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(value) => match value.as_u64() {
            Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
            _ => {
                return Err(format!(
                    "metadata key `general.alignment`: expected a power of two up to \
                     {MAX_ALIGNMENT}, found {} {}",
                    value.type_name(),
                    ScalarDisplay(value)
                ));
            }
        },
    };
    let data_offset = c
        .pos
        .checked_next_multiple_of(alignment as usize)
        .ok_or_else(|| format!("the data offset overflows (alignment {alignment})"))?;

    let mut tensors = Vec::with_capacity(raw.len());
    let mut by_name = HashMap::with_capacity(raw.len());
    for (name, dims, ggml_type, offset) in raw {
        let info = tensor_info(
            buf.len(),
            data_offset,
            alignment,
            name,
            dims,
            ggml_type,
            offset,
        )?;
        if by_name.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(format!("duplicate tensor name `{}`", info.name));
        }
        tensors.push(info);
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
        by_name,
    })
}

/// Validates one tensor description against the type's block layout and the file length.
fn tensor_info(
    file_len: usize,
    data_offset: usize,
    alignment: u64,
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    offset: u64,
) -> ParseResult<GgufTensorInfo> {
    let n_elements = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| format!("tensor `{name}`: the element count of dims {dims:?} overflows"))?;
    if !offset.is_multiple_of(alignment) {
        return Err(format!(
            "tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}"
        ));
    }
    let n_bytes = match ggml_type.block_layout() {
        None => None,
        Some((block_elems, block_bytes)) => {
            let row = dims.first().copied().unwrap_or(1);
            if !row.is_multiple_of(block_elems as u64) {
                return Err(format!(
                    "tensor `{name}`: first dimension {row} is not a multiple of the {ggml_type} \
                     block size {block_elems}"
                ));
            }
            let n_bytes = (n_elements / block_elems)
                .checked_mul(block_bytes)
                .ok_or_else(|| format!("tensor `{name}`: the data size overflows"))?;
            let end = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(data_offset))
                .and_then(|s| s.checked_add(n_bytes));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(format!(
                        "truncated file: the data of tensor `{name}` ({ggml_type}, {n_bytes} \
                         bytes at offset {} + {offset}) ends past the end of the file ({file_len} \
                         bytes)",
                        data_offset
                    ));
                }
            }
            Some(n_bytes)
        }
    };
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_elements,
        n_bytes,
    })
}

// ---------------------------------------------------------------------------------------------
// Dequantization, following ggml's `dequantize_row_*` reference code operation by operation.

#[inline]
fn f16_le(lo: u8, hi: u8) -> f32 {
    f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// Decodes `src` (whole blocks of `ty`) into `dst`, which holds `blocks * block_elems` values.
fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> ParseResult<()> {
    let (block_elems, block_bytes) = ty
        .block_layout()
        .ok_or_else(|| format!("cannot dequantize {ty}"))?;
    if !src.len().is_multiple_of(block_bytes) || src.len() / block_bytes * block_elems != dst.len()
    {
        return Err(format!(
            "{} bytes of data do not hold {} values",
            src.len(),
            dst.len()
        ));
    }
    match ty {
        GgmlType::F32 => {
            for (y, x) in dst.iter_mut().zip(src.as_chunks::<4>().0) {
                *y = f32::from_le_bytes(*x);
            }
        }
        GgmlType::F16 => {
            for (y, x) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *y = f16_le(x[0], x[1]);
            }
        }
        GgmlType::BF16 => {
            for (y, x) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *y = f32::from_bits(u32::from(u16::from_le_bytes(*x)) << 16);
            }
        }
        GgmlType::Q4_0 => blocks::<18, 32>(src, dst, dequant_q4_0),
        GgmlType::Q4_1 => blocks::<20, 32>(src, dst, dequant_q4_1),
        GgmlType::Q5_0 => blocks::<22, 32>(src, dst, dequant_q5_0),
        GgmlType::Q5_1 => blocks::<24, 32>(src, dst, dequant_q5_1),
        GgmlType::Q8_0 => blocks::<34, 32>(src, dst, dequant_q8_0),
        GgmlType::Q2_K => blocks::<84, QK_K>(src, dst, dequant_q2_k),
        GgmlType::Q3_K => blocks::<110, QK_K>(src, dst, dequant_q3_k),
        GgmlType::Q4_K => blocks::<144, QK_K>(src, dst, dequant_q4_k),
        GgmlType::Q5_K => blocks::<176, QK_K>(src, dst, dequant_q5_k),
        GgmlType::Q6_K => blocks::<210, QK_K>(src, dst, dequant_q6_k),
        GgmlType::Q8_K => blocks::<292, QK_K>(src, dst, dequant_q8_k),
        other => return Err(format!("cannot dequantize {other}")),
    }
    Ok(())
}

/// Applies `f` to each block of `B` bytes and its `N` output values.
#[inline]
fn blocks<const B: usize, const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: fn(&[u8; B], &mut [f32; N]),
) {
    for (x, y) in src
        .as_chunks::<B>()
        .0
        .iter()
        .zip(dst.as_chunks_mut::<N>().0)
    {
        f(x, y);
    }
}

/// `d: f16, qs: [u8; 16]`; `y = (q - 8) * d`.
fn dequant_q4_0(x: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_le(x[0], x[1]);
    for j in 0..16 {
        let q = x[2 + j];
        y[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
        y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

/// `d: f16, m: f16, qs: [u8; 16]`; `y = q * d + m`.
fn dequant_q4_1(x: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_le(x[0], x[1]);
    let m = f16_le(x[2], x[3]);
    for j in 0..16 {
        let q = x[4 + j];
        y[j] = f32::from(q & 0x0F) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// `d: f16, qh: u32, qs: [u8; 16]`; `y = (q - 16) * d` with the fifth bit from `qh`.
fn dequant_q5_0(x: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_le(x[0], x[1]);
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    for j in 0..16 {
        let q = x[6 + j];
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((u32::from(q & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = ((u32::from(q >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

/// `d: f16, m: f16, qh: u32, qs: [u8; 16]`; `y = q * d + m` with the fifth bit from `qh`.
fn dequant_q5_1(x: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_le(x[0], x[1]);
    let m = f16_le(x[2], x[3]);
    let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
    for j in 0..16 {
        let q = x[8 + j];
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (u32::from(q & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = (u32::from(q >> 4) | h1) as f32 * d + m;
    }
}

/// `d: f16, qs: [i8; 32]`; `y = q * d`.
fn dequant_q8_0(x: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_le(x[0], x[1]);
    for j in 0..32 {
        y[j] = f32::from(x[2 + j] as i8) * d;
    }
}

/// `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16`.
fn dequant_q2_k(x: &[u8; 84], y: &mut [f32; QK_K]) {
    let d = f16_le(x[80], x[81]);
    let min = f16_le(x[82], x[83]);
    let mut is = 0;
    let mut out = 0;
    for n in 0..2 {
        let q = &x[16 + 32 * n..16 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let sc = x[is];
                is += 1;
                let dl = d * f32::from(sc & 0x0F);
                let ml = min * f32::from(sc >> 4);
                for &b in &q[16 * half..16 * half + 16] {
                    y[out] = dl * f32::from((b >> shift) & 3) - ml;
                    out += 1;
                }
            }
        }
    }
}

/// `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12] (16 packed 6-bit), d: f16`.
fn dequant_q3_k(x: &[u8; 110], y: &mut [f32; QK_K]) {
    let d_all = f16_le(x[108], x[109]);
    let s = &x[96..108];
    let mut scales = [0i32; 16];
    for (j, scale) in scales.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *scale = i32::from(low | (high << 4)) - 32;
    }
    let hmask = &x[0..32];
    let mut is = 0;
    let mut out = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &x[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 16 * half..16 * half + 16 {
                    let low = i32::from((q[l] >> shift) & 3);
                    let sub = if hmask[l] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// The `j`-th 6-bit scale and minimum of a Q4_K/Q5_K block (`get_scale_min_k4` in ggml).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`.
fn dequant_q4_k(x: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = f16_le(x[0], x[1]);
    let min = f16_le(x[2], x[3]);
    let scales = &x[4..16];
    for (j, y) in y.chunks_exact_mut(64).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let q = &x[16 + 32 * j..16 + 32 * j + 32];
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`.
fn dequant_q5_k(x: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = f16_le(x[0], x[1]);
    let min = f16_le(x[2], x[3]);
    let scales = &x[4..16];
    let qh = &x[16..48];
    for (j, y) in y.chunks_exact_mut(64).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let u1 = 1u8 << (2 * j);
        let u2 = 2u8 << (2 * j);
        let ql = &x[48 + 32 * j..48 + 32 * j + 32];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * f32::from((ql[l] & 0x0F) + h1) - m1;
            y[l + 32] = d2 * f32::from((ql[l] >> 4) + h2) - m2;
        }
    }
}

/// `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`.
fn dequant_q6_k(x: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = f16_le(x[208], x[209]);
    for (n, y) in y.chunks_exact_mut(128).enumerate() {
        let ql = &x[64 * n..64 * n + 64];
        let qh = &x[128 + 32 * n..128 + 32 * n + 32];
        let sc = &x[192 + 8 * n..192 + 8 * n + 8];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * f32::from(sc[is] as i8) * q1 as f32;
            y[l + 32] = d * f32::from(sc[is + 2] as i8) * q2 as f32;
            y[l + 64] = d * f32::from(sc[is + 4] as i8) * q3 as f32;
            y[l + 96] = d * f32::from(sc[is + 6] as i8) * q4 as f32;
        }
    }
}

/// `d: f32, qs: [i8; 256], bsums: [i16; 16]`; `y = d * q`.
fn dequant_q8_k(x: &[u8; 292], y: &mut [f32; QK_K]) {
    let d = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
    for (y, &q) in y.iter_mut().zip(&x[4..4 + QK_K]) {
        *y = d * f32::from(q as i8);
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures come from `scripts/fixtures/gen_gguf_fixtures.py`; the reference values in the
    //! JSON files are those of the Python `gguf` package (`gguf.quants.dequantize`).

    use super::*;
    use serde_json::Value;
    use std::time::Instant;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf");
    const SMOLLM2: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    );

    fn tiny_path() -> PathBuf {
        Path::new(FIXTURES).join("tiny.gguf")
    }

    fn tiny() -> GgufFile {
        GgufFile::open(tiny_path()).expect("open tiny.gguf")
    }

    fn json(name: &str) -> Value {
        let path = Path::new(FIXTURES).join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        serde_json::from_str(&text).expect("fixture JSON")
    }

    fn f32s(value: &Value) -> Vec<f32> {
        value
            .as_array()
            .expect("array of numbers")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect()
    }

    fn usizes(value: &Value) -> Vec<usize> {
        value
            .as_array()
            .expect("array of integers")
            .iter()
            .map(|v| v.as_u64().expect("integer") as usize)
            .collect()
    }

    /// A scratch directory unique to one test of this process.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-gguf-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write scratch file");
        path
    }

    fn gguf_message(err: ModelError) -> (PathBuf, String) {
        match err {
            ModelError::Gguf { path, message } => (path, message),
            other => panic!("expected ModelError::Gguf, got {other:?}"),
        }
    }

    #[test]
    fn gguf_fixture_tensors_match_python_reference() {
        let file = tiny();
        let reference = json("tiny.json");
        let tensors = reference["tensors"].as_object().expect("tensors object");
        assert_eq!(file.tensors().len(), tensors.len());
        let mut checked = Vec::new();
        for (name, entry) in tensors {
            let info = file.tensor_info(name).expect("tensor present");
            assert_eq!(
                info.ggml_type().to_string(),
                entry["type"].as_str().unwrap(),
                "{name}"
            );
            let shape = usizes(&entry["shape"]);
            assert_eq!(info.shape(), shape, "{name}");
            assert_eq!(info.n_elements(), shape.iter().product::<usize>(), "{name}");
            if entry["values"].is_null() {
                continue; // an unsupported type, see `gguf_unsupported_type_is_an_error`
            }
            let expected = f32s(&entry["values"]);
            let (values, got_shape) = file.tensor_f32(name).expect("dequantize");
            assert_eq!(got_shape, shape, "{name}");
            assert_eq!(values.len(), expected.len(), "{name}");
            let exact = info.ggml_type() == GgmlType::F32;
            let identical = values
                .iter()
                .zip(&expected)
                .filter(|(a, b)| a.to_bits() == b.to_bits())
                .count();
            println!(
                "{name} ({}): {identical}/{} values bit-identical to the reference",
                info.ggml_type(),
                values.len()
            );
            for (i, (&got, &want)) in values.iter().zip(&expected).enumerate() {
                if exact {
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{name}[{i}]: {got} vs {want}"
                    );
                } else {
                    assert!(
                        (got - want).abs() <= 1e-6,
                        "{name}[{i}] ({}): {got} vs {want}",
                        info.ggml_type()
                    );
                }
            }
            checked.push(info.ggml_type());
        }
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::Q8_K,
        ] {
            assert!(checked.contains(&ty), "fixture lacks a {ty} tensor");
        }
    }

    #[test]
    fn gguf_fixture_layout_and_metadata() {
        let file = tiny();
        assert_eq!(file.version(), 3);
        assert_eq!(file.alignment(), 64);
        assert_eq!(file.data_offset() % 64, 0);
        for info in file.tensors() {
            assert_eq!(info.offset() % 64, 0, "{}", info.name());
        }
        let q8 = file.tensor_info("q8_0").unwrap();
        assert_eq!(q8.dims(), &[32, 3, 2]);
        assert_eq!(q8.shape(), vec![2, 3, 32]);
        assert_eq!(q8.n_bytes(), Some(6 * 34));
        assert_eq!(file.tensor_bytes("q8_0").unwrap().len(), 6 * 34);

        assert_eq!(file.get_str("general.architecture").unwrap(), "kiln-test");
        assert_eq!(file.get_str("general.name").unwrap(), "tiny fixture");
        assert_eq!(file.get_u32("general.alignment").unwrap(), 64);
        assert_eq!(file.get("test.u8"), Some(&GgufValue::U8(200)));
        assert_eq!(file.get("test.i8"), Some(&GgufValue::I8(-100)));
        assert_eq!(file.get("test.u16"), Some(&GgufValue::U16(60000)));
        assert_eq!(file.get("test.i16"), Some(&GgufValue::I16(-30000)));
        assert_eq!(file.get_u32("test.u32").unwrap(), 4_000_000_000);
        assert_eq!(file.get_i64("test.i32").unwrap(), -2_000_000_000);
        assert_eq!(
            file.get_u64("test.u64").unwrap(),
            18_000_000_000_000_000_000
        );
        assert_eq!(
            file.get_i64("test.i64").unwrap(),
            -9_000_000_000_000_000_000
        );
        assert_eq!(file.get_f32("test.f32").unwrap(), 0.125);
        assert_eq!(file.get_f64("test.f64").unwrap(), -2.5e-300);
        assert!(file.get_bool("test.true").unwrap());
        assert!(!file.get_bool("test.false").unwrap());
        assert_eq!(file.get_str("test.unicode").unwrap(), "h\u{e9}llo \u{2603}");
        assert_eq!(
            file.get_str_array("test.str_array").unwrap(),
            ["a", "bc", "", "d\u{e9}f"]
        );
        assert_eq!(
            file.get_i32_array("test.i32_array").unwrap(),
            [1, -2, 3, i32::MAX]
        );
        assert_eq!(
            file.get_f32_array("test.f32_array").unwrap(),
            [0.5, -1.25, 3.0]
        );
        assert_eq!(
            file.get_array("test.bool_array").unwrap(),
            &GgufArray::Bool(vec![true, false, true])
        );
        assert_eq!(
            file.get_array("test.u8_array").unwrap(),
            &GgufArray::U8(vec![1, 2, 255])
        );
        assert_eq!(
            file.get_array("test.nested").unwrap(),
            &GgufArray::Array(vec![
                GgufArray::String(vec!["x".into(), "yz".into()]),
                GgufArray::String(vec!["w".into()]),
            ])
        );
        assert_eq!(file.metadata().len(), 22);
    }

    #[test]
    fn gguf_metadata_errors_name_the_key() {
        let file = tiny();
        let (path, msg) = gguf_message(file.get_u32("llama.block_count").unwrap_err());
        assert_eq!(path, tiny_path());
        assert!(
            msg.contains("`llama.block_count`") && msg.contains("missing"),
            "{msg}"
        );

        let err = file.get_u32("general.name").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("tiny.gguf"), "{text}");
        assert!(
            text.contains("`general.name`") && text.contains("expected u32"),
            "{text}"
        );
        assert!(text.contains("string \"tiny fixture\""), "{text}");

        let (_, msg) = gguf_message(file.get_u32("test.i8").unwrap_err());
        assert!(
            msg.contains("`test.i8`") && msg.contains("i8 -100"),
            "{msg}"
        );
        let (_, msg) = gguf_message(file.get_u32("test.u64").unwrap_err());
        assert!(msg.contains("`test.u64`"), "{msg}");
        let (_, msg) = gguf_message(file.get_str_array("test.i32_array").unwrap_err());
        assert!(
            msg.contains("`test.i32_array`") && msg.contains("array of i32 (4 elements)"),
            "{msg}"
        );
        let (_, msg) = gguf_message(file.get_f32_array("test.nested").unwrap_err());
        assert!(msg.contains("expected array of f32"), "{msg}");
        assert!(file.get_i32_array("test.f32_array").is_err());
        assert!(file.get_bool("test.u8").is_err());
        assert!(file.get_f32("test.u32").is_err());
        assert_eq!(file.get_u32("test.u8").unwrap(), 200);
    }

    #[test]
    fn gguf_unknown_tensor_is_an_error_naming_it() {
        let file = tiny();
        let err = file.tensor_f32("no.such.tensor").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`no.such.tensor`"), "{text}");
        assert!(text.contains("tiny.gguf"), "{text}");
        assert!(file.tensor_info("no.such.tensor").is_err());
        assert!(file.tensor_bytes("no.such.tensor").is_err());
    }

    #[test]
    fn gguf_unsupported_type_is_an_error() {
        let file = tiny();
        let info = file.tensor_info("iq4_nl").unwrap();
        assert_eq!(info.ggml_type(), GgmlType::IQ4_NL);
        assert!(!info.ggml_type().can_dequantize());
        let (_, msg) = gguf_message(file.tensor_f32("iq4_nl").unwrap_err());
        assert!(msg.contains("`iq4_nl`") && msg.contains("IQ4_NL"), "{msg}");
        // Raw bytes of a known-size type are still available.
        assert_eq!(file.tensor_bytes("iq4_nl").unwrap().len(), 18);
    }

    #[test]
    fn gguf_truncated_files_are_errors_naming_the_file() {
        let bytes = std::fs::read(tiny_path()).unwrap();
        let file = tiny();
        let data_offset = file.data_offset() as usize;
        // End of the last tensor's data; the writer pads the file after it.
        let last = file.tensors().last().unwrap();
        let data_end = data_offset + last.offset() as usize + last.n_bytes().unwrap();
        assert_eq!(last.name(), "iq4_nl");
        let dir = scratch("truncated");
        let cases = [
            (0, "empty"),
            (3, "the magic number"),
            (6, "the format version"),
            (20, "the metadata entry count"),
            (24, "the key of metadata entry 0"),
            (30, "the key of metadata entry 0"),
            (300, "metadata key `"),
            (data_offset - 70, "tensor"),
            (data_offset + 100, "the data of tensor `"),
            (data_end - 1, "the data of tensor `iq4_nl`"),
        ];
        for (len, what) in cases {
            let path = write(&dir, &format!("cut_{len}.gguf"), &bytes[..len]);
            let err = GgufFile::open(&path).expect_err("truncated file must not open");
            let text = err.to_string();
            let (err_path, msg) = gguf_message(err);
            assert_eq!(err_path, path);
            assert!(text.contains(&format!("cut_{len}.gguf")), "{text}");
            assert!(msg.contains("truncated"), "cut at {len}: {msg}");
            assert!(
                msg.contains(what),
                "cut at {len}: expected {what:?} in {msg}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
        // Every cut before the end of the data fails cleanly; cutting only padding is fine.
        for len in 0..data_end {
            let msg = parse(&bytes[..len])
                .err()
                .unwrap_or_else(|| panic!("cut at {len} parsed"));
            assert!(msg.contains("truncated"), "cut at {len}: {msg}");
        }
        for len in data_end..=bytes.len() {
            assert!(parse(&bytes[..len]).is_ok(), "cut at {len} failed");
        }
    }

    #[test]
    fn gguf_versions_and_bad_headers() {
        let bytes = std::fs::read(tiny_path()).unwrap();
        let dir = scratch("versions");
        let with_version = |v: [u8; 4]| {
            let mut b = bytes.clone();
            b[4..8].copy_from_slice(&v);
            b
        };

        // Version 2 has the same little-endian layout as version 3.
        let v2 = GgufFile::open(write(&dir, "v2.gguf", &with_version(2u32.to_le_bytes()))).unwrap();
        assert_eq!(v2.version(), 2);
        assert_eq!(
            v2.tensor_f32("q6_k").unwrap(),
            tiny().tensor_f32("q6_k").unwrap()
        );

        let cases = [
            (with_version(1u32.to_le_bytes()), "version 1"),
            (with_version(3u32.to_be_bytes()), "big-endian"),
            (with_version(7u32.to_le_bytes()), "version 7"),
            (
                {
                    let mut b = bytes.clone();
                    b[0] = b'X';
                    b
                },
                "not a GGUF file",
            ),
        ];
        for (i, (b, want)) in cases.into_iter().enumerate() {
            let path = write(&dir, &format!("bad{i}.gguf"), &b);
            let (err_path, msg) = gguf_message(GgufFile::open(&path).unwrap_err());
            assert_eq!(err_path, path);
            assert!(msg.contains(want), "expected {want:?} in {msg}");
        }

        let missing = dir.join("missing.gguf");
        match GgufFile::open(&missing).unwrap_err() {
            ModelError::Io { path, .. } => assert_eq!(path, missing),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn gguf_corrupt_headers_never_panic() {
        let bytes = std::fs::read(tiny_path()).unwrap();
        let data_offset = tiny().data_offset() as usize;
        // Deterministic xorshift; corrupts bytes of the header, metadata and tensor table.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut opened = 0;
        for _ in 0..2000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % data_offset as u64) as usize;
                b[at] = match next() % 4 {
                    0 => 0xFF,
                    1 => 0,
                    _ => next() as u8,
                };
            }
            if let Ok(parsed) = parse(&b) {
                opened += 1;
                // Whatever parsed must be readable within bounds.
                for info in &parsed.tensors {
                    if let (Some(n), true) = (info.n_bytes, info.ggml_type.can_dequantize()) {
                        let start = parsed.data_offset + info.offset as usize;
                        let mut out = vec![0f32; info.n_elements];
                        dequantize(info.ggml_type, &b[start..start + n], &mut out).unwrap();
                    }
                }
            }
        }
        assert!(opened > 0);
    }

    #[test]
    fn gguf_hostile_counts_are_errors() {
        let mut header = Vec::new();
        header.extend_from_slice(b"GGUF");
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes()); // tensors
        header.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
        let key = |b: &mut Vec<u8>| {
            b.extend_from_slice(&1u64.to_le_bytes());
            b.push(b'k');
        };

        // An array claiming 2^62 strings.
        let mut b = header.clone();
        key(&mut b);
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&(1u64 << 62).to_le_bytes());
        let msg = parse(&b).err().unwrap();
        assert!(msg.contains("truncated") && msg.contains("`k`"), "{msg}");

        // A string claiming u64::MAX bytes.
        let mut b = header.clone();
        key(&mut b);
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        let msg = parse(&b).err().unwrap();
        assert!(msg.contains("truncated") && msg.contains("`k`"), "{msg}");

        // Arrays nested past the depth limit.
        let mut b = header.clone();
        key(&mut b);
        b.extend_from_slice(&9u32.to_le_bytes());
        for _ in 0..40 {
            b.extend_from_slice(&9u32.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
        }
        b.extend_from_slice(&[0; 64]);
        let msg = parse(&b).err().unwrap();
        assert!(msg.contains("nested"), "{msg}");

        // An unknown value type.
        let mut b = header.clone();
        key(&mut b);
        b.extend_from_slice(&99u32.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        let msg = parse(&b).err().unwrap();
        assert!(msg.contains("unknown metadata value type 99"), "{msg}");

        // Many tensors announced, none present.
        let mut b = header.clone();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        b[16..24].copy_from_slice(&0u64.to_le_bytes());
        let msg = parse(&b).err().unwrap();
        assert!(msg.contains("the name of tensor 0"), "{msg}");
    }

    #[test]
    fn gguf_type_ids_round_trip() {
        for id in 0..64 {
            let ty = GgmlType::from_id(id);
            assert_eq!(ty.id(), id);
            assert_eq!(ty.name().is_none(), matches!(ty, GgmlType::Unknown(_)));
            assert_eq!(ty.block_layout().is_none(), ty.name().is_none());
        }
        assert_eq!(GgmlType::Q6_K.block_layout(), Some((256, 210)));
        assert_eq!(GgmlType::Q4_1.to_string(), "Q4_1");
        assert_eq!(
            GgmlType::from_id(1000).to_string(),
            "unknown ggml type 1000"
        );
    }

    #[test]
    fn gguf_smollm2_asset_matches_python_reference() {
        let asset = Path::new(SMOLLM2);
        if !asset.exists() {
            println!("skipped: {SMOLLM2} is missing (run scripts/fetch-assets.sh)");
            return;
        }
        let ref_path = Path::new(FIXTURES).join("smollm2_ref.json");
        if !ref_path.exists() {
            println!(
                "skipped: {ref_path:?} is missing (run scripts/fixtures/gen_gguf_fixtures.py)"
            );
            return;
        }
        let file = GgufFile::open(asset).expect("open SmolLM2");
        assert_eq!(file.version(), 3);
        assert_eq!(file.alignment(), DEFAULT_ALIGNMENT);
        assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
        assert_eq!(file.get_u32("llama.embedding_length").unwrap(), 576);
        assert_eq!(file.get_u32("llama.attention.head_count_kv").unwrap(), 3);
        assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
        assert_eq!(
            file.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
            49152
        );
        assert_eq!(
            file.get_i32_array("tokenizer.ggml.token_type")
                .unwrap()
                .len(),
            49152
        );
        assert_eq!(
            file.get_str_array("tokenizer.ggml.merges").unwrap().len(),
            48900
        );
        assert!(!file.get_bool("tokenizer.ggml.add_bos_token").unwrap());
        assert_eq!(file.tensors().len(), 272);

        let reference = json("smollm2_ref.json");
        let heads = reference["heads"].as_object().unwrap();
        let mut head_types = Vec::new();
        for (name, entry) in heads {
            let (values, shape) = file.tensor_f32(name).unwrap();
            assert_eq!(shape, usizes(&entry["shape"]), "{name}");
            let ty = file.tensor_info(name).unwrap().ggml_type();
            assert_eq!(ty.to_string(), entry["type"].as_str().unwrap());
            for (i, (&got, &want)) in values.iter().zip(&f32s(&entry["first_64"])).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-6,
                    "{name}[{i}] ({ty}): {got} vs {want}"
                );
            }
            head_types.push(ty);
        }
        assert!(head_types.contains(&GgmlType::Q4_1));
        assert!(head_types.contains(&GgmlType::Q8_0));

        // Every tensor: sums of the dequantized values against the reference, and timing.
        let sums = reference["sums"].as_object().unwrap();
        assert_eq!(sums.len(), file.tensors().len());
        let start = Instant::now();
        let mut total = 0usize;
        for info in file.tensors() {
            let (values, shape) = file.tensor_f32(info.name()).unwrap();
            total += values.len();
            let entry = &sums[info.name()];
            assert_eq!(shape, usizes(&entry["shape"]), "{}", info.name());
            let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
            let sum_abs: f64 = values.iter().map(|&v| f64::from(v).abs()).sum();
            let want_sum = entry["sum"].as_f64().unwrap();
            let want_abs = entry["sum_abs"].as_f64().unwrap();
            // Same f32 values summed in f64 in another order: differences are rounding only.
            assert!(
                (sum - want_sum).abs() <= 1e-9 * want_abs.max(1.0),
                "{}: sum {sum} vs {want_sum}",
                info.name()
            );
            assert!(
                (sum_abs - want_abs).abs() <= 1e-9 * want_abs.max(1.0),
                "{}: sum_abs {sum_abs} vs {want_abs}",
                info.name()
            );
        }
        println!(
            "dequantized {} tensors ({total} values) of {SMOLLM2} in {:?}",
            file.tensors().len(),
            start.elapsed()
        );
    }
}
