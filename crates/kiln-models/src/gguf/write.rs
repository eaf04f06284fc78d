//! Writing GGUF files (version 3, little-endian): metadata, the tensor table and the tensor data,
//! each tensor aligned to `general.alignment` bytes, as llama.cpp's `gguf_write_to_file` lays
//! them out. Tensors are encoded with [`quantize`] from `f32` values.

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;
use kiln_nn::safetensors::write_atomic;

use super::{DEFAULT_ALIGNMENT, GgmlType, GgufArray, GgufValue};
use crate::{ModelError, Result};

/// A GGUF file being assembled in memory.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug)]
struct PendingTensor {
    name: String,
    /// ggml order: the row length first.
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata key (replacing any earlier value).
    pub fn set(&mut self, key: impl Into<String>, value: GgufValue) {
        self.metadata.insert(key.into(), value);
    }

    /// Removes a metadata key.
    pub fn remove(&mut self, key: &str) {
        self.metadata.remove(key);
    }

    /// Adds a tensor of row-major `shape` (outermost first) from `f32` values, encoded as
    /// `ggml_type` (F32, F16, Q8_0 or Q4_0; see [`quantize`]).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the tensor when the values do not fill the shape, the
    /// type cannot be written, or the row length is not a multiple of the type's block.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        ggml_type: GgmlType,
        values: &[f32],
    ) -> Result<()> {
        let name = name.into();
        let invalid = |reason: String| ModelError::InvalidConfig {
            field: format!("tensor `{name}`"),
            reason,
        };
        if shape.iter().product::<usize>() != values.len() {
            return Err(invalid(format!(
                "{} values do not fill the shape {shape:?}",
                values.len()
            )));
        }
        let row = shape.last().copied().unwrap_or(1);
        let data = quantize(ggml_type, values, row).map_err(invalid)?;
        self.tensors.push(PendingTensor {
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            name,
            ggml_type,
            data,
        });
        Ok(())
    }

    /// The bytes of the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let alignment = self
            .metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .filter(|&a| a > 0 && a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT) as usize;
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&value_type(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + t.data.len()).next_multiple_of(alignment);
        }
        out.resize(out.len().next_multiple_of(alignment), 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(out.len().next_multiple_of(alignment), 0);
        }
        out
    }

    /// Writes the file to `path` (through a temporary sibling and a rename, so an interrupted
    /// write leaves no partial file under that name).
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(write_atomic(path, &self.to_bytes())?)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's type id of a value.
fn value_type(value: &GgufValue) -> u32 {
    match value {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, value: &GgufValue) {
    match value {
        GgufValue::U8(v) => out.push(*v),
        GgufValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Bool(v) => out.push(u8::from(*v)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, array: &GgufArray) {
    macro_rules! numbers {
        ($id:expr, $v:expr) => {{
            out.extend_from_slice(&($id as u32).to_le_bytes());
            out.extend_from_slice(&($v.len() as u64).to_le_bytes());
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }};
    }
    match array {
        GgufArray::U8(v) => numbers!(0, v),
        GgufArray::I8(v) => numbers!(1, v),
        GgufArray::U16(v) => numbers!(2, v),
        GgufArray::I16(v) => numbers!(3, v),
        GgufArray::U32(v) => numbers!(4, v),
        GgufArray::I32(v) => numbers!(5, v),
        GgufArray::F32(v) => numbers!(6, v),
        GgufArray::U64(v) => numbers!(10, v),
        GgufArray::I64(v) => numbers!(11, v),
        GgufArray::F64(v) => numbers!(12, v),
        GgufArray::Bool(v) => {
            out.extend_from_slice(&7u32.to_le_bytes());
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            out.extend(v.iter().map(|&b| u8::from(b)));
        }
        GgufArray::String(v) => {
            out.extend_from_slice(&8u32.to_le_bytes());
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for s in v {
                put_string(out, s);
            }
        }
        GgufArray::Array(v) => {
            out.extend_from_slice(&9u32.to_le_bytes());
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for a in v {
                put_array(out, a);
            }
        }
    }
}

/// Encodes `values` (rows of `row` values) as `ggml_type`, as ggml's reference quantizers
/// (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`) do: F32, F16 (round to nearest even),
/// Q8_0 (blocks of 32: scale `max|x| / 127`, values rounded half away from zero) and Q4_0 (blocks
/// of 32: scale `-m / 8` where `m` is the value of largest magnitude, nibbles `min(15,
/// trunc(x / scale + 8.5))`).
///
/// # Errors
/// A message for another type, or a row length that is not a multiple of the block (32).
pub fn quantize(
    ggml_type: GgmlType,
    values: &[f32],
    row: usize,
) -> std::result::Result<Vec<u8>, String> {
    match ggml_type {
        GgmlType::F32 => Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        GgmlType::F16 => Ok(values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect()),
        GgmlType::Q8_0 | GgmlType::Q4_0 => {
            if !row.is_multiple_of(32) {
                return Err(format!(
                    "rows of {row} values cannot be stored as {ggml_type}: the row length must be \
                     a multiple of 32"
                ));
            }
            let mut out = Vec::with_capacity(values.len() / 32 * 34);
            for block in values.chunks_exact(32) {
                if ggml_type == GgmlType::Q8_0 {
                    q8_0_block(block, &mut out);
                } else {
                    q4_0_block(block, &mut out);
                }
            }
            Ok(out)
        }
        other => Err(format!(
            "kiln writes F32, F16, Q8_0 and Q4_0 tensors, not {other}"
        )),
    }
}

fn q8_0_block(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

fn q4_0_block(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    let nibble = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    out.extend((0..16).map(|j| nibble(x[j]) | (nibble(x[16 + j]) << 4)));
}
