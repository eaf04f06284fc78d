//! `kiln train --nodes 2`: two processes over loopback train the adapter one process trains on
//! the combined batch; killing a node stops the other with a message, and the last checkpoint
//! resumes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

const DIST_RECIPE: &str = r#"
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
target_modules = ["q_proj", "v_proj", "down_proj"]

[optimizer]
lr = 1e-2

[schedule]
kind = "constant"

[fit]
batch_size = 4
grad_accum_steps = 2
max_steps = 6
checkpoint_every = 2
output_dir = "run"
progress = false
plot = false
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node(dir: &Path, rank: usize, port: u16, extra: &[&str]) -> Child {
    let coordinator = format!("127.0.0.1:{port}");
    let rank = rank.to_string();
    let mut args = vec![
        "train",
        "recipe.toml",
        "--nodes",
        "2",
        "--node-rank",
        &rank,
        "--coordinator",
        &coordinator,
        "--peer-timeout",
        "60",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(&args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> (bool, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every tensor of a safetensors file, as `f32` values.
/// Waits (at most 120 s) for the folder `checkpoint`, kills `victim` and returns how
/// `survivor` ended: whether it succeeded, its stderr, and how long after the kill it stopped.
fn kill_after(checkpoint: &Path, victim: &mut Child, survivor: Child) -> (bool, String, Duration) {
    let start = Instant::now();
    while !checkpoint.is_dir() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {}",
            checkpoint.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    victim.kill().unwrap();
    let killed_at = Instant::now();
    let (ok, _, err) = finish(survivor);
    let took = killed_at.elapsed();
    let _ = victim.wait();
    (ok, err, took)
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect()
}

fn assert_same_adapter(a: &Path, b: &Path) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, x) in &a {
        let y = &b[name];
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff <= 1e-5 * scale, "{name}: {diff} of {scale}");
    }
}

#[test]
fn two_nodes_over_loopback_train_as_one_and_a_dead_node_stops_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    write_data(dir);
    std::fs::write(dir.join("recipe.toml"), DIST_RECIPE).unwrap();

    // One process on the combined batch.
    ok(
        &["train", "recipe.toml", "--set", "fit.output_dir=\"one\""],
        dir,
    );

    // Two processes, node 1 started first (it waits for node 0's coordinator).
    let port = free_port();
    let set = ["--set", "fit.output_dir=\"two\""];
    let second = node(dir, 1, port, &set);
    let first = node(dir, 0, port, &set);
    let (ok0, out0, err0) = finish(first);
    let (ok1, out1, err1) = finish(second);
    assert!(ok0 && ok1, "node 0:\n{err0}\nnode 1:\n{err1}");
    assert!(out0.contains("# Training run"), "{out0}");
    assert!(out1.is_empty(), "node 1 prints no report: {out1}");
    assert!(err1.contains("node 0 wrote"), "{err1}");
    assert!(err0.contains("all-reduce calls"), "{err0}");
    assert_same_adapter(
        &dir.join("one/adapter/adapter_model.safetensors"),
        &dir.join("two/adapter/adapter_model.safetensors"),
    );
    // Node 0 alone wrote the log: each step once.
    let log = std::fs::read_to_string(dir.join("two/metrics.jsonl")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\"step\"")).count(),
        6,
        "{log}"
    );

    // Flags that do not make a group are refused before anything runs.
    let err = fails(&["train", "recipe.toml", "--nodes", "2"], dir);
    assert!(err.contains("--coordinator"), "{err}");
    let err = fails(
        &[
            "train",
            "recipe.toml",
            "--nodes",
            "2",
            "--node-rank",
            "2",
            "--coordinator",
            "127.0.0.1:1",
        ],
        dir,
    );
    assert!(
        err.contains("--node-rank 2 is not below --nodes 2"),
        "{err}"
    );

    // A recipe node 0 cannot share out is refused on both nodes before training.
    let port = free_port();
    let set = [
        "--set",
        "fit.output_dir=\"bad\"",
        "--set",
        "fit.grad_accum_steps=1",
    ];
    let (second, first) = (node(dir, 1, port, &set), node(dir, 0, port, &set));
    let (ok0, _, err0) = finish(first);
    let (ok1, _, err1) = finish(second);
    println!("refused:\nnode 0: {err0}\nnode 1: {err1}");
    assert!(!ok0 && !ok1);
    assert!(err0.contains("grad_accum_steps"), "{err0}");
    assert!(
        err1.contains("grad_accum_steps") || err1.contains("node 0"),
        "{err1}"
    );

    // A long run; node 1 dies once the second checkpoint is written.
    let port = free_port();
    let set = [
        "--set",
        "fit.output_dir=\"killed\"",
        "--set",
        "fit.max_steps=2000",
        "--set",
        "fit.save_total_limit=2",
    ];
    let mut second = node(dir, 1, port, &set);
    let first = node(dir, 0, port, &set);
    let ckpts = dir.join("killed/checkpoints");
    let (ok0, err0, took) = kill_after(&ckpts.join("checkpoint-4"), &mut second, first);
    println!("node 0 after node 1 died ({took:?}):\n{err0}");
    assert!(!ok0, "node 0 must fail when node 1 dies");
    assert!(err0.contains("node 1 closed the connection"), "{err0}");
    assert!(
        took < Duration::from_secs(30),
        "node 0 took {took:?} to fail"
    );

    // Node 0 (and its coordinator) dies instead: node 1 stops with a message.
    let port = free_port();
    let set = [
        "--set",
        "fit.output_dir=\"coordinator-killed\"",
        "--set",
        "fit.max_steps=2000",
    ];
    let second = node(dir, 1, port, &set);
    let mut first = node(dir, 0, port, &set);
    let ckpt = dir.join("coordinator-killed/checkpoints/checkpoint-2");
    let (ok1, err1, took) = kill_after(&ckpt, &mut first, second);
    println!("node 1 after node 0 died ({took:?}):\n{err1}");
    assert!(!ok1, "node 1 must fail when node 0 dies");
    assert!(
        err1.contains("coordinator at 127.0.0.1") && err1.contains("closed the connection"),
        "{err1}"
    );
    assert!(
        took < Duration::from_secs(30),
        "node 1 took {took:?} to fail"
    );

    // The last checkpoint resumes, in one process.
    let newest = std::fs::read_dir(&ckpts)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("checkpoint-")?.parse::<usize>().ok()
        })
        .max()
        .unwrap();
    assert!((4..2000).contains(&newest), "{newest}");
    ok(
        &[
            "train",
            "recipe.toml",
            "--resume",
            "--set",
            "fit.output_dir=\"killed\"",
            "--set",
            "fit.max_steps=2000",
            "--set",
            "fit.save_total_limit=2",
        ],
        dir,
    );
    let summary = std::fs::read_to_string(dir.join("killed/run_summary.json")).unwrap();
    assert!(
        summary.contains(&format!("checkpoint-{newest}\"")),
        "{summary}"
    );
    assert!(summary.contains("\"steps\": 2000"), "{summary}");
}
