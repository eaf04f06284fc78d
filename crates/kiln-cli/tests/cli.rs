//! The `kiln` executable end to end on a tiny checkpoint (the committed tiny Llama fixture plus a
//! word-level tokenizer written here): data split, train from a recipe, inspect, generate with the
//! adapter, eval base vs tuned, merge, score, and the errors a user sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WORDS: &[&str] = &[
    "code",
    "P0300",
    "P0171",
    "P0420",
    "P0128",
    "means",
    "random",
    "multiple",
    "cylinder",
    "misfire",
    "detected",
    "system",
    "too",
    "lean",
    "bank",
    "1",
    "catalyst",
    "efficiency",
    "below",
    "threshold",
    "coolant",
    "thermostat",
    "?",
    ":",
];
const PAIRS: &[(&str, &str)] = &[
    ("P0300", "random multiple cylinder misfire detected"),
    ("P0171", "system too lean bank 1"),
    ("P0420", "catalyst system efficiency below threshold"),
    ("P0128", "coolant thermostat below threshold"),
];

fn kiln(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the kiln binary runs")
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = kiln(args, cwd);
    assert!(
        out.status.success(),
        "kiln {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let out = kiln(args, cwd);
    assert!(!out.status.success(), "kiln {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// The tiny Llama fixture (vocab 96) with a word-level tokenizer.
fn tiny_model(dir: &Path) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-models/tests/fixtures/tiny-llama");
    let model = dir.join("tiny-model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), model.join(f)).unwrap();
    }
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["<pad>", "<s>", "</s>", "<unk>"]
        .iter()
        .chain(WORDS)
        .enumerate()
    {
        vocab.insert(w.to_string(), i.into());
    }
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "<s>"), special(2, "</s>"), special(3, "<unk>")],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(model.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let config = serde_json::json!({"eos_token": "</s>", "pad_token": "<pad>", "bos_token": "<s>", "add_bos_token": true});
    std::fs::write(model.join("tokenizer_config.json"), config.to_string()).unwrap();
    model
}

fn write_data(dir: &Path) -> PathBuf {
    let path = dir.join("all.jsonl");
    let mut text = String::new();
    // Five phrasings of each question: 20 distinct records (the default cleaning drops
    // duplicates).
    for template in [
        "code {} means :",
        "{} means :",
        "code {} ?",
        "{} ?",
        "code {} :",
    ] {
        for (code, desc) in PAIRS {
            let prompt = template.replace("{}", code);
            text.push_str(&format!(
                "{}\n",
                serde_json::json!({"prompt": prompt, "completion": desc})
            ));
        }
    }
    std::fs::write(&path, text).unwrap();
    path
}

const RECIPE: &str = r#"
[model]
path = "tiny-model"

[data]
train = "data/train.jsonl"
validation = "data/validation.jsonl"
format = { format = "prompt_completion" }

[adapter]
peft_type = "LORA"
r = 8
lora_alpha = 16
target_modules = ["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"]

[optimizer]
lr = 2e-2

[schedule]
kind = "constant"

[fit]
batch_size = 4
epochs = 6
eval_every = 5
output_dir = "run"
progress = false
"#;

#[test]
fn train_inspect_generate_eval_merge_score() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    let all = write_data(dir);

    // data split: 20 records → 16 / 2 / 2.
    let out = ok(
        &[
            "data",
            "split",
            all.to_str().unwrap(),
            "--out",
            "data",
            "--validation",
            "0.1",
            "--test",
            "0.1",
        ],
        dir,
    );
    assert!(out.contains("train.jsonl: 16 records"), "{out}");
    let inspect = ok(
        &[
            "data",
            "inspect",
            "data/train.jsonl",
            "--model",
            "tiny-model",
            "--style",
            "raw",
        ],
        dir,
    );
    assert!(inspect.contains("16"), "{inspect}");

    // The recipe: print the resolved config, reject a typo, then train.
    std::fs::write(dir.join("recipe.toml"), RECIPE).unwrap();
    let printed = ok(
        &[
            "train",
            "recipe.toml",
            "--print-config",
            "--set",
            "optimizer.lr=0.01",
        ],
        dir,
    );
    assert!(printed.contains("lr = 0.01"), "{printed}");
    assert!(
        printed.contains("weight_decay"),
        "defaults are written out: {printed}"
    );
    let err = fails(&["train", "recipe.toml", "--set", "fit.epoch=3"], dir);
    assert!(
        err.contains("fit.epoch") || err.contains("`epoch`"),
        "{err}"
    );

    let report = ok(&["train", "recipe.toml"], dir);
    assert!(report.contains("| method | LORA |"), "{report}");
    let run = dir.join("run");
    for f in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "metrics.jsonl",
        "run_summary.json",
        "report.md",
        "recipe.toml",
        "loss_curve.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run_summary.json")).unwrap())
            .unwrap();
    let losses: Vec<f64> = summary["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 24);
    assert!(
        losses[23] < 0.5 * losses[0],
        "loss did not fall: {losses:?}"
    );

    let info = ok(&["inspect", "run/adapter"], dir);
    assert!(info.contains("method: LORA"), "{info}");
    assert!(
        info.contains("q_proj") && info.contains("lm_head"),
        "{info}"
    );
    let info = ok(&["inspect", "tiny-model"], dir);
    assert!(info.contains("layers: 2, hidden: 32"), "{info}");

    // Greedy answers with the adapter, from generate and from eval, agree.
    std::fs::write(
        dir.join("prompts.txt"),
        "code P0300 means :\ncode P0171 means :\n",
    )
    .unwrap();
    let generated = ok(
        &[
            "generate",
            "--model",
            "tiny-model",
            "--adapter",
            "run/adapter",
            "--file",
            "prompts.txt",
            "--max-new-tokens",
            "8",
        ],
        dir,
    );
    let lines: Vec<&str> = generated.lines().collect();
    assert_eq!(lines.len(), 2, "{generated}");

    std::fs::write(
        dir.join("test.jsonl"),
        PAIRS
            .iter()
            .map(|(c, d)| {
                format!(
                    "{}\n",
                    serde_json::json!({"prompt": format!("code {c} means :"), "completion": d})
                )
            })
            .collect::<String>(),
    )
    .unwrap();
    let table = ok(
        &[
            "eval",
            "--model",
            "tiny-model",
            "--adapter",
            "run/adapter",
            "--data",
            "test.jsonl",
            "--style",
            "raw",
            "--max-new-tokens",
            "8",
            "--out",
            "eval",
        ],
        dir,
    );
    assert!(table.contains("| exact match |"), "{table}");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval/report.json")).unwrap())
            .unwrap();
    let tuned = eval["tuned"]["answers"].as_array().unwrap();
    // `generate` ran the two first prompts without a stop string at the newline: same tokens.
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(tuned[i].as_str().unwrap(), line.trim(), "prompt {i}");
    }
    let tuned_f1 = eval["tuned"]["scores"]["token_f1"].as_f64().unwrap();
    let base_f1 = eval["base"]["scores"]["token_f1"].as_f64().unwrap();
    assert!(tuned_f1 > base_f1, "tuned {tuned_f1} vs base {base_f1}");

    // Merge: the merged directory answers like the adapter.
    ok(
        &[
            "merge",
            "--model",
            "tiny-model",
            "--adapter",
            "run/adapter",
            "--out",
            "merged",
        ],
        dir,
    );
    let err = fails(
        &[
            "merge",
            "--model",
            "tiny-model",
            "--adapter",
            "run/adapter",
            "--out",
            "merged",
        ],
        dir,
    );
    assert!(err.contains("--force"), "{err}");
    let merged = ok(
        &[
            "generate",
            "--model",
            "merged",
            "--file",
            "prompts.txt",
            "--max-new-tokens",
            "8",
        ],
        dir,
    );
    assert_eq!(merged, generated);

    // Score: the tuned answers against the references, as eval scored them.
    let hyp: String = tuned
        .iter()
        .map(|a| format!("{}\n", a.as_str().unwrap()))
        .collect();
    std::fs::write(dir.join("hyp.txt"), hyp).unwrap();
    std::fs::write(
        dir.join("ref.txt"),
        PAIRS
            .iter()
            .map(|(_, d)| format!("{d}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let scores: serde_json::Value =
        serde_json::from_str(&ok(&["score", "--hyp", "hyp.txt", "--ref", "ref.txt"], dir)).unwrap();
    assert!((scores["f1"].as_f64().unwrap() - tuned_f1).abs() < 1e-12);
    std::fs::write(dir.join("short.txt"), "one line\n").unwrap();
    let err = fails(&["score", "--hyp", "short.txt", "--ref", "ref.txt"], dir);
    assert!(err.contains("line-aligned"), "{err}");
}

/// `kiln train` packs SFT data by default; the first step's loss is the padded run's.
#[test]
fn packing_is_the_default_and_keeps_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    // Each micro-batch of 8 holds 4 long and 4 short examples (3 prompt words; 7 or 1
    // completion words): padded, every short row is mostly padding; packed, two short
    // examples share a row as long as a long one.
    let mut text = String::new();
    for (i, (code, _)) in PAIRS.iter().cycle().take(8).enumerate() {
        let long = ["code {} ?", "code {} :"][i / 4].replace("{}", code);
        let short = ["{} means :", "code {} means"][i / 4].replace("{}", code);
        for (prompt, completion) in [
            (long, "random multiple cylinder misfire detected system too"),
            (short, "lean"),
        ] {
            text.push_str(&format!(
                "{}\n",
                serde_json::json!({"prompt": prompt, "completion": completion})
            ));
        }
    }
    std::fs::write(dir.join("all.jsonl"), text).unwrap();
    let recipe = r#"
[model]
path = "tiny-model"

[data]
train = "all.jsonl"
format = { format = "prompt_completion" }

[adapter]
peft_type = "LORA"
r = 4
lora_alpha = 8
lora_dropout = 0.0
target_modules = ["q_proj", "v_proj"]

[optimizer]
lr = 1e-2

[schedule]
kind = "constant"

[fit]
batch_size = 8
max_steps = 2
shuffle = false
output_dir = "packed"
progress = false
plot = false
"#;
    std::fs::write(dir.join("recipe.toml"), recipe).unwrap();
    let printed = ok(&["train", "recipe.toml", "--print-config"], dir);
    assert!(printed.contains("packing = true"), "{printed}");
    assert!(printed.contains("group_by_length = false"), "{printed}");
    let printed = ok(
        &["train", "recipe.toml", "--print-config", "--no-packing"],
        dir,
    );
    assert!(printed.contains("packing = false"), "{printed}");
    let printed = ok(
        &[
            "train",
            "recipe.toml",
            "--print-config",
            "--group-by-length",
        ],
        dir,
    );
    assert!(printed.contains("group_by_length = true"), "{printed}");
    let err = fails(&["train", "recipe.toml", "--packing", "--no-packing"], dir);
    assert!(err.contains("--no-packing"), "{err}");

    let report = ok(&["train", "recipe.toml"], dir);
    assert!(report.contains("(packed rows)"), "{report}");
    let report = ok(
        &[
            "train",
            "recipe.toml",
            "--no-packing",
            "--set",
            "fit.output_dir=padded",
        ],
        dir,
    );
    assert!(report.contains("(padded rows)"), "{report}");
    let summary = |run: &str| -> serde_json::Value {
        let path = dir.join(run).join("run_summary.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (packed, padded) = (summary("packed"), summary("padded"));
    let first = |s: &serde_json::Value| s["losses"][0].as_f64().unwrap();
    let (a, b) = (first(&packed), first(&padded));
    assert!(
        (a - b).abs() <= 1e-5 * b.abs(),
        "first loss packed {a} vs padded {b}"
    );
    for key in ["loss_tokens", "input_tokens"] {
        assert_eq!(packed[key], padded[key], "{key}");
    }
    let pad = |s: &serde_json::Value| s["padding_tokens"].as_u64().unwrap();
    assert!(
        pad(&packed) * 4 < pad(&padded),
        "padding packed {} vs padded {}",
        pad(&packed),
        pad(&padded)
    );
}

#[test]
fn bad_paths_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&["train", "missing.toml"], tmp.path());
    assert!(err.contains("missing.toml"), "{err}");
    let err = fails(&["inspect", "nowhere.gguf"], tmp.path());
    assert!(err.contains("nowhere.gguf"), "{err}");
    let err = fails(
        &["data", "obd", "--codes", "none.py", "--out", "x"],
        tmp.path(),
    );
    assert!(err.contains("none.py"), "{err}");
}

/// A prompt that with --max-new-tokens overruns the model's context (128 positions for the tiny
/// model) fails before any compute, naming both numbers; `--truncate left` keeps the prompt's end.
#[test]
fn context_guard_and_left_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    // 124 words and the BOS token: 125 prompt tokens.
    let prompt = WORDS
        .iter()
        .cycle()
        .take(124)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let args = [
        "generate",
        "--model",
        "tiny-model",
        "--prompt",
        prompt.as_str(),
        "--max-new-tokens",
        "8",
    ];
    let err = fails(&args, dir);
    assert!(
        err.contains("125 tokens")
            && err.contains("max_new_tokens is 8")
            && err.contains("context of 128"),
        "{err}"
    );
    let out = kiln(&[&args[..], &["--truncate", "left"]].concat(), dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("kept its last 120 of 125 tokens"),
        "{stderr}"
    );
    let err = fails(
        &[
            "generate",
            "--model",
            "tiny-model",
            "--prompt",
            "code",
            "--max-new-tokens",
            "128",
            "--truncate",
            "left",
        ],
        dir,
    );
    assert!(err.contains("leaves no room"), "{err}");

    // `kiln eval` guards and truncates the same way.
    let record = serde_json::json!({ "prompt": prompt, "completion": "code" });
    std::fs::write(dir.join("long.jsonl"), format!("{record}\n")).unwrap();
    let args = [
        "eval",
        "--model",
        "tiny-model",
        "--data",
        "long.jsonl",
        "--style",
        "raw",
        "--max-new-tokens",
        "8",
        "--out",
        "eval-out",
    ];
    let err = fails(&args, dir);
    assert!(
        err.contains("max_new_tokens is 8") && err.contains("context of 128"),
        "{err}"
    );
    let out = kiln(&[&args[..], &["--truncate", "left"]].concat(), dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("kept its last 120 of"), "{stderr}");
    assert!(dir.join("eval-out/report.md").exists());
}

/// `kiln bench methods --quick` on the tiny model: every method trains in its own process and
/// the report, chart and docs section are written.
#[test]
fn bench_methods_quick_compares_every_method() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    let all = write_data(dir);
    ok(
        &[
            "data",
            "split",
            all.to_str().unwrap(),
            "--out",
            "data",
            "--validation",
            "0.2",
            "--test",
            "0.2",
        ],
        dir,
    );
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    let before = "# Benchmarks\n\nkept text\n\n<!-- kiln bench methods: begin -->\nold\n<!-- kiln bench methods: end -->\n\ntail text\n";
    std::fs::write(dir.join("docs/benchmarks.md"), before).unwrap();

    // A typo in a learning-rate override names the method.
    let err = fails(
        &[
            "bench",
            "methods",
            "--quick",
            "--model",
            "tiny-model",
            "--data",
            "data",
            "--lr",
            "lorra=1",
        ],
        dir,
    );
    assert!(err.contains("lorra"), "{err}");

    let table = ok(
        &[
            "bench",
            "methods",
            "--quick",
            "--model",
            "tiny-model",
            "--data",
            "data",
            "--style",
            "raw",
            "--batch",
            "4",
            "--epochs",
            "2",
            "--r",
            "4",
            "--lr",
            "lora=1e-2,full=1e-3",
            "--out",
            "bench",
            "--docs",
            "docs",
        ],
        dir,
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench/methods.json")).unwrap())
            .unwrap();
    let results = report["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "base",
            "full",
            "lora",
            "rslora",
            "dora",
            "ia3",
            "bottleneck",
            "prefix",
            "prompt"
        ]
    );
    let get = |name: &str, key: &str| -> f64 {
        results.iter().find(|r| r["method"] == name).unwrap()[key]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let total = get("base", "total_params");
    assert_eq!(get("full", "trainable_params"), total);
    assert_eq!(get("lora", "lr"), 1e-2, "the override applies");
    for r in &results[1..] {
        let name = r["method"].as_str().unwrap();
        assert_eq!(
            r["steps"].as_u64(),
            Some(6),
            "{name}: 12 examples, batch 4, 2 epochs"
        );
        assert!(r["val_loss"].as_f64().unwrap().is_finite(), "{name}");
        assert!(r["tokens_per_sec"].as_f64().unwrap() > 0.0, "{name}");
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0, "{name}");
        assert!(r["saved_bytes"].as_u64().unwrap() > 0, "{name}");
        if name != "full" {
            assert!(get(name, "trainable_params") < total / 2.0, "{name}");
        }
        assert!(
            dir.join("bench").join(name).join("result.json").exists(),
            "{name}"
        );
    }
    // Saved full model > LoRA adapter; DoRA adds magnitudes to LoRA.
    assert!(get("full", "saved_bytes") > get("lora", "saved_bytes"));
    assert!(get("dora", "trainable_params") > get("lora", "trainable_params"));
    assert_eq!(
        get("rslora", "trainable_params"),
        get("lora", "trainable_params")
    );
    // Full fine-tuning at this learning rate learns the tiny task: validation loss falls.
    assert!(get("full", "val_loss") < get("base", "val_loss"));

    assert!(
        table.contains("| method | lr | trainable params"),
        "{table}"
    );
    assert!(table.contains("| bottleneck |"), "{table}");
    let png = std::fs::read(dir.join("bench/methods.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let docs = std::fs::read_to_string(dir.join("docs/benchmarks.md")).unwrap();
    assert!(docs.starts_with("# Benchmarks\n\nkept text\n"), "{docs}");
    assert!(docs.ends_with("\n\ntail text\n"), "{docs}");
    assert!(
        !docs.contains("\nold\n") && docs.contains("| prompt |"),
        "{docs}"
    );
    assert!(dir.join("docs/img/methods-quick.png").exists());
}

/// `kiln bench methods --quick` as documented: a tiny random Llama with SmolLM2's tokenizer,
/// trained on OBD-II questions from the fetched assets (skipped without them).
#[test]
fn bench_methods_quick_on_the_assets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for asset in [
        "assets/obd/codes.py",
        "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ] {
        if !root.join(asset).exists() {
            println!("skipped: {asset} is missing (run scripts/fetch-assets.sh)");
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    ok(
        &[
            "bench",
            "methods",
            "--quick",
            "--methods",
            "lora,prompt",
            "--out",
            out.to_str().unwrap(),
        ],
        &root,
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("methods.json")).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "base, lora, prompt");
    // 2 sampled codes with their trained phrasings; 2 test questions per code.
    let train = report["examples"][0].as_u64().unwrap();
    assert!(train >= 10, "{train}");
    assert_eq!(report["examples"][2], 4);
    for r in &results[1..] {
        assert!(r["val_loss"].as_f64().unwrap().is_finite(), "{r}");
        assert_eq!(
            r["steps"].as_u64(),
            Some(train.div_ceil(4)),
            "batch 4, 1 epoch"
        );
    }
    assert!(out.join("tiny-model/config.json").exists());
    assert!(out.join("data/test.jsonl").exists());
}

/// Every file under `dir` with its bytes, sorted by path (the state a failing command must
/// leave as it found it).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Overwrites the first value of the first tensor of a safetensors file with `value`.
fn poison_safetensors(path: &Path, value: f32) -> String {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (name, info) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| *k != "__metadata__")
        .unwrap();
    let start = 8 + n + info["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
    name.clone()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Careless input, one case a row: each exits non-zero, names what is at fault, and leaves every
/// file that existed before as it was. Then the data-safety cases that need a run: a second run
/// into a directory with checkpoints, a locked directory, a corrupt checkpoint, `merge --force`
/// that fails, and Ctrl-C during training.
#[test]
fn bad_input_fails_naming_the_fault_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    let all = write_data(dir);
    ok(
        &["data", "split", all.to_str().unwrap(), "--out", "data"],
        dir,
    );
    // A short run with a checkpoint every step: an adapter and checkpoints to misuse.
    let recipe = RECIPE.replace(
        "epochs = 6",
        "max_steps = 2\ncheckpoint_every = 1\nplot = false",
    );
    std::fs::write(dir.join("recipe.toml"), &recipe).unwrap();
    ok(&["train", "recipe.toml"], dir);
    let run = dir.join("run");
    assert!(
        run.join("checkpoints/checkpoint-2/checksums.json")
            .is_file()
    );
    assert!(!run.join("kiln.lock").exists(), "the lock is released");

    // Misused adapters.
    copy_dir(&run.join("adapter"), &dir.join("wrong-r"));
    let config = std::fs::read_to_string(dir.join("wrong-r/adapter_config.json")).unwrap();
    let config = config.replace("\"r\": 8", "\"r\": 4");
    assert!(config.contains("\"r\": 4"), "{config}");
    std::fs::write(dir.join("wrong-r/adapter_config.json"), config).unwrap();
    copy_dir(&run.join("adapter"), &dir.join("nan"));
    let nan_tensor = poison_safetensors(&dir.join("nan/adapter_model.safetensors"), f32::NAN);
    copy_dir(&run.join("adapter"), &dir.join("no-config"));
    std::fs::remove_file(dir.join("no-config/adapter_config.json")).unwrap();
    // A merged model that `merge --force` must not lose when it fails.
    std::fs::create_dir_all(dir.join("merged")).unwrap();
    std::fs::write(dir.join("merged/keep.txt"), "earlier output").unwrap();
    std::fs::write(dir.join("eval-out.txt"), "a file, not a folder").unwrap();
    std::fs::write(
        dir.join("test.jsonl"),
        "{\"prompt\": \"code P0300 means :\", \"completion\": \"misfire\"}\n",
    )
    .unwrap();
    let write_recipe = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).unwrap();
    };
    write_recipe("r-abc.toml", RECIPE.replace("r = 8", "r = \"abc\""));
    write_recipe(
        "layers.toml",
        RECIPE
            .replace("output_dir = \"run\"", "output_dir = \"run-layers\"")
            .replace("r = 8", "r = 8\nlayers_to_transform = [7]"),
    );
    let long_prompt = WORDS
        .iter()
        .cycle()
        .take(124)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    // The tiny GPT-2 (64 learned positions) with the same tokenizer, and an example past them.
    let gpt2 = dir.join("tiny-gpt2");
    std::fs::create_dir_all(&gpt2).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-models/tests/fixtures");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures.join("tiny-gpt2").join(f), gpt2.join(f)).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.join("tiny-model").join(f), gpt2.join(f)).unwrap();
    }
    let record = serde_json::json!({ "prompt": long_prompt, "completion": "code" });
    std::fs::write(dir.join("long.jsonl"), format!("{record}\n")).unwrap();
    write_recipe(
        "gpt2.toml",
        "[model]\npath = \"tiny-gpt2\"\n[data]\ntrain = \"long.jsonl\"\n\
         format = { format = \"prompt_completion\" }\n[adapter]\npeft_type = \"LORA\"\n\
         r = 4\ntarget_modules = [\"c_attn\"]\n[fit]\nmax_steps = 1\nbatch_size = 1\n\
         output_dir = \"run-gpt2\"\nprogress = false\n"
            .into(),
    );

    let eval = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec![
            "eval",
            "--model",
            "tiny-model",
            "--data",
            "test.jsonl",
            "--style",
            "raw",
            "--max-new-tokens",
            "2",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    let s = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    // (command, what the message must name)
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (eval(&["--limit", "0", "--out", "eval"]), s(&["--limit"])),
        (
            eval(&["--batch-size", "0", "--out", "eval"]),
            s(&["--batch-size"]),
        ),
        (eval(&["--out", "eval-out.txt"]), s(&["eval-out.txt"])),
        (s(&["inspect", "wrong-r"]), s(&["`r`", "lora_A.weight"])),
        (s(&["inspect", "no-config"]), s(&["adapter_config.json"])),
        (s(&["inspect", "nan"]), s(&[&nan_tensor, "non-finite"])),
        (
            s(&[
                "generate",
                "--model",
                "tiny-model",
                "--adapter",
                "nan",
                "--prompt",
                "code",
            ]),
            s(&[&nan_tensor]),
        ),
        (
            s(&[
                "generate",
                "--model",
                "tiny-model",
                "--prompt",
                &long_prompt,
                "--max-new-tokens",
                "8",
            ]),
            s(&["125 tokens", "context of 128"]),
        ),
        (
            s(&["data", "split", "data/train.jsonl", "--out", "data"]),
            s(&["data/train.jsonl", "overwritten"]),
        ),
        (s(&["train", "r-abc.toml"]), s(&["adapter.r", "r-abc.toml"])),
        (
            s(&["train", "recipe.toml", "--set", "fit.epoch=3"]),
            s(&["--set fit.epoch=3", "`fit.epoch`"]),
        ),
        (
            s(&["train", "gpt2.toml"]),
            s(&["training example 0", "64 positions"]),
        ),
        (
            s(&["train", "layers.toml"]),
            s(&["layers_to_transform", "layer 7"]),
        ),
        (
            s(&["train", "recipe.toml"]),
            s(&["--resume", "--overwrite", "checkpoints"]),
        ),
        (
            s(&[
                "merge",
                "--model",
                "tiny-model",
                "--adapter",
                "nan",
                "--out",
                "merged",
                "--force",
            ]),
            s(&[&nan_tensor]),
        ),
    ];
    for (args, names) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = snapshot(dir);
        let out = kiln(&args, dir);
        let err = String::from_utf8_lossy(&out.stderr);
        println!("kiln {args:?}:\n{err}");
        assert!(!out.status.success(), "kiln {args:?} should fail");
        assert_ne!(
            out.status.code(),
            Some(101),
            "kiln {args:?} panicked:\n{err}"
        );
        for name in names {
            assert!(
                err.contains(name.as_str()),
                "kiln {args:?}: `{name}` not named in:\n{err}"
            );
        }
        assert!(before == snapshot(dir), "kiln {args:?} changed files");
    }

    // A live owner's lock refuses a second run into the directory, naming the lock and the owner.
    let lock = run.join("kiln.lock");
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let before = snapshot(dir);
    let err = fails(&["train", "recipe.toml", "--resume"], dir);
    assert!(
        err.contains("kiln.lock") && err.contains(&std::process::id().to_string()),
        "{err}"
    );
    assert!(before == snapshot(dir));
    // A dead owner's lock is stale.
    std::fs::write(&lock, "4194305\n").unwrap();

    // Random bytes in the optimizer state are found on resume, naming the file.
    let optimizer = run.join("checkpoints/checkpoint-2/optimizer.bpk");
    let mut bytes = std::fs::read(&optimizer).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in bytes.iter_mut().skip(64) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&optimizer, &bytes).unwrap();
    let err = fails(
        &[
            "train",
            "recipe.toml",
            "--resume",
            "--set",
            "fit.max_steps=3",
        ],
        dir,
    );
    assert!(
        err.contains("optimizer.bpk") && err.contains("corrupt"),
        "{err}"
    );
    assert!(!lock.exists(), "the stale lock was replaced, then released");

    // --overwrite starts over; merge --force replaces the output only when it succeeds.
    ok(&["train", "recipe.toml", "--overwrite"], dir);
    assert!(run.join("checkpoints/checkpoint-2").is_dir());
    ok(
        &[
            "merge",
            "--model",
            "tiny-model",
            "--adapter",
            "run/adapter",
            "--out",
            "merged",
            "--force",
        ],
        dir,
    );
    assert!(dir.join("merged/config.json").is_file());
    assert!(!dir.join("merged/keep.txt").exists());
    let hidden: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".merged"))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // SIGINT during training: the step finishes, a checkpoint is written, exit 130 with how to
    // resume.
    let long = recipe
        .replace("max_steps = 2", "max_steps = 100000")
        .replace("checkpoint_every = 1", "checkpoint_every = 100000")
        .replace("output_dir = \"run\"", "output_dir = \"run-int\"");
    std::fs::write(dir.join("long.toml"), long).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", "long.toml"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.join("run-int/metrics.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |m| m.is_empty()) {
        assert!(start.elapsed().as_secs() < 60, "no step logged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("kiln train long.toml --resume"), "{err}");
    let ckpts: Vec<_> = std::fs::read_dir(dir.join("run-int/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ckpts.len(), 1, "{ckpts:?}");
    assert!(ckpts[0].starts_with("checkpoint-"), "{ckpts:?}");
    assert!(!dir.join("run-int/kiln.lock").exists());
    // The run continues from that checkpoint (one more step).
    let step: usize = ckpts[0]["checkpoint-".len()..].parse().unwrap();
    let max_steps = format!("fit.max_steps={}", step + 1);
    ok(
        &["train", "long.toml", "--resume", "--set", &max_steps],
        dir,
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run-int/run_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["steps"].as_u64(), Some(step as u64 + 1));
    assert!(
        summary["resumed_from"]
            .as_str()
            .unwrap()
            .ends_with(&ckpts[0]),
        "{summary}"
    );
}
