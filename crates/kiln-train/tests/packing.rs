//! Packing several examples into one row (positions restarting per example, attention kept
//! within each example) gives the same loss as padding them into separate rows.

mod common;

use burn::tensor::Device;
use kiln_data::{TokenBatch, TokenizedExample, pack, packed_token_batch};
use kiln_models::{LlamaConfig, load_model};
use kiln_train::{
    LossInput, RowLayout, evaluate, evaluate_rows, masked_lm_loss, masked_lm_loss_sum,
};

#[test]
fn packed_rows_give_the_unpacked_loss() {
    let device = Device::flex();
    let examples = vec![
        TokenizedExample::prompt_completion(&[1, 5, 9], &[7, 7, 2]),
        TokenizedExample::prompt_completion(&[1, 6], &[12, 13, 14, 2]),
        TokenizedExample::full(&[1, 20, 21, 22, 2]),
        TokenizedExample::prompt_completion(&[1, 30, 31, 32], &[33, 2]),
        TokenizedExample::prompt_completion(&[1, 40], &[41, 2]),
    ];
    for (name, model) in [
        (
            "random llama",
            kiln_models::AnyCausalLm::Llama(
                LlamaConfig {
                    vocab_size: 64,
                    hidden_size: 32,
                    intermediate_size: 64,
                    num_hidden_layers: 2,
                    num_attention_heads: 4,
                    num_key_value_heads: Some(2),
                    ..Default::default()
                }
                .init(3, &device),
            ),
        ),
        (
            "tiny gpt2",
            load_model(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../kiln-models/tests/fixtures/tiny-gpt2"),
                &device,
            )
            .unwrap()
            .1,
        ),
    ] {
        let unpacked = TokenBatch::pad_right(&examples, 0).unwrap();
        let rows = pack(&examples, 12, 0).unwrap();
        assert!(rows.len() < examples.len(), "{name}: nothing was packed");
        let packed = packed_token_batch(&rows);
        let sum = |b: &TokenBatch| -> f32 {
            let input = LossInput::from_batch(b, &device).unwrap();
            masked_lm_loss_sum(&model, &input).into_scalar()
        };
        let mean = |b: &TokenBatch| -> f32 {
            let input = LossInput::from_batch(b, &device).unwrap();
            masked_lm_loss(&model, &input).into_scalar()
        };
        let (su, sp) = (sum(&unpacked), sum(&packed));
        let (mu, mp) = (mean(&unpacked), mean(&packed));
        println!(
            "{name}: {} rows -> {}; loss sum {su} vs {sp}, mean {mu} vs {mp}",
            examples.len(),
            rows.len()
        );
        assert!(
            (su - sp).abs() < 1e-4 * su.abs(),
            "{name}: summed loss {su} vs packed {sp}"
        );
        assert!(
            (mu - mp).abs() < 1e-5,
            "{name}: mean loss {mu} vs packed {mp}"
        );

        // Evaluation in packed batches gives the padded evaluation's loss.
        let padded_eval = evaluate(&model, &examples, 3, 0).unwrap();
        let packed_eval =
            evaluate_rows(&model, &examples, 3, 0, RowLayout::Packed { row_len: None }).unwrap();
        assert_eq!(packed_eval.tokens, padded_eval.tokens);
        assert!(
            (packed_eval.loss - padded_eval.loss).abs() < 1e-5 * padded_eval.loss,
            "{name}: eval {padded_eval:?} vs packed {packed_eval:?}"
        );

        // Without the block-diagonal mask the examples would see each other: a real check.
        let mut leaky = packed.clone();
        leaky.segment_ids = None;
        assert!(
            (mean(&leaky) - mu).abs() > 1e-4,
            "{name}: the mask made no difference"
        );
    }
}

mod fit {
    use std::path::Path;

    use burn::tensor::Device;
    use kiln_data::TokenizedExample;
    use kiln_models::{LlamaConfig, LlamaForCausalLM};
    use kiln_peft::{LoraConfig, attach_lora};
    use kiln_train::{Fit, FitConfig, OptimizerConfig, RunSummary, Schedule, Trainer};

    fn device() -> Device {
        Device::flex().autodiff()
    }

    fn model() -> LlamaForCausalLM {
        let device = device();
        let config = LlamaConfig {
            vocab_size: 48,
            ..crate::common::tiny_llama()
        };
        let lora = LoraConfig {
            r: 4,
            lora_alpha: 8.0,
            target_modules: ["q_proj", "v_proj", "down_proj"].map(String::from).to_vec(),
            ..Default::default()
        };
        attach_lora(config.init(7, &device), &lora, 5, &device)
            .unwrap()
            .0
    }

    /// Ten examples in two micro-batches of five (no shuffle), each with lengths 6, 2, 4, 3, 3:
    /// rows of the longest example (6) hold them as [6], [4 2], [3 3] without any padding.
    fn examples() -> Vec<TokenizedExample> {
        [6u32, 2, 4, 3, 3, 3, 4, 6, 2, 3]
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let toks: Vec<u32> = (0..len).map(|t| 3 + (i as u32 * 7 + t * 5) % 44).collect();
                TokenizedExample::prompt_completion(&toks[..1], &toks[1..])
            })
            .collect()
    }

    fn run(config: FitConfig, train: &[TokenizedExample]) -> RunSummary {
        run_with(config, train, true)
    }

    /// A run with the fused CPU step on (where it applies: LoRA on flex) or off (Burn graph).
    fn run_with(config: FitConfig, train: &[TokenizedExample], fused: bool) -> RunSummary {
        let schedule = Schedule::Constant { warmup_steps: 0 };
        let opt = OptimizerConfig {
            lr: 1e-2,
            ..Default::default()
        };
        let mut trainer = Trainer::new(opt, schedule, &device()).unwrap();
        trainer.set_fused_kernels(fused);
        Fit::new(config, train)
            .run(model(), &mut trainer)
            .unwrap()
            .summary
    }

    fn config() -> FitConfig {
        FitConfig {
            batch_size: 5,
            max_steps: Some(2),
            shuffle: false,
            progress: false,
            plot: false,
            ..Default::default()
        }
    }

    fn close(a: f32, b: f32, rel: f32) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs())
    }

    #[test]
    fn packed_fit_steps_like_the_padded_fit_without_padding() {
        let train = examples();
        let padded = run(config(), &train);
        let packed = run(
            FitConfig {
                packing: true,
                ..config()
            },
            &train,
        );
        println!("padded {padded:?}\npacked {packed:?}");
        assert!(
            close(padded.losses[0], packed.losses[0], 1e-5),
            "first step: padded {} vs packed {}",
            padded.losses[0],
            packed.losses[0]
        );
        // The second step runs on the parameters the first step updated.
        assert!(close(padded.losses[1], packed.losses[1], 1e-4));
        assert_eq!(packed.loss_tokens, padded.loss_tokens);
        assert_eq!(packed.input_tokens, padded.input_tokens);
        assert_eq!(
            padded.padding_tokens, 24,
            "5 rows of 6 hold 18 tokens, twice"
        );
        assert_eq!(
            packed.padding_tokens, 0,
            "the examples fit the rows exactly"
        );

        // The same through the Burn graph (the runs above take the fused CPU step).
        let graph = |packing| {
            let config = FitConfig {
                packing,
                ..config()
            };
            run_with(config, &train, false)
        };
        let (graph_padded, graph_packed) = (graph(false), graph(true));
        assert!(close(graph_padded.losses[0], graph_packed.losses[0], 1e-5));
        assert!(close(graph_padded.losses[0], padded.losses[0], 1e-4));
        assert_eq!(graph_packed.padding_tokens, 0);
        println!("graph {:?} {:?}", graph_padded.losses, graph_packed.losses);

        // A fixed row length packs the whole micro-batch into one row.
        let wide = run(
            FitConfig {
                packing: true,
                packing_row_len: Some(18),
                ..config()
            },
            &train,
        );
        assert!(close(padded.losses[0], wide.losses[0], 1e-5));
        assert_eq!(wide.padding_tokens, 0);
    }

    #[test]
    fn a_fixed_row_length_must_hold_every_example() {
        let train = examples();
        let mut trainer = Trainer::new(
            OptimizerConfig::default(),
            Schedule::Constant { warmup_steps: 0 },
            &device(),
        )
        .unwrap();
        let err = Fit::new(
            FitConfig {
                packing: true,
                packing_row_len: Some(5),
                ..config()
            },
            &train,
        )
        .run(model(), &mut trainer)
        .unwrap_err()
        .to_string();
        assert!(err.contains("packing_row_len"), "{err}");
        assert!(err.contains("example 0 has 6 tokens"), "{err}");
    }

    #[test]
    fn group_by_length_cuts_padding_and_resume_checks_it() {
        // Lengths 2..=9 shuffled: random micro-batches of 4 mix short and long examples.
        let train: Vec<TokenizedExample> = (0..24u32)
            .map(|i| {
                let len = 2 + (i * 5) % 8;
                let toks: Vec<u32> = (0..len).map(|t| 3 + (i + t * 3) % 44).collect();
                TokenizedExample::prompt_completion(&toks[..1], &toks[1..])
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let base = |dir: &Path| FitConfig {
            batch_size: 4,
            epochs: 1,
            seed: 3,
            output_dir: Some(dir.into()),
            checkpoint_every: Some(3),
            progress: false,
            plot: false,
            ..Default::default()
        };
        let plain = run(base(dir.path()), &train);
        let grouped_dir = tempfile::tempdir().unwrap();
        let grouped_config = FitConfig {
            group_by_length: true,
            ..base(grouped_dir.path())
        };
        let grouped = run(grouped_config.clone(), &train);
        assert_eq!(grouped.steps, plain.steps);
        assert_eq!(grouped.loss_tokens, plain.loss_tokens);
        assert!(
            grouped.padding_tokens * 2 < plain.padding_tokens,
            "grouped {} vs plain {}",
            grouped.padding_tokens,
            plain.padding_tokens
        );
        // Deterministic from the seed.
        let again_dir = tempfile::tempdir().unwrap();
        let again = run(
            FitConfig {
                group_by_length: true,
                ..base(again_dir.path())
            },
            &train,
        );
        assert_eq!(again.losses, grouped.losses);

        // Resuming the grouped run without grouping would visit other examples: refused.
        let mut trainer = Trainer::new(
            OptimizerConfig::default(),
            Schedule::Constant { warmup_steps: 0 },
            &device(),
        )
        .unwrap();
        let err = Fit::new(
            FitConfig {
                resume: true,
                max_steps: Some(9),
                ..base(grouped_dir.path())
            },
            &train,
        )
        .run(model(), &mut trainer)
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot resume"), "{err}");
        assert!(err.contains("group_by_length: true"), "{err}");
    }

    #[test]
    fn a_padded_run_resumes_packed() {
        let train = examples();
        let dir = tempfile::tempdir().unwrap();
        let base = FitConfig {
            max_steps: Some(4),
            shuffle: true,
            output_dir: Some(dir.path().into()),
            checkpoint_every: Some(2),
            ..config()
        };
        let straight = run(base.clone(), &train);
        let other = tempfile::tempdir().unwrap();
        let first = run(
            FitConfig {
                max_steps: Some(2),
                output_dir: Some(other.path().into()),
                ..base.clone()
            },
            &train,
        );
        let second = run(
            FitConfig {
                packing: true,
                resume: true,
                output_dir: Some(other.path().into()),
                ..base
            },
            &train,
        );
        assert_eq!(second.steps, 4);
        assert!(second.resumed_from.is_some());
        let resumed: Vec<f32> = first.losses.iter().chain(&second.losses).copied().collect();
        assert_eq!(resumed.len(), 4);
        for (i, (a, b)) in straight.losses.iter().zip(&resumed).enumerate() {
            assert!(close(*a, *b, 1e-4), "step {i}: {a} vs {b}");
        }
    }
}
