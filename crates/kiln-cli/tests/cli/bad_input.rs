//! Careless input across the CLI: clear errors, nothing changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

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

    // Retrieval: a documents file without the text field on line 2, a folder that is no index.
    std::fs::write(
        dir.join("docs-bad.jsonl"),
        "{\"text\": \"P0300: misfire\"}\n{\"body\": \"P0171: lean\"}\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("notes")).unwrap();
    std::fs::write(dir.join("notes/keep.txt"), "not an index").unwrap();
    std::fs::write(
        dir.join("docs-ok.jsonl"),
        "{\"text\": \"P0300: misfire\"}\n",
    )
    .unwrap();

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
        (
            s(&[
                "generate",
                "--model",
                "tiny-model",
                "--prompt",
                "code",
                "--quant-inputs",
                "q4",
            ]),
            s(&["--quant-inputs", "q4", "q16, q8, f32"]),
        ),
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
            s(&["search", "recipe.toml", "--param", "adapter.rr=4,8"]),
            s(&["--param adapter.rr=4,8", "`adapter.rr`"]),
        ),
        (
            s(&[
                "search",
                "recipe.toml",
                "--param",
                "optimizer.lr=log:0:1e-3",
            ]),
            s(&["--param optimizer.lr=log:0:1e-3", "positive low end"]),
        ),
        (
            s(&[
                "search",
                "recipe.toml",
                "--param",
                "optimizer.lr=uniform:1e-2:1e-3",
            ]),
            s(&["--param optimizer.lr=uniform:1e-2:1e-3", "not below"]),
        ),
        (
            s(&["search", "recipe.toml", "--param", "fit.epochs=uniform:1:3"]),
            s(&["--param fit.epochs=uniform:1:3", "epochs"]),
        ),
        (
            s(&[
                "search",
                "recipe.toml",
                "--param",
                "adapter.r=4,8",
                "--param",
                "adapter.r=16",
            ]),
            s(&["--param adapter.r=16", "already searched"]),
        ),
        (
            s(&[
                "search",
                "recipe.toml",
                "--param",
                "adapter.r=4,8",
                "--out",
                "run",
            ]),
            s(&["--out run", "not empty"]),
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
        (
            s(&["index", "build", "--docs", "docs-bad.jsonl", "--out", "idx"]),
            s(&["docs-bad.jsonl:2:", "no field `text`"]),
        ),
        (
            s(&[
                "index",
                "build",
                "--docs",
                "docs-ok.jsonl",
                "--out",
                "notes",
            ]),
            s(&["notes", "not a kiln retrieval index"]),
        ),
        (
            s(&["index", "query", "no-index", "P0300"]),
            s(&["no-index", "no such index folder"]),
        ),
        (s(&["index", "query", "notes", "P0300"]), s(&["meta.json"])),
        (
            s(&[
                "generate",
                "--model",
                "tiny-model",
                "--rag",
                "no-index",
                "--prompt",
                "code",
            ]),
            s(&["no-index"]),
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
