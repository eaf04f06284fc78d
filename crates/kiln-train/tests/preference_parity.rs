//! The first steps of preference optimization match TRL's `DPOTrainer` on the same tiny Llama,
//! LoRA initialization, data order and optimizer: the loss and every metric TRL logs.
//!
//! Reference: `scripts/fixtures/gen_dpo_fixtures.py` → `tests/fixtures/trl-dpo-*/`.

use std::path::Path;

use burn::tensor::Device;
use kiln_data::{PreferencePair, preference_batch};
use kiln_peft::LoraConfig;
use kiln_train::{
    OptimizerConfig, PreferenceConfig, PreferenceLoss, ReferenceTable, Schedule, Trainer,
    base_reference, reference_logps,
};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Runs the fixture's steps with kiln and compares each step's loss and metrics with TRL's,
/// with the reference's log-probabilities computed at each step, then precomputed for every
/// pair before training ([`ReferenceTable`]).
fn check(name: &str, loss: PreferenceLoss) {
    check_with(name, loss, false);
    check_with(name, loss, true);
}

fn check_with(name: &str, loss: PreferenceLoss, precompute: bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    assert_eq!(reference["loss_type"], loss.name());
    let device = Device::flex().autodiff();
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-models/tests/fixtures")
        .join(reference["base"].as_str().unwrap());
    let (_, model) = kiln_models::load_model(&base, &device).unwrap();
    let lora = &reference["lora"];
    let config = kiln_peft::AdapterConfig::Lora(LoraConfig {
        r: lora["r"].as_u64().unwrap() as usize,
        lora_alpha: lora["lora_alpha"].as_f64().unwrap(),
        target_modules: lora["target_modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        ..Default::default()
    });
    let (mut model, config) = kiln_peft::attach_adapter(model, &config, None, 0, &device).unwrap();
    let file = dir.join("lora_init.safetensors");
    let state = kiln_nn::safetensors::read_safetensors(&file).unwrap();
    kiln_peft::io::set_adapter_state(&mut model, &config, state, &file, &device).unwrap();

    // The reference: the base (adapters disabled), or the adapter as it was before training.
    let frozen = match reference["reference"].as_str().unwrap() {
        "base" => base_reference(&model),
        "initial" => model.clone(),
        other => panic!("unknown reference {other}"),
    };
    let pairs: Vec<PreferencePair> = reference["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PreferencePair {
            prompt: ids(&p["prompt_ids"]),
            chosen: ids(&p["chosen_ids"]),
            rejected: ids(&p["rejected_ids"]),
            margin: None,
        })
        .collect();
    let order: Vec<usize> = reference["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let batch_size = reference["batch_size"].as_u64().unwrap() as usize;
    let pad = reference["pad_id"].as_u64().unwrap() as u32;
    let table = precompute.then(|| ReferenceTable::compute(&frozen, &[&pairs], pad, 3).unwrap());
    let opt = &reference["optimizer"];
    let opt = OptimizerConfig {
        lr: opt["lr"].as_f64().unwrap(),
        weight_decay: opt["weight_decay"].as_f64().unwrap() as f32,
        max_grad_norm: opt["max_grad_norm"].as_f64(),
        ..Default::default()
    };
    let mut trainer = Trainer::new(opt, Schedule::Constant { warmup_steps: 0 }, &device).unwrap();
    let config = PreferenceConfig {
        loss,
        beta: reference["beta"].as_f64().unwrap(),
        ..Default::default()
    };
    for (step, expected) in reference["steps"].as_array().unwrap().iter().enumerate() {
        let batch_pairs: Vec<PreferencePair> = order[step * batch_size..(step + 1) * batch_size]
            .iter()
            .map(|&i| pairs[i].clone())
            .collect();
        let batch = preference_batch(&batch_pairs, pad).unwrap();
        let ref_logps = match &table {
            Some(t) => t.logps(&batch).unwrap(),
            None => reference_logps(&frozen, &batch).unwrap(),
        };
        let (m, stats) = trainer
            .preference_step(model, &batch, Some(&ref_logps), &config)
            .unwrap();
        model = m;
        let got = [
            ("loss", f64::from(stats.loss)),
            ("rewards/chosen", stats.rewards_chosen),
            ("rewards/rejected", stats.rewards_rejected),
            ("rewards/accuracies", stats.rewards_accuracies),
            ("rewards/margins", stats.rewards_margins),
            ("logps/chosen", stats.logps_chosen),
            ("logps/rejected", stats.logps_rejected),
        ];
        println!("{name} step {step} (precomputed: {precompute}): kiln {got:?}");
        for (key, value) in got {
            let want = expected[key].as_f64().unwrap();
            // Relative 1e-4 on the loss and log-probabilities; rewards are small differences
            // of log-probabilities, so they also get an absolute 1e-5.
            let tol = 1e-4 * want.abs() + if key == "loss" { 0.0 } else { 1e-5 };
            assert!(
                (value - want).abs() <= tol,
                "{name} step {step} {key}: kiln {value} vs TRL {want}"
            );
        }
    }
}

#[test]
fn dpo_sigmoid_steps_match_trl() {
    check("trl-dpo-sigmoid", PreferenceLoss::Sigmoid);
}

#[test]
fn ipo_steps_match_trl() {
    check("trl-dpo-ipo", PreferenceLoss::Ipo);
}

/// The reference is the adapter before training, as TRL does for a model that already holds
/// one (DPO after SFT).
#[test]
fn dpo_against_the_initial_adapter_matches_trl() {
    check("trl-dpo-sigmoid-initial", PreferenceLoss::Sigmoid);
}
