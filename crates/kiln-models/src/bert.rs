//! BERT-family encoders (BERT, MiniLM): `BertModel` and `BertForSequenceClassification` in
//! transformers.
//!
//! Post-norm blocks: `x = LN(x + attn(x))`, `x = LN(x + W2·gelu(W1·x))`, bidirectional attention
//! with padded keys masked, learned absolute positions and token types. Module paths equal the
//! checkpoint keys (`encoder.layer.0.attention.self.query`, `bert.` in front for the
//! classification model), so PEFT adapters (`SEQ_CLS`) load without renaming.

use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::activation::{gelu, softmax, tanh};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use kiln_nn::AdaptableLinear;
use kiln_nn::adapter::PromptEncoder;
use kiln_nn::{AdapterTarget, ModelGeometry};

use crate::adapter::{active_prompt, linear_visitors, prompt_encoder_methods};
use crate::error::{invalid_config, parse_json};
use crate::layers::{LayerNorm, embedding};
use crate::source::{StrictLoader, TensorSource};
use crate::{LmInput, ModelError, Result};

/// A BERT configuration, deserialized from Hugging Face's `config.json` (unknown keys ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// `bert` (MiniLM checkpoints say `bert` too).
    pub model_type: String,
    /// Vocabulary rows.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// `gelu` (exact) is supported.
    pub hidden_act: String,
    /// Learned positions.
    pub max_position_embeddings: usize,
    /// Token-type rows.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Padding id.
    pub pad_token_id: u32,
    /// Only `absolute` is supported.
    pub position_embedding_type: String,
    /// Class names of a classification head (`id2label`), by id.
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    /// Dropout on the pooled output before the classifier (training only).
    pub hidden_dropout_prob: f64,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            model_type: "bert".into(),
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".into(),
            id2label: None,
            hidden_dropout_prob: 0.1,
        }
    }
}

impl BertConfig {
    /// Parses `config.json` text; `path` names the file in errors.
    ///
    /// # Errors
    /// Malformed JSON or an unsupported value, naming the field.
    pub fn from_json_str(text: &str, path: &std::path::Path) -> Result<Self> {
        let cfg: Self = parse_json(text, path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of classes of a classification head (`id2label`, default 2).
    pub fn num_labels(&self) -> usize {
        self.id2label.as_ref().map_or(2, |m| m.len().max(1))
    }

    /// Checks supported values.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_act != "gelu" {
            return invalid_config(
                "hidden_act",
                format!("`{}` is not supported (gelu)", self.hidden_act),
            );
        }
        if self.position_embedding_type != "absolute" {
            return invalid_config(
                "position_embedding_type",
                format!(
                    "`{}` is not supported (absolute)",
                    self.position_embedding_type
                ),
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return invalid_config(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            );
        }
        Ok(())
    }
}

/// Token, position and token-type embeddings, summed and normalized.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `[vocab, hidden]`.
    pub word_embeddings: Embedding,
    /// `[max_positions, hidden]`.
    pub position_embeddings: Embedding,
    /// `[type_vocab, hidden]`.
    pub token_type_embeddings: Embedding,
    /// `LayerNorm` in checkpoints.
    pub layer_norm: LayerNorm,
}

/// Multi-head self-attention (`attention.self`).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// Query projection.
    pub query: AdaptableLinear,
    /// Key projection.
    pub key: AdaptableLinear,
    /// Value projection.
    pub value: AdaptableLinear,
    /// Heads.
    pub num_heads: usize,
}

/// `attention.output`: projection, residual, LayerNorm.
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    /// Output projection.
    pub dense: AdaptableLinear,
    /// `LayerNorm` in checkpoints.
    pub layer_norm: LayerNorm,
}

/// `attention`.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `attention.self` in checkpoints.
    pub self_attention: BertSelfAttention,
    /// `attention.output`.
    pub output: BertSelfOutput,
}

/// One encoder block.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Attention sub-block.
    pub attention: BertAttention,
    /// `intermediate.dense` (hidden → intermediate, GELU).
    pub intermediate: AdaptableLinear,
    /// `output.dense` (intermediate → hidden).
    pub output: AdaptableLinear,
    /// `output.LayerNorm`.
    pub output_layer_norm: LayerNorm,
}

/// A BERT encoder (`BertModel`).
#[derive(Module, Debug)]
pub struct BertModel {
    /// Embeddings.
    pub embeddings: BertEmbeddings,
    /// `encoder.layer.{i}`.
    pub layers: Vec<BertLayer>,
    /// `pooler.dense` (tanh), when the checkpoint has it.
    pub pooler: Option<AdaptableLinear>,
    /// Prompt or prefix tuning.
    pub prompt_encoder: Option<PromptEncoder>,
    /// The prompt encoder is bypassed (adapters disabled).
    pub prompt_disabled: bool,
    /// LayerNorm epsilon etc. are in the norms; heads for attention are per layer.
    pub hidden_size: usize,
}

/// BERT with a classification head on the pooled first token (`BertForSequenceClassification`).
#[derive(Module, Debug)]
pub struct BertForSequenceClassification {
    /// The encoder (`bert.*`).
    pub bert: BertModel,
    /// `classifier`: hidden → labels.
    pub classifier: AdaptableLinear,
}

impl BertSelfAttention {
    fn forward(
        &self,
        x: Tensor<3>,
        bias: &Tensor<4>,
        prefix: Option<&(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        let split = |y: Tensor<3>| y.reshape([b, t, h, hd]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let mut k = split(self.key.forward(x.clone()));
        let mut v = split(self.value.forward(x));
        if let Some((pk, pv)) = prefix {
            k = Tensor::cat(vec![pk.clone(), k], 2);
            v = Tensor::cat(vec![pv.clone(), v], 2);
        }
        // [b, h, t, s]
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (hd as f64).sqrt())
            + bias.clone();
        softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, t, d])
    }
}

impl BertLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        bias: &Tensor<4>,
        prefix: Option<&(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3> {
        let a = self
            .attention
            .self_attention
            .forward(x.clone(), bias, prefix);
        let o = &self.attention.output;
        let x = o.layer_norm.forward(x + o.dense.forward(a));
        let h = gelu(self.intermediate.forward(x.clone()));
        self.output_layer_norm.forward(x + self.output.forward(h))
    }
}

impl BertModel {
    /// The last hidden state `[batch, seq, hidden]`. Token types are 0; positions count from 0
    /// (after any soft prompt); padded keys (`attention_mask` 0) are masked.
    ///
    /// # Panics
    /// If the sequence is longer than the learned positions ([`BertModel::check_length`]
    /// tells beforehand).
    pub fn forward(&self, input: &LmInput) -> Tensor<3> {
        let device = input.input_ids.device();
        let [b, t] = input.input_ids.dims();
        let enc = active_prompt(&self.prompt_encoder, self.prompt_disabled);
        let mut x = self
            .embeddings
            .word_embeddings
            .forward(input.input_ids.clone());
        let mut n_soft = 0;
        let mut prefix = None;
        match enc {
            Some(PromptEncoder::Prompt(p)) => {
                n_soft = p.embedding.dims()[0];
                x = Tensor::cat(vec![p.forward(b), x], 1);
            }
            Some(PromptEncoder::Prefix(p)) => prefix = Some(p.past(b)),
            None => {}
        }
        let n_prefix = prefix.as_ref().map_or(0, |p| p[0].0.dims()[2]);
        let s = n_soft + t;
        let max = self.embeddings.position_embeddings.weight.dims()[0];
        assert!(
            s <= max,
            "sequence length {s} exceeds the {max} learned positions"
        );
        let positions = Tensor::<1, Int>::arange(0..s as i64, &device).reshape([1, s]);
        let types = Tensor::<2, Int>::zeros([1, s], &device);
        let e = &self.embeddings;
        let x =
            x + e.position_embeddings.forward(positions) + e.token_type_embeddings.forward(types);
        let mut x = e.layer_norm.forward(x);
        let real = input
            .attention_mask
            .clone()
            .unwrap_or_else(|| Tensor::<2, Int>::ones([b, t], &device));
        let mask = Tensor::cat(
            vec![
                Tensor::<2, Int>::ones([b, n_prefix + n_soft], &device),
                real,
            ],
            1,
        );
        let keys = n_prefix + s;
        // 0 where a key may be attended, -1e9 for padding: [b, 1, 1, keys]
        let bias = mask
            .equal_elem(0)
            .float()
            .mul_scalar(-1e9)
            .reshape([b, 1, 1, keys]);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &bias, prefix.as_ref().map(|p| &p[i]));
        }
        x.narrow(1, n_soft, t)
    }

    /// `tanh(pooler(h[:, 0]))`, `[batch, hidden]`; `h[:, 0]` when there is no pooler.
    pub fn pooled(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = hidden.dims();
        let first = hidden.narrow(1, 0, 1).reshape([b, d]);
        match &self.pooler {
            Some(p) => tanh(p.forward(first)),
            None => first,
        }
    }

    /// Positions the model learned (the longest sequence, soft-prompt tokens included).
    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embeddings.weight.dims()[0]
    }

    /// Checks that `input` (with the active soft prompt's tokens) fits the learned positions.
    ///
    /// # Errors
    /// [`ModelError::SequenceTooLong`] naming both lengths.
    pub fn check_length(&self, input: &LmInput) -> Result<()> {
        let n_soft = match active_prompt(&self.prompt_encoder, self.prompt_disabled) {
            Some(PromptEncoder::Prompt(p)) => p.embedding.dims()[0],
            _ => 0,
        };
        let tokens = n_soft + input.input_ids.dims()[1];
        let positions = self.max_positions();
        if tokens > positions {
            return Err(ModelError::SequenceTooLong {
                tokens,
                positions,
                model: "BERT".into(),
            });
        }
        Ok(())
    }

    /// Sentence embeddings as sentence-transformers computes them for all-MiniLM-L6-v2: the mean
    /// of the last hidden states over real tokens, then (with `normalize`) L2-normalized.
    /// `[batch, hidden]`.
    ///
    /// # Errors
    /// A sequence longer than the learned positions ([`BertModel::check_length`]).
    pub fn mean_pooled(&self, input: &LmInput, normalize: bool) -> Result<Tensor<2>> {
        self.check_length(input)?;
        let h = self.forward(input);
        let [b, t, d] = h.dims();
        let device = h.device();
        let mask = input
            .attention_mask
            .clone()
            .unwrap_or_else(|| Tensor::<2, Int>::ones([b, t], &device))
            .float()
            .reshape([b, t, 1]);
        let sum = (h * mask.clone()).sum_dim(1).reshape([b, d]);
        let count = mask.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
        let mean = sum / count;
        if normalize {
            let norm = mean
                .clone()
                .powi_scalar(2)
                .sum_dim(1)
                .sqrt()
                .clamp_min(1e-12);
            Ok(mean / norm)
        } else {
            Ok(mean)
        }
    }

    /// Builds the encoder from checkpoint tensors named with `prefix` (`""` or `"bert."`).
    ///
    /// # Errors
    /// A missing, unexpected or wrong-shape tensor, naming it.
    fn load<S: TensorSource + ?Sized>(
        cfg: &BertConfig,
        ld: &mut StrictLoader<'_, S>,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        let (d, ff, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let lin = |ld: &mut StrictLoader<'_, S>,
                   name: &str,
                   d_in: usize,
                   d_out: usize|
         -> Result<AdaptableLinear> {
            let w = ld.take(&format!("{prefix}{name}.weight"), &[d_out, d_in])?;
            let b = ld.take(&format!("{prefix}{name}.bias"), &[d_out])?;
            Ok(AdaptableLinear::from_torch(w, d_out, d_in, Some(b), device))
        };
        let norm = |ld: &mut StrictLoader<'_, S>, name: &str| -> Result<LayerNorm> {
            let w = ld.take(&format!("{prefix}{name}.weight"), &[d])?;
            let b = ld.take(&format!("{prefix}{name}.bias"), &[d])?;
            Ok(LayerNorm::from_values(w, b, eps, device))
        };
        let emb = |ld: &mut StrictLoader<'_, S>, name: &str, rows: usize| -> Result<Embedding> {
            let w = ld.take(&format!("{prefix}embeddings.{name}.weight"), &[rows, d])?;
            Ok(embedding(
                Param::from_data(TensorData::new(w, [rows, d]), device),
                device,
            ))
        };
        let embeddings = BertEmbeddings {
            word_embeddings: emb(ld, "word_embeddings", cfg.vocab_size)?,
            position_embeddings: emb(ld, "position_embeddings", cfg.max_position_embeddings)?,
            token_type_embeddings: emb(ld, "token_type_embeddings", cfg.type_vocab_size)?,
            layer_norm: norm(ld, "embeddings.LayerNorm")?,
        };
        // Grown as layers load: the configured count is not trusted with an allocation.
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(BertLayer {
                attention: BertAttention {
                    self_attention: BertSelfAttention {
                        query: lin(ld, &format!("{p}.attention.self.query"), d, d)?,
                        key: lin(ld, &format!("{p}.attention.self.key"), d, d)?,
                        value: lin(ld, &format!("{p}.attention.self.value"), d, d)?,
                        num_heads: cfg.num_attention_heads,
                    },
                    output: BertSelfOutput {
                        dense: lin(ld, &format!("{p}.attention.output.dense"), d, d)?,
                        layer_norm: norm(ld, &format!("{p}.attention.output.LayerNorm"))?,
                    },
                },
                intermediate: lin(ld, &format!("{p}.intermediate.dense"), d, ff)?,
                output: lin(ld, &format!("{p}.output.dense"), ff, d)?,
                output_layer_norm: norm(ld, &format!("{p}.output.LayerNorm"))?,
            });
        }
        let pooler = if ld.has(&format!("{prefix}pooler.dense.weight")) {
            Some(lin(ld, "pooler.dense", d, d)?)
        } else {
            None
        };
        Ok(Self {
            embeddings,
            layers,
            pooler,
            prompt_encoder: None,
            prompt_disabled: false,
            hidden_size: d,
        })
    }

    /// Loads a `BertModel` checkpoint (keys without `bert.`; a `bert.` prefix is accepted and a
    /// classification head, if present, is ignored).
    ///
    /// # Errors
    /// A missing, unexpected or wrong-shape tensor, naming it.
    pub fn from_source<S: TensorSource + ?Sized>(
        cfg: &BertConfig,
        source: &S,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut ld = StrictLoader::new(source);
        let prefix = bert_prefix(&ld);
        let model = Self::load(cfg, &mut ld, prefix, device)?;
        ld.finish(&|n| {
            n.ends_with("position_ids") || n.starts_with("classifier.") || n.starts_with("cls.")
        })?;
        Ok(model)
    }

    linear_visitors!(fn visit / visit_mut (self, prefix: &str) |m, f| {
        for (i, l) in (0usize..).zip(r!(m.layers)) {
            let p = format!("{prefix}encoder.layer.{i}");
            let a = r!(l.attention);
            f(&format!("{p}.attention.self.query"), r!(a.self_attention.query));
            f(&format!("{p}.attention.self.key"), r!(a.self_attention.key));
            f(&format!("{p}.attention.self.value"), r!(a.self_attention.value));
            f(&format!("{p}.attention.output.dense"), r!(a.output.dense));
            f(&format!("{p}.intermediate.dense"), r!(l.intermediate));
            f(&format!("{p}.output.dense"), r!(l.output));
        }
        if let Some(p) = r!(m.pooler) {
            f(&format!("{prefix}pooler.dense"), p);
        }
    });

    fn geometry_of(&self) -> ModelGeometry {
        let heads = self
            .layers
            .first()
            .map_or(1, |l| l.attention.self_attention.num_heads);
        ModelGeometry {
            hidden_size: self.hidden_size,
            num_layers: self.layers.len(),
            num_kv_heads: heads,
            head_dim: self.hidden_size / heads,
            vocab_size: self.embeddings.word_embeddings.weight.dims()[0],
        }
    }
}

/// The prefix of the `BertModel` keys in a checkpoint: `bert.` in a classifier's checkpoint,
/// none in an encoder's.
fn bert_prefix<S: TensorSource + ?Sized>(ld: &StrictLoader<'_, S>) -> &'static str {
    if ld.has("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    }
}

impl BertForSequenceClassification {
    /// Class logits `[batch, num_labels]` from the pooled first token.
    ///
    /// # Panics
    /// If the sequence is longer than the learned positions; [`Self::try_forward`] returns an
    /// error instead.
    pub fn forward(&self, input: &LmInput) -> Tensor<2> {
        let h = self.bert.forward(input);
        self.classifier.forward(self.bert.pooled(h))
    }

    /// [`Self::forward`] for input from outside the program: a sequence longer than the learned
    /// positions is an error before any compute.
    ///
    /// # Errors
    /// [`ModelError::SequenceTooLong`] naming both lengths.
    pub fn try_forward(&self, input: &LmInput) -> Result<Tensor<2>> {
        self.bert.check_length(input)?;
        Ok(self.forward(input))
    }

    /// Loads a `BertForSequenceClassification` checkpoint. A checkpoint without `classifier.*`
    /// (e.g. a sentence-embedding model) gets a fresh head, `N(0, 0.02²)` with a zero bias, for
    /// `cfg.num_labels()` classes (seeded by `seed`).
    ///
    /// # Errors
    /// A missing, unexpected or wrong-shape tensor, naming it.
    pub fn from_source<S: TensorSource + ?Sized>(
        cfg: &BertConfig,
        source: &S,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut ld = StrictLoader::new(source);
        let prefix = bert_prefix(&ld);
        let bert = BertModel::load(cfg, &mut ld, prefix, device)?;
        let (d, n) = (cfg.hidden_size, cfg.num_labels());
        let classifier = match ld.take_optional("classifier.weight", &[n, d])? {
            Some(w) => {
                let b = ld.take("classifier.bias", &[n])?;
                AdaptableLinear::from_torch(w, n, d, Some(b), device)
            }
            None => {
                let mut rng = kiln_nn::init::HostRng::new(seed).fork("classifier");
                AdaptableLinear::init_normal(&mut rng, d, n, true, 0.02, device)
                    .with_fan_in_fan_out(false)
            }
        };
        ld.finish(&|n| n.ends_with("position_ids") || n.starts_with("cls."))?;
        Ok(Self { bert, classifier })
    }
}

/// Reads `config.json` of a BERT directory.
fn read_config(dir: &std::path::Path) -> Result<BertConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    BertConfig::from_json_str(&text, &path)
}

/// Loads a BERT encoder (e.g. all-MiniLM-L6-v2) from a Hugging Face directory.
///
/// # Errors
/// Unreadable files, an unsupported configuration, or tensors that do not fit, naming them.
pub fn load_bert(
    dir: impl AsRef<std::path::Path>,
    device: &Device,
) -> Result<(BertConfig, BertModel)> {
    let dir = dir.as_ref();
    let cfg = read_config(dir)?;
    let source = crate::SafetensorsDir::open(dir)?;
    let model = BertModel::from_source(&cfg, &source, device)?;
    Ok((cfg, model))
}

/// Loads a BERT classifier from a Hugging Face directory. With `labels`, the head has those
/// classes: a checkpoint without a `classifier` gets a fresh one; a checkpoint head of another
/// size is an error naming the tensor.
///
/// # Errors
/// As [`load_bert`].
pub fn load_bert_classifier(
    dir: impl AsRef<std::path::Path>,
    labels: Option<&[String]>,
    seed: u64,
    device: &Device,
) -> Result<(BertConfig, BertForSequenceClassification)> {
    let dir = dir.as_ref();
    let mut cfg = read_config(dir)?;
    if let Some(labels) = labels {
        cfg.id2label = Some(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone()))
                .collect(),
        );
    }
    let source = crate::SafetensorsDir::open(dir)?;
    let model = BertForSequenceClassification::from_source(&cfg, &source, seed, device)?;
    Ok((cfg, model))
}

impl AdapterTarget for BertModel {
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut AdaptableLinear)) {
        self.visit_mut("", f);
    }

    fn visit_linears(&self, f: &mut dyn FnMut(&str, &AdaptableLinear)) {
        self.visit("", f);
    }

    fn geometry(&self) -> ModelGeometry {
        self.geometry_of()
    }

    fn token_embeddings(&self) -> Tensor<2> {
        self.embeddings.word_embeddings.weight.val()
    }

    prompt_encoder_methods!();

    fn has_other_biases(&self) -> bool {
        true
    }
}

/// Paths carry the checkpoint's `bert.` prefix; the head is `classifier` (a `modules_to_save`
/// candidate, as PEFT's `SEQ_CLS` task makes it).
impl AdapterTarget for BertForSequenceClassification {
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&str, &mut AdaptableLinear)) {
        self.bert.visit_mut("bert.", f);
        f("classifier", &mut self.classifier);
    }

    fn visit_linears(&self, f: &mut dyn FnMut(&str, &AdaptableLinear)) {
        self.bert.visit("bert.", f);
        f("classifier", &self.classifier);
    }

    fn geometry(&self) -> ModelGeometry {
        self.bert.geometry_of()
    }

    fn token_embeddings(&self) -> Tensor<2> {
        self.bert.token_embeddings()
    }

    fn prompt_encoder(&self) -> Option<&PromptEncoder> {
        self.bert.prompt_encoder.as_ref()
    }

    fn set_prompt_encoder(&mut self, encoder: Option<PromptEncoder>) {
        self.bert.prompt_encoder = encoder;
    }

    fn set_adapters_enabled(&mut self, enabled: bool) {
        self.bert.set_adapters_enabled(enabled);
        self.classifier.set_adapters_enabled(enabled);
    }

    fn has_other_biases(&self) -> bool {
        true
    }
}
