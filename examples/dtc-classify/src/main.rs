//! Classify an OBD-II trouble-code description into its SAE subsystem with all-MiniLM-L6-v2,
//! three ways: training only a new classification head, LoRA on `query`/`value` plus the head
//! (PEFT's `SEQ_CLS` recipe), and full fine-tuning. Codes are split (seeded) so the test set
//! holds descriptions of codes never seen in training. Reports accuracy and macro-F1.
//!
//! ```text
//! cargo run --release -p kiln-example-dtc-classify [-- --epochs 3 --seed 0]
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln::burn::module::Module;
use kiln::burn::nn::loss::CrossEntropyLossConfig;
use kiln::burn::optim::{AdamWConfig, GradientsParams};
use kiln::data::obd::{Subsystem, read_codes};
use kiln::metrics::classification::{accuracy, macro_f1};
use kiln::models::{BertForSequenceClassification, load_bert_classifier};
use kiln::nn::init::HostRng;
use kiln::prelude::*;
use kiln::tokenizer::Tokenizer;

struct Item {
    ids: Vec<u32>,
    label: usize,
}

fn batch(items: &[&Item], device: &Device) -> (LmInput, Tensor<1, Int>) {
    let t = items.iter().map(|i| i.ids.len()).max().unwrap_or(1);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for it in items {
        ids.extend(it.ids.iter().map(|&x| i64::from(x)));
        ids.extend(std::iter::repeat_n(0i64, t - it.ids.len()));
        mask.extend(std::iter::repeat_n(1i64, it.ids.len()));
        mask.extend(std::iter::repeat_n(0i64, t - it.ids.len()));
    }
    let b = items.len();
    let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
    (
        LmInput::new(Tensor::from_data(TensorData::new(ids, [b, t]), device))
            .with_attention_mask(Tensor::from_data(TensorData::new(mask, [b, t]), device)),
        Tensor::from_data(TensorData::new(labels, [b]), device),
    )
}

fn predict(model: &BertForSequenceClassification, items: &[Item], device: &Device) -> Vec<usize> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(64) {
        let refs: Vec<&Item> = chunk.iter().collect();
        let (input, _) = batch(&refs, device);
        let logits = model.forward(&input);
        let am: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
        out.extend(am.into_iter().map(|x| x as usize));
    }
    out
}

/// Trains `model` (its trainable parameters) with AdamW; returns the eval-mode model.
fn train(
    mut model: BertForSequenceClassification,
    items: &[Item],
    epochs: usize,
    lr: f64,
    seed: u64,
    device: &Device,
) -> BertForSequenceClassification {
    let mut optim = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(0.01)
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut rng = HostRng::new(seed);
    let mut order: Vec<usize> = (0..items.len()).collect();
    for epoch in 0..epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut total = 0.0;
        let mut n = 0;
        for chunk in order.chunks(32) {
            let refs: Vec<&Item> = chunk.iter().map(|&i| &items[i]).collect();
            let (input, labels) = batch(&refs, device);
            let loss = loss_fn.forward(model.forward(&input), labels);
            total += f64::from(loss.clone().into_scalar::<f32>());
            n += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
        }
        eprintln!("    epoch {}: mean loss {:.4}", epoch + 1, total / n as f64);
    }
    model.valid()
}

fn main() -> Result<()> {
    let mut epochs = 3usize;
    let mut seed = 0u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--epochs" => epochs = it.next().context("--epochs needs a value")?.parse()?,
            "--seed" => seed = it.next().context("--seed needs a value")?.parse()?,
            other => bail!("unknown argument `{other}` (expected --epochs or --seed)"),
        }
    }
    let minilm = Path::new("assets/all-MiniLM-L6-v2");
    let codes_py = Path::new("assets/obd/codes.py");
    for p in [minilm, codes_py] {
        if !p.exists() {
            bail!(
                "{} not found; run ./scripts/fetch-assets.sh first",
                p.display()
            );
        }
    }
    let device = parse_device("cpu")?;
    let train_device = device.clone().autodiff();
    let tok = Tokenizer::from_hf_dir(minilm)?;
    let codes = read_codes(codes_py)?;

    // Labels: the subsystems that occur, in a fixed order.
    let labels: Vec<Subsystem> = codes
        .iter()
        .map(|c| Subsystem::of(&c.code))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let names: Vec<String> = labels.iter().map(|s| s.label().to_string()).collect();
    // Split by code: 80% of the codes train, 20% test (seeded).
    let mut idx: Vec<usize> = (0..codes.len()).collect();
    let mut rng = HostRng::new(seed).fork("split");
    for i in (1..idx.len()).rev() {
        idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let n_test = codes.len() / 5;
    let make = |ids: &[usize]| -> Result<Vec<Item>> {
        ids.iter()
            .map(|&i| {
                let c = &codes[i];
                let label = labels
                    .iter()
                    .position(|&s| s == Subsystem::of(&c.code))
                    .unwrap_or(0);
                let mut ids = tok.encode(&c.description, true)?;
                ids.truncate(64);
                Ok(Item { ids, label })
            })
            .collect()
    };
    let test = make(&idx[..n_test])?;
    let train_set = make(&idx[n_test..])?;
    println!(
        "{} codes, {} subsystems; train {} codes, test {} unseen codes; {epochs} epochs",
        codes.len(),
        labels.len(),
        train_set.len(),
        test.len()
    );
    let truth: Vec<usize> = test.iter().map(|i| i.label).collect();
    // Majority-class baseline.
    let mut counts = vec![0usize; labels.len()];
    train_set.iter().for_each(|i| counts[i.label] += 1);
    let majority = (0..labels.len()).max_by_key(|&l| counts[l]).unwrap_or(0);
    let base = vec![majority; truth.len()];
    let mut rows = vec![(
        "majority class".to_string(),
        0usize,
        0usize,
        accuracy(&truth, &base)?,
        macro_f1(&truth, &base)?,
        0.0f64,
    )];

    for (method, lr) in [
        ("head only", 2e-3),
        ("LoRA r=8 q,v + head", 1e-3),
        ("full fine-tuning", 1e-4),
    ] {
        let (_, model) = load_bert_classifier(minilm, Some(&names), seed, &train_device)?;
        let model = match method {
            "head only" => {
                let mut m = model.no_grad();
                m.classifier.weight = m.classifier.weight.clone().set_require_grad(true);
                m.classifier.bias = m.classifier.bias.take().map(|b| b.set_require_grad(true));
                m
            }
            "full fine-tuning" => full_fine_tuning(model),
            _ => {
                let cfg = LoraConfig {
                    r: 8,
                    lora_alpha: 16.0,
                    target_modules: vec!["query".into(), "value".into()],
                    modules_to_save: Some(vec!["classifier".into()]),
                    ..Default::default()
                };
                attach_lora(model, &cfg, seed, &train_device)?.0
            }
        };
        let report = TrainableReport::of(&model);
        eprintln!("{method}: {report}");
        let start = Instant::now();
        let tuned = train(model, &train_set, epochs, lr, seed, &train_device);
        let secs = start.elapsed().as_secs_f64();
        let pred = predict(&tuned, &test, &device);
        rows.push((
            method.to_string(),
            report.trainable,
            report.total,
            accuracy(&truth, &pred)?,
            macro_f1(&truth, &pred)?,
            secs,
        ));
    }
    println!("\n| method | trainable params | accuracy | macro-F1 | train time |");
    println!("|---|---:|---:|---:|---:|");
    for (m, t, total, acc, f1, secs) in rows {
        let share = if total > 0 {
            format!(" ({:.2}%)", 100.0 * t as f64 / total as f64)
        } else {
            String::new()
        };
        println!("| {m} | {t}{share} | {acc:.3} | {f1:.3} | {secs:.0} s |");
    }
    Ok(())
}
