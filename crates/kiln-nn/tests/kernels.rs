//! The fused CPU kernels against the Burn composition of the same functions (flex device with
//! autodiff): values and input gradients, on odd shapes.

use burn::tensor::activation::{log_softmax, silu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_nn::init::HostRng;
use kiln_nn::kernels::{
    RopeTable, cross_entropy_grad_inplace, rms_norm_backward, rms_norm_forward, swiglu_backward,
    swiglu_forward,
};

fn device() -> Device {
    Device::flex().autodiff()
}

fn tensor<const D: usize>(v: &[f32], dims: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v.to_vec(), dims), &device())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Max |got − want| ≤ `tol` · max |want| (with a floor for all-zero references).
fn close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= tol * scale, "{name}: max diff {diff} of {scale}");
}

#[test]
fn rms_norm_matches_burn() {
    let mut rng = HostRng::new(1);
    for (n, d) in [(1, 5), (3, 7), (17, 64), (33, 100)] {
        let x = rng.uniform(n * d, -2.0, 2.0);
        let w = rng.uniform(d, 0.5, 1.5);
        let dy = rng.uniform(n * d, -1.0, 1.0);
        let eps = 1e-5;
        let xt = tensor(&x, [n, d]).require_grad();
        let rms = xt.clone().square().mean_dim(1).add_scalar(eps).sqrt();
        let y = (xt.clone() / rms) * tensor(&w, [d]).unsqueeze::<2>();
        let grads = (y.clone() * tensor(&dy, [n, d])).sum().backward();
        let want_dx = values(xt.grad(&grads).unwrap());

        let mut out = vec![0.0; n * d];
        let mut rstd = vec![0.0; n];
        rms_norm_forward(&x, &w, eps as f32, &mut out, &mut rstd);
        close("rms out", &out, &values(y), 1e-5);
        let mut dx = vec![0.0; n * d];
        rms_norm_backward(&x, &w, &rstd, &dy, &mut dx);
        close("rms dx", &dx, &want_dx, 1e-5);
    }
}

#[test]
fn rope_matches_burn_both_ways() {
    let mut rng = HostRng::new(2);
    for (n, heads, hd) in [(1, 1, 2), (5, 3, 8), (19, 4, 64)] {
        let half = hd / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32))
            .collect();
        let positions: Vec<u32> = (0..n as u32).map(|i| (i * 7) % 13).collect();
        let x = rng.uniform(n * heads * hd, -1.0, 1.0);
        let dy = rng.uniform(n * heads * hd, -1.0, 1.0);
        // Burn: angles [n, 1, hd] = pos · cat(inv, inv)
        let full: Vec<f32> = inv.iter().chain(&inv).copied().collect();
        let pos: Vec<f32> = positions.iter().map(|&p| p as f32).collect();
        let angles = tensor(&pos, [n, 1, 1]) * tensor(&full, [1, 1, hd]);
        let xt = tensor(&x, [n, heads, hd]).require_grad();
        let x1 = xt.clone().narrow(2, 0, half);
        let x2 = xt.clone().narrow(2, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
        let y = xt.clone() * angles.clone().cos() + rotated * angles.sin();
        let grads = (y.clone() * tensor(&dy, [n, heads, hd])).sum().backward();

        let table = RopeTable::new(&inv, &positions);
        let mut out = x.clone();
        table.apply(&mut out, heads, false);
        close("rope out", &out, &values(y), 1e-5);
        let mut dx = dy.clone();
        table.apply(&mut dx, heads, true);
        close("rope dx", &dx, &values(xt.grad(&grads).unwrap()), 1e-5);
    }
}

#[test]
fn swiglu_matches_burn() {
    let mut rng = HostRng::new(3);
    for n in [1, 7, 4099, 10_000] {
        let g = rng.uniform(n, -8.0, 8.0);
        let u = rng.uniform(n, -2.0, 2.0);
        let dh = rng.uniform(n, -1.0, 1.0);
        let gt = tensor(&g, [n]).require_grad();
        let ut = tensor(&u, [n]).require_grad();
        let h = silu(gt.clone()) * ut.clone();
        let grads = (h.clone() * tensor(&dh, [n])).sum().backward();
        let want_h = values(h);

        let mut out = vec![0.0; n];
        swiglu_forward(&g, &u, &mut out);
        close("swiglu h", &out, &want_h, 1e-5);
        let (mut dg, mut du, mut h2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        swiglu_backward(&g, &u, &dh, &mut dg, &mut du, Some(&mut h2));
        close("swiglu dg", &dg, &values(gt.grad(&grads).unwrap()), 1e-5);
        close("swiglu du", &du, &values(ut.grad(&grads).unwrap()), 1e-5);
        close("swiglu recomputed h", &h2, &want_h, 1e-5);
    }
}

#[test]
fn cross_entropy_matches_burn() {
    let mut rng = HostRng::new(4);
    for (n, vocab) in [(1, 2), (9, 37), (40, 1000)] {
        let z = rng.uniform(n * vocab, -6.0, 6.0);
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 31 + 5) % vocab as u32).collect();
        let scale = 0.25;
        let zt = tensor(&z, [n, vocab]).require_grad();
        let t = Tensor::<2, Int>::from_data(
            TensorData::new(
                targets.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(),
                [n, 1],
            ),
            &device(),
        );
        let loss = log_softmax(zt.clone(), 1).gather(1, t).neg().sum();
        let want_loss = f64::from(loss.clone().into_scalar::<f32>());
        let grads = loss.mul_scalar(scale).backward();

        let mut grad = z.clone();
        let got = cross_entropy_grad_inplace(&mut grad, vocab, &targets, scale);
        assert!(
            (got - want_loss).abs() <= 1e-5 * want_loss.abs(),
            "loss {got} vs {want_loss}"
        );
        close("ce grad", &grad, &values(zt.grad(&grads).unwrap()), 1e-5);
    }
}
