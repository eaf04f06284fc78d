//! Where weights come from: Hugging Face safetensors directories and GGUF files, behind one
//! trait that speaks Hugging Face tensor names and PyTorch shapes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use kiln_nn::{QuantFormat, QuantizedMatrix};

use crate::gguf::{GgmlType, GgufFile};
use crate::{ModelError, Result};

/// A checkpoint's tensors by Hugging Face name, dequantized or converted to `f32` on demand.
pub trait TensorSource {
    /// What to call the checkpoint in errors (its path).
    fn source_name(&self) -> String;

    /// All tensor names (Hugging Face naming).
    fn names(&self) -> Vec<String>;

    /// The PyTorch (row-major, outermost first) shape of a tensor, if present.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;

    /// The values of a tensor in row-major order, as `f32`.
    ///
    /// # Errors
    /// A missing tensor or an unsupported element type, naming the tensor.
    fn load(&self, name: &str) -> Result<Vec<f32>>;
}

/// Reads the tensors an architecture expects, checking names and shapes strictly.
#[derive(Debug)]
pub struct StrictLoader<'a, S: TensorSource + ?Sized> {
    source: &'a S,
    used: BTreeSet<String>,
}

impl<'a, S: TensorSource + ?Sized> StrictLoader<'a, S> {
    /// A loader over a source.
    pub fn new(source: &'a S) -> Self {
        Self {
            source,
            used: BTreeSet::new(),
        }
    }

    fn err(&self, tensor: &str, reason: String) -> ModelError {
        ModelError::Tensor {
            source_name: self.source.source_name(),
            tensor: tensor.into(),
            reason,
        }
    }

    /// Whether the checkpoint has a tensor.
    pub fn has(&self, name: &str) -> bool {
        self.source.shape(name).is_some()
    }

    /// Loads a tensor that must have exactly `shape`.
    ///
    /// # Errors
    /// A missing tensor or a shape mismatch, naming the tensor.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let got = self
            .source
            .shape(name)
            .ok_or_else(|| self.err(name, "missing from the checkpoint".into()))?;
        if got != shape {
            return Err(self.err(
                name,
                format!("shape {got:?} does not match the expected {shape:?}"),
            ));
        }
        let values = self.source.load(name)?;
        self.used.insert(name.to_string());
        Ok(values)
    }

    /// Loads a tensor when present.
    ///
    /// # Errors
    /// A shape mismatch.
    pub fn take_optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fails on tensors the architecture did not consume, except those matching `ignore`.
    ///
    /// # Errors
    /// The first unexpected tensor (with a count of the others).
    pub fn finish(self, ignore: &dyn Fn(&str) -> bool) -> Result<()> {
        let unused: Vec<String> = self
            .source
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(n) && !ignore(n))
            .collect();
        if let Some(first) = unused.first() {
            let more = if unused.len() > 1 {
                format!(" (and {} more)", unused.len() - 1)
            } else {
                String::new()
            };
            return Err(self.err(
                first,
                format!("unexpected tensor for this architecture{more}"),
            ));
        }
        Ok(())
    }
}

/// A Hugging Face model directory: `model.safetensors` or sharded
/// `model.safetensors.index.json`, with f32, f16 or bf16 tensors. Files are memory-mapped.
#[derive(Debug)]
pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap, usize)>,
    index: BTreeMap<String, (usize, safetensors::tensor::TensorInfo)>,
}

#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the file is opened read-only and only read through the map; checkpoints must not be
    // modified while a model is loading from them.
    unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl SafetensorsDir {
    /// Opens the weights of a model directory.
    ///
    /// # Errors
    /// No weights file, an unreadable index, or a malformed safetensors header.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if single.exists() {
            vec!["model.safetensors".into()]
        } else if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io {
                path: index_path.clone(),
                source,
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ModelError::Json {
                    path: index_path.clone(),
                    source,
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::InvalidConfig {
                    field: format!("{}: weight_map", index_path.display()),
                    reason: "missing or not an object".into(),
                })?;
            let set: BTreeSet<String> = map
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            set.into_iter().collect()
        } else {
            return Err(ModelError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the directory",
                ),
            });
        };
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for (i, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let map = map_file(&path)?;
            let (header, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| ModelError::Tensor {
                    source_name: path.display().to_string(),
                    tensor: "<header>".into(),
                    reason: e.to_string(),
                })?;
            for (tname, info) in meta.tensors() {
                index.insert(tname, (i, info.clone()));
            }
            files.push((path, map, 8 + header));
        }
        Ok(Self { dir, files, index })
    }
}

impl TensorSource for SafetensorsDir {
    fn source_name(&self) -> String {
        self.dir.display().to_string()
    }

    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.index.get(name).map(|(_, info)| info.shape.clone())
    }

    fn load(&self, name: &str) -> Result<Vec<f32>> {
        let (file, info) = self.index.get(name).ok_or_else(|| ModelError::Tensor {
            source_name: self.source_name(),
            tensor: name.into(),
            reason: "missing from the checkpoint".into(),
        })?;
        let (path, map, start) = &self.files[*file];
        let (a, b) = info.data_offsets;
        let bytes = map
            .get(start + a..start + b)
            .ok_or_else(|| ModelError::Tensor {
                source_name: path.display().to_string(),
                tensor: name.into(),
                reason: "data lies past the end of the file (truncated?)".into(),
            })?;
        let pairs = bytes.chunks_exact(2);
        Ok(match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => pairs
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => pairs
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::Tensor {
                    source_name: path.display().to_string(),
                    tensor: name.into(),
                    reason: format!("dtype {other:?} is not supported (f32, f16, bf16)"),
                });
            }
        })
    }
}

/// A GGUF file seen through Hugging Face tensor names (`blk.0.attn_q.weight` →
/// `model.layers.0.self_attn.q_proj.weight`), with llama.cpp's q/k row permutation undone for the
/// Llama architecture so weights (and LoRA adapters) are in the Hugging Face layout.
#[derive(Debug)]
pub struct GgufSource {
    file: GgufFile,
    /// HF name → GGUF name.
    names: BTreeMap<String, String>,
    /// HF names of q/k weights that need the reverse permutation, with their head count.
    permute: HashMap<String, usize>,
    /// HF names of 2-D weights stored transposed (GPT-2's `Conv1D` weights).
    transpose: BTreeSet<String>,
    /// Norm weights are stored as the gain (Gemma's `1 + weight`) and read back as the offset.
    norm_offsets: bool,
}

impl GgufSource {
    /// Wraps a GGUF file; `heads`/`kv_heads` drive the q/k permutation when `permute_qk`.
    pub fn new(file: GgufFile, heads: usize, kv_heads: usize, permute_qk: bool) -> Self {
        let mut names = BTreeMap::new();
        let mut permute = HashMap::new();
        for info in file.tensors() {
            let g = info.name();
            let Some(hf) = crate::llama::GGUF_NAMES.hf_name(g) else {
                names.insert(format!("gguf:{g}"), g.to_string());
                continue;
            };
            if permute_qk && hf.ends_with("self_attn.q_proj.weight") {
                permute.insert(hf.clone(), heads);
            } else if permute_qk && hf.ends_with("self_attn.k_proj.weight") {
                permute.insert(hf.clone(), kv_heads);
            }
            names.insert(hf, g.to_string());
        }
        Self {
            file,
            names,
            permute,
            transpose: BTreeSet::new(),
            norm_offsets: false,
        }
    }

    /// Wraps a GGUF file of a Gemma 3 model: names map to the Hugging Face ones, and the norm
    /// weights, which llama.cpp stores as the gain `1 + weight`, read back as Hugging Face's
    /// `weight` (as transformers' GGUF loader does).
    pub fn gemma3(file: GgufFile) -> Self {
        let mut names = BTreeMap::new();
        for info in file.tensors() {
            let g = info.name();
            match crate::gemma3::GGUF_NAMES.hf_name(g) {
                Some(hf) => names.insert(hf, g.to_string()),
                None => names.insert(format!("gguf:{g}"), g.to_string()),
            };
        }
        Self {
            file,
            names,
            permute: HashMap::new(),
            transpose: BTreeSet::new(),
            norm_offsets: true,
        }
    }

    /// Wraps a GGUF file of a GPT-2 model, in llama.cpp's layout: names map to the Hugging Face
    /// ones (`transformer.h.N.attn.c_attn.weight`, ...), the `Conv1D` weights that llama.cpp
    /// stores `[out, in]` read back as `[in, out]`, and the `output.weight` copy of the tied
    /// token embedding is not exposed.
    pub fn gpt2(file: GgufFile) -> Self {
        let mut names = BTreeMap::new();
        let mut transpose = BTreeSet::new();
        for info in file.tensors() {
            let g = info.name();
            match crate::gpt2::GGUF_NAMES.hf_name(g) {
                Some(hf) => {
                    if info.shape().len() == 2 && hf.contains(".h.") && hf.ends_with(".weight") {
                        transpose.insert(hf.clone());
                    }
                    names.insert(hf, g.to_string());
                }
                None if g == "output.weight" => {}
                None => {
                    names.insert(format!("gguf:{g}"), g.to_string());
                }
            }
        }
        Self {
            file,
            names,
            permute: HashMap::new(),
            transpose,
            norm_offsets: false,
        }
    }

    /// A [`ModelError::Gguf`] about the tensor with the Hugging Face name `name`, naming the file
    /// and the tensor by its GGUF name.
    pub fn tensor_error(&self, name: &str, message: String) -> ModelError {
        let tensor = match self.names.get(name) {
            Some(g) if g != name => format!("tensor `{g}` (`{name}`)"),
            _ => format!("tensor `{name}`"),
        };
        ModelError::Gguf {
            path: self.file.path().to_path_buf(),
            message: format!("{tensor}: {message}"),
        }
    }

    /// The underlying file (for metadata).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The blocks of a 2-D weight stored as Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K or Q6_K, as a `[out, in]` matrix in the
    /// Hugging Face row order (llama.cpp's q/k permutation undone); `None` for other types,
    /// other ranks or unknown names.
    ///
    /// # Errors
    /// A truncated file or inconsistent block data, naming the tensor.
    pub fn quantized(&self, name: &str) -> Result<Option<QuantizedMatrix>> {
        let Some(g) = self.names.get(name) else {
            return Ok(None);
        };
        let info = self.file.tensor_info(g)?;
        let format = match info.ggml_type() {
            GgmlType::Q4_0 => QuantFormat::Q4_0,
            GgmlType::Q4_1 => QuantFormat::Q4_1,
            GgmlType::Q8_0 => QuantFormat::Q8_0,
            GgmlType::Q4_K => QuantFormat::Q4_K,
            GgmlType::Q5_K => QuantFormat::Q5_K,
            GgmlType::Q6_K => QuantFormat::Q6_K,
            GgmlType::Q5_0 => QuantFormat::Q5_0,
            _ => return Ok(None),
        };
        let &[rows, cols] = info.shape().as_slice() else {
            return Ok(None);
        };
        let bytes = self.file.tensor_bytes(g)?;
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, bytes).map_err(|e| {
            self.tensor_error(
                name,
                format!(
                    "{} blocks of shape [{rows}, {cols}] cannot be read: {e}",
                    info.ggml_type()
                ),
            )
        })?;
        Ok(Some(match self.permute.get(name) {
            Some(&heads) => m.permute_rows(&reverse_permutation(rows, heads)),
            None => m,
        }))
    }
}

/// The source row of each Hugging Face row under llama.cpp's q/k permutation (see
/// [`reverse_permute_rows`]).
pub(crate) fn reverse_permutation(rows: usize, heads: usize) -> Vec<usize> {
    let half = rows / heads / 2;
    let mut order = vec![0; rows];
    for h in 0..heads {
        for j in 0..2 {
            for d in 0..half {
                order[h * 2 * half + j * half + d] = h * half * 2 + d * 2 + j;
            }
        }
    }
    order
}

/// The tensor names of one architecture in llama.cpp's GGUF files, with their Hugging Face names:
/// names outside the layers, and the modules of each layer (`blk.{i}.{module}.{kind}` →
/// `{layers}.{i}.{hf}.{kind}`, where `kind` is `weight` or `bias`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GgufNames {
    /// GGUF name → Hugging Face name, outside the layers.
    pub(crate) fixed: &'static [(&'static str, &'static str)],
    /// The Hugging Face prefix of the layers, e.g. `model.layers`.
    pub(crate) layers: &'static str,
    /// GGUF module → Hugging Face module, inside a layer.
    pub(crate) modules: &'static [(&'static str, &'static str)],
}

impl GgufNames {
    /// The Hugging Face name of a GGUF tensor, or `None` for names outside the table.
    pub(crate) fn hf_name(&self, name: &str) -> Option<String> {
        if let Some((_, hf)) = self.fixed.iter().find(|(g, _)| *g == name) {
            return Some((*hf).to_string());
        }
        let rest = name.strip_prefix("blk.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (module, kind) = rest.rsplit_once('.')?;
        let (_, hf) = self.modules.iter().find(|(g, _)| *g == module)?;
        Some(format!("{}.{layer}.{hf}.{kind}", self.layers))
    }
}

/// Maps a llama.cpp tensor name to its Hugging Face name.
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    crate::llama::GGUF_NAMES.hf_name(name)
}

/// Maps a llama.cpp GPT-2 tensor name to its Hugging Face name.
pub fn gguf_to_hf_name_gpt2(name: &str) -> Option<String> {
    crate::gpt2::GGUF_NAMES.hf_name(name)
}

/// Undoes llama.cpp's q/k permutation of a `[rows, cols]` weight: GGUF rows are ordered
/// `[head, half, 2]`, Hugging Face rows `[head, 2, half]`.
pub fn reverse_permute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    reverse_permutation(rows, heads)
        .into_iter()
        .flat_map(|src| values[src * cols..(src + 1) * cols].iter().copied())
        .collect()
}

impl TensorSource for GgufSource {
    fn source_name(&self) -> String {
        self.file.path().display().to_string()
    }

    fn names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let g = self.names.get(name)?;
        let mut shape = self.file.tensor_info(g).ok()?.shape();
        if self.transpose.contains(name) {
            shape.reverse();
        }
        Some(shape)
    }

    fn load(&self, name: &str) -> Result<Vec<f32>> {
        let g = self.names.get(name).ok_or_else(|| ModelError::Tensor {
            source_name: self.source_name(),
            tensor: name.into(),
            reason: "missing from the checkpoint".into(),
        })?;
        let (mut values, shape) = self.file.tensor_f32(g)?;
        if self.norm_offsets && name.ends_with("norm.weight") {
            values.iter_mut().for_each(|v| *v -= 1.0);
        }
        if self.transpose.contains(name) && shape.len() == 2 {
            let (rows, cols) = (shape[0], shape[1]);
            let mut out = vec![0.0f32; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
            return Ok(out);
        }
        match self.permute.get(name) {
            Some(&heads) if shape.len() == 2 => {
                Ok(reverse_permute_rows(&values, shape[0], shape[1], heads))
            }
            _ => Ok(values),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(
            gguf_to_hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            gguf_to_hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            gguf_to_hf_name("blk.0.attn_k.bias").as_deref(),
            Some("model.layers.0.self_attn.k_proj.bias")
        );
        assert_eq!(gguf_to_hf_name("rope_freqs.weight"), None);
        assert_eq!(
            gguf_to_hf_name_gpt2("blk.3.attn_qkv.bias").as_deref(),
            Some("transformer.h.3.attn.c_attn.bias")
        );
        assert_eq!(
            gguf_to_hf_name_gpt2("blk.0.ffn_down.weight").as_deref(),
            Some("transformer.h.0.mlp.c_proj.weight")
        );
        assert_eq!(gguf_to_hf_name_gpt2("output.weight"), None);
    }

    #[test]
    fn reverse_permutation_matches_transformers() {
        // transformers: w.reshape(heads, half, 2, cols).swapaxes(2, 1).reshape(rows, cols)
        let (heads, half, cols) = (2, 3, 2);
        let rows = heads * half * 2;
        let values: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let out = reverse_permute_rows(&values, rows, cols, heads);
        for h in 0..heads {
            for j in 0..2 {
                for d in 0..half {
                    for c in 0..cols {
                        let src = ((h * half + d) * 2 + j) * cols + c;
                        let dst = ((h * 2 + j) * half + d) * cols + c;
                        assert_eq!(out[dst], values[src]);
                    }
                }
            }
        }
    }
}
