use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::init::{HostRng, normal_param};
use crate::lora::LoraLayer;

/// A linear projection that can host adapters.
///
/// The base weight is stored `[d_in, d_out]` so the forward pass is a plain `x·W`; checkpoints in
/// PyTorch's `[out, in]` layout are transposed once when loaded (see [`PeftLinear::from_torch`]).
///
/// # Shapes
/// - input: `[..., d_in]`
/// - output: `[..., d_out]`
#[derive(Module, Debug)]
pub struct PeftLinear {
    /// Base weight, `[d_in, d_out]`.
    pub weight: Param<Tensor<2>>,
    /// Optional base bias, `[d_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Optional LoRA adapter, added to the base output.
    pub lora: Option<LoraLayer>,
}

impl PeftLinear {
    /// A projection initialized with `N(0, std²)` weights (and zero bias when `bias`), the
    /// initialization Hugging Face uses for fresh Llama/GPT-2 models (`initializer_range`).
    pub fn init_normal(
        rng: &mut HostRng,
        d_in: usize,
        d_out: usize,
        bias: bool,
        std: f32,
        device: &Device,
    ) -> Self {
        let weight = normal_param(rng, [d_in, d_out], std, device);
        let bias = bias.then(|| Param::from_data(TensorData::zeros::<f32, _>([d_out]), device));
        Self {
            weight,
            bias,
            lora: None,
        }
    }

    /// A projection from a PyTorch `nn.Linear` weight stored `[d_out, d_in]` (row-major values).
    pub fn from_torch(
        weight: Vec<f32>,
        d_out: usize,
        d_in: usize,
        bias: Option<Vec<f32>>,
        device: &Device,
    ) -> Self {
        let mut t = vec![0.0f32; weight.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = weight[o * d_in + i];
            }
        }
        Self::from_in_out(t, d_in, d_out, bias, device)
    }

    /// A projection from a weight already stored `[d_in, d_out]` (GPT-2's `Conv1D` layout).
    pub fn from_in_out(
        weight: Vec<f32>,
        d_in: usize,
        d_out: usize,
        bias: Option<Vec<f32>>,
        device: &Device,
    ) -> Self {
        Self {
            weight: Param::from_data(TensorData::new(weight, [d_in, d_out]), device),
            bias: bias.map(|b| Param::from_data(TensorData::new(b, [d_out]), device)),
            lora: None,
        }
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.weight.shape().dims::<2>()[1]
    }

    /// Applies the projection and any active adapter.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.lora {
            None => linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val())),
            Some(lora) => {
                let delta = lora.forward(x.clone());
                linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val())) + delta
            }
        }
    }
}
