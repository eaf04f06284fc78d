//! Every PEFT method (and full fine-tuning) learns a toy task on a tiny random Llama through the same
//! `Fit` loop, and its checkpoints carry an adapter in the PEFT layout that loads back with the
//! trained outputs.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_data::TokenizedExample;
use kiln_models::{CausalLm, LlamaConfig, LlamaForCausalLM, LmInput};
use kiln_peft::{
    AdapterConfig, BottleneckConfig, Ia3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig,
    attach_adapter, full_fine_tuning, load_adapter,
};
use kiln_train::{Fit, FitConfig, OptimizerConfig, PeftExporter, Schedule, Trainer, files};

static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn base(device: &Device) -> LlamaForCausalLM {
    LlamaConfig {
        // Larger than HF's 0.02 so that the output head can express confident predictions
        // without being trained (prompt and prefix tuning and bottleneck adapters leave it
        // frozen; with std 0.02 the logits of a 32-wide model span less than one nat).
        initializer_range: 0.3,
        ..common::tiny_llama()
    }
    .init(11, device)
}

/// After `[1, x, x+1]`, answer the fixed phrase `5 9 13 2`. A random base model has no skills
/// to steer, so the task is one that every method can express, including those (prompt and
/// prefix tuning, bottleneck adapters) that add little input-dependent computation; LoRA
/// learning a harder task is `fit.rs`'s counting test.
fn phrase(range: std::ops::Range<u32>) -> Vec<TokenizedExample> {
    range
        .map(|x| TokenizedExample::prompt_completion(&[1, x, x + 1], &[5, 9, 13, 2]))
        .collect()
}

/// (name, config or None for full fine-tuning, learning rate, mean loss of the last 5 steps the
/// run must get below; the initial loss is about 4). Measured: full 0.005, LoRA 0.001,
/// DoRA 0.003, IA3 0.001, bottleneck 0.007, prompt tuning 0.14, prefix tuning 0.05.
fn methods() -> Vec<(&'static str, Option<AdapterConfig>, f64, f32)> {
    let all = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ("full", None, 3e-3, 0.1),
        (
            "lora",
            Some(AdapterConfig::Lora(LoraConfig {
                r: 8,
                lora_alpha: 16.0,
                target_modules: all(&["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"]),
                ..Default::default()
            })),
            1e-2,
            0.1,
        ),
        (
            "dora",
            Some(AdapterConfig::Lora(LoraConfig {
                r: 8,
                lora_alpha: 16.0,
                use_dora: true,
                target_modules: all(&["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"]),
                ..Default::default()
            })),
            1e-2,
            0.1,
        ),
        (
            "ia3",
            Some(AdapterConfig::Ia3(Ia3Config {
                target_modules: Some(all(&["k_proj", "v_proj", "down_proj", "lm_head"])),
                feedforward_modules: Some(all(&["down_proj"])),
                ..Default::default()
            })),
            2e-1,
            0.1,
        ),
        (
            "bottleneck",
            Some(AdapterConfig::Bottleneck(BottleneckConfig {
                reduction_factor: 2,
                init_std: 0.1,
                ..Default::default()
            })),
            5e-2,
            0.1,
        ),
        (
            "prompt",
            Some(AdapterConfig::PromptTuning(PromptTuningConfig {
                num_virtual_tokens: 8,
                ..Default::default()
            })),
            3e-1,
            0.5,
        ),
        (
            "prefix",
            Some(AdapterConfig::PrefixTuning(PrefixTuningConfig {
                num_virtual_tokens: 8,
                ..Default::default()
            })),
            2e-1,
            0.3,
        ),
    ]
}

fn logits(model: &LlamaForCausalLM) -> Vec<f32> {
    let device = model.device();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 6, 7], [1, 4]), &device);
    model
        .forward(&LmInput::new(ids))
        .into_data()
        .iter::<f32>()
        .collect()
}

#[test]
fn every_method_learns_the_toy_task_and_checkpoints_in_peft_format() {
    let _rng = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    let train = phrase(3..27);
    let only = std::env::var("KILN_METHOD").ok();
    let mut failures = Vec::new();
    for (name, config, lr, bound) in methods() {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let (model, config) = match &config {
            Some(c) => {
                let (m, c) = attach_adapter(base(&device), c, None, 5, &device).unwrap();
                (m, Some(c))
            }
            None => (full_fine_tuning(base(&device)), None),
        };
        let fit = FitConfig {
            batch_size: 8,
            epochs: 25,
            seed: 3,
            output_dir: Some(dir.path().into()),
            checkpoint_every: Some(1000),
            progress: false,
            plot: false,
            ..Default::default()
        };
        let opt = OptimizerConfig {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        };
        let schedule = Schedule::Constant { warmup_steps: 0 };
        let mut trainer = Trainer::new(opt, schedule, &device).unwrap();
        let exporter = config.clone().map(|config| PeftExporter { config });
        let mut run = Fit::new(fit, &train);
        if let Some(e) = &exporter {
            run = run.exporter(e);
        }
        let out = run.run(model, &mut trainer).unwrap();
        let losses = &out.summary.losses;
        let (first, last) = (losses[0], *losses.last().unwrap());
        let tail = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
        println!(
            "{name}: loss {first:.3} -> {last:.3} (mean of last 5: {tail:.3}) in {} steps",
            losses.len()
        );
        if tail >= bound {
            failures.push(format!("{name}: loss only fell to {tail} (bound {bound})"));
        }

        // The final checkpoint holds a PEFT adapter that reproduces the trained model.
        if let Some(config) = &config {
            let ckpt =
                kiln_train::CheckpointManager::new(dir.path().join(files::CHECKPOINTS), None)
                    .unwrap()
                    .latest()
                    .unwrap()
                    .expect("a final checkpoint");
            let plain = Device::flex();
            let (reloaded, saved) = load_adapter(base(&plain), &ckpt, &plain).unwrap();
            assert_eq!(saved.peft_type(), config.peft_type());
            let trained = burn::module::Module::valid(&out.model);
            let d = logits(&reloaded)
                .iter()
                .zip(logits(&trained))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(d < 1e-4, "{name}: reloaded adapter differs by {d}");
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
