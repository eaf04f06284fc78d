//! Every PEFT method through the library, on a tiny randomly initialized Llama (no download):
//! attach the method, train it to answer one trouble code, save the adapter in the Hugging Face
//! PEFT format, load it into a fresh copy of the base and check that the logits are the same.
//!
//! Run: `cargo run --release -p kiln-example-peft-methods [-- --steps 100 --out runs/peft-methods]`

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln::burn::module::Module;
use kiln::peft::{BottleneckConfig, Ia3Config, PrefixTuningConfig, PromptTuningConfig};
use kiln::prelude::*;

/// The base model: the same seed gives the same weights every time it is built.
fn base(device: &Device) -> LlamaForCausalLM {
    LlamaConfig {
        vocab_size: 128,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        tie_word_embeddings: false,
        ..Default::default()
    }
    .init(42, device)
}

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

fn logits(model: &LlamaForCausalLM, ids: &[u32], device: &Device) -> Vec<f32> {
    let data: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    let input = LmInput::new(Tensor::from_data(
        TensorData::new(data, [1, ids.len()]),
        device,
    ));
    model.forward(&input).into_data().iter::<f32>().collect()
}

fn main() -> Result<()> {
    let mut steps = 100usize;
    let mut out = PathBuf::from("runs/peft-methods");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--steps" => steps = it.next().context("--steps needs a value")?.parse()?,
            "--out" => out = it.next().context("--out needs a value")?.into(),
            other => bail!("unknown argument `{other}` (expected --steps or --out)"),
        }
    }
    let device = parse_device("cpu")?;
    let train_device = device.clone().autodiff();

    let lora = |rs: bool, dora: bool| LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        target_modules: vec![
            "q_proj".into(),
            "v_proj".into(),
            "down_proj".into(),
            "lm_head".into(),
        ],
        use_rslora: rs,
        use_dora: dora,
        ..Default::default()
    };
    // (name, adapter or None for full fine-tuning, learning rate)
    let methods: Vec<(&str, Option<AdapterConfig>, f64)> = vec![
        ("full fine-tuning", None, 3e-3),
        ("LoRA", Some(AdapterConfig::Lora(lora(false, false))), 1e-2),
        ("rsLoRA", Some(AdapterConfig::Lora(lora(true, false))), 1e-2),
        ("DoRA", Some(AdapterConfig::Lora(lora(false, true))), 1e-2),
        (
            "IA3",
            Some(AdapterConfig::Ia3(Ia3Config {
                target_modules: Some(vec![
                    "k_proj".into(),
                    "v_proj".into(),
                    "down_proj".into(),
                    "lm_head".into(),
                ]),
                feedforward_modules: Some(vec!["down_proj".into()]),
                ..Default::default()
            })),
            2e-1,
        ),
        (
            "bottleneck",
            Some(AdapterConfig::Bottleneck(BottleneckConfig {
                reduction_factor: 2,
                init_std: 0.1,
                ..Default::default()
            })),
            5e-2,
        ),
        (
            "prefix tuning",
            Some(AdapterConfig::PrefixTuning(PrefixTuningConfig {
                num_virtual_tokens: 8,
                ..Default::default()
            })),
            2e-1,
        ),
        (
            "prompt tuning",
            Some(AdapterConfig::PromptTuning(PromptTuningConfig {
                num_virtual_tokens: 8,
                ..Default::default()
            })),
            3e-1,
        ),
    ];

    let mut completion = bytes("Random/Multiple Cylinder Misfire Detected");
    completion.push(0);
    let example = TokenizedExample::prompt_completion(&bytes("P0300: "), &completion);
    let batch = TokenBatch::pad_right(std::slice::from_ref(&example), 0)?;

    println!("| method | trainable params | first loss | last loss | reloaded max |Δlogit| |");
    println!("|---|---:|---:|---:|---:|");
    for (name, adapter, lr) in methods {
        let model = base(&train_device);
        let (mut model, config) = match &adapter {
            Some(c) => {
                let (m, c) = attach_adapter(model, c, None, 7, &train_device)?;
                (m, Some(c))
            }
            None => (full_fine_tuning(model), None),
        };
        let trainable = TrainableReport::of(&model).trainable;
        let mut trainer = Trainer::new(
            OptimizerConfig {
                lr,
                ..Default::default()
            },
            Schedule::Constant { warmup_steps: 0 },
            &device,
        )?;
        let (mut first, mut last) = (None, 0.0);
        for _ in 0..steps {
            let (m, loss) = trainer.train_step(model, &batch)?;
            model = m;
            first.get_or_insert(loss);
            last = loss;
        }
        let model = model.valid();
        // Save in the PEFT layout and load into a fresh base.
        let reload = match &config {
            Some(c) => {
                let dir = out.join(name.replace(' ', "-"));
                save_adapter(&model, c, &dir)?;
                let (loaded, _) = load_adapter(base(&device), &dir, &device)?;
                let a = logits(&model, &example.input_ids, &device);
                let b = logits(&loaded, &example.input_ids, &device);
                let diff = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                format!("{diff:.1e}")
            }
            None => "(no adapter)".into(),
        };
        println!(
            "| {name} | {trainable} | {:.3} | {last:.4} | {reload} |",
            first.unwrap_or(f32::NAN)
        );
    }
    println!("\nAdapters written to {}", out.display());
    Ok(())
}
