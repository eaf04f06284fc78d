//! The fused attention kernels against the unfused composition of Burn operations on the
//! `flex` device with autodiff: `softmax(scale·q·kᵀ + mask)·v` and its gradients.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use kiln_nn::kernels::{AttentionDims, attention_backward, attention_forward};

/// A small deterministic generator (xorshift64*), uniform in `[-1, 1)`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| amp * self.next()).collect()
    }
}

struct Case {
    dims: AttentionDims,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    segments: Vec<u32>,
    d_out: Vec<f32>,
    scale: f32,
}

/// Random inputs; `runs[b]` lists the lengths of sequence `b`'s segments (summing to `seq`).
fn case(dims: AttentionDims, runs: &[Vec<usize>], seed: u64) -> Case {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut segments = Vec::new();
    for row in runs {
        assert_eq!(row.iter().sum::<usize>(), dims.seq);
        for (id, &len) in row.iter().enumerate() {
            // Ids need not be sorted or small: use a scrambled id per run.
            segments.extend(std::iter::repeat_n((id as u32 * 7919) ^ 0x55, len));
        }
    }
    // Scores of a few units, as in a trained model: softmax far from uniform.
    let amp = 2.0;
    Case {
        q: rng.vec(dims.q_len(), amp),
        k: rng.vec(dims.kv_len(), amp),
        v: rng.vec(dims.kv_len(), 1.0),
        d_out: rng.vec(dims.q_len(), 1.0),
        segments,
        scale: 1.0 / (dims.head_dim as f32).sqrt(),
        dims,
    }
}

/// `(out, dq, dk, dv)` of the unfused Burn composition, with the gradients of
/// `Σ out ∘ d_out`.
fn reference(c: &Case) -> [Vec<f32>; 4] {
    let AttentionDims {
        batch: b,
        seq: t,
        heads: h,
        kv_heads: kvh,
        head_dim: d,
    } = c.dims;
    let g = h / kvh;
    let device = Device::flex().autodiff();
    let leaf = |x: &[f32], nh: usize| {
        Tensor::<4>::from_data(TensorData::new(x.to_vec(), [b, t, nh, d]), &device).require_grad()
    };
    let (q, k, v) = (leaf(&c.q, h), leaf(&c.k, kvh), leaf(&c.v, kvh));
    // [b, t, kvh, d] -> [b, h, t, d], query head h on kv head h / g.
    let expand = |x: Tensor<4>| {
        x.reshape([b, t, kvh, 1, d])
            .repeat_dim(3, g)
            .reshape([b, t, h, d])
            .swap_dims(1, 2)
    };
    let mut bias = vec![0.0f32; b * h * t * t];
    for bi in 0..b {
        let seg = &c.segments[bi * t..(bi + 1) * t];
        for hi in 0..h {
            for i in 0..t {
                for j in 0..t {
                    if j > i || seg[j] != seg[i] {
                        bias[((bi * h + hi) * t + i) * t + j] = -1e9;
                    }
                }
            }
        }
    }
    let bias = Tensor::<4>::from_data(TensorData::new(bias, [b, h, t, t]), &device);
    let scores = q
        .clone()
        .swap_dims(1, 2)
        .matmul(expand(k.clone()).swap_dims(2, 3))
        .mul_scalar(c.scale)
        + bias;
    let out = softmax(scores, 3).matmul(expand(v.clone())).swap_dims(1, 2);
    let d_out = Tensor::<4>::from_data(TensorData::new(c.d_out.clone(), [b, t, h, d]), &device);
    let grads = (out.clone() * d_out).sum().backward();
    let host = |x: Tensor<4>| x.into_data().iter::<f32>().collect::<Vec<f32>>();
    [
        host(out),
        host(q.grad(&grads).expect("dq")),
        host(k.grad(&grads).expect("dk")),
        host(v.grad(&grads).expect("dv")),
    ]
}

/// `(out, lse, dq, dk, dv)` of the fused kernels.
fn fused(c: &Case) -> [Vec<f32>; 5] {
    let dims = &c.dims;
    let mut out = vec![f32::NAN; dims.q_len()];
    let mut lse = vec![f32::NAN; dims.lse_len()];
    attention_forward(
        dims,
        &c.q,
        &c.k,
        &c.v,
        &c.segments,
        c.scale,
        &mut out,
        &mut lse,
    );
    let mut dq = vec![f32::NAN; dims.q_len()];
    let mut dk = vec![f32::NAN; dims.kv_len()];
    let mut dv = vec![f32::NAN; dims.kv_len()];
    attention_backward(
        dims,
        &c.q,
        &c.k,
        &c.v,
        &c.segments,
        c.scale,
        &out,
        &lse,
        &c.d_out,
        &mut dq,
        &mut dk,
        &mut dv,
    );
    [out, lse, dq, dk, dv]
}

/// `max |a − b| / max(max |b|, 0.1)`: the error relative to the tensor's scale. Per-element
/// relative errors are meaningless for gradients that cancel to near zero; the rounding error
/// of every element of an `f32` sum is bounded by a multiple of `ε · Σ|terms|`, which the
/// tensor's largest magnitude tracks. The floor covers tensors that cancel entirely (the
/// query gradient of a query attending only itself is exactly 0): their terms are products
/// of the O(1) inputs, so their rounding errors are a few ε in absolute terms (1.6e-7 seen).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(a.iter().all(|x| x.is_finite()), "non-finite output");
    diff / scale.max(0.1)
}

/// Host log-sum-exp of query `i`'s allowed scaled scores for head `hi` of sequence `bi`.
fn lse_host(c: &Case, bi: usize, hi: usize, i: usize) -> f64 {
    let AttentionDims {
        seq: t,
        heads: h,
        kv_heads: kvh,
        head_dim: d,
        ..
    } = c.dims;
    let kv = hi / (h / kvh);
    let seg = &c.segments[bi * t..(bi + 1) * t];
    let qi = &c.q[((bi * t + i) * h + hi) * d..][..d];
    let s: Vec<f64> = (0..=i)
        .filter(|&j| seg[j] == seg[i])
        .map(|j| {
            let kj = &c.k[((bi * t + j) * kvh + kv) * d..][..d];
            let dot: f64 = qi
                .iter()
                .zip(kj)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            dot * f64::from(c.scale)
        })
        .collect();
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + s.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn check(dims: AttentionDims, runs: &[Vec<usize>], seed: u64) {
    let c = case(dims, runs, seed);
    let want = reference(&c);
    let [out, lse, dq, dk, dv] = fused(&c);
    for (name, got, want) in [
        ("out", &out, &want[0]),
        ("dq", &dq, &want[1]),
        ("dk", &dk, &want[2]),
        ("dv", &dv, &want[3]),
    ] {
        let e = rel_err(got, want);
        assert!(e < 1e-5, "{dims:?} {runs:?}: {name} relative error {e:e}");
    }
    for bi in 0..dims.batch {
        for hi in 0..dims.heads {
            for i in 0..dims.seq {
                let got = f64::from(lse[(bi * dims.heads + hi) * dims.seq + i]);
                let want = lse_host(&c, bi, hi, i);
                assert!(
                    (got - want).abs() < 1e-5 * want.abs().max(1.0),
                    "lse {got} vs {want}"
                );
            }
        }
    }
}

fn dims(batch: usize, seq: usize, heads: usize, kv_heads: usize, head_dim: usize) -> AttentionDims {
    AttentionDims {
        batch,
        seq,
        heads,
        kv_heads,
        head_dim,
    }
}

#[test]
fn a_single_position_attends_itself() {
    check(dims(2, 1, 2, 1, 8), &[vec![1], vec![1]], 1);
}

#[test]
fn odd_lengths_one_segment_without_grouping() {
    check(dims(1, 7, 2, 2, 8), &[vec![7]], 2);
    check(dims(2, 33, 3, 3, 64), &[vec![33], vec![33]], 3);
}

#[test]
fn grouped_heads_three_and_four_to_one() {
    check(dims(2, 100, 6, 2, 64), &[vec![100], vec![100]], 4);
    check(dims(1, 33, 8, 2, 8), &[vec![33]], 5);
}

#[test]
fn packed_segments_and_padding() {
    // Three documents then padding (its own id); a second row with many short runs.
    check(
        dims(2, 100, 9, 3, 64),
        &[vec![40, 25, 30, 5], vec![1, 1, 63, 2, 17, 16]],
        6,
    );
    // Runs crossing every block and chunk boundary, with the padding first.
    check(dims(1, 150, 4, 1, 8), &[vec![3, 70, 64, 13]], 7);
}

#[test]
fn longer_sequences_span_several_blocks() {
    check(dims(1, 200, 3, 1, 64), &[vec![200]], 8);
    check(dims(1, 129, 2, 1, 24), &[vec![64, 65]], 9);
}

#[test]
fn the_gradients_are_overwritten_not_accumulated() {
    let c = case(dims(1, 33, 4, 2, 8), &[vec![20, 13]], 10);
    let [out, lse, dq, dk, dv] = fused(&c);
    let (mut dq2, mut dk2, mut dv2) = (
        vec![7.0; dq.len()],
        vec![7.0; dk.len()],
        vec![7.0; dv.len()],
    );
    attention_backward(
        &c.dims,
        &c.q,
        &c.k,
        &c.v,
        &c.segments,
        c.scale,
        &out,
        &lse,
        &c.d_out,
        &mut dq2,
        &mut dk2,
        &mut dv2,
    );
    assert_eq!((dq, dk, dv), (dq2, dk2, dv2));
}

#[test]
fn an_id_in_separate_runs_is_masked_position_by_position() {
    // Padding (one id) before, between and after two documents; then the second row reuses
    // the first document's id after the second.
    for (runs, ids) in [
        (vec![3, 30, 9, 40, 18], vec![0u32, 1, 0, 2, 0]),
        (vec![20, 60, 20], vec![5u32, 6, 5]),
    ] {
        let dims = dims(1, 100, 6, 2, 64);
        let mut c = case(dims, std::slice::from_ref(&runs), 11);
        c.segments = runs
            .iter()
            .zip(&ids)
            .flat_map(|(&len, &id)| std::iter::repeat_n(id, len))
            .collect();
        let want = reference(&c);
        let [out, _, dq, dk, dv] = fused(&c);
        for (got, want) in [
            (&out, &want[0]),
            (&dq, &want[1]),
            (&dk, &want[2]),
            (&dv, &want[3]),
        ] {
            let e = rel_err(got, want);
            assert!(e < 1e-5, "{runs:?} {ids:?}: relative error {e:e}");
        }
    }
}

#[test]
#[should_panic(expected = "k length")]
fn a_short_slice_is_rejected() {
    let mut c = case(dims(1, 8, 2, 1, 8), &[vec![8]], 12);
    c.k.pop();
    fused(&c);
}
