//! Trains a LoRA adapter on a tiny, randomly initialized Llama so that it answers a handful of
//! OBD-II trouble codes with their descriptions, then decodes greedily.
//!
//! Tokens are bytes, so the example needs no downloaded asset. It exercises the whole library
//! path: config → model → `attach_lora` → completion-only masking → `Trainer` → generation.
//!
//! Run: `cargo run --release -p kiln-example-tiny-lora -- [--device cpu] [--steps 200]`

use anyhow::{Context, Result, bail};
use kiln::burn::module::Module;
use kiln::prelude::*;

const PAIRS: &[(&str, &str)] = &[
    ("P0300", "Random/Multiple Cylinder Misfire Detected"),
    ("P0171", "System Too Lean (Bank 1)"),
    (
        "P0420",
        "Catalyst System Efficiency Below Threshold (Bank 1)",
    ),
    ("P0128", "Coolant Thermostat Below Regulating Temperature"),
];
const EOS: u32 = 0;

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut device_spec = "cpu".to_string();
    let mut steps = 200usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device_spec = it.next().context("--device needs a value")?.clone(),
            "--steps" => {
                steps = it
                    .next()
                    .context("--steps needs a value")?
                    .parse()
                    .context("--steps")?
            }
            other => bail!("unknown argument `{other}` (expected --device or --steps)"),
        }
    }
    let device = parse_device(&device_spec)?;
    let train_device = device.clone().autodiff();

    let config = LlamaConfig {
        vocab_size: 128,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        // A separate output head that LoRA also adapts: the frozen random base alone cannot
        // produce confident logits.
        tie_word_embeddings: false,
        ..Default::default()
    };
    let model = config.init(42, &train_device);
    let lora = LoraConfig {
        r: 16,
        lora_alpha: 32.0,
        target_modules: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "lm_head",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let (model, adapted) = attach_lora(model, &lora, 7, &train_device)?;
    println!(
        "base: tiny Llama, {} layers; LoRA r={} on {} projections",
        config.num_hidden_layers,
        lora.r,
        adapted.len()
    );
    println!("{}", TrainableReport::of(&model));

    let examples: Vec<TokenizedExample> = PAIRS
        .iter()
        .map(|(code, desc)| {
            let mut completion = bytes(desc);
            completion.push(EOS);
            TokenizedExample::prompt_completion(&bytes(&format!("{code}: ")), &completion)
        })
        .collect();
    let batch = TokenBatch::pad_right(&examples, EOS)?;
    let mut trainer = Trainer::new(
        OptimizerConfig {
            lr: 1e-2,
            ..Default::default()
        },
        Schedule::Cosine {
            warmup_steps: 10,
            total_steps: steps,
        },
        &device,
    )?;
    let mut model = model;
    for step in 0..steps {
        let (m, loss) = trainer.train_step(model, &batch)?;
        model = m;
        if step % 25 == 0 || step + 1 == steps {
            println!(
                "step {step:>4}  loss {loss:.4}  lr {:.2e}",
                trainer.current_lr()
            );
        }
    }

    let model = model.valid();
    let mut correct = 0;
    for (code, desc) in PAIRS {
        let mut ids = bytes(&format!("{code}: "));
        let start = ids.len();
        while ids.len() < start + 64 {
            let input = LmInput::new(Tensor::from_data(
                TensorData::new(
                    ids.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(),
                    [1, ids.len()],
                ),
                &device,
            ));
            let logits = model
                .forward(&input)
                .narrow(1, ids.len() - 1, 1)
                .reshape([-1]);
            let next = logits.argmax(0).into_scalar::<i64>() as u32;
            if next == EOS {
                break;
            }
            ids.push(next);
        }
        let answer =
            String::from_utf8_lossy(&ids[start..].iter().map(|&b| b as u8).collect::<Vec<_>>())
                .to_string();
        let ok = answer == *desc;
        correct += usize::from(ok);
        println!("{code} -> {answer:?} {}", if ok { "✓" } else { "✗" });
    }
    println!("{correct}/{} codes answered exactly", PAIRS.len());
    Ok(())
}
