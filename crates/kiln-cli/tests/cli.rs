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

/// `kiln bench decode` on a block-quantized GGUF, with 16-bit and with 8-bit inputs: both
/// decode through the host decoder and report their rates (kiln-models' `tests/smollm2.rs`
/// checks the 8-bit path's tokens against llama.cpp's, `tests/parity_llama.rs` its logits
/// against transformers').
#[test]
fn bench_decode_with_either_input_rounding() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-models/tests/fixtures/gguf/tiny-llama-quant.gguf");
    for inputs in ["q16", "q8"] {
        let out = kiln(
            &[
                "bench",
                "decode",
                "--model",
                gguf.to_str().unwrap(),
                "--prompt-tokens",
                "5",
                "--new-tokens",
                "4",
                "--runs",
                "1",
                "--quant-inputs",
                inputs,
            ],
            tmp.path(),
        );
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{inputs}: {stderr}");
        assert!(
            stdout.contains("decode_tokens_per_s=") && stderr.contains("path: host decoder"),
            "{inputs}: {stdout}{stderr}"
        );
    }
}

/// `kiln merge --format gguf` on the fetched SmolLM2 GGUF (skipped without it): a LoRA on the
/// query, key and value projections, trained for three steps, merges into a GGUF file that keeps
/// the base's metadata (tokenizer, chat template) and that kiln answers from exactly as from the
/// merged Hugging Face folder (both f32). With `KILN_PEFT_PYTHON` (`scripts/peft_generate.py`):
/// transformers reads the GGUF export with its own loader (llama.cpp's q/k layout undone there)
/// and must give kiln's greedy answers, and Python PEFT loads the adapter `kiln train` wrote onto
/// the same base and must give `kiln generate`'s greedy answers.
#[test]
fn merge_to_gguf_on_the_assets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gguf = root.join("assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        println!(
            "skipped: {} is missing (run scripts/fetch-assets.sh)",
            gguf.display()
        );
        return;
    }
    let gguf = gguf.canonicalize().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data(dir);
    let recipe = format!(
        r#"
[model]
path = "{}"
[data]
train = "all.jsonl"
max_len = 32
format = {{ format = "prompt_completion" }}
[adapter]
peft_type = "LORA"
r = 4
lora_alpha = 8
target_modules = ["q_proj", "k_proj", "v_proj"]
[optimizer]
lr = 2e-2
[fit]
batch_size = 4
max_steps = 3
output_dir = "run"
progress = false
plot = false
"#,
        gguf.display()
    );
    std::fs::write(dir.join("recipe.toml"), recipe).unwrap();
    ok(&["train", "recipe.toml"], dir);
    let model = gguf.to_str().unwrap();
    let merge = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "merge",
            "--model",
            model,
            "--adapter",
            "run/adapter",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        ok(&args, dir);
    };
    merge("merged.gguf", &["--quant", "f32"]);
    merge("merged-hf", &[]);
    let err = fails(
        &[
            "merge",
            "--model",
            model,
            "--adapter",
            "run/adapter",
            "--out",
            "merged.gguf",
        ],
        dir,
    );
    assert!(err.contains("--force"), "{err}");
    let err = fails(
        &[
            "merge",
            "--model",
            "merged-hf",
            "--adapter",
            "run/adapter",
            "--out",
            "x.gguf",
        ],
        dir,
    );
    assert!(
        err.contains("GGUF base") && err.contains("merged-hf"),
        "{err}"
    );
    assert!(!dir.join("x.gguf").exists());

    let prompts = "What does P0300 mean?\nMy engine shakes at idle, which code is that?\nP0171\n";
    std::fs::write(dir.join("prompts.txt"), prompts).unwrap();
    let answers = |model: &str| {
        ok(
            &[
                "generate",
                "--model",
                model,
                "--file",
                "prompts.txt",
                "--chat",
                "--max-new-tokens",
                "24",
            ],
            dir,
        )
    };
    let from_gguf = answers("merged.gguf");
    assert_eq!(from_gguf, answers("merged-hf"));
    assert_eq!(from_gguf.lines().count(), 3, "{from_gguf}");
    let info = ok(&["inspect", "merged.gguf"], dir);
    assert!(info.contains("model_type: llama"), "{info}");

    let Some(python) = std::env::var_os("KILN_PEFT_PYTHON") else {
        return;
    };
    // Python's greedy answers against kiln's: the GGUF export alone (transformers' own GGUF
    // reader), and the base with the adapter kiln trained (PEFT).
    let unmerged = ok(
        &[
            "generate",
            "--model",
            model,
            "--adapter",
            "run/adapter",
            "--file",
            "prompts.txt",
            "--chat",
            "--max-new-tokens",
            "24",
        ],
        dir,
    );
    for (gguf, adapter, kiln_answers) in [
        ("merged.gguf", None, &from_gguf),
        (model, Some("run/adapter"), &unmerged),
    ] {
        std::fs::write(dir.join("kiln_answers.txt"), kiln_answers).unwrap();
        let mut check = Command::new(&python);
        check
            .current_dir(dir)
            .arg(root.join("scripts/peft_generate.py"))
            .args(["--gguf", gguf, "--prompts", "prompts.txt"])
            .args(["--expected", "kiln_answers.txt", "--max-new-tokens", "24"]);
        if let Some(adapter) = adapter {
            check.args(["--adapter", adapter]);
        }
        let check = check.output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            check.status.success() && report.contains("3/3 answers identical"),
            "Python's answers from {gguf} (adapter {adapter:?}) differ from kiln's:\n{report}"
        );
        println!("{report}");
    }
}

/// The tiny model, its data split into `data/`, and `recipe.toml` for `kiln search`:
/// `max_steps` steps, an evaluation every 2; returns the recipe's text.
fn search_setup(dir: &Path, max_steps: usize) -> String {
    tiny_model(dir);
    let all = write_data(dir);
    ok(
        &["data", "split", all.to_str().unwrap(), "--out", "data"],
        dir,
    );
    let recipe = RECIPE
        .replace(
            "epochs = 6",
            &format!("max_steps = {max_steps}\nplot = false"),
        )
        .replace("eval_every = 5", "eval_every = 2");
    std::fs::write(dir.join("recipe.toml"), &recipe).unwrap();
    recipe
}

/// `kiln search` scored by the trained model's answers to the validation questions: larger is
/// better, no pruning, and data without completions refused.
#[test]
fn search_scored_by_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recipe = search_setup(dir, 4);
    let table = ok(
        &[
            "search",
            "recipe.toml",
            "--trials",
            "5",
            "--sampler",
            "grid",
            "--param",
            "optimizer.lr=1e-3,1e-2",
            "--objective",
            "validation_token_f1",
            "--out",
            "search",
        ],
        dir,
    );
    assert!(
        table.contains("objective validation_token_f1 (maximize)"),
        "{table}"
    );
    assert!(table.contains("no pruning"), "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("search/search.json")).unwrap())
            .unwrap();
    assert_eq!(report["direction"], "maximize");
    assert_eq!(report["pruning"], false);
    assert_eq!(report["sampler"], "grid");
    // The grid has two points: each runs once, in order, though 5 trials were allowed.
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    let lrs: Vec<String> = trials
        .iter()
        .map(|t| t["values"]["optimizer.lr"].to_string())
        .collect();
    assert_eq!(lrs, ["0.001", "0.01"], "{trials:?}");
    let values: Vec<f64> = trials
        .iter()
        .map(|t| {
            assert_eq!(t["steps"].as_u64(), Some(4), "{t}");
            t["value"].as_f64().unwrap()
        })
        .collect();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "{values:?}");
    // The best trial has the largest score.
    let best = report["best"]["trial"].as_u64().unwrap() as usize;
    assert_eq!(values[best], values.iter().copied().fold(0.0, f64::max));

    // A grid needs lists of values.
    let err = fails(
        &[
            "search",
            "recipe.toml",
            "--sampler",
            "grid",
            "--param",
            "optimizer.lr=log:1e-3:3e-2",
            "--out",
            "search-range",
        ],
        dir,
    );
    assert!(
        err.contains("--param optimizer.lr=log:1e-3:3e-2") && err.contains("grid"),
        "{err}"
    );

    // Answers are scored against completions: plain text data cannot be.
    let text_recipe = recipe.replace(
        "format = { format = \"prompt_completion\" }",
        "format = { format = \"text\" }",
    );
    std::fs::write(dir.join("text.toml"), text_recipe).unwrap();
    let err = fails(
        &[
            "search",
            "text.toml",
            "--param",
            "optimizer.lr=1e-3,1e-2",
            "--objective",
            "validation_exact_match",
            "--out",
            "search-text",
        ],
        dir,
    );
    assert!(
        err.contains("validation_exact_match") && err.contains("prompt_completion"),
        "{err}"
    );
}

/// `kiln search` on the tiny model: 3 trials over 2 parameters, each in its own directory; the
/// table, `search.json` and `best_recipe.toml` agree on the best trial.
#[test]
fn search_trials_and_best_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    search_setup(dir, 6);
    let table = ok(
        &[
            "search",
            "recipe.toml",
            "--trials",
            "3",
            "--param",
            "adapter.r=4,8",
            "--param",
            "optimizer.lr=log:1e-3:3e-2",
            "--seed",
            "1",
            "--out",
            "search",
        ],
        dir,
    );
    assert!(
        table.contains("| trial | adapter.r | optimizer.lr | validation_loss | steps | status |"),
        "{table}"
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && l[2..].starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert_eq!(rows.iter().filter(|r| r.ends_with("| best |")).count(), 1);
    // The best row comes first.
    assert!(rows[0].ends_with("| best |"), "{table}");
    let out = dir.join("search");
    assert_eq!(
        std::fs::read_to_string(out.join("search.md")).unwrap(),
        table
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("search.json")).unwrap()).unwrap();
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 3);
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["trial"].as_u64(), Some(i as u64));
        let r = t["values"]["adapter.r"].as_i64().unwrap();
        let lr = t["values"]["optimizer.lr"].as_f64().unwrap();
        assert!(r == 4 || r == 8, "{t}");
        assert!((1e-3..=3e-2).contains(&lr), "{t}");
        assert!(t["error"].is_null(), "{t}");
        // Each trial trained in its own directory, with its own values.
        let trial_dir = out.join(format!("trial-{i:03}"));
        let used = std::fs::read_to_string(trial_dir.join("recipe.toml")).unwrap();
        assert!(used.contains(&format!("r = {r}\n")), "{used}");
        let steps = t["steps"].as_u64().unwrap();
        let evals = t["evaluations"].as_array().unwrap();
        if t["pruned"].as_bool().unwrap() {
            assert!(steps < 6, "{t}");
        } else {
            assert_eq!((steps, evals.len()), (6, 3), "{t}");
        }
        // The objective is the best validation loss of the trial's evaluations.
        let best_eval = evals
            .iter()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert_eq!(t["value"].as_f64(), Some(best_eval), "{t}");
    }
    let best = report["best"]["trial"].as_u64().unwrap() as usize;
    assert_eq!(trials[best]["status"], "best");
    let best_value = trials[best]["value"].as_f64().unwrap();
    for t in trials.iter().filter(|t| !t["pruned"].as_bool().unwrap()) {
        assert!(t["value"].as_f64().unwrap() >= best_value, "{report}");
    }
    assert!(rows[0].starts_with(&format!("| {best} |")), "{table}");

    // The best recipe is the recipe with the best trial's values, and `kiln train` reads it.
    let text = std::fs::read_to_string(out.join("best_recipe.toml")).unwrap();
    let best_recipe = kiln::recipe::RecipeBuilder::new()
        .merge_toml(&text, "best_recipe.toml")
        .unwrap();
    let get_f64 = |k: &str| best_recipe.get::<f64>(k).unwrap().unwrap();
    assert_eq!(
        best_recipe.get::<i64>("adapter.r").unwrap(),
        trials[best]["values"]["adapter.r"].as_i64()
    );
    assert_eq!(
        get_f64("optimizer.lr"),
        trials[best]["values"]["optimizer.lr"].as_f64().unwrap()
    );
    assert_eq!(
        best_recipe
            .get::<String>("fit.output_dir")
            .unwrap()
            .as_deref(),
        Some("run")
    );
    let printed = ok(&["train", "search/best_recipe.toml", "--print-config"], dir);
    assert!(printed.contains("max_steps = 6"), "{printed}");

    // A second search into the same directory is refused and changes nothing.
    let err = fails(
        &[
            "search",
            "recipe.toml",
            "--param",
            "adapter.r=4,8",
            "--out",
            "search",
        ],
        dir,
    );
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("best_recipe.toml")).unwrap(),
        text
    );

    // A trial that diverges is recorded as failed and the search goes on (this seed draws the
    // diverging rate for trial 1 of 3).
    let table = ok(
        &[
            "search",
            "recipe.toml",
            "--trials",
            "3",
            "--param",
            "optimizer.lr=1e-2,1e30",
            "--sampler",
            "random",
            "--seed",
            "3",
            "--out",
            "search-nan",
        ],
        dir,
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("search-nan/search.json")).unwrap())
            .unwrap();
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 3);
    let failed: Vec<&serde_json::Value> = trials
        .iter()
        .filter(|t| t["values"]["optimizer.lr"].as_f64() == Some(1e30))
        .collect();
    assert!(!failed.is_empty(), "{report}");
    for t in &failed {
        assert!(t["value"].is_null(), "{t}");
        assert!(t["error"].as_str().unwrap().contains("not finite"), "{t}");
        assert!(t["status"].as_str().unwrap().starts_with("failed"), "{t}");
    }
    assert!(table.contains("| failed: "), "{table}");
    assert!(trials[2]["steps"].as_u64().unwrap() > 0, "{report}");
    assert!(dir.join("search-nan/best_recipe.toml").is_file());
}

/// `kiln index build`/`query` and `kiln generate --rag` on a small corpus with the real MiniLM
/// embedder (skipped without it) and the tiny model.
#[test]
fn index_build_query_and_generate_with_rag() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let minilm = root.join("assets/all-MiniLM-L6-v2");
    if !minilm.join("model.safetensors").exists() {
        println!(
            "skipped: {} is missing (run scripts/fetch-assets.sh)",
            minilm.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    let docs: String = PAIRS
        .iter()
        .map(|(code, d)| {
            format!(
                "{}\n",
                serde_json::json!({"code": code, "description": d, "body": format!("{code} : {d}")})
            )
        })
        .collect();
    std::fs::write(dir.join("codes.jsonl"), docs).unwrap();
    let minilm = minilm.canonicalize().unwrap();
    let build = [
        "index",
        "build",
        "--docs",
        "codes.jsonl",
        "--text-field",
        "body",
        "--out",
        "idx",
        "--embedder",
        minilm.to_str().unwrap(),
    ];
    let out = ok(&build, dir);
    assert!(out.contains("indexed 4 records"), "{out}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("idx/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["doc_count"], 4);
    assert_eq!(meta["dim"], 384);
    assert_eq!(meta["text_field"], "body");
    // Rebuilding replaces the index.
    ok(&build, dir);

    let out = ok(
        &[
            "index",
            "query",
            "idx",
            "What does P0171 mean?",
            "--top-k",
            "2",
        ],
        dir,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("bm25 (rank)"), "{out}");
    assert!(lines[1].contains("P0171 : system too lean"), "{out}");
    let out = ok(
        &[
            "index", "query", "idx", "catalyst", "--top-k", "1", "--mode", "bm25",
        ],
        dir,
    );
    assert!(out.lines().nth(1).unwrap().contains("P0420"), "{out}");
    assert!(
        out.lines().nth(1).unwrap().contains(" - "),
        "no dense rank in bm25 mode: {out}"
    );
    let out = ok(
        &["index", "query", "idx", "engine misfire", "--mode", "dense"],
        dir,
    );
    assert_eq!(out.lines().count(), 5, "{out}");

    let run = kiln(
        &[
            "generate",
            "--model",
            "tiny-model",
            "--rag",
            "idx",
            "--rag-top-k",
            "2",
            "--prompt",
            "code P0300 means",
            "--max-new-tokens",
            "2",
        ],
        dir,
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("retrieved for prompt 1: P0300, "), "{err}");
}

#[path = "cli/bad_input.rs"]
mod bad_input;
#[path = "cli/dist.rs"]
mod dist;
#[path = "cli/serve.rs"]
mod serve;

/// `kiln train` with `[task] kind = "dpo"` on preference pairs (chosen: the code's description,
/// rejected: another code's): the adapter is written, steps and evaluations log TRL's metrics,
/// and the policy ends preferring the chosen answers. Preference data under an SFT recipe, and
/// the preference format without a preference task, are refused with what to set.
#[test]
fn train_dpo_on_preference_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    let mut text = String::new();
    for template in ["code {} means :", "{} means :", "code {} ?", "{} ?"] {
        for (i, (code, desc)) in PAIRS.iter().enumerate() {
            let other = PAIRS[(i + 1) % PAIRS.len()].1;
            let prompt = template.replace("{}", code);
            text.push_str(&format!(
                "{}\n",
                serde_json::json!({"prompt": prompt, "chosen": desc, "rejected": other})
            ));
        }
    }
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/prefs.jsonl"), &text).unwrap();
    let recipe = RECIPE
        .replace("data/train.jsonl", "data/prefs.jsonl")
        .replace("data/validation.jsonl", "data/prefs.jsonl")
        .replace("epochs = 6", "epochs = 3");
    let dpo = recipe.replace(
        "format = { format = \"prompt_completion\" }",
        "format = { format = \"preference\" }",
    );
    std::fs::write(
        dir.join("dpo.toml"),
        format!("{dpo}\n[task]\nkind = \"dpo\"\nbeta = 0.5\n"),
    )
    .unwrap();
    let report = ok(&["train", "dpo.toml"], dir);
    assert!(report.contains("16 train, 16 validation"), "{report}");
    assert!(dir.join("run/adapter/adapter_model.safetensors").is_file());
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<&serde_json::Value> = records.iter().filter(|r| r["kind"] == "step").collect();
    assert_eq!(steps.len(), 12);
    assert!(
        steps[0]["extra"]["rewards/chosen"].is_number(),
        "{}",
        steps[0]
    );
    let last_eval = records.iter().rev().find(|r| r["kind"] == "eval").unwrap();
    let accuracy = last_eval["extra"]["rewards/accuracies"].as_f64().unwrap();
    let margin = last_eval["extra"]["rewards/margins"].as_f64().unwrap();
    assert!(accuracy > 0.9 && margin > 0.0, "{last_eval}");
    // The resolved recipe keeps the task.
    let saved = std::fs::read_to_string(dir.join("run/recipe.toml")).unwrap();
    assert!(saved.contains("kind = \"dpo\""), "{saved}");
    // The reference's log-probabilities precomputed before training: the same run.
    ok(
        &[
            "train",
            "dpo.toml",
            "--set",
            "task.precompute_ref_log_probs=true",
            "--set",
            "fit.output_dir=\"run-precomputed\"",
        ],
        dir,
    );
    let losses = |run: &str| -> Vec<f64> {
        std::fs::read_to_string(dir.join(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
            .collect()
    };
    let (a, b) = (losses("run"), losses("run-precomputed"));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{a:?} vs {b:?}");
    }
    let err = fails(
        &[
            "train",
            "dpo.toml",
            "--set",
            "task.precompute_ref_log_probs=true",
            "--set",
            "task.kind=\"simpo\"",
        ],
        dir,
    );
    assert!(err.contains("precompute_ref_log_probs"), "{err}");

    // Continual: an SFT adapter (on the same codes' descriptions) continued by DPO with
    // `adapter.init_from`. Against the base, the SFT adapter already prefers the chosen answers
    // at the first step; against itself (`reference = "initial"`), DPO starts at log 2.
    let all = write_data(dir);
    std::fs::write(
        dir.join("sft-first.toml"),
        RECIPE
            .replace("data/train.jsonl", all.to_str().unwrap())
            .replace("validation = \"data/validation.jsonl\"\n", "")
            .replace("output_dir = \"run\"", "output_dir = \"run-sft-first\""),
    )
    .unwrap();
    ok(&["train", "sft-first.toml"], dir);
    let continued = |name: &str, reference: &str| -> serde_json::Value {
        let text = format!(
            "{}\n[task]\nkind = \"dpo\"\nbeta = 0.5\nreference = \"{reference}\"\n",
            dpo.replace(
                "[adapter]\n",
                "[adapter]\ninit_from = \"run-sft-first/adapter\"\n"
            )
            .replace("output_dir = \"run\"", &format!("output_dir = \"{name}\""))
        );
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
        ok(&["train", &format!("{name}.toml")], dir);
        let saved = std::fs::read_to_string(dir.join(name).join("recipe.toml")).unwrap();
        assert!(
            saved.contains("init_from = \"run-sft-first/adapter\""),
            "{saved}"
        );
        let metrics = std::fs::read_to_string(dir.join(name).join("metrics.jsonl")).unwrap();
        serde_json::from_str(metrics.lines().next().unwrap()).unwrap()
    };
    let against_base = continued("run-continued-base", "base");
    assert!(
        against_base["extra"]["rewards/margins"].as_f64().unwrap() > 0.0
            && (against_base["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() > 1e-3,
        "{against_base}"
    );
    let against_itself = continued("run-continued-initial", "initial");
    assert!(
        (against_itself["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-5,
        "{against_itself}"
    );
    // `init_from` alone: the method's settings are the saved adapter's.
    let start = dpo.find("[adapter]").unwrap();
    let end = dpo.find("[optimizer]").unwrap();
    let only = format!(
        "{}[adapter]\ninit_from = \"run-sft-first/adapter\"\n\n{}\n[task]\nkind = \"dpo\"\n",
        &dpo[..start],
        &dpo[end..]
    );
    std::fs::write(dir.join("only.toml"), only).unwrap();
    let resolved = ok(&["train", "only.toml", "--print-config"], dir);
    assert!(
        resolved.contains("peft_type = \"LORA\"")
            && resolved.contains("r = 8")
            && resolved.contains("init_from = \"run-sft-first/adapter\""),
        "{resolved}"
    );
    // A method that is not the saved adapter's is refused, naming the file.
    std::fs::write(
        dir.join("wrong.toml"),
        dpo.replace(
            "[adapter]\npeft_type = \"LORA\"",
            "[adapter]\ninit_from = \"run-sft-first/adapter\"\npeft_type = \"IA3\"",
        )
        .replace("r = 8\nlora_alpha = 16\n", "")
            + "\n[task]\nkind = \"dpo\"\n",
    )
    .unwrap();
    let err = fails(
        &[
            "train",
            "wrong.toml",
            "--set",
            "fit.output_dir=\"run-wrong\"",
        ],
        dir,
    );
    assert!(
        err.contains("adapter_config.json") && err.contains("LORA"),
        "{err}"
    );

    // The same pairs under a supervised recipe: named as preference records.
    std::fs::write(
        dir.join("sft.toml"),
        recipe.replace("output_dir = \"run\"", "output_dir = \"run-sft\""),
    )
    .unwrap();
    let err = fails(&["train", "sft.toml"], dir);
    assert!(
        err.contains("prefs.jsonl:1") && err.contains("kind = \"dpo\""),
        "{err}"
    );
    let err = fails(
        &[
            "train",
            "sft.toml",
            "--set",
            "data.format={format=\"preference\"}",
        ],
        dir,
    );
    assert!(
        err.contains("preference") && err.contains("[task]"),
        "{err}"
    );
}

/// A reward model from a recipe (`[task] kind = "reward"`): TRL's metrics in the log, the PEFT
/// `SEQ_CLS` layout on disk, `kiln score-rm` scoring pairs with it, continuing it with
/// `adapter.init_from` (the head included), and the refusals.
#[test]
fn train_reward_model_and_score_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    let mut text = String::new();
    for (t, template) in ["code {} means :", "{} means :", "code {} ?", "{} ?"]
        .iter()
        .enumerate()
    {
        for (i, (code, desc)) in PAIRS.iter().enumerate() {
            let other = PAIRS[(i + 1) % PAIRS.len()].1;
            let mut record = serde_json::json!({"prompt": template.replace("{}", code), "chosen": desc, "rejected": other});
            if t % 2 == 1 {
                record["margin"] = 0.5.into();
            }
            text.push_str(&format!("{record}\n"));
        }
    }
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/prefs.jsonl"), &text).unwrap();
    let reward = format!(
        "{}\n[task]\nkind = \"reward\"\ncenter_rewards_coefficient = 0.01\n",
        RECIPE
            .replace("data/train.jsonl", "data/prefs.jsonl")
            .replace("data/validation.jsonl", "data/prefs.jsonl")
            .replace("epochs = 6", "epochs = 3")
    );
    std::fs::write(dir.join("reward.toml"), &reward).unwrap();
    let report = ok(&["train", "reward.toml"], dir);
    assert!(report.contains("reward loss"), "{report}");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["task_type"], "SEQ_CLS");
    assert_eq!(
        config["modules_to_save"],
        serde_json::json!(["classifier", "score"])
    );
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records[0]["extra"]["min_reward"].is_number(),
        "{}",
        records[0]
    );
    let last_eval = records.iter().rev().find(|r| r["kind"] == "eval").unwrap();
    let accuracy = last_eval["extra"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "{last_eval}");

    // score-rm: one line per pair; the accuracy it reports is the validation's (same pairs).
    let out = kiln(
        &["score-rm", "reward.toml", "--data", "data/prefs.jsonl"],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4 * PAIRS.len());
    let wins = lines
        .iter()
        .filter(|l| l["chosen"].as_f64().unwrap() > l["rejected"].as_f64().unwrap())
        .count();
    assert!(
        (wins as f64 / lines.len() as f64 - accuracy).abs() < 1e-9,
        "{wins} of {} vs {accuracy}",
        lines.len()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} pairs: accuracy", lines.len())),
        "{stderr}"
    );

    // PPO on the codes' questions, scored by that reward model: every iteration logged with
    // TRL's names, the policy saved as a causal-LM adapter.
    let all = write_data(dir);
    let ppo = format!(
        "{}\n[task]\nkind = \"ppo\"\nreward_model = \"run/adapter\"\n\n[task.ppo]\n\
         max_new_tokens = 4\nppo_epochs = 2\n",
        RECIPE
            .replace("data/train.jsonl", all.to_str().unwrap())
            .replace("validation = \"data/validation.jsonl\"\n", "")
            .replace("epochs = 6", "epochs = 1")
            .replace("output_dir = \"run\"", "output_dir = \"run-ppo\"")
    );
    std::fs::write(dir.join("ppo.toml"), &ppo).unwrap();
    let report = ok(&["train", "ppo.toml"], dir);
    assert!(report.contains("20 train"), "{report}");
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("run-ppo/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 5);
    for s in &steps {
        for key in [
            "objective/scores",
            "objective/kl",
            "loss/policy_avg",
            "loss/value_avg",
        ] {
            assert!(s["extra"][key].is_number(), "{s}");
        }
        assert!(s["extra"]["response_len"].as_f64().unwrap() <= 4.0, "{s}");
    }
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run-ppo/adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["task_type"], "CAUSAL_LM");
    // Stopped after 3 iterations with checkpoints, then resumed: the same 5 iterations.
    let set = |k: &str| vec!["--set".to_string(), k.to_string()];
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["train".to_string(), "ppo.toml".to_string()];
        a.extend(set("fit.output_dir=\"run-ppo-resumed\""));
        a.extend(set("fit.checkpoint_every=1"));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let first = args(&["--set", "fit.max_steps=3"]);
    ok(&first.iter().map(String::as_str).collect::<Vec<_>>(), dir);
    let second = args(&["--resume"]);
    ok(&second.iter().map(String::as_str).collect::<Vec<_>>(), dir);
    let losses = |run: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {} {}",
                    v["step"], v["loss"], v["extra"]["objective/scores"]
                )
            })
            .collect()
    };
    assert_eq!(losses("run-ppo-resumed"), losses("run-ppo"));
    let err = fails(
        &[
            "train",
            "ppo.toml",
            "--set",
            "fit.output_dir=\"run-ppo-2\"",
            "--set",
            "data.validation=\"data/prefs.jsonl\"",
        ],
        dir,
    );
    assert!(
        err.contains("data.validation") && err.contains("ppo"),
        "{err}"
    );
    std::fs::write(
        dir.join("ppo-no-rm.toml"),
        ppo.replace("reward_model = \"run/adapter\"\n", ""),
    )
    .unwrap();
    let err = fails(&["train", "ppo-no-rm.toml"], dir);
    assert!(err.contains("task.reward_model"), "{err}");

    // Continued with init_from: the head comes along, so the first step already ranks pairs.
    std::fs::write(
        dir.join("more.toml"),
        reward
            .replace("[adapter]\n", "[adapter]\ninit_from = \"run/adapter\"\n")
            .replace("output_dir = \"run\"", "output_dir = \"run-more\""),
    )
    .unwrap();
    ok(&["train", "more.toml"], dir);
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("run-more/metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        first["extra"]["accuracy"].as_f64().unwrap() > 0.9,
        "{first}"
    );

    // DPO cannot start from a reward model; a reward model needs an adapter; score-rm needs a
    // reward recipe.
    std::fs::write(
        dir.join("dpo.toml"),
        reward
            .replace("[adapter]\n", "[adapter]\ninit_from = \"run/adapter\"\n")
            .replace("kind = \"reward\"", "kind = \"dpo\"")
            .replace("center_rewards_coefficient = 0.01\n", "")
            .replace("output_dir = \"run\"", "output_dir = \"run-dpo\""),
    )
    .unwrap();
    let err = fails(&["train", "dpo.toml"], dir);
    assert!(
        err.contains("SEQ_CLS") && err.contains("adapter_config.json"),
        "{err}"
    );
    let start = reward.find("[adapter]").unwrap();
    let end = reward.find("[optimizer]").unwrap();
    std::fs::write(
        dir.join("full.toml"),
        format!("{}{}", &reward[..start], &reward[end..]),
    )
    .unwrap();
    let err = fails(&["train", "full.toml"], dir);
    assert!(err.contains("needs an [adapter]"), "{err}");
    let err = fails(&["score-rm", "dpo.toml", "--data", "data/prefs.jsonl"], dir);
    assert!(err.contains("kind = \"reward\""), "{err}");
}
