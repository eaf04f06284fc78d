//! Host access to a float tensor's values, without a copy on the `flex` CPU device.

use burn::tensor::Tensor;

/// A float tensor's values as a host `f32` slice: the flex CPU tensor's own buffer when the
/// tensor lives there (contiguous `f32`), a copy otherwise.
#[derive(Debug)]
pub struct HostValues {
    #[cfg(feature = "flex")]
    flex: Option<burn::backend::flex::FlexTensor>,
    owned: Vec<f32>,
}

impl HostValues {
    /// The values of `tensor` (its autodiff graph, if any, is not touched).
    pub fn of<const D: usize>(tensor: &Tensor<D>) -> Self {
        let inner = tensor.clone().inner();
        #[cfg(feature = "flex")]
        {
            use burn::backend::{BackendTensor, DispatchTensorKind};
            if let DispatchTensorKind::Flex(BackendTensor::Float(t)) = inner.clone().into_dispatch().kind
                && t.as_slice::<f32>().is_some()
            {
                return Self {
                    flex: Some(t),
                    owned: Vec::new(),
                };
            }
        }
        let owned = inner
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("a float tensor converts to f32 values");
        Self {
            #[cfg(feature = "flex")]
            flex: None,
            owned,
        }
    }

    /// Whether the values are the flex tensor's own buffer (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        #[cfg(feature = "flex")]
        if self.flex.is_some() {
            return true;
        }
        false
    }

    /// The values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        #[cfg(feature = "flex")]
        if let Some(t) = &self.flex {
            return t.as_slice::<f32>().expect("checked when made");
        }
        &self.owned
    }
}
