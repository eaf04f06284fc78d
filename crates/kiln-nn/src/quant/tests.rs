use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random GGUF blocks of `format` with realistic scales.
fn random_blocks(format: QuantFormat, blocks: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut data = Vec::with_capacity(blocks * format.block_bytes());
    for _ in 0..blocks {
        let d = f16::from_f32(rng.random_range(0.001..0.05)).to_bits();
        data.extend_from_slice(&d.to_le_bytes());
        if format == QuantFormat::Q4_1 {
            let m = f16::from_f32(rng.random_range(-0.4..0.0)).to_bits();
            data.extend_from_slice(&m.to_le_bytes());
        }
        if format == QuantFormat::Q5_0 {
            let qh: u32 = rng.random();
            data.extend_from_slice(&qh.to_le_bytes());
        }
        let values = if format == QuantFormat::Q8_0 { 32 } else { 16 };
        for _ in 0..values {
            data.push(rng.random());
        }
    }
    data
}

/// The reference: llama.cpp's dequantization formulas written out per value.
fn reference_weights(format: QuantFormat, data: &[u8]) -> Vec<f32> {
    let mut w = Vec::new();
    for b in data.chunks_exact(format.block_bytes()) {
        let h = |i: usize| f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
        let d = h(0);
        match format {
            QuantFormat::Q4_0 => {
                let q = &b[2..];
                w.extend(q.iter().map(|&v| (i32::from(v & 15) - 8) as f32 * d));
                w.extend(q.iter().map(|&v| (i32::from(v >> 4) - 8) as f32 * d));
            }
            QuantFormat::Q4_1 => {
                let (m, q) = (h(2), &b[4..]);
                w.extend(q.iter().map(|&v| f32::from(v & 15) * d + m));
                w.extend(q.iter().map(|&v| f32::from(v >> 4) * d + m));
            }
            QuantFormat::Q5_0 => {
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let q = &b[6..];
                let high = |j: usize| ((qh >> j) & 1) as i32 * 16;
                w.extend((0..16).map(|j| (i32::from(q[j] & 15) + high(j) - 16) as f32 * d));
                w.extend((0..16).map(|j| (i32::from(q[j] >> 4) + high(j + 16) - 16) as f32 * d));
            }
            QuantFormat::Q8_0 => w.extend(b[2..].iter().map(|&v| f32::from(v as i8) * d)),
            _ => unreachable!("32-value formats only"),
        }
    }
    w
}

/// The input values the kernels multiply: each row quantized and dequantized again.
fn requantized(x: &[f32], n: usize, cols: usize, block: usize) -> Vec<f64> {
    let q = Q8Input::quantize(x, n, cols, block);
    q.qs.iter()
        .enumerate()
        .map(|(i, &v)| f64::from(v) * f64::from(q.d[i / block]))
        .collect()
}

/// Checks `m.matmul` against `w` (the dequantized weights) for several input row counts:
/// - against `x̃·Wᵀ` in `f64`, `x̃` the 8-bit quantized input, up to the `f32` sums;
/// - against `x·Wᵀ` in `f64` within the rounding bound `Σ_blocks (d_x/2)·Σ|w|`;
/// - the portable kernel against the dispatched one on every row.
fn check_matmul(m: &QuantizedMatrix, w: &[f32], block: usize, rng: &mut ChaCha8Rng) {
    let (rows, cols) = (m.rows(), m.cols());
    for n in [1, 2, 3, 5, 6] {
        let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let xt = requantized(&x, n, cols, block);
        let xq = Q8Input::quantize(&x, n, cols, block);
        let y = m.matmul(&x, n);
        let mut scalar = vec![0.0f32; n];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            m.row_dot_scalar(r, &xq, &mut scalar);
            for j in 0..n {
                let xr = &x[j * cols..(j + 1) * cols];
                let xtr = &xt[j * cols..(j + 1) * cols];
                let got = f64::from(y[j * rows + r]);
                let mag: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b).abs()).sum();
                let tol = 1e-5 * (1.0 + mag);
                let exact: f64 = wr.iter().zip(xtr).map(|(a, b)| f64::from(*a) * b).sum();
                assert!(
                    (got - exact).abs() < tol,
                    "{:?} n={n} [{j}, {r}]: {got} vs {exact} (quantized input)",
                    m.format()
                );
                let want: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b)).sum();
                let bound: f64 = (0..cols / block)
                    .map(|b| {
                        let d = f64::from(xq.d[j * cols / block + b]);
                        let sw: f64 = wr[b * block..(b + 1) * block]
                            .iter()
                            .map(|v| f64::from(v.abs()))
                            .sum();
                        d / 2.0 * sw
                    })
                    .sum();
                assert!(
                    (got - want).abs() <= bound + tol,
                    "{:?} n={n} [{j}, {r}]: {got} vs {want}, bound {bound}",
                    m.format()
                );
                let s = f64::from(scalar[j]);
                assert!(
                    (s - got).abs() < tol,
                    "{:?} n={n} [{j}, {r}]: portable {s} vs {got}",
                    m.format()
                );
            }
        }
    }
}

/// Checks the `f32`-input `m.matmul` against `x·Wᵀ` in `f64` (`w`: the dequantized
/// weights) and the portable kernel against the dispatched one.
fn check_matmul_f32(m: &QuantizedMatrix, w: &[f32], rng: &mut ChaCha8Rng) {
    let m = &m.clone().with_inputs(Inputs::F32);
    let (rows, cols) = (m.rows(), m.cols());
    for n in [1, 2, 3, 5] {
        let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y = m.matmul(&x, n);
        let mut scalar = vec![0.0f32; n];
        for r in 0..rows {
            m.row_dot_f32_scalar(r, &x, &mut scalar);
            for j in 0..n {
                let prods =
                    (0..cols).map(|k| f64::from(w[r * cols + k]) * f64::from(x[j * cols + k]));
                let want: f64 = prods.clone().sum();
                let mag: f64 = prods.map(f64::abs).sum();
                let got = f64::from(y[j * rows + r]);
                let tol = 1e-5 * (1.0 + mag);
                assert!(
                    (got - want).abs() < tol,
                    "{:?} n={n} [{j}, {r}]: {got} vs {want}",
                    m.format()
                );
                let s = f64::from(scalar[j]);
                assert!(
                    (s - got).abs() < tol,
                    "{:?} portable {s} vs {got}",
                    m.format()
                );
            }
        }
    }
}

/// Checks the 16-bit-input `m.matmul` against `x̃·Wᵀ` in `f64` (`x̃` the input quantized
/// to 16 bits; up to the `f32` sums), against `x·Wᵀ` within the rounding bound, and the
/// portable kernel against the dispatched one.
fn check_matmul_q16(m: &QuantizedMatrix, w: &[f32], rng: &mut ChaCha8Rng) {
    let m = &m.clone().with_inputs(Inputs::Q16);
    let (rows, cols) = (m.rows(), m.cols());
    for n in [1, 2, 3, 5] {
        let mut x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        // One large value: its block's scale grows, the other blocks keep theirs.
        x[3] = 40.0;
        let xq = Q16Input::quantize(&x, n, cols);
        let y = m.matmul(&x, n);
        let mut scalar = vec![0.0f32; n];
        for r in 0..rows {
            m.row_dot_q16_scalar(r, &xq, &mut scalar);
            for j in 0..n {
                let wr = &w[r * cols..(r + 1) * cols];
                let xr = &x[j * cols..(j + 1) * cols];
                let xt = (0..cols).map(|k| {
                    let i = j * cols + k;
                    f64::from(xq.qs[i]) * f64::from(xq.d[i / QUANT_BLOCK])
                });
                let mut exact: f64 = wr.iter().zip(xt).map(|(a, b)| f64::from(*a) * b).sum();
                // The offset term of each block (`-8d` for Q4_0, `m` for Q4_1) multiplies
                // the exact `Σx`, not the quantized one.
                let bb = m.format().block_bytes();
                for b in 0..cols / QUANT_BLOCK {
                    let blk = &m.data[(r * cols / QUANT_BLOCK + b) * bb..];
                    let h = |i: usize| {
                        f64::from(f16::from_bits(u16::from_le_bytes([blk[i], blk[i + 1]])))
                    };
                    let off = match m.format() {
                        QuantFormat::Q4_0 => -8.0 * h(0),
                        QuantFormat::Q4_1 => h(2),
                        QuantFormat::Q5_0 => -16.0 * h(0),
                        _ => 0.0,
                    };
                    let k = j * cols + b * QUANT_BLOCK;
                    let sx: f64 = x[k..k + QUANT_BLOCK].iter().map(|&v| f64::from(v)).sum();
                    let sxt: f64 = (k..k + QUANT_BLOCK)
                        .map(|i| f64::from(xq.qs[i]) * f64::from(xq.d[i / QUANT_BLOCK]))
                        .sum();
                    exact += off * (sx - sxt);
                }
                let mag: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b).abs()).sum();
                let got = f64::from(y[j * rows + r]);
                let tol = 1e-5 * (1.0 + mag);
                assert!(
                    (got - exact).abs() < tol,
                    "{:?} n={n} [{j}, {r}]: {got} vs {exact} (16-bit input)",
                    m.format()
                );
                let want: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b)).sum();
                let bound: f64 = (0..cols / QUANT_BLOCK)
                    .map(|b| {
                        let d = f64::from(xq.d[j * cols / QUANT_BLOCK + b]);
                        let sw: f64 = wr[b * QUANT_BLOCK..(b + 1) * QUANT_BLOCK]
                            .iter()
                            .map(|v| f64::from(v.abs()))
                            .sum();
                        d / 2.0 * sw
                    })
                    .sum();
                assert!(
                    (got - want).abs() <= bound + tol,
                    "{:?} n={n} [{j}, {r}]: {got} vs {want}, bound {bound}",
                    m.format()
                );
                let s = f64::from(scalar[j]);
                assert!(
                    (s - got).abs() < tol,
                    "{:?} portable {s} vs {got}",
                    m.format()
                );
            }
        }
    }
}

/// Checks the 16-bit-input k-quant `m.matmul` against `x·Wᵀ` within the input rounding bound,
/// and the dispatched kernel (the AVX2 build where the CPU has it) against the portable loop,
/// bit for bit.
fn check_k_matmul_q16(m: &QuantizedMatrix, w: &[f32], rng: &mut ChaCha8Rng) {
    let (rows, cols) = (m.rows(), m.cols());
    for n in [1, 2, 3, 5] {
        let mut x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        x[3] = 40.0;
        let xq = Q16Input::quantize(&x, n, cols);
        let y = m.matmul(&x, n);
        let mut portable = vec![0.0f32; rows * n];
        super::k_quants::rows_dot_q16(m.format(), &m.data, cols, &xq, &mut portable);
        for r in 0..rows {
            for j in 0..n {
                let got = y[j * rows + r];
                assert_eq!(
                    got.to_bits(),
                    portable[r * n + j].to_bits(),
                    "{:?} n={n} [{j}, {r}]: dispatched {got} vs portable {}",
                    m.format(),
                    portable[r * n + j]
                );
                let wr = &w[r * cols..(r + 1) * cols];
                let xr = &x[j * cols..(j + 1) * cols];
                let want: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b)).sum();
                let mag: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b).abs()).sum();
                let bound: f64 = (0..cols / QUANT_BLOCK)
                    .map(|b| {
                        let d = f64::from(xq.d[j * cols / QUANT_BLOCK + b]);
                        let sw: f64 = wr[b * QUANT_BLOCK..(b + 1) * QUANT_BLOCK]
                            .iter()
                            .map(|v| f64::from(v.abs()))
                            .sum();
                        d / 2.0 * sw
                    })
                    .sum();
                let got = f64::from(got);
                assert!(
                    (got - want).abs() <= bound + 1e-5 * (1.0 + mag),
                    "{:?} n={n} [{j}, {r}]: {got} vs {want}, bound {bound}",
                    m.format()
                );
            }
        }
    }
}

#[test]
fn matmul_matches_dequantized_weights() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for format in [
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q8_0,
    ] {
        let (rows, cols) = (71, 96);
        let data = random_blocks(format, rows * cols / 32, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
        let w = reference_weights(format, &data);
        assert_eq!(m.dequantize(), w, "{format:?} dequantize");
        assert_eq!(m.inputs(), Inputs::Q16, "16-bit inputs by default");
        check_matmul_f32(&m, &w, &mut rng);
        check_matmul_q16(&m, &w, &mut rng);
        check_matmul(&m.with_inputs(Inputs::Q8), &w, QUANT_BLOCK, &mut rng);
    }
}

/// Random k-quant super-blocks: random bytes with realistic `f16` scales.
fn random_k_blocks(format: QuantFormat, blocks: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let bb = format.block_bytes();
    let mut data: Vec<u8> = (0..blocks * bb).map(|_| rng.random()).collect();
    for b in data.chunks_exact_mut(bb) {
        let d = f16::from_f32(rng.random_range(0.0001..0.002)).to_bits();
        let dmin = f16::from_f32(rng.random_range(0.0..0.002)).to_bits();
        if format == QuantFormat::Q6_K {
            b[208..210].copy_from_slice(&d.to_le_bytes());
        } else {
            b[0..2].copy_from_slice(&d.to_le_bytes());
            b[2..4].copy_from_slice(&dmin.to_le_bytes());
        }
    }
    data
}

#[test]
fn k_quant_matmul_matches_dequantized_weights() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for format in [QuantFormat::Q4_K, QuantFormat::Q5_K, QuantFormat::Q6_K] {
        let (rows, cols) = (13, 512);
        let data = random_k_blocks(format, rows * cols / QK_K, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
        let w = m.dequantize();
        assert!(w.iter().all(|v| v.is_finite()) && w.iter().any(|&v| v != 0.0));
        assert_eq!(m.inputs(), Inputs::Q16, "16-bit inputs by default");
        check_matmul_f32(&m, &w, &mut rng);
        check_k_matmul_q16(&m, &w, &mut rng);
        check_matmul(&m.with_inputs(Inputs::Q8), &w, QK_K, &mut rng);
    }
    let err = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q4_K, 1, 576, &[0; 324]);
    assert!(err.unwrap_err().to_string().contains("256-value blocks"));
}

#[test]
fn quantized_input_rounds_to_the_nearest_level() {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
    let q = Q8Input::quantize(&x, 1, 64, 32);
    for (b, xb) in x.chunks_exact(32).enumerate() {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert_eq!(q.d[b], amax / 127.0);
        let mut sum = 0;
        for (k, &v) in xb.iter().enumerate() {
            let qv = q.qs[b * 32 + k];
            assert!((f32::from(qv) * q.d[b] - v).abs() <= q.d[b] / 2.0 * (1.0 + 1e-5));
            sum += i32::from(qv);
        }
        assert_eq!(q.s[b], q.d[b] * sum as f32);
        let b16: i32 = q.qs[b * 32..b * 32 + 16]
            .iter()
            .map(|&v| i32::from(v))
            .sum();
        assert_eq!(i32::from(q.bsums[2 * b]), b16);
    }
    assert!(
        Q8Input::quantize(&[0.0; 32], 1, 32, 32)
            .qs
            .iter()
            .all(|&v| v == 0)
    );
}

#[test]
fn large_matrices_split_over_threads_give_the_same_result() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (rows, cols) = (1000, 128);
    let data = random_blocks(QuantFormat::Q4_1, rows * cols / 32, &mut rng);
    let m = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q4_1, rows, cols, &data)
        .unwrap()
        .with_inputs(Inputs::Q8);
    let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y = m.matmul(&x, 1);
    let mut one = [0.0f32];
    let xq = Q8Input::quantize(&x, 1, cols, QUANT_BLOCK);
    for r in [0, 1, 499, 999] {
        m.rows_dot(r, &xq, &mut one);
        assert!((one[0] - y[r]).abs() <= 1e-6 * (1.0 + y[r].abs()));
    }
}

/// Times `f32`-input and 8-bit-input products of SmolLM2-sized matrices, interleaved, beside a
/// one-thread dense `f32` product
/// (`cargo test -p kiln-nn --release quant_input_timings -- --ignored --nocapture`).
#[test]
#[ignore = "prints timings"]
fn quant_input_timings() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (format, rows, cols) in [
        (QuantFormat::Q4_1, 1536, 576),
        (QuantFormat::Q4_1, 576, 1536),
        (QuantFormat::Q4_1, 49152, 576),
        (QuantFormat::Q4_K, 576, 1536),
        (QuantFormat::Q6_K, 576, 1536),
    ] {
        let blocks = rows * cols / format.block_values();
        let data = if format == QuantFormat::Q4_1 {
            random_blocks(format, blocks, &mut rng)
        } else {
            random_k_blocks(format, blocks, &mut rng)
        };
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
        let dense: Vec<f32> = m.dequantize();
        let mq = m.clone().with_inputs(Inputs::Q8);
        let m16 = m.clone().with_inputs(Inputs::Q16);
        let m = m.with_inputs(Inputs::F32);
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let reps = (200_000_000 / (rows * cols)).max(20);
        let time = |m: &QuantizedMatrix| {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                std::hint::black_box(m.matmul(std::hint::black_box(&x), 1));
            }
            t.elapsed().as_secs_f64() / reps as f64 * 1e6
        };
        let time_dense = || {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                let y: Vec<f32> = dense
                    .chunks_exact(cols)
                    .map(|w| w.iter().zip(&x).map(|(a, b)| a * b).sum())
                    .collect();
                std::hint::black_box(y);
            }
            t.elapsed().as_secs_f64() / reps as f64 * 1e6
        };
        for round in 0..3 {
            let (a, a16, b, c) = (time(&m), time(&m16), time(&mq), time_dense());
            println!(
                "{format:?} [{rows}, {cols}] round {round}: f32 inputs {a:.1} us, 16-bit \
                 inputs {a16:.1} us, 8-bit inputs {b:.1} us, dense f32 one thread {c:.1} us"
            );
        }
    }
}

#[test]
fn matmul_many_equals_one_matmul_each() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let cols = 64;
    let make = |format, rows, rng: &mut ChaCha8Rng| {
        let data = random_blocks(format, rows * cols / 32, rng);
        QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap()
    };
    let a = make(QuantFormat::Q4_1, 300, &mut rng);
    let b = make(QuantFormat::Q8_0, 40, &mut rng);
    let c = make(QuantFormat::Q4_0, 9, &mut rng);
    let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
    // Alike inputs (one preparation), then one matrix with 8-bit inputs (one each).
    for mats in [
        vec![&a, &b, &c],
        vec![&a, &b.clone().with_inputs(Inputs::Q8)],
    ] {
        let mats: Vec<QuantizedMatrix> = mats.into_iter().cloned().collect();
        let refs: Vec<&QuantizedMatrix> = mats.iter().collect();
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0.0; m.rows()]).collect();
        let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
        QuantizedMatrix::matmul_many(&refs, &x, &mut slices);
        for (m, o) in mats.iter().zip(&outs) {
            assert_eq!(o, &m.matmul(&x, 1), "{:?}", m.format());
        }
    }
}

/// A row's product does not depend on the other rows multiplied with it (a decoding batch of
/// up to `QUANTIZED_MAX_ROWS` rows gives each sequence the bits it gets alone), for every
/// 32-value format and input kind, and the k-quants.
#[test]
fn a_rows_product_does_not_depend_on_its_batch() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let rows = 37;
    // Row `j` of an `n`-row product against that row alone, for each `n`.
    let check = |m: &QuantizedMatrix, what: &str, rng: &mut ChaCha8Rng| {
        let cols = m.cols();
        for n in [2, 3, 7, QUANTIZED_MAX_ROWS] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let all = m.matmul(&x, n);
            for j in 0..n {
                let one = m.matmul(&x[j * cols..(j + 1) * cols], 1);
                assert!(
                    all[j * rows..(j + 1) * rows] == one[..],
                    "{what}: row {j} of {n} differs from the row alone"
                );
            }
        }
    };
    let cols = 96;
    for format in [
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q8_0,
    ] {
        let data = random_blocks(format, rows * cols / 32, &mut rng);
        for inputs in [Inputs::Q16, Inputs::Q8, Inputs::F32] {
            let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data)
                .unwrap()
                .with_inputs(inputs);
            check(&m, &format!("{format:?} {inputs:?}"), &mut rng);
        }
    }
    let cols = 512;
    for format in [QuantFormat::Q4_K, QuantFormat::Q5_K, QuantFormat::Q6_K] {
        let data = random_k_blocks(format, rows * cols / 256, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
        check(&m, &format!("{format:?}"), &mut rng);
    }
}

#[test]
fn permuted_rows_move_whole_rows() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let data = random_blocks(QuantFormat::Q4_1, 3 * 2, &mut rng);
    let m = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q4_1, 3, 64, &data).unwrap();
    let p = m.permute_rows(&[2, 0, 1]);
    let (a, b) = (m.dequantize(), p.dequantize());
    assert_eq!(&b[..64], &a[128..]);
    assert_eq!(&b[64..128], &a[..64]);
}

#[test]
fn bad_shapes_are_errors() {
    let err = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q8_0, 2, 48, &[0; 68]);
    assert!(err.unwrap_err().to_string().contains("not a whole number"));
    let err = QuantizedMatrix::from_gguf_blocks(QuantFormat::Q8_0, 2, 64, &[0; 100]);
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("needs 136 bytes, got 100")
    );
}

/// Every 16-bit-input kernel this CPU can run (portable, AVX2, AVX-512) gives the same one-row
/// product within `f32` rounding, whichever one the dispatch picks; rows 71 = 4·17 + 3 cover
/// both row groupings.
#[test]
fn q16_kernels_agree_on_one_input_row() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for format in [
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q8_0,
    ] {
        let (rows, cols) = (71, 96);
        let data = random_blocks(format, rows * cols / 32, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let xq = Q16Input::quantize(&x, 1, cols);
        let mut portable = vec![0.0f32; rows];
        for (r, o) in portable.iter_mut().enumerate() {
            m.row_dot_q16_scalar(r, &xq, std::slice::from_mut(o));
        }
        let mut kernels: Vec<(&str, Vec<f32>)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if crate::simd::quant_avx2::available() {
                let mut out = vec![0.0f32; rows];
                crate::simd::quant_i16_avx2::rows_dot(&m, 0, &xq, &mut out);
                kernels.push(("avx2", out));
            }
            if crate::simd::quant_i16_avx512::available() {
                let mut out = vec![0.0f32; rows];
                crate::simd::quant_i16_avx512::rows_dot(&m, 0, &xq, &mut out);
                kernels.push(("avx512", out));
            }
        }
        if kernels.is_empty() {
            eprintln!("{format:?}: no SIMD kernel on this CPU; the portable one is the dispatch");
        }
        for (name, out) in kernels {
            for (r, (a, b)) in out.iter().zip(&portable).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{format:?} {name} row {r}: {a} vs portable {b}"
                );
            }
        }
    }
}

/// The 8-bit kernels' VNNI variants (`vpdpbusd`) sum the same four products per lane as the
/// AVX2 one (`maddubs` + `madd`), so they return the same bits, for one and for several input
/// rows, on every 32-value format. Variants this CPU lacks are skipped (and said so).
#[test]
#[cfg(target_arch = "x86_64")]
fn vnni_kernels_return_the_avx2_kernel_bits() {
    use crate::simd::quant_avx2::{Dot, rows_dot_with};
    if !Dot::Avx2.available() {
        eprintln!("no AVX2: the portable kernel is the dispatch");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for format in [
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q8_0,
    ] {
        let (rows, cols) = (37, 128);
        let data = random_blocks(format, rows * cols / 32, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data)
            .unwrap()
            .with_inputs(Inputs::Q8);
        for n in [1, 3, 5] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let xq = Q8Input::quantize(&x, n, cols, QUANT_BLOCK);
            let mut want = vec![0.0f32; rows * n];
            rows_dot_with(Dot::Avx2, &m, 0, &xq, &mut want);
            for dot in [Dot::AvxVnni, Dot::Avx512Vnni] {
                if !dot.available() {
                    eprintln!("{dot:?}: not on this CPU");
                    continue;
                }
                let mut got = vec![0.0f32; rows * n];
                rows_dot_with(dot, &m, 0, &xq, &mut got);
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{format:?} n={n} {dot:?}"
                );
            }
        }
    }
}

/// Times the 8-bit kernels' AVX2 and VNNI products on one input row, interleaved, one thread
/// (`cargo test -p kiln-nn --release q8_dot_timings -- --ignored --nocapture`).
#[test]
#[ignore = "prints timings"]
#[cfg(target_arch = "x86_64")]
fn q8_dot_timings() {
    use crate::simd::quant_avx2::{Dot, rows_dot_with};
    let dots: Vec<Dot> = [Dot::Avx2, Dot::AvxVnni, Dot::Avx512Vnni]
        .into_iter()
        .filter(|d| d.available())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (format, rows, cols) in [
        (QuantFormat::Q5_0, 1536, 576),
        (QuantFormat::Q8_0, 1536, 576),
        (QuantFormat::Q4_1, 1536, 576),
        (QuantFormat::Q8_0, 49152, 576),
    ] {
        let data = random_blocks(format, rows * cols / 32, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let xq = Q8Input::quantize(&x, 1, cols, QUANT_BLOCK);
        let mut out = vec![0.0f32; rows];
        let mut times = vec![Vec::new(); dots.len()];
        for _ in 0..5 {
            for (t, &dot) in times.iter_mut().zip(&dots) {
                let start = std::time::Instant::now();
                for _ in 0..20 {
                    rows_dot_with(dot, &m, 0, &xq, &mut out);
                }
                t.push(start.elapsed().as_secs_f64() / 20.0 * 1e6);
            }
        }
        let cells: Vec<String> = times
            .iter_mut()
            .zip(&dots)
            .map(|(t, d)| {
                t.sort_by(f64::total_cmp);
                format!("{d:?} {:.1}–{:.1} µs", t[0], t[4])
            })
            .collect();
        eprintln!("{format:?} [{rows}, {cols}]: {}", cells.join(", "));
    }
}

/// Times the AVX2 and AVX-512 16-bit-input kernels on one input row, interleaved, one thread
/// (`cargo test -p kiln-nn --release q16_kernel_timings -- --ignored --nocapture`).
#[test]
#[ignore = "prints timings"]
#[cfg(target_arch = "x86_64")]
fn q16_kernel_timings() {
    use crate::simd::{quant_i16_avx2, quant_i16_avx512};
    if !quant_i16_avx512::available() {
        eprintln!("no AVX-512 on this CPU");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (format, rows, cols) in [
        (QuantFormat::Q4_1, 1536, 576),
        (QuantFormat::Q5_0, 1536, 576),
        (QuantFormat::Q8_0, 1536, 576),
        (QuantFormat::Q8_0, 49152, 576),
    ] {
        let data = random_blocks(format, rows * cols / 32, &mut rng);
        let m = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &data).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let xq = Q16Input::quantize(&x, 1, cols);
        let mut out = vec![0.0f32; rows];
        let reps = (100_000_000 / (rows * cols)).max(10);
        let mut time = |f: fn(&QuantizedMatrix, usize, &Q16Input, &mut [f32])| {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f(&m, 0, &xq, &mut out);
                std::hint::black_box(&out);
            }
            t.elapsed().as_secs_f64() / reps as f64 * 1e6
        };
        for round in 0..3 {
            let a = time(quant_i16_avx2::rows_dot);
            let b = time(quant_i16_avx512::rows_dot);
            println!(
                "{format:?} [{rows}, {cols}] round {round}: AVX2 {a:.1} us, AVX-512 {b:.1} us"
            );
        }
    }
}
