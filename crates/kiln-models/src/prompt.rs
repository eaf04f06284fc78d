//! Prompt and prefix tuning in decoder forward passes (virtual tokens before the real ones), and
//! building token-id batches.

use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_nn::adapter::PromptEncoder;

use crate::LmInput;
use crate::cache::KvCache;

/// `input` with the prompt encoder's soft prompt or prefix filled in (`None`: no encoder).
pub(crate) fn with_prompt_encoder(enc: Option<&PromptEncoder>, input: &LmInput) -> Option<LmInput> {
    let enc = enc?;
    let b = input.input_ids.dims()[0];
    let mut out = input.clone();
    match enc {
        PromptEncoder::Prompt(p) => out.soft_prompt = Some(p.forward(b)),
        PromptEncoder::Prefix(p) => out.prefix = Some(p.past(b)),
    }
    Some(out)
}

/// Prepends the soft prompt to the embeddings `x` and builds the cache from the prefix.
/// Returns `(embeddings [b, n_soft + t, d], mask [b, past + n_soft + t], cache, n_soft)`.
pub(crate) fn virtual_tokens(
    input: &LmInput,
    x: Tensor<3>,
) -> (Tensor<3>, Tensor<2, Int>, KvCache, usize) {
    let device = x.device();
    let [b, t] = input.input_ids.dims();
    let n_soft = input.soft_prompt.as_ref().map_or(0, |p| p.dims()[1]);
    let x = match &input.soft_prompt {
        Some(p) => Tensor::cat(vec![p.clone(), x], 1),
        None => x,
    };
    let cache = match &input.prefix {
        Some(prefix) => KvCache::from_layers(prefix.iter().cloned()),
        None => KvCache::default(),
    };
    let past = cache.len();
    let real = input
        .attention_mask
        .clone()
        .unwrap_or_else(|| Tensor::<2, Int>::ones([b, t], &device));
    let mask = Tensor::cat(
        vec![Tensor::<2, Int>::ones([b, past + n_soft], &device), real],
        1,
    );
    (x, mask, cache, n_soft)
}

/// Cached generation with a prompt encoder: on the first call (empty cache) the prefix fills the
/// cache or the soft prompt is prepended to `x`; on every call the mask (which covers real
/// tokens only) gains the virtual tokens. Returns `(x, mask, n_soft)`.
pub(crate) fn prompt_on_cache(
    enc: Option<&PromptEncoder>,
    x: Tensor<3>,
    mask: Tensor<2, Int>,
    cache: &mut KvCache,
) -> (Tensor<3>, Tensor<2, Int>, usize) {
    let Some(enc) = enc else {
        return (x, mask, 0);
    };
    let device = x.device();
    let [b, _, _] = x.dims();
    let n = enc.num_virtual_tokens();
    let mask = Tensor::cat(vec![Tensor::<2, Int>::ones([b, n], &device), mask], 1);
    if !cache.is_empty() {
        return (x, mask, 0);
    }
    match enc {
        PromptEncoder::Prefix(p) => {
            *cache = KvCache::from_layers(p.past(b));
            (x, mask, 0)
        }
        PromptEncoder::Prompt(p) => (Tensor::cat(vec![p.forward(b), x], 1), mask, n),
    }
}

/// Builds a `[batch, seq]` id tensor from rows of equal length.
pub fn ids_tensor(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let b = rows.len();
    let t = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&x| i64::from(x)))
        .collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}
