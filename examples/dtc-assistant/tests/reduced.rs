//! The main job, reduced to two codes (about two minutes on a 2-core CPU): the tuned model
//! must answer the unseen phrasings of its trained codes better than the base model does, and
//! the reports must hold every system and test set. Skips without the real assets
//! (`./scripts/fetch-assets.sh`).
//!
//! With `KILN_PEFT_PYTHON` (a Python with torch, transformers and peft, as
//! `scripts/python-reference.sh` makes), the adapter this run trained is also loaded by Python
//! PEFT on the same GGUF base, and its greedy answers to the unseen phrasings must equal the
//! tuned model's answers here (`scripts/peft_generate.py`).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn reduced_main_job_tuned_beats_base() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let assets = [
        "assets/obd/codes.py",
        "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "assets/all-MiniLM-L6-v2",
    ];
    if let Some(missing) = assets.iter().find(|a| !root.join(a).exists()) {
        eprintln!("skipped: {missing} is missing (run ./scripts/fetch-assets.sh)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_kiln-example-dtc-assistant"))
        .current_dir(&root)
        .args(["--codes", "2", "--variants", "0", "--unknown-codes", "1"])
        .args([
            "--grounded-codes",
            "2",
            "--test-cases",
            "4",
            "--few-shot",
            "2",
            "--validation-unseen",
            "8",
            "--validation-trained",
            "4",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "main job failed: {stderr}");
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    assert!(
        summary.contains("Perplexity on general text: base "),
        "{summary}"
    );

    let cmp: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("comparison.json")).unwrap())
            .unwrap();
    let rows = cmp["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 15, "5 systems x 3 test sets");
    let score = |system: &str, set: &str, metric: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| r["system"] == system && r["set"] == set)
            .unwrap_or_else(|| panic!("no row for {system} on {set}"));
        assert_eq!(
            row["answers"].as_array().unwrap().len(),
            4,
            "{system} {set}"
        );
        row["scores"][metric].as_f64().unwrap()
    };
    for (metric, margin) in [("exact_match", 0.0), ("token_f1", 0.3)] {
        let base = score("base_zero_shot", "phrasing", metric);
        let tuned = score("tuned", "phrasing", metric);
        assert!(
            tuned > base + margin,
            "{metric} on unseen phrasings: tuned {tuned} vs base {base}\n{summary}"
        );
    }
    // Validation: questions about untrained codes with the retrieved passages, then questions
    // about the trained codes without.
    let validation = std::fs::read_to_string(out.path().join("data/validation.jsonl")).unwrap();
    let prompts: Vec<String> = validation
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["prompt"].to_string())
        .collect();
    assert_eq!(prompts.len(), 8 + 4, "{validation}");
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(p.contains("Reference information:"), i < 8, "{p}");
    }
    for key in ["perplexity_base", "perplexity_tuned"] {
        let p = cmp[key].as_f64().unwrap();
        assert!(p.is_finite() && p > 1.0, "{key} = {p}");
    }
    eprintln!("{summary}");

    if let Some(python) = std::env::var_os("KILN_PEFT_PYTHON") {
        answers_equal_in_python_peft(&root, out.path(), rows, &python);
    }
}

/// The tuned model's answers to the unseen phrasings, from PEFT on the same base.
fn answers_equal_in_python_peft(root: &Path, out: &Path, rows: &[Value], python: &OsStr) {
    let row = rows
        .iter()
        .find(|r| r["system"] == "tuned" && r["set"] == "phrasing")
        .unwrap();
    let lines = |key: &str| -> String {
        row[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{}\n", v.as_str().unwrap().replace('\n', " ")))
            .collect()
    };
    let (prompts, expected) = (out.join("prompts.txt"), out.join("kiln_answers.txt"));
    std::fs::write(&prompts, lines("prompts")).unwrap();
    std::fs::write(&expected, lines("answers")).unwrap();
    // The recipe's system message and the example's answer settings (32 new tokens, stop at a
    // new line).
    let check = Command::new(python)
        .current_dir(root)
        .arg("scripts/peft_generate.py")
        .args(["--gguf", "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"])
        .arg("--adapter")
        .arg(out.join("adapter"))
        .arg("--prompts")
        .arg(&prompts)
        .arg("--expected")
        .arg(&expected)
        .args(["--system", "You are a car diagnostics assistant."])
        .args(["--max-new-tokens", "32", "--stop-at-newline"])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success() && report.contains("4/4 answers identical"),
        "PEFT's answers differ from kiln's:\n{report}"
    );
    eprintln!("{report}");
}
