//! The key/value cache of decoder attention layers, shared by every causal architecture.

use burn::tensor::Tensor;

#[cfg(doc)]
use crate::LmInput;

/// Cached keys and values of one attention layer, `[batch, kv_heads, past, head_dim]` each
/// (before the grouped-query expansion).
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    kv: Option<(Tensor<4>, Tensor<4>)>,
}

impl LayerCache {
    /// Appends new keys/values and returns everything cached so far.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.kv.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        };
        self.kv = Some((k.clone(), v.clone()));
        (k, v)
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key/value cache of a whole model: one [`LayerCache`] per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// Cached positions (0 for a fresh cache).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The per-layer caches, created empty on first use for a model of `n` layers.
    pub(crate) fn layers_mut(&mut self, n: usize) -> &mut [LayerCache] {
        if self.layers.is_empty() {
            self.layers = vec![LayerCache::default(); n];
        }
        &mut self.layers
    }

    /// A cache holding the given keys/values per layer, `[batch, kv_heads, len, head_dim]` each
    /// (a prefix-tuning prefix or an [`LmInput::prefix`]).
    pub(crate) fn from_layers(layers: impl IntoIterator<Item = (Tensor<4>, Tensor<4>)>) -> Self {
        Self {
            layers: layers
                .into_iter()
                .map(|kv| LayerCache { kv: Some(kv) })
                .collect(),
        }
    }

    /// The cached keys/values per layer, `[batch, kv_heads, len, head_dim]` each: usable as an
    /// [`LmInput::prefix`] (a reusable prompt cache).
    pub fn into_prefix(self) -> Vec<(Tensor<4>, Tensor<4>)> {
        self.layers.into_iter().filter_map(|l| l.kv).collect()
    }
}
