//! BERT against transformers (tiny random `BertForSequenceClassification`), a PEFT `SEQ_CLS`
//! LoRA adapter against Python `peft`, and all-MiniLM-L6-v2 sentence embeddings against
//! sentence-transformers (when `assets/` holds the model). Fixtures:
//! `scripts/fixtures/gen_bert_fixtures.py`.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_models::source::SafetensorsDir;
use kiln_models::{BertConfig, BertForSequenceClassification, BertModel, LmInput};
use kiln_peft::load_adapter;
use kiln_tokenizer::Tokenizer;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn floats(v: &Value) -> Vec<f32> {
    let mut out = Vec::new();
    fn go(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| go(x, out)),
            Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
            other => panic!("unexpected {other}"),
        }
    }
    go(v, &mut out);
    out
}

fn int_tensor(v: &Value, device: &Device) -> Tensor<2, Int> {
    let rows: Vec<Vec<i64>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect();
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [b, t]), device)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn load_cls(dir: &Path, device: &Device) -> (BertConfig, BertForSequenceClassification) {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = BertConfig::from_json_str(&text, &dir.join("config.json")).unwrap();
    let source = SafetensorsDir::open(dir).unwrap();
    let model = BertForSequenceClassification::from_source(&cfg, &source, 0, device).unwrap();
    (cfg, model)
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn tiny_bert_matches_transformers() {
    let device = Device::default();
    let dir = fixtures().join("tiny-bert-cls");
    let reference = read(&dir.join("reference.json"));
    let (cfg, model) = load_cls(&dir, &device);
    assert_eq!(cfg.num_labels(), 3);
    let input = LmInput::new(int_tensor(&reference["input_ids"], &device))
        .with_attention_mask(int_tensor(&reference["attention_mask"], &device));
    let hidden: Vec<f32> = model
        .bert
        .forward(&input)
        .into_data()
        .iter::<f32>()
        .collect();
    let want = floats(&reference["last_hidden_state"]);
    // Compare real positions only (row 1 has 2 padding positions).
    let d = 32;
    let real = |v: &[f32]| -> Vec<f32> {
        let mut out = v[..7 * d].to_vec();
        out.extend_from_slice(&v[7 * d..(7 + 5) * d]);
        out
    };
    let dh = max_diff(&real(&hidden), &real(&want));
    let logits: Vec<f32> = model.forward(&input).into_data().iter::<f32>().collect();
    let dl = max_diff(&logits, &floats(&reference["logits"]));
    println!("tiny BERT: hidden {dh:.2e}, logits {dl:.2e}");
    assert!(dh < 1e-4 && dl < 1e-4, "hidden {dh}, logits {dl}");
    let same: Vec<f32> = model
        .try_forward(&input)
        .unwrap()
        .into_data()
        .iter::<f32>()
        .collect();
    assert_eq!(same, logits, "try_forward is forward for input that fits");
    // One token past the learned positions is an error naming both lengths, not a panic.
    let long = model.bert.max_positions() + 1;
    let ids = Tensor::<2, Int>::zeros([1, long], &device);
    let err = model
        .try_forward(&LmInput::new(ids))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&long.to_string()) && err.contains(&(long - 1).to_string()),
        "{err}"
    );
}

#[test]
fn seq_cls_lora_adapter_matches_peft() {
    let device = Device::default();
    let adapter = fixtures().join("peft/bert-lora-seqcls");
    let reference = read(&adapter.join("reference.json"));
    let (_, model) = load_cls(&fixtures().join("tiny-bert-cls"), &device);
    let (model, config) = load_adapter(model, &adapter, &device).unwrap();
    assert_eq!(config.peft_type(), "LORA");
    let input = LmInput::new(int_tensor(&reference["input_ids"], &device))
        .with_attention_mask(int_tensor(&reference["attention_mask"], &device));
    let logits: Vec<f32> = model.forward(&input).into_data().iter::<f32>().collect();
    let d = max_diff(&logits, &floats(&reference["logits"]));
    println!("BERT SEQ_CLS LoRA vs peft: {d:.2e}");
    assert!(d < 1e-4, "{d}");
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/all-MiniLM-L6-v2");
    let reference = fixtures().join("minilm_reference.json");
    if !dir.join("model.safetensors").exists() {
        eprintln!("skipping: assets/all-MiniLM-L6-v2 not found; run scripts/fetch-assets.sh");
        return;
    }
    let reference = read(&reference);
    let device = Device::default();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = BertConfig::from_json_str(&text, &dir.join("config.json")).unwrap();
    let model =
        BertModel::from_source(&cfg, &SafetensorsDir::open(&dir).unwrap(), &device).unwrap();
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    let want = floats(&reference["embeddings"]);
    for (i, s) in reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let ids = tok.encode(s.as_str().unwrap(), true).unwrap();
        let want_ids: Vec<u32> = reference["input_ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want_ids, "token ids of sentence {i}");
        let t = ids.len();
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&x| i64::from(x)).collect(), [1, t]),
            &device,
        );
        let got: Vec<f32> = model
            .mean_pooled(&LmInput::new(ids), true)
            .unwrap()
            .into_data()
            .iter::<f32>()
            .collect();
        let w = &want[i * 384..(i + 1) * 384];
        let dot: f32 = got.iter().zip(w).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / (norm(&got) * norm(w));
        let d = max_diff(&got, w);
        println!("sentence {i}: cosine {cos:.7}, max |diff| {d:.2e}");
        // The model's `2_Normalize` module makes sentence-transformers' output unit-length.
        assert!(
            cos > 0.9999 && d < 1e-5,
            "sentence {i}: cosine {cos}, max diff {d}"
        );
    }
}

/// PEFT methods on the encoder: a fresh adapter keeps the logits, saving and loading is exact.
#[test]
fn encoder_adapters_round_trip() {
    use kiln_nn::AdapterTarget;
    use kiln_peft::{AdapterConfig, BottleneckConfig, Ia3Config, LoraConfig};
    let device = Device::default();
    let dir = fixtures().join("tiny-bert-cls");
    let reference = read(&dir.join("reference.json"));
    let input = LmInput::new(int_tensor(&reference["input_ids"], &device))
        .with_attention_mask(int_tensor(&reference["attention_mask"], &device));
    let base: Vec<f32> = load_cls(&dir, &device)
        .1
        .forward(&input)
        .into_data()
        .iter::<f32>()
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    for (name, cfg) in [
        (
            "lora",
            AdapterConfig::Lora(LoraConfig {
                modules_to_save: Some(vec!["classifier".into()]),
                ..Default::default()
            }),
        ),
        ("ia3", AdapterConfig::Ia3(Ia3Config::default())),
        (
            "pfeiffer",
            AdapterConfig::Bottleneck(BottleneckConfig {
                placement: kiln_peft::bottleneck::BottleneckPlacement::Pfeiffer,
                reduction_factor: 4,
                ..Default::default()
            }),
        ),
    ] {
        let (model, cfg) =
            kiln_peft::attach_adapter(load_cls(&dir, &device).1, &cfg, None, 3, &device).unwrap();
        let mut targets = 0;
        model.visit_linears(&mut |_, l| targets += usize::from(l.has_adapter()));
        assert!(targets >= 2, "{name}: {targets} adapted projections");
        let fresh: Vec<f32> = model.forward(&input).into_data().iter::<f32>().collect();
        assert!(
            max_diff(&fresh, &base) < 1e-5,
            "{name}: fresh adapter changed the logits"
        );
        let out = tmp.path().join(name);
        kiln_peft::save_adapter(&model, &cfg, &out).unwrap();
        let (loaded, _) = load_adapter(load_cls(&dir, &device).1, &out, &device).unwrap();
        let a = kiln_peft::io::adapter_state(&model, &cfg).unwrap();
        let b = kiln_peft::io::adapter_state(&loaded, &cfg).unwrap();
        assert_eq!(a, b, "{name}: round trip");
    }
}
