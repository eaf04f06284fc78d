//! Backend genericity: the same seeded LoRA run on every compiled backend gives the same losses.
//!
//! Always runs on flex; built with `--features kiln/wgpu` and run with `KILN_TEST_WGPU=1` it also
//! runs on wgpu and compares against flex (CI uses Mesa's lavapipe through
//! `CUBECL_WGPU_DEFAULT_DEVICE=Cpu`).

use kiln::prelude::*;

fn batch() -> TokenBatch {
    let examples = vec![
        TokenizedExample::prompt_completion(&[1, 5, 9, 3], &[7, 7, 2, 11, 4]),
        TokenizedExample::prompt_completion(&[1, 6], &[12, 13, 14, 2]),
        TokenizedExample::full(&[1, 20, 21, 22, 23, 24, 25, 2]),
    ];
    TokenBatch::pad_right(&examples, 0).unwrap()
}

/// Seeded LoRA training on `device`; returns the per-step losses.
fn lora_losses(device: &Device, steps: usize) -> Vec<f32> {
    let train_device = device.clone().autodiff();
    let config = LlamaConfig {
        vocab_size: 32,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        ..Default::default()
    };
    let model = config.init(11, &train_device);
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        ..Default::default()
    };
    let (mut model, adapted) = attach_lora(model, &lora, 5, &train_device).unwrap();
    assert_eq!(adapted.len(), 6);
    let mut trainer = Trainer::new(
        OptimizerConfig {
            lr: 2e-2,
            ..Default::default()
        },
        Schedule::Constant { warmup_steps: 0 },
        device,
    )
    .unwrap();
    let batch = batch();
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (m, loss) = trainer.train_step(model, &batch).unwrap();
        model = m;
        losses.push(loss);
    }
    losses
}

#[test]
fn lora_trains_on_flex() {
    let losses = lora_losses(&parse_device("flex").unwrap(), 12);
    // Random init over a 32-token vocabulary starts near ln(32) = 3.47.
    assert!(
        (losses[0] - 32f32.ln()).abs() < 0.3,
        "first loss {}",
        losses[0]
    );
    assert!(
        losses[11] < losses[0] - 0.25,
        "loss did not fall: {losses:?}"
    );
    assert!(
        losses.windows(2).all(|w| w[1] < w[0]),
        "loss not decreasing: {losses:?}"
    );
    // Same seed, same run.
    assert_eq!(losses, lora_losses(&parse_device("flex").unwrap(), 12));
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_flex() {
    // Needs a wgpu adapter; CI provides Mesa's lavapipe and sets KILN_TEST_WGPU=1.
    if std::env::var_os("KILN_TEST_WGPU").is_none() {
        println!(
            "skipped: set KILN_TEST_WGPU=1 to run the wgpu comparison (needs a Vulkan/Metal/DX12 adapter)"
        );
        return;
    }
    let flex = lora_losses(&parse_device("flex").unwrap(), 8);
    let wgpu = lora_losses(&parse_device("wgpu").unwrap(), 8);
    println!("flex {flex:?}\nwgpu {wgpu:?}");
    for (i, (a, b)) in flex.iter().zip(&wgpu).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "step {i}: flex {a} vs wgpu {b}"
        );
    }
}
