//! Positions and additive attention biases of decoder forward passes: causal, padded keys
//! masked, packed examples kept apart.

use burn::tensor::{Device, Int, Tensor};

use crate::LmInput;

/// Masks keys outside a sliding window of `w` tokens (0: no window) in an attention bias
/// `[b, 1, t, past + t]` whose queries sit at positions `past..past + t`: key `j` is too far
/// from query `i` when `i - j >= w`.
pub(crate) fn sliding_window(bias: Tensor<4>, past: usize, w: usize) -> Tensor<4> {
    let [_, _, t, s] = bias.dims();
    if w == 0 || s <= w {
        return bias;
    }
    let device = bias.device();
    let q = Tensor::<1, Int>::arange(past as i64..(past + t) as i64, &device).reshape([t, 1]);
    let k = Tensor::<1, Int>::arange(0..s as i64, &device).reshape([1, s]);
    let far = (q - k)
        .greater_equal_elem(w as i64)
        .float()
        .mul_scalar(-1e9)
        .reshape([1, 1, t, s]);
    (bias + far).clamp_min(-1e9)
}

/// Default positions and the additive attention bias for a batch: causal, and masking padded keys.
///
/// Returns `(position_ids [b, t], bias [b, 1, t, t])`. Built once per forward pass.
pub(crate) fn positions_and_bias(input: &LmInput, device: &Device) -> (Tensor<2, Int>, Tensor<4>) {
    let (positions, bias) = positions_and_bias_cached(
        input.input_ids.dims(),
        input.attention_mask.as_ref(),
        0,
        device,
    );
    let bias = match &input.segment_ids {
        None => bias,
        Some(seg) => {
            // Block-diagonal: a query sees only keys of its own packed example.
            let [b, t] = seg.dims();
            let q = seg.clone().reshape([b, 1, t, 1]);
            let k = seg.clone().reshape([b, 1, 1, t]);
            let other = q.not_equal(k).float().mul_scalar(-1e9);
            (bias + other).clamp_min(-1e9)
        }
    };
    (input.position_ids.clone().unwrap_or(positions), bias)
}

/// Positions and attention bias for `t` new tokens after `past` cached ones.
///
/// `mask` covers all `past + t` positions (1 = real token). Positions count real tokens, so left
/// padding starts at 0 as in Hugging Face `generate`. Returns `(positions [b, t],
/// bias [b, 1, t, past + t])` with 0 where attention is allowed and -1e9 elsewhere.
pub(crate) fn positions_and_bias_cached(
    [b, t]: [usize; 2],
    mask: Option<&Tensor<2, Int>>,
    past: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<4>) {
    let s = past + t;
    // Query i sits at absolute position past + i; key j > past + i is masked (`tril_mask` is true
    // outside the lower triangle shifted by `past`).
    let causal = Tensor::<2, burn::tensor::Bool>::tril_mask([t, s], past as i64, device)
        .float()
        .reshape([1, 1, t, s]);
    let (positions, masked) = match mask {
        None => {
            let pos = Tensor::<1, Int>::arange(past as i64..s as i64, device)
                .reshape([1, t])
                .expand([b, t]);
            (pos, causal.expand([b, 1, t, s]))
        }
        Some(mask) => {
            let pos = (mask.clone().cumsum(1) - 1).clamp_min(0).narrow(1, past, t);
            let pad = mask.clone().equal_elem(0).float().reshape([b, 1, 1, s]);
            (pos, (causal + pad).clamp_max(1.0))
        }
    };
    (positions, masked.mul_scalar(-1e9))
}
