//! PPO on a task whose reward is known: after `[1, x]`, a response scores the fraction of its
//! tokens below 16 (half of the tiny model's vocabulary). From a random model (about half), the
//! mean score rises while the KL to the reference (the model with its adapter disabled) stays
//! bounded by the penalty.

mod common;

use burn::tensor::Device;
use kiln_data::TokenBatch;
use kiln_models::{LlamaForCausalLM, RewardModel};
use kiln_peft::{LoraConfig, attach_lora};
use kiln_train::{OptimizerConfig, PpoConfig, Schedule, Trainer, base_reference, token_logps};

fn policy(device: &Device) -> RewardModel<LlamaForCausalLM> {
    let config = common::tiny_llama();
    let lora = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        target_modules: ["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let model = attach_lora(config.init(3, device), &lora, 5, device)
        .unwrap()
        .0;
    RewardModel::new(model, 0.02, 7)
}

const LR: f64 = 1e-2;
const KL_COEF: f64 = 0.2;
const ITERS: u64 = 30;

#[test]
fn ppo_raises_a_known_reward_with_bounded_kl() {
    let device = Device::flex().autodiff();
    let mut policy = policy(&device);
    let prompts: Vec<Vec<u32>> = (2..18)
        .flat_map(|x| [vec![1, x, 3], vec![1, x, 4]])
        .collect();
    let score = |_: &[Vec<u32>], responses: &[Vec<u32>]| -> kiln_train::Result<Vec<f32>> {
        Ok(responses
            .iter()
            .map(|r| r.iter().filter(|&&t| t < 16).count() as f32 / r.len() as f32)
            .collect())
    };
    let config = PpoConfig {
        kl_coef: KL_COEF,
        max_new_tokens: 4,
        minibatches: 2,
        ..Default::default()
    };
    let mut trainer = Trainer::new(
        OptimizerConfig {
            lr: LR,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            ..Default::default()
        },
        Schedule::Constant { warmup_steps: 0 },
        &device,
    )
    .unwrap();
    let mut history = Vec::new();
    for iteration in 0..ITERS {
        let frozen = base_reference(&policy.model);
        let reference = |b: &TokenBatch| token_logps(&frozen, b, config.temperature);
        let (p, stats) = trainer
            .ppo_step(
                policy,
                &prompts,
                &score,
                &reference,
                &config,
                0,
                &[],
                iteration,
            )
            .unwrap();
        policy = p;
        assert_eq!(stats.updates, config.ppo_epochs * config.minibatches);
        assert!(stats.response_len == 4.0, "{stats:?}");
        history.push(stats);
    }
    // The adapter starts as the identity (LoRA's B is 0): the policy is the reference.
    assert!(history[0].kl.abs() < 1e-6, "{:?}", history[0]);
    let start = history[0].scores;
    let last = history[history.len() - 10..]
        .iter()
        .map(|x| x.scores)
        .sum::<f64>()
        / 10.0;
    assert!(last > start + 0.15, "mean score {start} → {last}");
    // The score lies in [0, 1], so the KL-regularized optimum has KL ≤ 1/β; PPO stays below.
    let kl = history.iter().map(|s| s.kl).fold(0.0f64, f64::max);
    assert!(kl < 1.0 / KL_COEF, "KL to the reference reached {kl}");
}
