use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, relu, silu, tanh};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::init::{HostRng, const_param, normal_param};

/// The adapter's non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// ReLU.
    #[default]
    Relu,
    /// GELU (tanh approximation is not used; exact erf form).
    Gelu,
    /// SiLU / swish.
    Silu,
    /// tanh.
    Tanh,
}

/// A residual bottleneck MLP: `y + act(y·down + b_down)·up + b_up`.
///
/// # Shapes
/// - `adapter_down`: `[d_model, hidden]`, `adapter_up`: `[hidden, d_model]`
/// - input and output `[..., d_model]`
#[derive(Module, Debug)]
pub struct BottleneckLayer {
    /// Down projection.
    pub adapter_down: Param<Tensor<2>>,
    /// Down-projection bias.
    pub adapter_down_bias: Param<Tensor<1>>,
    /// Up projection (zero at start).
    pub adapter_up: Param<Tensor<2>>,
    /// Up-projection bias (zero at start).
    pub adapter_up_bias: Param<Tensor<1>>,
    /// The non-linearity.
    #[module(skip)]
    pub activation: Activation,
}

impl BottleneckLayer {
    /// A fresh adapter: `down ~ N(0, std²)`, `up = 0`, zero biases.
    pub fn new(
        rng: &mut HostRng,
        d_model: usize,
        hidden: usize,
        activation: Activation,
        std: f32,
        device: &Device,
    ) -> Self {
        Self {
            adapter_down: normal_param(rng, [d_model, hidden], std, device),
            adapter_down_bias: const_param([hidden], 0.0, device),
            adapter_up: const_param([hidden, d_model], 0.0, device),
            adapter_up_bias: const_param([d_model], 0.0, device),
            activation,
        }
    }

    /// Width of the bottleneck.
    pub fn hidden(&self) -> usize {
        self.adapter_down.shape().dims::<2>()[1]
    }

    /// `y + f(y)`.
    pub fn forward<const D: usize>(&self, y: Tensor<D>) -> Tensor<D> {
        let h = linear(
            y.clone(),
            self.adapter_down.val(),
            Some(self.adapter_down_bias.val()),
        );
        let h = match self.activation {
            Activation::Relu => relu(h),
            Activation::Gelu => gelu(h),
            Activation::Silu => silu(h),
            Activation::Tanh => tanh(h),
        };
        y + linear(h, self.adapter_up.val(), Some(self.adapter_up_bias.val()))
    }
}
