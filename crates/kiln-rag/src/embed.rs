//! Dense sentence embeddings: the [`Embed`] trait and the MiniLM [`Embedder`].

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use kiln_models::{BertModel, LmInput, load_bert};
use kiln_tokenizer::Tokenizer;

use crate::{RagError, Result};

/// Turns texts into fixed-size vectors for the dense retriever.
///
/// Implemented by [`Embedder`] (a BERT-family sentence encoder such as all-MiniLM-L6-v2); tests
/// and other models can supply their own.
pub trait Embed {
    /// The length of every vector.
    fn dim(&self) -> usize;

    /// One vector of length [`Embed::dim`] per text, in order. The index normalizes them, so
    /// they need not be unit length.
    ///
    /// # Errors
    /// Whatever the model reports.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;

    /// Where the embedder came from (a model folder), recorded in the index's `meta.json`.
    fn source(&self) -> String {
        String::new()
    }
}

/// Texts per forward pass of [`Embedder`] by default.
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// Tokens per text that [`Embedder`] keeps by default (sentence-transformers'
/// `max_seq_length` of all-MiniLM-L6-v2); longer texts are cut, keeping the final `[SEP]`.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// A sentence encoder embedding texts exactly as sentence-transformers does for
/// all-MiniLM-L6-v2: BERT hidden states mean-pooled over the real tokens, then normalized to
/// unit length.
#[derive(Debug)]
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    dir: PathBuf,
    batch_size: usize,
    max_tokens: usize,
}

impl Embedder {
    /// Loads a Hugging Face BERT-family folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`), e.g. `assets/all-MiniLM-L6-v2`, onto `device`.
    ///
    /// # Errors
    /// [`RagError::Model`] or [`RagError::Tokenizer`] naming the file that cannot be loaded.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let (config, model) = load_bert(dir, device)?;
        let tokenizer = Tokenizer::from_hf_dir(dir)?;
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
            dim: config.hidden_size,
            dir: dir.to_path_buf(),
            batch_size: DEFAULT_BATCH_SIZE,
            max_tokens: DEFAULT_MAX_TOKENS.min(config.max_position_embeddings),
        })
    }

    /// Sets the number of texts per forward pass (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut ids = Vec::with_capacity(texts.len());
        for text in texts {
            let mut row = self.tokenizer.encode(text, true)?;
            if row.len() > self.max_tokens {
                // Keep the closing special token, as the HF tokenizer's truncation does.
                let last = row[row.len() - 1];
                row.truncate(self.max_tokens - 1);
                row.push(last);
            }
            ids.push(row);
        }
        let b = ids.len();
        let t = ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut flat = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for row in &ids {
            flat.extend(row.iter().map(|&x| i64::from(x)));
            flat.extend(std::iter::repeat_n(0i64, t - row.len()));
            mask.extend(std::iter::repeat_n(1i64, row.len()));
            mask.extend(std::iter::repeat_n(0i64, t - row.len()));
        }
        let input = LmInput::new(Tensor::from_data(
            TensorData::new(flat, [b, t]),
            &self.device,
        ))
        .with_attention_mask(Tensor::from_data(
            TensorData::new(mask, [b, t]),
            &self.device,
        ));
        let values: Vec<f32> = self
            .model
            .mean_pooled(&input, true)?
            .into_data()
            .iter::<f32>()
            .collect();
        if values.len() != b * self.dim {
            return Err(RagError::Embedding(format!(
                "{}: expected {b} x {} values, got {}",
                self.dir.display(),
                self.dim,
                values.len()
            )));
        }
        Ok(values.chunks_exact(self.dim).map(<[f32]>::to_vec).collect())
    }
}

impl Embed for Embedder {
    fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds `texts` in batches of [`Embedder::with_batch_size`] texts: unit-length vectors.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn source(&self) -> String {
        self.dir.display().to_string()
    }
}
