//! Rotate-half rotary position embeddings, applied in place (the Hugging Face Llama layout).

use rayon::prelude::*;

/// Cosines and sines of `position · inv_freq[i]`, one row of `head_dim / 2` per position.
#[derive(Debug, Clone)]
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The table for `positions` (any order, repeats allowed) and the `head_dim / 2` inverse
    /// frequencies. Angles are computed in f32 as `position as f32 · inv_freq`, as the Burn
    /// composition does.
    pub fn new(inv_freq: &[f32], positions: &[u32]) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for f in inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Self { half, cos, sin }
    }

    /// Rotates every head of every token in place: `x1·cos − x2·sin`, `x2·cos + x1·sin` on the
    /// two halves of each head. With `inverse`, rotates by the negative angle, which is the
    /// backward pass of the forward rotation.
    ///
    /// # Shapes
    /// - `x`: `[n, heads, head_dim]` with `n` the number of positions of the table
    pub fn apply(&self, x: &mut [f32], heads: usize, inverse: bool) {
        let hd = 2 * self.half;
        let n = self.cos.len() / self.half.max(1);
        assert_eq!(x.len(), n * heads * hd, "rope: shapes");
        let sign = if inverse { -1.0f32 } else { 1.0 };
        x.par_chunks_mut(heads * hd).enumerate().for_each(|(t, row)| {
            let cos = &self.cos[t * self.half..(t + 1) * self.half];
            let sin = &self.sin[t * self.half..(t + 1) * self.half];
            for head in row.chunks_exact_mut(hd) {
                let (x1, x2) = head.split_at_mut(self.half);
                for i in 0..self.half {
                    let (a, b) = (x1[i], x2[i]);
                    let s = sign * sin[i];
                    x1[i] = a * cos[i] - b * s;
                    x2[i] = b * cos[i] + a * s;
                }
            }
        });
    }
}
