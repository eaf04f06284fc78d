use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor};

use crate::init::{HostRng, const_param, uniform_param};

/// The trainable part of a LoRA-adapted projection, computed factored.
///
/// # Shapes
/// - `lora_a`: `[d_in, r]` (PEFT stores its transpose, `lora_A.weight: [r, d_in]`)
/// - `lora_b`: `[r, d_out]` (PEFT: `lora_B.weight: [d_out, r]`)
/// - input `[..., d_in]` → output `[..., d_out]`
#[derive(Module, Debug)]
pub struct LoraLayer {
    /// Down projection `A`, `[d_in, r]`.
    pub lora_a: Param<Tensor<2>>,
    /// Up projection `B`, `[r, d_out]`.
    pub lora_b: Param<Tensor<2>>,
    /// Dropout on the adapter input.
    pub dropout: Dropout,
    /// The factor applied to the update.
    pub scaling: f64,
}

impl LoraLayer {
    /// PEFT's default initialization: `A ~ U(-b, b)` with `b = 1/sqrt(d_in)` (kaiming-uniform with
    /// `a = sqrt(5)`), `B = 0`.
    pub fn new_kaiming(
        rng: &mut HostRng,
        d_in: usize,
        d_out: usize,
        r: usize,
        scaling: f64,
        dropout: f64,
        device: &Device,
    ) -> Self {
        let bound = 1.0 / (d_in as f32).sqrt();
        Self {
            lora_a: uniform_param(rng, [d_in, r], bound, device),
            lora_b: const_param([r, d_out], 0.0, device),
            dropout: DropoutConfig::new(dropout).init(),
            scaling,
        }
    }

    /// Rank of the adapter.
    pub fn rank(&self) -> usize {
        self.lora_a.shape().dims::<2>()[1]
    }

    /// The adapter's contribution `dropout(x)·A·B·s`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = self.dropout.forward(x);
        let a = self.lora_a.val().unsqueeze::<D>();
        let b = self.lora_b.val().unsqueeze::<D>();
        x.matmul(a).matmul(b).mul_scalar(self.scaling)
    }
}
