//! Unit tests of `gpt2.rs`.

use std::collections::BTreeMap;

use burn::tensor::Int;

use super::*;
use crate::prompt::ids_tensor;

fn tiny() -> Gpt2Config {
    Gpt2Config {
        vocab_size: 40,
        n_positions: 16,
        n_embd: 16,
        n_layer: 2,
        n_head: 2,
        initializer_range: 0.3,
        ..Default::default()
    }
}

/// An in-memory checkpoint.
struct MapSource(BTreeMap<String, (Vec<usize>, Vec<f32>)>);

impl TensorSource for MapSource {
    fn source_name(&self) -> String {
        "memory".into()
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.0.get(name).map(|(s, _)| s.clone())
    }
    fn load(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.0[name].1.clone())
    }
}

/// Every tensor a checkpoint of `cfg` holds, as `(name, shape)`, with the given prefix.
fn expected(cfg: &Gpt2Config, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let (d, ff) = (cfg.n_embd, cfg.inner_size());
    let mut out = vec![
        (format!("{prefix}wte.weight"), vec![cfg.vocab_size, d]),
        (format!("{prefix}wpe.weight"), vec![cfg.n_positions, d]),
        (format!("{prefix}ln_f.weight"), vec![d]),
        (format!("{prefix}ln_f.bias"), vec![d]),
    ];
    for l in 0..cfg.n_layer {
        let p = format!("{prefix}h.{l}");
        for (m, i, o) in [
            ("attn.c_attn", d, 3 * d),
            ("attn.c_proj", d, d),
            ("mlp.c_fc", d, ff),
            ("mlp.c_proj", ff, d),
        ] {
            out.push((format!("{p}.{m}.weight"), vec![i, o]));
            out.push((format!("{p}.{m}.bias"), vec![o]));
        }
        for n in ["ln_1", "ln_2"] {
            out.push((format!("{p}.{n}.weight"), vec![d]));
            out.push((format!("{p}.{n}.bias"), vec![d]));
        }
    }
    out
}

fn source(cfg: &Gpt2Config, prefix: &str) -> MapSource {
    let mut rng = HostRng::new(7);
    MapSource(
        expected(cfg, prefix)
            .into_iter()
            .map(|(n, s)| {
                let len = s.iter().product();
                (n, (s, rng.normal(len, 0.3)))
            })
            .collect(),
    )
}

fn values(x: Tensor<3>) -> Vec<f32> {
    x.into_data().iter::<f32>().collect()
}

#[test]
fn config_from_hf_json_with_unknown_keys() {
    let text = r#"{"activation_function":"gelu_new","architectures":["GPT2LMHeadModel"],
        "attn_pdrop":0.1,"bos_token_id":50256,"embd_pdrop":0.1,"eos_token_id":50256,
        "initializer_range":0.02,"layer_norm_epsilon":1e-05,"model_type":"gpt2","n_ctx":1024,
        "n_embd":768,"n_head":12,"n_layer":12,"n_positions":1024,"resid_pdrop":0.1,
        "summary_activation":null,"summary_type":"cls_index","task_specific_params":
        {"text-generation":{"do_sample":true,"max_length":50}},"vocab_size":50257}"#;
    let c = Gpt2Config::from_json_str(text, std::path::Path::new("config.json")).unwrap();
    assert_eq!(c.head_dim(), 64);
    assert_eq!(c.inner_size(), 3072);
    assert_eq!(c.activation().unwrap(), Gpt2Activation::GeluTanh);
    assert!(c.tie_word_embeddings);
    assert!((c.attn_scale(3) - 0.125).abs() < 1e-12);
}

#[test]
fn bad_config_names_the_field() {
    let check = |text: &str, field: &str| {
        let err = Gpt2Config::from_json_str(text, std::path::Path::new("x/config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    };
    check(r#"{"n_embd":30,"n_head":4}"#, "n_head");
    check(
        r#"{"activation_function":"gelu_10"}"#,
        "activation_function",
    );
    check(r#"{"n_layer":0}"#, "n_layer");
    check(r#"{"add_cross_attention":true}"#, "add_cross_attention");
}

#[test]
fn layer_norm_matches_definition() {
    let device = Device::default();
    let ln = LayerNorm::from_values(
        vec![2.0, 1.0, 1.0, 1.0],
        vec![0.0, 0.0, 0.0, 1.0],
        0.0,
        &device,
    );
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 4]),
        &device,
    );
    let y: Vec<f32> = ln.forward(x).into_data().iter::<f32>().collect();
    // mean 2.5, variance 1.25
    let s = 1.25f32.sqrt();
    let want = [2.0 * -1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s + 1.0];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{y:?} vs {want:?}");
    }
}

#[test]
fn loads_with_and_without_prefix_and_ignores_mask_buffers() {
    let device = Device::default();
    let cfg = tiny();
    let ids = || ids_tensor(&[vec![3, 1, 4, 1, 5]], &device);
    let mut with = source(&cfg, "transformer.");
    for l in 0..cfg.n_layer {
        with.0.insert(
            format!("transformer.h.{l}.attn.bias"),
            (vec![1, 1, 16, 16], vec![0.0; 256]),
        );
        with.0.insert(
            format!("transformer.h.{l}.attn.masked_bias"),
            (vec![], vec![-1e4]),
        );
    }
    let a = Gpt2LMHeadModel::from_source(&cfg, &with, &device).unwrap();
    let bare = MapSource(
        source(&cfg, "transformer.")
            .0
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("transformer.").unwrap().to_string(), v))
            .collect(),
    );
    let b = Gpt2LMHeadModel::from_source(&cfg, &bare, &device).unwrap();
    let (la, lb) = (
        values(a.forward(&LmInput::new(ids()))),
        values(b.forward(&LmInput::new(ids()))),
    );
    assert_eq!(la, lb);
    assert!(la.iter().all(|x| x.is_finite()));
}

#[test]
fn wrong_shape_missing_and_unexpected_tensors_are_named() {
    let device = Device::default();
    let cfg = tiny();
    let err_of = |src: &MapSource| {
        Gpt2LMHeadModel::from_source(&cfg, src, &device)
            .unwrap_err()
            .to_string()
    };

    let mut src = source(&cfg, "transformer.");
    let name = "transformer.h.1.mlp.c_fc.weight";
    // PyTorch nn.Linear layout [out, in] instead of Conv1D's [in, out].
    src.0.get_mut(name).unwrap().0 = vec![cfg.inner_size(), cfg.n_embd];
    let err = err_of(&src);
    assert!(err.contains(name) && err.contains("shape"), "{err}");

    let mut src = source(&cfg, "transformer.");
    src.0.remove("transformer.h.0.ln_2.bias");
    let err = err_of(&src);
    assert!(
        err.contains("transformer.h.0.ln_2.bias") && err.contains("missing"),
        "{err}"
    );

    let mut src = source(&cfg, "transformer.");
    src.0.insert(
        "transformer.h.2.attn.c_attn.weight".into(),
        (vec![1], vec![0.0]),
    );
    let err = err_of(&src);
    assert!(
        err.contains("transformer.h.2.attn.c_attn.weight") && err.contains("unexpected"),
        "{err}"
    );

    let mut src = source(&cfg, "transformer.");
    let (shape, mut wte) = src.0["transformer.wte.weight"].clone();
    wte[5] += 1.0;
    src.0.insert("lm_head.weight".into(), (shape.clone(), wte));
    let err = err_of(&src);
    assert!(err.contains("lm_head.weight"), "{err}");
    // An identical copy of the tied embedding is accepted.
    let wte = src.0["transformer.wte.weight"].1.clone();
    src.0.insert("lm_head.weight".into(), (shape, wte));
    assert!(Gpt2LMHeadModel::from_source(&cfg, &src, &device).is_ok());
}

#[test]
fn causal_and_padding_invariance() {
    let device = Device::default();
    let model = tiny().init(3, &device);
    let a = model.forward(&LmInput::new(ids_tensor(&[vec![1, 2, 3, 4]], &device)));
    let b = model.forward(&LmInput::new(ids_tensor(&[vec![1, 2, 3, 9]], &device)));
    let (a3, b3) = (
        values(a.clone().narrow(1, 0, 3)),
        values(b.clone().narrow(1, 0, 3)),
    );
    for (x, y) in a3.iter().zip(&b3) {
        assert!(
            (x - y).abs() < 1e-5,
            "an earlier position saw a later token"
        );
    }
    let diff = values(a.narrow(1, 3, 1))
        .iter()
        .zip(&values(b.narrow(1, 3, 1)))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 1e-3,
        "last position ignores its own token (max diff {diff})"
    );

    let ids = ids_tensor(&[vec![0, 0, 1, 2, 3], vec![5, 1, 2, 3, 4]], &device);
    let mask = Tensor::<2, Int>::from_data(
        TensorData::new(vec![0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1], [2, 5]),
        &device,
    );
    let padded = model.forward(&LmInput::new(ids).with_attention_mask(mask));
    let plain = model.forward(&LmInput::new(ids_tensor(&[vec![1, 2, 3]], &device)));
    let p = values(padded.narrow(0, 0, 1).narrow(1, 2, 3));
    let q = values(plain);
    for (x, y) in p.iter().zip(&q) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
}

#[test]
fn adapter_paths_follow_checkpoint_keys() {
    let device = Device::default();
    let model = tiny().init(1, &device);
    let mut paths = Vec::new();
    model.visit_linears(&mut |p, lin| paths.push((p.to_string(), lin.d_in(), lin.d_out())));
    assert_eq!(paths.len(), 8);
    assert_eq!(paths[0], ("transformer.h.0.attn.c_attn".into(), 16, 48));
    assert_eq!(paths[1], ("transformer.h.0.attn.c_proj".into(), 16, 16));
    assert_eq!(paths[2], ("transformer.h.0.mlp.c_fc".into(), 16, 64));
    assert_eq!(paths[7], ("transformer.h.1.mlp.c_proj".into(), 64, 16));
}
