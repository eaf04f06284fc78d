//! Text generation with a key/value cache: greedy, temperature, top-k, top-p, repetition penalty,
//! seeded sampling, EOS and stop strings, batched prompts of different lengths, streaming.
//!
//! Runs on a device without autodiff (use `device.without_autodiff()` / `Module::valid`): a
//! forward pass on autodiff tensors that is never followed by `backward` keeps its graph alive.

use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{CachedCausalLm, HostDecoder, ModelError, Result};

/// Turns generated token ids into text (for stop strings).
pub type Decoder<'a> = dyn Fn(&[u32]) -> String + 'a;

/// How to pick tokens. The defaults decode greedily for 128 tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// Most tokens to generate per prompt.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0` decodes greedily.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens before sampling.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p` (nucleus sampling).
    pub top_p: Option<f32>,
    /// Divide positive (multiply negative) logits of already-seen tokens by this (1 = off), as
    /// in transformers' `RepetitionPenaltyLogitsProcessor`.
    pub repetition_penalty: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// Tokens that end a sequence (kept in the output).
    pub eos_token_ids: Vec<u32>,
    /// Texts that end a sequence once the decoded output contains them (needs a decoder).
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
            eos_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// An end-of-sequence token was produced.
    Eos,
    /// A stop string appeared.
    StopString,
    /// `max_new_tokens` was reached.
    Length,
}

/// The new tokens of one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Generated token ids (the prompt excluded; a final EOS included).
    pub tokens: Vec<u32>,
    /// Why generation stopped.
    pub finish: FinishReason,
}

/// Picks the tokens of one sequence by a [`GenerationConfig`]'s rules (temperature, top-k,
/// top-p, repetition penalty) with a seeded sampler of its own: what [`generate()`] does for a
/// single prompt, for callers that run the decoding loop themselves (a server's continuous
/// batch).
#[derive(Debug, Clone)]
pub struct Sampler {
    config: GenerationConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler seeded with `config.seed`.
    ///
    /// # Errors
    /// An invalid configuration, naming the field.
    pub fn new(config: GenerationConfig) -> Result<Self> {
        config.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Ok(Self { config, rng })
    }

    /// The configuration.
    pub fn config(&self) -> &GenerationConfig {
        &self.config
    }

    /// The next token from one row of logits (modified in place); `seen` holds the prompt and
    /// the tokens generated so far (for the repetition penalty).
    pub fn pick(&mut self, logits: &mut [f32], seen: &[u32]) -> u32 {
        self.config.pick(logits, seen, &mut self.rng)
    }
}

impl GenerationConfig {
    /// Checks the ranges: `temperature >= 0`, `top_p` in `(0, 1]`, `top_k >= 1`, a positive
    /// repetition penalty.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(ModelError::InvalidConfig {
                field: field.into(),
                reason,
            })
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", format!("{} must be >= 0", self.temperature));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p", format!("{p} is not in (0, 1]"));
        }
        if self.top_k == Some(0) {
            return bad("top_k", "must be at least 1".into());
        }
        if self.repetition_penalty.is_nan() || self.repetition_penalty <= 0.0 {
            return bad(
                "repetition_penalty",
                format!("{} must be positive", self.repetition_penalty),
            );
        }
        Ok(())
    }

    /// Picks the next token from one row of logits (modified in place).
    fn pick(&self, logits: &mut [f32], seen: &[u32], rng: &mut ChaCha8Rng) -> u32 {
        if self.repetition_penalty != 1.0 {
            for &t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / self.repetition_penalty
                    } else {
                        *l * self.repetition_penalty
                    };
                }
            }
        }
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, highest first.
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if let Some(k) = self.top_k {
            idx.truncate(k.max(1));
        }
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| f64::from((logits[i as usize] - max) / self.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = self.top_p {
            // Smallest prefix whose mass reaches top_p (at least one token).
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= f64::from(top_p) {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut u: f64 = rng.random();
        for (i, p) in probs.iter().enumerate() {
            if u < *p {
                return idx[i];
            }
            u -= p;
        }
        idx[probs.len() - 1]
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The context guard: every prompt plus `max_new_tokens` must fit in `context`, checked before
/// any compute.
fn check_context(
    context: Option<usize>,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
) -> Result<()> {
    let Some(context) = context else {
        return Ok(());
    };
    match prompts
        .iter()
        .position(|p| p.len() + max_new_tokens > context)
    {
        Some(prompt) => Err(ModelError::ContextLength {
            prompt,
            prompt_tokens: prompts[prompt].len(),
            max_new_tokens,
            context,
        }),
        None => Ok(()),
    }
}

/// Generates continuations of `prompts` (token ids; of different lengths, left-padded with
/// `pad_id` internally), decoding all rows together with one key/value cache.
///
/// `decode` turns token ids into text for stop strings; `on_token(row, token)` is called for each
/// new token as it is produced (streaming).
///
/// # Errors
/// An empty prompt, an invalid configuration, or a prompt that with `max_new_tokens` does not
/// fit in the model's context ([`ModelError::ContextLength`]).
pub fn generate<M: CachedCausalLm>(
    model: &M,
    prompts: &[Vec<u32>],
    pad_id: u32,
    config: &GenerationConfig,
    decode: Option<&Decoder<'_>>,
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<Vec<Generation>> {
    config.validate()?;
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::InvalidConfig {
            field: format!("prompts[{i}]"),
            reason: "empty prompt".into(),
        });
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    check_context(model.max_context(), prompts, config.max_new_tokens)?;
    let b = prompts.len();
    let capacity: Vec<usize> = prompts
        .iter()
        .map(|p| p.len() + config.max_new_tokens)
        .collect();
    // The model's own decoder over host buffers when it has one, else the tensor graph.
    let mut engine = match model.host_decoder(&capacity) {
        Some(dec) => Engine::Host {
            dec,
            feed: prompts.to_vec(),
        },
        None => Engine::graph(model, prompts, pad_id),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done: Vec<Option<FinishReason>> = vec![None; b];
    let mut seen: Vec<Vec<u32>> = prompts.to_vec();
    for _step in 0..config.max_new_tokens {
        // One step runs as a task of the rayon pool: the CPU kernels it calls then split their
        // work with cheap joins instead of handing each operation over from this thread.
        let (logits, vocab) = rayon::scope(|_| engine.logits(model, b));
        let mut next = Vec::with_capacity(b);
        for row in 0..b {
            if done[row].is_some() {
                next.push(None);
                continue;
            }
            let mut l = logits[row * vocab..(row + 1) * vocab].to_vec();
            let tok = config.pick(&mut l, &seen[row], &mut rng);
            out[row].push(tok);
            seen[row].push(tok);
            on_token(row, tok);
            if config.eos_token_ids.contains(&tok) {
                done[row] = Some(FinishReason::Eos);
            } else if let Some(dec) = decode
                && !config.stop_strings.is_empty()
            {
                let text = dec(&out[row]);
                if config
                    .stop_strings
                    .iter()
                    .any(|st| text.contains(st.as_str()))
                {
                    done[row] = Some(FinishReason::StopString);
                }
            }
            next.push(done[row].is_none().then_some(tok));
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        engine.advance(&next, pad_id);
    }
    Ok(out
        .into_iter()
        .zip(done)
        .map(|(tokens, d)| Generation {
            tokens,
            finish: d.unwrap_or(FinishReason::Length),
        })
        .collect())
}

/// Where the logits of each step come from (one per `generate` call: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Engine<'m, C> {
    /// The model's decoder over host buffers; `feed[i]`: the tokens sequence `i` runs next
    /// (empty once it is done).
    Host {
        dec: Box<dyn HostDecoder + 'm>,
        feed: Vec<Vec<u32>>,
    },
    /// The tensor graph with a padded batch: `input [b, new]`, the attention mask of every
    /// position so far, and the model's cache.
    Graph {
        input: Tensor<2, Int>,
        mask: Vec<Vec<i64>>,
        cache: C,
    },
}

impl<'m, C: Send> Engine<'m, C> {
    /// The graph engine for `prompts`, left-padded with `pad_id` to one length.
    fn graph<M: CachedCausalLm<Cache = C>>(model: &M, prompts: &[Vec<u32>], pad_id: u32) -> Self {
        let b = prompts.len();
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(b * t);
        let mut mask: Vec<Vec<i64>> = Vec::with_capacity(b);
        for p in prompts {
            let pad = t - p.len();
            ids.extend(std::iter::repeat_n(i64::from(pad_id), pad));
            ids.extend(p.iter().map(|&x| i64::from(x)));
            let mut m = vec![0i64; pad];
            m.resize(t, 1);
            mask.push(m);
        }
        Self::Graph {
            input: Tensor::from_data(TensorData::new(ids, [b, t]), &model.device()),
            mask,
            cache: model.new_cache(),
        }
    }

    /// The logits of the last position of each of the `b` sequences, `[b, vocab]` (rows of
    /// finished sequences are unspecified), and `vocab`.
    fn logits<M: CachedCausalLm<Cache = C>>(&mut self, model: &M, b: usize) -> (Vec<f32>, usize) {
        match self {
            Self::Host { dec, feed } => {
                let refs: Vec<&[u32]> = feed.iter().map(Vec::as_slice).collect();
                let got = dec.step(&refs);
                let active = feed.iter().filter(|f| !f.is_empty()).count().max(1);
                let vocab = got.len() / active;
                let mut all = vec![0.0f32; b * vocab];
                let rows = feed.iter().enumerate().filter(|(_, f)| !f.is_empty());
                for ((row, _), l) in rows.zip(got.chunks_exact(vocab)) {
                    all[row * vocab..(row + 1) * vocab].copy_from_slice(l);
                }
                (all, vocab)
            }
            Self::Graph { input, mask, cache } => {
                let device = model.device();
                let s = mask[0].len();
                let flat: Vec<i64> = mask.iter().flatten().copied().collect();
                let mask_t = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, s]), &device);
                let hidden = model.forward_cached(input.clone(), mask_t, cache);
                let [_, n, d] = hidden.dims();
                let last = hidden.narrow(1, n - 1, 1).reshape([b, d]);
                let logits: Vec<f32> = model.logits(last).into_data().iter::<f32>().collect();
                let vocab = logits.len() / b;
                (logits, vocab)
            }
        }
    }

    /// Feeds each sequence its new token (`None` once it is done).
    fn advance(&mut self, next: &[Option<u32>], pad_id: u32) {
        match self {
            Self::Host { feed, .. } => {
                for (f, t) in feed.iter_mut().zip(next) {
                    f.clear();
                    f.extend(t);
                }
            }
            Self::Graph { input, mask, .. } => {
                for m in mask.iter_mut() {
                    m.push(1);
                }
                let flat: Vec<i64> = next
                    .iter()
                    .map(|t| i64::from(t.unwrap_or(pad_id)))
                    .collect();
                let device = input.device();
                *input = Tensor::from_data(TensorData::new(flat, [next.len(), 1]), &device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LlamaConfig, LlamaForCausalLM};

    /// A prompt that with `max_new_tokens` overruns the context is refused before any compute,
    /// with a message naming the numbers; one that fits runs.
    #[test]
    fn context_guard_names_the_numbers() {
        let device = burn::tensor::Device::flex();
        let config = LlamaConfig {
            vocab_size: 32,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 16,
            ..Default::default()
        };
        let model: LlamaForCausalLM = config.init(0, &device);
        assert_eq!(model.max_context(), Some(16));
        let gen_config = |max_new_tokens| GenerationConfig {
            max_new_tokens,
            ..Default::default()
        };
        let prompts = vec![vec![1, 2, 3], (1..=10).collect::<Vec<u32>>()];
        let err = generate(&model, &prompts, 0, &gen_config(7), None, &mut |_, _| {}).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                ModelError::ContextLength {
                    prompt: 1,
                    prompt_tokens: 10,
                    max_new_tokens: 7,
                    context: 16
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("10 tokens") && msg.contains("context of 16"),
            "{msg}"
        );
        let out = generate(&model, &prompts, 0, &gen_config(6), None, &mut |_, _| {}).unwrap();
        assert_eq!(out[1].tokens.len(), 6);
    }

    #[test]
    fn sampling_filters() {
        let cfg = GenerationConfig {
            temperature: 1.0,
            top_k: Some(1),
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // top_k = 1 is greedy whatever the temperature.
        assert_eq!(cfg.pick(&mut [0.1, 3.0, 2.9], &[], &mut rng), 1);
        // A tiny nucleus keeps only the best token.
        let nucleus = GenerationConfig {
            temperature: 1.0,
            top_p: Some(0.01),
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(nucleus.pick(&mut [0.0, 5.0, 1.0], &[], &mut rng), 1);
        }
        // Repetition penalty demotes a seen token.
        let rep = GenerationConfig {
            repetition_penalty: 4.0,
            ..Default::default()
        };
        assert_eq!(rep.pick(&mut [2.0, 1.0], &[0], &mut rng), 1);
        // Sampling at high temperature visits several tokens, reproducibly per seed.
        let hot = GenerationConfig {
            temperature: 5.0,
            ..Default::default()
        };
        let draw = |seed| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| hot.pick(&mut [1.0, 1.2, 0.8, 1.1], &[], &mut r))
                .collect::<Vec<_>>()
        };
        let a = draw(3);
        assert_eq!(a, draw(3));
        assert!(a.iter().collect::<std::collections::BTreeSet<_>>().len() > 2);
        let bad = GenerationConfig {
            top_p: Some(1.5),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("top_p"));
    }
}
