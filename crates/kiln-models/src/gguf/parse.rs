//! Parsing the header, metadata and tensor table of a GGUF file, every read bounds-checked.

use std::collections::{BTreeMap, HashMap};

use super::DEFAULT_ALIGNMENT;
use super::file::GgufTensorInfo;
use super::ggml_type::GgmlType;
use super::value::{GgufArray, GgufValue, ScalarDisplay};

const MAGIC: [u8; 4] = *b"GGUF";
/// Most dimensions a tensor may have (ggml itself uses 4).
const MAX_DIMS: usize = 8;
/// Deepest nesting of metadata arrays accepted.
const MAX_ARRAY_DEPTH: usize = 16;
/// Largest `general.alignment` accepted.
const MAX_ALIGNMENT: u64 = 1 << 30;

/// A parse error message (the file path is added by the caller).
pub(super) type ParseResult<T> = std::result::Result<T, String>;

pub(super) struct Parsed {
    pub(super) version: u32,
    pub(super) alignment: u64,
    pub(super) data_offset: usize,
    pub(super) metadata: BTreeMap<String, GgufValue>,
    pub(super) tensors: Vec<GgufTensorInfo>,
    pub(super) by_name: HashMap<String, usize>,
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
pub(super) fn parse(buf: &[u8]) -> ParseResult<Parsed> {
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
