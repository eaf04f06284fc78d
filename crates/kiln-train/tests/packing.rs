//! Packing several examples into one row (positions restarting per example, attention kept
//! within each example) gives the same loss as padding them into separate rows.

use burn::tensor::Device;
use kiln_data::{TokenBatch, TokenizedExample, pack, packed_token_batch};
use kiln_models::{LlamaConfig, load_model};
use kiln_train::{LossInput, masked_lm_loss, masked_lm_loss_sum};

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

        // Without the block-diagonal mask the examples would see each other: a real check.
        let mut leaky = packed.clone();
        leaky.segment_ids = None;
        assert!(
            (mean(&leaky) - mu).abs() > 1e-4,
            "{name}: the mask made no difference"
        );
    }
}
