//! Prefill and decode throughput of SmolLM2-135M-Instruct (Q4_1 GGUF).
//!
//! Decoding is measured three times: with the checkpoint's Q4_1/Q8_0 blocks and inputs rounded
//! to 16 bits (kiln's default for a GGUF on the `flex` CPU device: at most 16 rows per
//! projection go through the block kernels), with the blocks and 8-bit inputs as llama.cpp
//! computes (`set_quant_inputs(Inputs::Q8)`, `--quant-inputs q8`), and with the dequantized
//! `f32` weights only (`clear_quantized`). Prefill of 128 tokens always uses the dense `f32`
//! weights.
//!
//! `cargo bench -p kiln-benches --bench generation` (set `KILN_DEVICE` to pick a backend).
//! Prints a skip notice when the asset is absent.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln::burn::tensor::{Int, Tensor, TensorData};
use kiln::models::{CachedCausalLm, CausalLm, GenerationConfig, generate, load_llama};
use kiln::nn::AdapterTarget;
use kiln_benches::{bench_device, smollm2_path};

const PREFILL: usize = 128;
const DECODE: usize = 32;

fn bench(c: &mut Criterion) {
    let Some(path) = smollm2_path() else {
        eprintln!("skipped: SmolLM2 asset absent (run scripts/fetch-assets.sh)");
        return;
    };
    let device = bench_device();
    let (_cfg, model) = load_llama(&path, &device).expect("load SmolLM2");
    let mut dense = model.clone();
    dense.clear_quantized();
    let mut q8 = model.clone();
    q8.set_quant_inputs(kiln::nn::Inputs::Q8);
    // A fixed, realistic-looking prompt of PREFILL tokens.
    let prompt: Vec<u32> = (0..PREFILL as u32).map(|i| 100 + (i * 37) % 5000).collect();

    let mut group = c.benchmark_group("smollm2-135m");
    group.sample_size(10);
    group.throughput(Throughput::Elements(PREFILL as u64));
    group.bench_function(format!("prefill {PREFILL} tokens"), |b| {
        b.iter(|| {
            let ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
            let x = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, PREFILL]), &device);
            let mask = Tensor::<2, Int>::ones([1, PREFILL], &device);
            let mut cache = model.new_cache();
            let h = model.forward_cached(x, mask, &mut cache);
            let last = h
                .narrow(1, PREFILL - 1, 1)
                .reshape([1, model.hidden_size()]);
            model.logits(last).into_data()
        });
    });
    group.throughput(Throughput::Elements(DECODE as u64));
    let cfg = GenerationConfig {
        max_new_tokens: DECODE,
        ..Default::default()
    };
    let short = prompt[..8].to_vec();
    for (label, m) in [
        ("Q4_1 blocks", &model),
        ("Q4_1 blocks, 8-bit inputs", &q8),
        ("f32 weights", &dense),
    ] {
        group.bench_function(
            format!("decode {DECODE} tokens (greedy, 8-token prompt, {label})"),
            |b| {
                b.iter(|| {
                    generate(
                        m,
                        std::slice::from_ref(&short),
                        0,
                        &cfg,
                        None,
                        &mut |_, _| {},
                    )
                    .unwrap()
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
