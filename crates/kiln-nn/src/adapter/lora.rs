use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor};

use crate::init::{HostRng, const_param, normal_param, uniform_param};

/// The trainable part of a LoRA-adapted projection, computed factored.
///
/// With a `magnitude` vector it is DoRA (weight-decomposed LoRA, Liu et al., 2024): the adapted
/// weight `W + s·AB` is normalized per output column and rescaled by the learned magnitude; the
/// norm is treated as a constant in the backward pass, as in the paper and PEFT.
///
/// # Shapes
/// - `lora_a`: `[d_in, r]` (PEFT stores its transpose, `lora_A.weight: [r, d_in]`)
/// - `lora_b`: `[r, d_out]` (PEFT: `lora_B.weight: [d_out, r]`)
/// - `magnitude`: `[d_out]` (PEFT: `lora_magnitude_vector`)
/// - input `[..., d_in]` → output `[..., d_out]`
#[derive(Module, Debug)]
pub struct LoraLayer {
    /// Down projection `A`, `[d_in, r]`.
    pub lora_a: Param<Tensor<2>>,
    /// Up projection `B`, `[r, d_out]`.
    pub lora_b: Param<Tensor<2>>,
    /// DoRA magnitude, `[d_out]`; `None` for plain LoRA.
    pub magnitude: Option<Param<Tensor<1>>>,
    /// Dropout on the adapter input.
    pub dropout: Dropout,
    /// The factor applied to the update.
    pub scaling: f64,
    /// PiSSA's initial factors `(A0, B0)`: saving subtracts them so the adapter applies to the
    /// original (not the residual) base weight.
    #[module(skip)]
    pub pissa_init: Option<(Tensor<2>, Tensor<2>)>,
}

/// How `A` and `B` start (PEFT's `init_lora_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraInit {
    /// `A` kaiming-uniform (`a = sqrt(5)`, bound `1/sqrt(d_in)`), `B = 0` (PEFT's default).
    Kaiming,
    /// `A ~ N(0, 1/r²)`, `B = 0` (PEFT's `"gaussian"`).
    Gaussian,
    /// PiSSA: `A`, `B` from the weight's top-`r` singular triplets, and the base weight replaced
    /// by the residual `W − s·BA` (exact SVD, or `niter` randomized power iterations).
    Pissa {
        /// `None`: exact SVD (`"pissa"`); `Some(n)`: `"pissa_niter_{n}"`.
        niter: Option<usize>,
    },
}

impl LoraLayer {
    /// A fresh adapter: `B = 0`, so it leaves the output unchanged. With `dora_base` (the base
    /// weight `[d_in, d_out]`), the DoRA magnitude starts at the base weight's column norms.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rng: &mut HostRng,
        init: LoraInit,
        d_in: usize,
        d_out: usize,
        r: usize,
        scaling: f64,
        dropout: f64,
        dora_base: Option<Tensor<2>>,
        device: &Device,
    ) -> Self {
        let lora_a = match init {
            LoraInit::Kaiming | LoraInit::Pissa { .. } => {
                uniform_param(rng, [d_in, r], 1.0 / (d_in as f32).sqrt(), device)
            }
            LoraInit::Gaussian => normal_param(rng, [d_in, r], 1.0 / r as f32, device),
        };
        let magnitude = dora_base.map(|w| {
            Param::from_tensor(column_norm(w).detach().to_device(device)).set_require_grad(true)
        });
        Self {
            lora_a,
            lora_b: const_param([r, d_out], 0.0, device),
            magnitude,
            dropout: DropoutConfig::new(dropout).init(),
            scaling,
            pissa_init: None,
        }
    }

    /// PEFT's default initialization (kaiming-uniform `A`, zero `B`), plain LoRA.
    pub fn new_kaiming(
        rng: &mut HostRng,
        d_in: usize,
        d_out: usize,
        r: usize,
        scaling: f64,
        dropout: f64,
        device: &Device,
    ) -> Self {
        Self::new(
            rng,
            LoraInit::Kaiming,
            d_in,
            d_out,
            r,
            scaling,
            dropout,
            None,
            device,
        )
    }

    /// Rank of the adapter.
    pub fn rank(&self) -> usize {
        self.lora_a.shape().dims::<2>()[1]
    }

    /// Whether this is a DoRA adapter.
    pub fn is_dora(&self) -> bool {
        self.magnitude.is_some()
    }

    /// The plain LoRA contribution `dropout(x)·A·B·s`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = self.dropout.forward(x);
        let a = self.lora_a.val().unsqueeze::<D>();
        let b = self.lora_b.val().unsqueeze::<D>();
        x.matmul(a).matmul(b).mul_scalar(self.scaling)
    }

    /// What the adapter adds to the bias-free base output `base = x·W`.
    ///
    /// LoRA: `dropout(x)·A·B·s`. DoRA (as PEFT computes it):
    /// `(m/‖W + s·AB‖ − 1)·(dropout(x)·W) + (m/‖W + s·AB‖)·dropout(x)·A·B·s`, the norm taken per
    /// output column and detached.
    pub fn delta<const D: usize>(
        &self,
        x: Tensor<D>,
        base: &Tensor<D>,
        weight: &Param<Tensor<2>>,
    ) -> Tensor<D> {
        let Some(magnitude) = &self.magnitude else {
            return self.forward(x);
        };
        let dropped = self.dropout.prob > 0.0;
        let xd = self.dropout.forward(x);
        let a = self.lora_a.val();
        let b = self.lora_b.val();
        let w = weight.val();
        // [d_out]: ‖W + s·AB‖ per output column, a constant for the backward pass.
        let norm = column_norm(
            w.clone()
                + a.clone()
                    .detach()
                    .matmul(b.clone().detach())
                    .mul_scalar(self.scaling),
        )
        .detach();
        let scale = (magnitude.val() / norm).unsqueeze::<D>();
        let base = if dropped {
            xd.clone().matmul(w.unsqueeze::<D>())
        } else {
            base.clone()
        };
        let lora = xd
            .matmul(a.unsqueeze::<D>())
            .matmul(b.unsqueeze::<D>())
            .mul_scalar(self.scaling);
        (scale.clone() - 1.0) * base + scale * lora
    }

    /// The weight with this adapter folded in, plus (DoRA) the column norms needed to unmerge.
    pub(crate) fn merged_weight(&self, w: Tensor<2>) -> (Tensor<2>, Option<Tensor<1>>) {
        let adapted = w + self.delta_weight();
        match &self.magnitude {
            None => (adapted, None),
            Some(m) => {
                let norm = column_norm(adapted.clone());
                let scale = (m.val() / norm.clone()).unsqueeze::<2>();
                (adapted * scale, Some(norm))
            }
        }
    }

    /// Inverse of [`merged_weight`](Self::merged_weight).
    pub(crate) fn unmerged_weight(&self, w: Tensor<2>, norm: Option<Tensor<1>>) -> Tensor<2> {
        let adapted = match (&self.magnitude, norm) {
            (Some(m), Some(norm)) => w * (norm / m.val()).unsqueeze::<2>(),
            _ => w,
        };
        adapted - self.delta_weight()
    }

    /// `s·A·B`, `[d_in, d_out]`.
    pub fn delta_weight(&self) -> Tensor<2> {
        self.lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scaling)
    }
}

/// L2 norm of each column of `[d_in, d_out]`, `[d_out]` (PyTorch: per row of `[out, in]`).
fn column_norm(w: Tensor<2>) -> Tensor<1> {
    let d_out = w.dims()[1];
    w.powi_scalar(2).sum_dim(0).sqrt().reshape([d_out])
}
