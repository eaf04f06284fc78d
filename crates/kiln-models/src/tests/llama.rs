//! Unit tests of `llama.rs`.

use super::*;

fn tiny() -> LlamaConfig {
    LlamaConfig {
        // Large weights so that attention to a wrong position would show in the logits.
        initializer_range: 0.5,
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        ..Default::default()
    }
}

#[test]
fn config_from_hf_json_with_unknown_keys() {
    let text = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":49152,
        "hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,
        "num_key_value_heads":3,"rms_norm_eps":1e-05,"rope_theta":100000.0,"tie_word_embeddings":true,
        "torch_dtype":"bfloat16","eos_token_id":2}"#;
    let c = LlamaConfig::from_json_str(text, std::path::Path::new("config.json")).unwrap();
    assert_eq!(c.head_dim(), 64);
    assert_eq!(c.kv_heads(), 3);
    assert!(c.tie_word_embeddings);
}

#[test]
fn bad_config_names_the_field() {
    let text = r#"{"num_attention_heads":9,"num_key_value_heads":4,"hidden_size":576}"#;
    let err = LlamaConfig::from_json_str(text, std::path::Path::new("x/config.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_key_value_heads"), "{err}");
}

#[test]
fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
    let mut c = LlamaConfig {
        rope_theta: 500000.0,
        hidden_size: 4096,
        num_attention_heads: 32,
        ..Default::default()
    };
    let plain = c.inv_freq();
    c.rope_scaling = Some(RopeScaling {
        rope_type: "llama3".into(),
        factor: 8.0,
        low_freq_factor: Some(1.0),
        high_freq_factor: Some(4.0),
        original_max_position_embeddings: Some(8192),
    });
    let scaled = c.inv_freq();
    assert_eq!(plain[0], scaled[0]);
    let last = plain.len() - 1;
    assert!((plain[last] / 8.0 - scaled[last]).abs() < 1e-15);
}

fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn soft_prompt_equals_prepended_tokens() {
    let device = Device::default();
    let model = tiny().init(5, &device);
    let prompt = ids_tensor(&[vec![7, 8, 9]], &device);
    let soft = model.model.embed_tokens.forward(prompt);
    let with_soft = model.forward_hidden(
        &LmInput::new(ids_tensor(&[vec![1, 2, 3, 4]], &device)).with_soft_prompt(soft),
    );
    let full = model.forward_hidden(&LmInput::new(ids_tensor(
        &[vec![7, 8, 9, 1, 2, 3, 4]],
        &device,
    )));
    assert_eq!(with_soft.dims(), [1, 4, 32]);
    assert!(max_diff(with_soft, full.narrow(1, 3, 4)) < 1e-5);
}

#[test]
fn prefix_equals_cached_prompt() {
    let device = Device::default();
    let model = tiny().init(6, &device);
    let mut cache = model.new_cache();
    let ones = Tensor::<2, Int>::ones([1, 3], &device);
    let _ = model.forward_cached(ids_tensor(&[vec![7, 8, 9]], &device), ones, &mut cache);
    let prefix = cache.into_prefix();
    assert_eq!(prefix.len(), 2);
    let with_prefix = model.forward_hidden(
        &LmInput::new(ids_tensor(&[vec![1, 2, 3, 4]], &device)).with_prefix(prefix),
    );
    let full = model.forward_hidden(&LmInput::new(ids_tensor(
        &[vec![7, 8, 9, 1, 2, 3, 4]],
        &device,
    )));
    assert!(max_diff(with_prefix, full.narrow(1, 3, 4)) < 1e-5);
}

#[test]
fn causal_and_padding_invariance() {
    let device = Device::default();
    let model = tiny().init(3, &device);
    // Causality: changing a later token does not change earlier logits.
    let a = model.forward(&LmInput::new(ids_tensor(&[vec![1, 2, 3, 4]], &device)));
    let b = model.forward(&LmInput::new(ids_tensor(&[vec![1, 2, 3, 9]], &device)));
    let a3: Vec<f32> = a
        .clone()
        .narrow(1, 0, 3)
        .into_data()
        .iter::<f32>()
        .collect();
    let b3: Vec<f32> = b
        .clone()
        .narrow(1, 0, 3)
        .into_data()
        .iter::<f32>()
        .collect();
    for (x, y) in a3.iter().zip(&b3) {
        assert!(
            (x - y).abs() < 1e-5,
            "an earlier position saw a later token"
        );
    }
    // ...while the changed position itself does change.
    let a_last: Vec<f32> = a.narrow(1, 3, 1).into_data().iter::<f32>().collect();
    let b_last: Vec<f32> = b.narrow(1, 3, 1).into_data().iter::<f32>().collect();
    let diff = a_last
        .iter()
        .zip(&b_last)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 1e-2,
        "last position ignores its own token (max diff {diff})"
    );
    // Left padding: a padded row gives the same last-position logits as the unpadded one.
    let ids = ids_tensor(&[vec![0, 0, 1, 2, 3], vec![5, 1, 2, 3, 4]], &device);
    let mask = Tensor::<2, Int>::from_data(
        TensorData::new(vec![0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1], [2, 5]),
        &device,
    );
    let padded = model.forward(&LmInput::new(ids).with_attention_mask(mask));
    let plain = model.forward(&LmInput::new(ids_tensor(&[vec![1, 2, 3]], &device)));
    let p: Vec<f32> = padded
        .narrow(0, 0, 1)
        .narrow(1, 4, 1)
        .into_data()
        .iter::<f32>()
        .collect();
    let q: Vec<f32> = plain.narrow(1, 2, 1).into_data().iter::<f32>().collect();
    for (x, y) in p.iter().zip(&q) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
}
