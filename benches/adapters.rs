//! Forward-pass overhead of each PEFT method against the bare model, and merged vs unmerged LoRA.
//!
//! The model has SmolLM2-135M's shapes (30 layers, hidden 576, 9 query / 3 key-value heads,
//! intermediate 1536, vocabulary 49152) with random weights, so no asset is needed. Each case
//! runs the forward pass to the final hidden states for one sequence of 128 tokens, without
//! autodiff (inference).
//!
//! `cargo bench -p kiln-benches --bench adapters` (set `KILN_DEVICE` to pick a backend).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln::burn::tensor::{Int, Tensor, TensorData};
use kiln::models::{CausalLm, LlamaConfig, LlamaForCausalLM, LmInput};
use kiln::nn::AdapterTarget;
use kiln::peft::{
    AdapterConfig, BottleneckConfig, Ia3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig,
    attach_adapter,
};
use kiln_benches::bench_device;

const SEQ: usize = 128;

fn smollm2_shaped() -> LlamaConfig {
    LlamaConfig {
        model_type: "llama".into(),
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: Some(3),
        max_position_embeddings: 2048,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        tie_word_embeddings: true,
        ..Default::default()
    }
}

fn lora(use_dora: bool) -> AdapterConfig {
    AdapterConfig::Lora(LoraConfig {
        r: 16,
        lora_alpha: 32.0,
        target_modules: vec!["all-linear".into()],
        use_dora,
        ..Default::default()
    })
}

fn bench(c: &mut Criterion) {
    let device = bench_device();
    let base: LlamaForCausalLM = smollm2_shaped().init(0, &device);
    let ids: Vec<i64> = (0..SEQ as i64).map(|i| 100 + (i * 37) % 5000).collect();
    let input = LmInput::new(Tensor::<2, Int>::from_data(
        TensorData::new(ids, [1, SEQ]),
        &device,
    ));

    let mut cases: Vec<(String, LlamaForCausalLM)> =
        vec![("base (no adapter)".into(), base.clone())];
    for (name, config) in [
        ("LoRA r16 all-linear", lora(false)),
        ("DoRA r16 all-linear", lora(true)),
        ("IA3", AdapterConfig::Ia3(Ia3Config::default())),
        (
            "bottleneck",
            AdapterConfig::Bottleneck(BottleneckConfig::default()),
        ),
        (
            "prefix 20 tokens",
            AdapterConfig::PrefixTuning(PrefixTuningConfig::default()),
        ),
        (
            "prompt 20 tokens",
            AdapterConfig::PromptTuning(PromptTuningConfig::default()),
        ),
    ] {
        let (m, _) = attach_adapter(base.clone(), &config, None, 0, &device)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        cases.push((name.into(), m));
    }
    let (mut merged, _) = attach_adapter(base.clone(), &lora(false), None, 0, &device).unwrap();
    merged.merge_adapters().unwrap();
    cases.insert(2, ("LoRA r16 all-linear, merged".into(), merged));

    let mut group = c.benchmark_group(format!("adapter forward, SmolLM2-135M shapes, 1x{SEQ}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(SEQ as u64));
    for (name, model) in &cases {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| model.forward_hidden(&input).into_data());
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
