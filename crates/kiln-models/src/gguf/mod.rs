//! Reader for GGUF model files (versions 2 and 3, little-endian), with dequantization to `f32`,
//! and a writer ([`GgufWriter`]) for the files `kiln merge --format gguf` exports.
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

mod dequant;
mod file;
mod ggml_type;
mod parse;
mod value;
mod write;

pub use file::{GgufFile, GgufTensorInfo};
pub use ggml_type::GgmlType;
pub use value::{GgufArray, GgufValue};
pub use write::{GgufWriter, quantize};

#[cfg(doc)]
use crate::ModelError;

/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

#[cfg(test)]
mod tests;
