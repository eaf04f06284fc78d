//! The first steps of reward-model training match TRL's `RewardTrainer` on the same tiny Llama,
//! LoRA and head initialization, data order and optimizer: the loss and every metric TRL logs,
//! then the trained model's rewards. A reward model saved by PEFT (`SEQ_CLS`) loads and scores
//! as transformers does, and kiln saves the same layout.
//!
//! Reference: `scripts/fixtures/gen_reward_fixtures.py` → `tests/fixtures/trl-reward*/`.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use kiln_data::{PreferencePair, preference_batch};
use kiln_models::{AnyCausalLm, RewardModel};
use kiln_peft::{AdapterConfig, LoraConfig};
use kiln_train::{
    OptimizerConfig, RewardConfig, Schedule, Trainer, load_reward_adapter, save_reward_adapter,
};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn fixture(name: &str) -> (PathBuf, serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (dir, reference)
}

fn base(reference: &serde_json::Value, device: &Device) -> AnyCausalLm {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-models/tests/fixtures")
        .join(reference["base"].as_str().unwrap());
    kiln_models::load_model(&path, device).unwrap().1
}

fn lora_config(reference: &serde_json::Value) -> AdapterConfig {
    let lora = &reference["lora"];
    AdapterConfig::Lora(LoraConfig {
        r: lora["r"].as_u64().unwrap() as usize,
        lora_alpha: lora["lora_alpha"].as_f64().unwrap(),
        target_modules: lora["target_modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        ..Default::default()
    })
}

/// Every sequence of the fixture's `scores` and the reward transformers gave it.
fn scores(reference: &serde_json::Value) -> (Vec<Vec<u32>>, Vec<f64>) {
    reference["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (ids(&s["ids"]), s["reward"].as_f64().unwrap()))
        .unzip()
}

fn assert_scores(what: &str, got: &[f32], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-4 * w.abs().max(1.0),
            "{what}: kiln {got:?} vs transformers {want:?}"
        );
    }
}

/// Runs the fixture's steps with kiln and compares each step's loss and metrics with TRL's, then
/// the trained rewards.
fn check(name: &str) {
    let (dir, reference) = fixture(name);
    let device = Device::flex().autodiff();
    let config = lora_config(&reference);
    let (mut model, config) =
        kiln_peft::attach_adapter(base(&reference, &device), &config, None, 0, &device).unwrap();
    let file = dir.join("init.safetensors");
    let mut state = kiln_nn::safetensors::read_safetensors(&file).unwrap();
    let head = state.remove("base_model.model.score.weight").unwrap();
    kiln_peft::io::set_adapter_state(&mut model, &config, state, &file, &device).unwrap();
    let mut model = RewardModel::with_head(model, head.data);

    let pairs: Vec<PreferencePair> = reference["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PreferencePair {
            prompt: Vec::new(),
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
    let margins: Option<Vec<f32>> = reference["margins"]
        .as_array()
        .map(|m| m.iter().map(|x| x.as_f64().unwrap() as f32).collect());
    let batch_size = reference["batch_size"].as_u64().unwrap() as usize;
    let pad = reference["pad_id"].as_u64().unwrap() as u32;
    let opt = &reference["optimizer"];
    let opt = OptimizerConfig {
        lr: opt["lr"].as_f64().unwrap(),
        weight_decay: opt["weight_decay"].as_f64().unwrap() as f32,
        max_grad_norm: opt["max_grad_norm"].as_f64(),
        ..Default::default()
    };
    let mut trainer = Trainer::new(opt, Schedule::Constant { warmup_steps: 0 }, &device).unwrap();
    let objective = RewardConfig {
        center_rewards_coefficient: reference["center_rewards_coefficient"].as_f64(),
    };
    for (step, expected) in reference["steps"].as_array().unwrap().iter().enumerate() {
        let idx = &order[step * batch_size..(step + 1) * batch_size];
        let batch_pairs: Vec<PreferencePair> = idx.iter().map(|&i| pairs[i].clone()).collect();
        let step_margins: Option<Vec<f32>> = margins
            .as_ref()
            .map(|m| idx.iter().map(|&i| m[i]).collect());
        let batch = preference_batch(&batch_pairs, pad).unwrap();
        let (m, stats) = trainer
            .reward_step(model, &batch, step_margins.as_deref(), pad, &objective)
            .unwrap();
        model = m;
        let got = [
            ("loss", f64::from(stats.loss)),
            ("accuracy", stats.accuracy),
            ("margin", stats.margin),
            ("min_reward", stats.min_reward),
            ("mean_reward", stats.mean_reward),
            ("max_reward", stats.max_reward),
        ];
        println!("{name} step {step}: kiln {got:?}");
        for (key, value) in got {
            let want = expected[key].as_f64().unwrap();
            let tol = 1e-4 * want.abs() + if key == "loss" { 0.0 } else { 1e-5 };
            assert!(
                (value - want).abs() <= tol,
                "{name} step {step} {key}: kiln {value} vs TRL {want}"
            );
        }
    }
    let (sequences, want) = scores(&reference);
    assert_scores(
        &format!("{name}: trained"),
        &model.score(&sequences, pad, 3),
        &want,
    );

    // kiln's save has PEFT's keys and configuration, and reloads to the same rewards.
    let out = tempfile::tempdir().unwrap();
    save_reward_adapter(&model, &config, out.path()).unwrap();
    let keys = |d: &Path| -> Vec<String> {
        kiln_nn::safetensors::read_safetensors(&d.join("adapter_model.safetensors"))
            .unwrap()
            .into_keys()
            .collect()
    };
    assert_eq!(keys(out.path()), keys(&dir.join("adapter")));
    let saved = kiln_peft::read_adapter_config(out.path()).unwrap();
    assert_eq!(saved.common().task_type.as_deref(), Some("SEQ_CLS"));
    assert_eq!(
        saved.modules_to_save().unwrap(),
        &["classifier".to_string(), "score".to_string()]
    );
    let (reloaded, _) =
        load_reward_adapter(base(&reference, &device), out.path(), &device).unwrap();
    assert_scores(
        &format!("{name}: reloaded"),
        &reloaded.score(&sequences, pad, 8),
        &want,
    );
    python_peft_scores_as_kiln(
        out.path(),
        &reference,
        &sequences,
        &model.score(&sequences, pad, 8),
    );
}

/// With `KILN_PEFT_PYTHON` (scripts/python-reference.sh), Python PEFT loads the reward model
/// kiln saved in `dir` onto transformers' `LlamaForSequenceClassification` and must give kiln's
/// rewards (`scripts/fixtures/gen_reward_fixtures.py --check`).
fn python_peft_scores_as_kiln(
    dir: &Path,
    reference: &serde_json::Value,
    sequences: &[Vec<u32>],
    rewards: &[f32],
) {
    let Some(python) = std::env::var_os("KILN_PEFT_PYTHON") else {
        eprintln!("skipping the PEFT check: set KILN_PEFT_PYTHON (scripts/python-reference.sh)");
        return;
    };
    let scores: Vec<serde_json::Value> = sequences
        .iter()
        .zip(rewards)
        .map(|(ids, r)| serde_json::json!({"ids": ids, "reward": r}))
        .collect();
    let saved = serde_json::json!({
        "base": reference["base"],
        "pad_id": reference["pad_id"],
        "scores": scores,
    });
    std::fs::write(dir.join("kiln_scores.json"), saved.to_string()).unwrap();
    let out = std::process::Command::new(python)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../scripts/fixtures/gen_reward_fixtures.py"),
        )
        .arg("--check")
        .arg(dir)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.lines().any(|l| l.ends_with(" ok")),
        "PEFT did not score kiln's reward model as kiln does:\n{report}"
    );
    eprintln!("{report}");
}

#[test]
fn reward_steps_match_trl() {
    check("trl-reward");
}

/// Per-pair margins and `center_rewards_coefficient`.
#[test]
fn reward_steps_with_margins_and_centring_match_trl() {
    check("trl-reward-margin");
}

/// The adapter PEFT saved after TRL's training loads onto the base and scores every sequence as
/// transformers does.
#[test]
fn peft_saved_reward_model_scores_as_transformers() {
    for name in ["trl-reward", "trl-reward-margin"] {
        let (dir, reference) = fixture(name);
        let device = Device::flex();
        let (model, config) =
            load_reward_adapter(base(&reference, &device), &dir.join("adapter"), &device).unwrap();
        assert_eq!(config.common().task_type.as_deref(), Some("SEQ_CLS"));
        let (sequences, want) = scores(&reference);
        let pad = reference["pad_id"].as_u64().unwrap() as u32;
        assert_scores(name, &model.score(&sequences, pad, 8), &want);
    }
}

/// A causal-LM adapter is not a reward model: loading names the missing head.
#[test]
fn a_causal_lm_adapter_is_refused_naming_the_head() {
    let (_, reference) = fixture("trl-reward");
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let (m, c) = kiln_peft::attach_adapter(
        base(&reference, &device),
        &lora_config(&reference),
        None,
        0,
        &device,
    )
    .unwrap();
    kiln_peft::save_adapter(&m, &c, dir.path()).unwrap();
    let err = match load_reward_adapter(base(&reference, &device), dir.path(), &device) {
        Ok(_) => panic!("a causal-LM adapter loaded as a reward model"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("score.weight"), "{err}");
    assert!(err.contains("adapter_model.safetensors"), "{err}");
}
