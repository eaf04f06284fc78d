use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::adapter::{BottleneckLayer, Ia3Layer, LoraLayer};
use crate::init::{HostRng, normal_param};
use crate::quant::QuantizedMatrix;
use crate::{NnError, Result};

/// A linear projection that can host adapters.
///
/// The base weight is stored `[d_in, d_out]` so the forward pass is a plain `x·W`; checkpoints in
/// PyTorch's `[out, in]` layout are transposed once when loaded (see [`AdaptableLinear::from_torch`]).
///
/// Adapters compose in a fixed order: IA3 scales the input (feed-forward layers) or the output,
/// LoRA/DoRA adds its update, and a bottleneck adapter transforms the result (`y + f(y)`).
/// [`merge`](Self::merge) folds LoRA, DoRA and IA3 into the base weight; a bottleneck adapter has
/// no linear form and stays active.
///
/// # Shapes
/// - input: `[..., d_in]`
/// - output: `[..., d_out]`
#[derive(Module, Debug)]
pub struct AdaptableLinear {
    /// Base weight, `[d_in, d_out]`.
    pub weight: Param<Tensor<2>>,
    /// Optional base bias, `[d_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Optional LoRA (or DoRA) adapter, added to the base output.
    pub lora: Option<LoraLayer>,
    /// Optional IA3 scaling vector.
    pub ia3: Option<Ia3Layer>,
    /// Optional bottleneck adapter applied to the output.
    pub bottleneck: Option<BottleneckLayer>,
    /// The checkpoint stores this weight `[in, out]` (GPT-2's `Conv1D`; PEFT's `fan_in_fan_out`).
    pub fan_in_fan_out: bool,
    /// LoRA/DoRA/IA3 are folded into `weight` (see [`merge`](Self::merge)).
    pub merged: bool,
    /// Adapters are bypassed (see [`set_adapters_enabled`](Self::set_adapters_enabled)).
    pub disabled: bool,
    /// DoRA's column norms at merge time, needed to unmerge.
    #[module(skip)]
    dora_norm: Option<Tensor<1>>,
    /// The checkpoint's block-quantized copy of `weight` (`[d_out, d_in]`), used for small-batch
    /// inference on the CPU (see [`crate::quant`]).
    #[module(skip)]
    quantized: Option<QuantizedMatrix>,
}

impl AdaptableLinear {
    fn from_parts(weight: Param<Tensor<2>>, bias: Option<Param<Tensor<1>>>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
            ia3: None,
            bottleneck: None,
            fan_in_fan_out: false,
            merged: false,
            disabled: false,
            dora_norm: None,
            quantized: None,
        }
    }

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
        Self::from_parts(weight, bias)
    }

    /// A projection from a PyTorch `nn.Linear` weight stored `[d_out, d_in]` (row-major values).
    pub fn from_torch(
        weight: Vec<f32>,
        d_out: usize,
        d_in: usize,
        bias: Option<Vec<f32>>,
        device: &Device,
    ) -> Self {
        let t = transpose(&weight, d_out, d_in);
        Self::from_in_out(t, d_in, d_out, bias, device).with_fan_in_fan_out(false)
    }

    /// A projection from a weight already stored `[d_in, d_out]` (GPT-2's `Conv1D` layout).
    pub fn from_in_out(
        weight: Vec<f32>,
        d_in: usize,
        d_out: usize,
        bias: Option<Vec<f32>>,
        device: &Device,
    ) -> Self {
        let weight = Param::from_data(TensorData::new(weight, [d_in, d_out]), device);
        let bias = bias.map(|b| Param::from_data(TensorData::new(b, [d_out]), device));
        Self::from_parts(weight, bias).with_fan_in_fan_out(true)
    }

    /// Sets whether the checkpoint layout of this weight is `[in, out]`.
    pub fn with_fan_in_fan_out(mut self, fan_in_fan_out: bool) -> Self {
        self.fan_in_fan_out = fan_in_fan_out;
        self
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.weight.shape().dims::<2>()[1]
    }

    /// Attaches the checkpoint's block-quantized copy of the base weight (PyTorch layout
    /// `[d_out, d_in]`), or removes it with `None`.
    ///
    /// While attached, unmerged and not trained, the base projection of inputs on the `flex` CPU
    /// device (without autodiff) with at most [`crate::quant::QUANTIZED_MAX_ROWS`] rows is computed
    /// from the blocks, which reads a fraction of the memory the `f32` weight needs (decoding is
    /// bound by memory bandwidth). The blocks must hold the same values as `weight`: kiln drops
    /// them when it changes the base weight (full fine-tuning, `modules_to_save`, PiSSA); code
    /// that writes `weight` directly must call `set_quantized(None)`.
    ///
    /// # Errors
    /// [`NnError::Shape`] when the matrix is not `[d_out, d_in]`.
    pub fn set_quantized(&mut self, quantized: Option<QuantizedMatrix>) -> Result<()> {
        if let Some(q) = &quantized {
            let want = vec![self.d_out(), self.d_in()];
            let got = vec![q.rows(), q.cols()];
            if want != got {
                return Err(NnError::Shape {
                    key: format!("quantized {} weight", q.format().name()),
                    expected: want,
                    got,
                });
            }
        }
        self.quantized = quantized;
        Ok(())
    }

    /// Sets how the attached block-quantized copy, if any, treats its input rows (see
    /// [`QuantizedMatrix::with_inputs`]).
    pub fn set_quant_inputs(&mut self, inputs: crate::Inputs) {
        self.quantized = self.quantized.take().map(|q| q.with_inputs(inputs));
    }

    /// The attached block-quantized copy of the base weight, if any.
    pub fn quantized(&self) -> Option<&QuantizedMatrix> {
        self.quantized.as_ref()
    }

    /// `x·W (+ b)` of the base weight: from the quantized blocks when they apply (see
    /// [`set_quantized`](Self::set_quantized)), otherwise a dense matmul.
    fn base<const D: usize>(&self, x: Tensor<D>, bias: Option<Tensor<1>>) -> Tensor<D> {
        if let Some(q) = self.quantized.as_ref().filter(|_| !self.merged)
            && let Some(y) = q.try_forward(&x)
        {
            return match bias {
                Some(b) => y + b.unsqueeze::<D>(),
                None => y,
            };
        }
        linear(x, self.weight.val(), bias)
    }

    /// Whether any adapter is attached.
    pub fn has_adapter(&self) -> bool {
        self.lora.is_some() || self.ia3.is_some() || self.bottleneck.is_some()
    }

    /// Turns adapters on or off without removing them (PEFT's `disable_adapter()` context).
    /// With PiSSA the base weight is the residual, so disabled output is the residual model's,
    /// as in PEFT; [`remove_adapters`](Self::remove_adapters) restores the original weight.
    pub fn set_adapters_enabled(&mut self, enabled: bool) {
        self.disabled = !enabled;
    }

    /// Removes every adapter (unmerging first), leaving the base projection.
    pub fn remove_adapters(&mut self) -> Result<()> {
        self.unmerge()?;
        // PiSSA moved its initial update out of the base weight: put it back.
        if let Some(lora) = &self.lora
            && let Some((a0, b0)) = &lora.pissa_init
        {
            let w = self.weight.val() + a0.clone().matmul(b0.clone()).mul_scalar(lora.scaling);
            crate::init::replace_value(&mut self.weight, w);
        }
        self.lora = None;
        self.ia3 = None;
        self.bottleneck = None;
        Ok(())
    }

    /// The weight in its checkpoint layout (`[out, in]`, or `[in, out]` with `fan_in_fan_out`),
    /// with its shape.
    pub fn checkpoint_weight(&self) -> (Vec<f32>, [usize; 2]) {
        let [d_in, d_out] = self.weight.shape().dims::<2>();
        let w: Vec<f32> = self.weight.val().into_data().iter::<f32>().collect();
        if self.fan_in_fan_out {
            (w, [d_in, d_out])
        } else {
            (transpose(&w, d_in, d_out), [d_out, d_in])
        }
    }

    /// Applies the projection and any active adapter.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        if self.disabled || (!self.has_adapter()) {
            return self.base(x, bias);
        }
        let folded = self.merged;
        let mut y = match (&self.ia3, &self.lora) {
            (Some(ia3), _) if !folded => ia3.apply(x.clone(), &self.weight, bias),
            (_, Some(lora)) if !folded => {
                // DoRA needs the base output without bias.
                let y0 = self.base(x.clone(), None);
                let delta = lora.delta(x, &y0, &self.weight);
                let y = y0 + delta;
                match bias {
                    Some(b) => y + b.unsqueeze::<D>(),
                    None => y,
                }
            }
            _ => linear(x, self.weight.val(), bias),
        };
        if let Some(bn) = &self.bottleneck {
            y = bn.forward(y);
        }
        y
    }

    /// Folds LoRA/DoRA and IA3 into the base weight (PEFT's `merge`). The output is unchanged up
    /// to rounding; the forward pass then costs what the bare projection costs. A no-op when
    /// already merged or when there is nothing to merge.
    ///
    /// # Errors
    /// Never for the supported adapters; kept fallible for symmetry with [`unmerge`](Self::unmerge).
    pub fn merge(&mut self) -> Result<()> {
        if self.merged {
            return Ok(());
        }
        if let Some(lora) = &self.lora {
            let (w, norm) = lora.merged_weight(self.weight.val());
            crate::init::replace_value(&mut self.weight, w);
            self.dora_norm = norm;
        }
        if let Some(ia3) = &self.ia3 {
            let (w, b) = ia3.merge(self.weight.val(), self.bias.as_ref().map(|b| b.val()));
            crate::init::replace_value(&mut self.weight, w);
            if let (Some(p), Some(b)) = (self.bias.as_mut(), b) {
                crate::init::replace_value(p, b);
            }
        }
        self.merged = self.lora.is_some() || self.ia3.is_some();
        Ok(())
    }

    /// Restores the base weight after [`merge`](Self::merge).
    ///
    /// # Errors
    /// [`NnError::Merge`] when an IA3 vector has a zero entry (the scaling cannot be undone).
    pub fn unmerge(&mut self) -> Result<()> {
        if !self.merged {
            return Ok(());
        }
        if let Some(ia3) = &self.ia3 {
            let (w, b) = ia3.unmerge(self.weight.val(), self.bias.as_ref().map(|b| b.val()))?;
            crate::init::replace_value(&mut self.weight, w);
            if let (Some(p), Some(b)) = (self.bias.as_mut(), b) {
                crate::init::replace_value(p, b);
            }
        }
        if let Some(lora) = &self.lora {
            let w = lora.unmerged_weight(self.weight.val(), self.dora_norm.take());
            crate::init::replace_value(&mut self.weight, w);
        }
        self.merged = false;
        Ok(())
    }
}

/// Transposes a row-major `[rows, cols]` matrix.
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}
