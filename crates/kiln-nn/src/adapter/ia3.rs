use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};

use crate::init::const_param;
use crate::{NnError, Result};

/// An IA3 scaling vector.
///
/// # Shapes
/// - `ia3_l`: `[d_out]`, or `[d_in]` for a feed-forward target (PEFT stores `[d_out, 1]` and
///   `[1, d_in]`)
#[derive(Module, Debug)]
pub struct Ia3Layer {
    /// The learned scaling vector.
    pub ia3_l: Param<Tensor<1>>,
    /// Scales the input (feed-forward target) rather than the output.
    pub feedforward: bool,
}

impl Ia3Layer {
    /// A fresh vector of ones (identity).
    pub fn ones(n: usize, feedforward: bool, device: &Device) -> Self {
        Self {
            ia3_l: const_param([n], 1.0, device),
            feedforward,
        }
    }

    /// The scaled projection.
    pub fn apply<const D: usize>(
        &self,
        x: Tensor<D>,
        weight: &Param<Tensor<2>>,
        bias: Option<Tensor<1>>,
    ) -> Tensor<D> {
        let l = self.ia3_l.val().unsqueeze::<D>();
        if self.feedforward {
            linear(x * l, weight.val(), bias)
        } else {
            linear(x, weight.val(), bias) * l
        }
    }

    /// The weight (and bias) with the scaling folded in.
    pub(crate) fn merge(
        &self,
        w: Tensor<2>,
        bias: Option<Tensor<1>>,
    ) -> (Tensor<2>, Option<Tensor<1>>) {
        let l = self.ia3_l.val();
        if self.feedforward {
            let n = l.dims()[0];
            (w * l.reshape([n, 1]), bias)
        } else {
            (w * l.clone().unsqueeze::<2>(), bias.map(|b| b * l))
        }
    }

    /// Inverse of [`merge`](Self::merge).
    pub(crate) fn unmerge(
        &self,
        w: Tensor<2>,
        bias: Option<Tensor<1>>,
    ) -> Result<(Tensor<2>, Option<Tensor<1>>)> {
        let l = self.ia3_l.val();
        if l.clone().into_data().iter::<f32>().any(|v| v == 0.0) {
            return Err(NnError::Merge(
                "an IA3 vector has a zero entry; the merged weight cannot be unscaled".into(),
            ));
        }
        if self.feedforward {
            let n = l.dims()[0];
            Ok((w / l.reshape([n, 1]), bias))
        } else {
            Ok((w / l.clone().unsqueeze::<2>(), bias.map(|b| b / l)))
        }
    }
}
