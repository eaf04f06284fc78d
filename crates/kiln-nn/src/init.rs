//! Seeded, backend-independent parameter initialization.
//!
//! Values are drawn on the host with a ChaCha8 generator and then uploaded, so the same seed gives
//! the same weights on every backend (flex, wgpu, CUDA). Backend RNGs differ from one another, which
//! would make "the same run on another backend" impossible to compare.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded host-side random source for parameter initialization.
#[derive(Debug, Clone)]
pub struct HostRng(ChaCha8Rng);

impl HostRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A child generator for a named sub-stream: the same `(seed, name)` always gives the same
    /// values, whatever else was drawn before.
    pub fn fork(&self, name: &str) -> Self {
        // FNV-1a over the name, mixed with the parent's stream position.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut parent = self.0.clone();
        Self::new(parent.random::<u64>() ^ h)
    }

    /// `n` samples from `U(low, high)`.
    pub fn uniform(&mut self, n: usize, low: f32, high: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.random_range(low..high)).collect()
    }

    /// `n` samples from `N(0, std²)` (Box-Muller).
    pub fn normal(&mut self, n: usize, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1: f64 = self.0.random_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = self.0.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = 2.0 * std::f64::consts::PI * u2;
            out.push((r * t.cos()) as f32 * std);
            out.push((r * t.sin()) as f32 * std);
        }
        out.truncate(n);
        out
    }

    /// A raw `u64`, e.g. to seed a backend's own generator for dropout.
    pub fn next_u64(&mut self) -> u64 {
        self.0.random()
    }
}

/// A parameter of the given shape filled with `N(0, std²)`.
pub fn normal_param<const D: usize>(
    rng: &mut HostRng,
    shape: [usize; D],
    std: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    Param::from_data(TensorData::new(rng.normal(n, std), shape), device)
}

/// A parameter of the given shape filled with `U(-bound, bound)`.
pub fn uniform_param<const D: usize>(
    rng: &mut HostRng,
    shape: [usize; D],
    bound: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    Param::from_data(
        TensorData::new(rng.uniform(n, -bound, bound), shape),
        device,
    )
}

/// A parameter filled with a constant.
pub fn const_param<const D: usize>(
    shape: [usize; D],
    value: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    Param::from_data(TensorData::new(vec![value; n], shape), device)
}

/// Replaces a parameter's value, keeping its id and whether it is trained (on an autodiff
/// device the new tensor is tracked again when the parameter was).
pub fn replace_value<const D: usize>(p: &mut Param<Tensor<D>>, value: Tensor<D>) {
    let trained = p.is_require_grad();
    *p = p.clone().map(|_| value).set_require_grad(trained);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_forks_differ() {
        let a = HostRng::new(7).normal(16, 1.0);
        let b = HostRng::new(7).normal(16, 1.0);
        assert_eq!(a, b);
        let root = HostRng::new(7);
        assert_ne!(root.fork("x").normal(4, 1.0), root.fork("y").normal(4, 1.0));
        assert_eq!(root.fork("x").normal(4, 1.0), root.fork("x").normal(4, 1.0));
    }

    #[test]
    fn normal_has_the_requested_spread() {
        let v = HostRng::new(1).normal(20_000, 0.5);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "std {}", var.sqrt());
    }
}
