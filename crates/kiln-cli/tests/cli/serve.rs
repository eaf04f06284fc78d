//! `kiln serve` over HTTP on a loopback port: answers equal `kiln generate`'s for the same
//! adapter (requests for different adapters decoding in one batch), streaming, the error cases,
//! the limits, feedback, and shutdown that loses no request in flight.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{ok, tiny_model};

/// A LoRA adapter with deterministic pseudo-random factors on `targets`, each `(module, d_in,
/// d_out)` for every one of `layers`, written in PEFT's format.
fn random_lora(
    dir: &Path,
    layers: usize,
    targets: &[(&str, usize, usize)],
    seed: u64,
    size: f32,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let r = 4;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * size
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for l in 0..layers {
        for &(module, d_in, d_out) in targets {
            let prefix = if module == "lm_head" {
                "base_model.model.lm_head".to_string()
            } else {
                let group =
                    if module.ends_with("_proj") && ["q", "k", "v", "o"].contains(&&module[..1]) {
                        "self_attn"
                    } else {
                        "mlp"
                    };
                format!("base_model.model.model.layers.{l}.{group}.{module}")
            };
            if module == "lm_head" && l > 0 {
                continue;
            }
            for (name, shape) in [("lora_A", vec![r, d_in]), ("lora_B", vec![d_out, r])] {
                let n: usize = shape.iter().product();
                let bytes: Vec<u8> = (0..n).flat_map(|_| next().to_le_bytes()).collect();
                tensors.push((format!("{prefix}.{name}.weight"), shape, bytes));
            }
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("adapter_model.safetensors")).unwrap();
    let modules: Vec<&str> = targets.iter().map(|t| t.0).collect();
    let config = json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false, "use_dora": false,
        "use_rslora": false, "target_modules": modules, "base_model_name_or_path": "base",
    });
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    dir.to_path_buf()
}

/// A running `kiln serve` and its base URL; killed when dropped.
struct Served {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Served {
    fn start(args: &[&str], cwd: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("serve")
            .args(args)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(u) = line.strip_prefix("listening on ") {
                url = Some(u.to_string());
                break;
            }
        }
        let Some(url) = url else {
            let _ = child.wait();
            panic!("kiln serve did not start:\n{}", log.lock().unwrap());
        };
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Self { child, url, log }
    }

    fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        let client = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()
            .unwrap();
        let mut req = client.post(format!("{}{path}", self.url)).json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// A streamed request: the `data:` payloads before `[DONE]`, and whether `[DONE]` came.
    fn stream(&self, path: &str, key: Option<&str>, body: &Value) -> (Vec<Value>, bool) {
        let mut body = body.clone();
        body["stream"] = json!(true);
        let client = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()
            .unwrap();
        let mut req = client.post(format!("{}{path}", self.url)).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let text = resp.text().unwrap();
        let mut chunks = Vec::new();
        let mut done = false;
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
            } else {
                chunks.push(serde_json::from_str(data).unwrap());
            }
        }
        (chunks, done)
    }

    fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::blocking::get(format!("{}{path}", self.url)).unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name` (with its labels) in a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{name} missing:\n{page}"))
}

/// `kiln generate`'s answer, one at a time, to each prompt with each model (`None`: the base
/// alone), as `(model name, prompt, answer)`.
fn generate_each<'a>(
    dir: &Path,
    model: &str,
    chat: bool,
    models: &[(&'a str, Option<&Path>)],
    prompts: &[&'a str],
    max_new: usize,
) -> Vec<(&'a str, &'a str, String)> {
    let n = max_new.to_string();
    let mut expected = Vec::new();
    for &(name, adapter) in models {
        for &p in prompts {
            let mut args = vec!["generate", "--model", model, "--prompt", p];
            args.extend(["--max-new-tokens", n.as_str()]);
            if chat {
                args.push("--chat");
            }
            if let Some(ad) = adapter {
                args.extend(["--adapter", ad.to_str().unwrap()]);
            }
            expected.push((name, p, generated(&ok(&args, dir))));
        }
    }
    expected
}

/// Sends one request per expected answer, all at once (a thread each, so that they decode
/// together), checks that each gets its expected answer, and returns the responses.
fn all_at_once(
    server: &Arc<Served>,
    path: &'static str,
    key: Option<&'static str>,
    expected: &[(&str, &str, String)],
    body: impl Fn(&str, &str) -> Value,
) -> Vec<Value> {
    let handles: Vec<_> = expected
        .iter()
        .map(|(name, p, _)| {
            let s = Arc::clone(server);
            let body = body(name, p);
            std::thread::spawn(move || s.post(path, key, &body))
        })
        .collect();
    expected
        .iter()
        .zip(handles)
        .map(|((name, p, want), h)| {
            let (status, v) = h.join().unwrap();
            assert_eq!(status, 200, "{v}");
            assert_eq!(&answer(&v), want, "model {name}, prompt {p:?}");
            v
        })
        .collect()
}

/// The text `kiln generate` printed for one prompt (its trailing newline removed).
fn generated(stdout: &str) -> String {
    stdout.strip_suffix('\n').unwrap_or(stdout).to_string()
}

/// The answer text of a response.
fn answer(v: &Value) -> String {
    let c = &v["choices"][0];
    c["message"]["content"]
        .as_str()
        .or(c["text"].as_str())
        .unwrap_or_else(|| panic!("no answer in {v}"))
        .to_string()
}

/// The streamed text of a response's chunks.
fn streamed(chunks: &[Value]) -> String {
    chunks
        .iter()
        .map(|c| {
            let ch = &c["choices"][0];
            ch["delta"]["content"]
                .as_str()
                .or(ch["text"].as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// On the tiny Llama fixture: greedy completions of the base and two LoRA adapters (one with an
/// update on the output head), sent together so they decode in one batch, equal `kiln
/// generate --adapter`'s; streaming; every error case; the bearer key; metrics.
#[test]
fn serve_on_the_tiny_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    let a = random_lora(
        &dir.join("a"),
        2,
        &[("q_proj", 32, 32), ("v_proj", 32, 16)],
        1,
        0.5,
    );
    let b = random_lora(
        &dir.join("b"),
        2,
        &[
            ("o_proj", 32, 32),
            ("down_proj", 64, 32),
            ("lm_head", 32, 96),
        ],
        2,
        0.5,
    );
    let prompts = [
        "code P0300 means :",
        "P0171 ?",
        "code P0420 :",
        "system too",
    ];
    let max_new = 12;
    let models = [
        ("tiny", None),
        ("a", Some(a.as_path())),
        ("b", Some(b.as_path())),
    ];
    let expected = generate_each(dir, "tiny-model", false, &models, &prompts, max_new);
    let distinct: std::collections::BTreeSet<&str> =
        expected.iter().map(|e| e.2.as_str()).collect();
    assert!(
        distinct.len() > 4,
        "the adapters change the answers: {expected:?}"
    );
    let key = "s3cret";
    let server = Served::start(
        &[
            "--model",
            "tiny-model",
            "--name",
            "tiny",
            "--adapter",
            &format!("a={}", a.display()),
            "--adapter",
            &format!("b={}", b.display()),
            "--api-key",
            key,
        ],
        dir,
    );
    assert!(
        server.log().contains("continuous batching"),
        "{}",
        server.log()
    );
    let (status, health) = server.get("/health");
    assert_eq!(status, 200, "{health}");
    // Every request at once, from its own thread.
    let server = Arc::new(server);
    let answers = all_at_once(
        &server,
        "/v1/completions",
        Some(key),
        &expected,
        |name, p| json!({"model": name, "prompt": p, "max_tokens": max_new, "temperature": 0}),
    );
    for ((name, _, _), v) in expected.iter().zip(answers) {
        assert_eq!(v["model"], json!(name));
        assert_eq!(v["object"], "text_completion");
        let usage = &v["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        );
    }
    // Streaming gives the same text, then [DONE].
    for (name, p, want) in expected.iter().step_by(3) {
        let body = json!({"model": name, "prompt": p, "max_tokens": max_new, "temperature": 0});
        let (chunks, done) = server.stream("/v1/completions", Some(key), &body);
        assert!(done, "no [DONE] for {name}");
        assert_eq!(&streamed(&chunks), want, "streamed, model {name}");
        let last = chunks.last().unwrap();
        assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    }
    check_stop(&server, Some(key), &expected, max_new);
    // The models.
    let client = reqwest::blocking::Client::new();
    let models: Value = client
        .get(format!("{}/v1/models", server.url))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "a", "b"]);
    // Errors: status, and OpenAI's error object naming the field.
    let good = json!({"model": "a", "prompt": "P0300 ?", "max_tokens": 4});
    let (status, v) = server.post("/v1/completions", None, &good);
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let (status, v) = server.post(
        "/v1/completions",
        Some(key),
        &json!({"model": "nope", "prompt": "P0300"}),
    );
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"));
    let (status, v) = server.post(
        "/v1/completions",
        Some(key),
        &json!({"prompt": "P0300", "temperature": 7}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "temperature");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (status, v) = server.post(
        "/v1/completions",
        Some(key),
        &json!({"prompt": "code P0300 means :", "max_tokens": 200}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("128") && msg.contains("200"), "{msg}");
    let long = "code ".repeat(130);
    let (status, v) = server.post("/v1/completions", Some(key), &json!({"prompt": long}));
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        (&v["error"]["code"], &v["error"]["param"]),
        (&json!("context_length_exceeded"), &json!("prompt"))
    );
    let resp = client
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{v}"
    );
    let (status, v) = server.post(
        "/v1/completions",
        Some(key),
        &json!({"prompt": "P0300", "max_tokens": "many"}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "max_tokens", "{v}");
    // Feedback is off without --feedback.
    let (status, _) = server.post("/v1/feedback", Some(key), &json!({"id": "x", "rating": 1}));
    assert_eq!(status, 404);
    // Metrics count what happened.
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    let value = |name: &str| metric(&metrics, name);
    assert!(value("kiln_requests_total{endpoint=\"completions\"}") >= 17.0);
    assert_eq!(value("kiln_request_errors_total{status=\"401\"}"), 1.0);
    assert!(value("kiln_generated_tokens_total") > 0.0);
    assert!(value("kiln_time_to_first_token_seconds_count") >= 16.0);
    assert_eq!(value("kiln_queue_depth"), 0.0);
}

/// On SmolLM2 (the fetched assets): chat answers of the base and two adapters, decoded
/// together, equal `kiln generate --chat`'s; a full queue answers 429; feedback writes
/// preference pairs; SIGTERM lets the request in flight finish, then the server exits.
#[test]
fn serve_on_the_assets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gguf = root.join("assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        println!(
            "skipped: {} is missing (run scripts/fetch-assets.sh)",
            gguf.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = random_lora(
        &dir.join("a"),
        30,
        &[("q_proj", 576, 576), ("v_proj", 576, 192)],
        3,
        0.05,
    );
    let b = random_lora(&dir.join("b"), 30, &[("up_proj", 576, 1536)], 4, 0.05);
    let questions = ["What does P0300 mean?", "Name a primary color."];
    let max_new = 16;
    let model = gguf.to_str().unwrap();
    let models = [
        ("smol", None),
        ("a", Some(a.as_path())),
        ("b", Some(b.as_path())),
    ];
    let expected = generate_each(dir, model, true, &models, &questions, max_new);
    let distinct: std::collections::BTreeSet<&str> =
        expected.iter().map(|e| e.2.as_str()).collect();
    assert!(
        distinct.len() >= 4,
        "the adapters change the answers: {expected:?}"
    );
    let server = Served::start(
        &[
            "--model",
            model,
            "--name",
            "smol",
            "--adapter",
            &format!("a={}", a.display()),
            "--adapter",
            &format!("b={}", b.display()),
            "--max-concurrent",
            "6",
            "--max-queue",
            "0",
            "--feedback",
            "pairs.jsonl",
        ],
        dir,
    );
    let server = Arc::new(server);
    let answers = all_at_once(
        &server,
        "/v1/chat/completions",
        None,
        &expected,
        |name, q| {
            json!({"model": name, "temperature": 0, "max_tokens": max_new,
            "messages": [{"role": "user", "content": q}]})
        },
    );
    let ids: Vec<String> = answers
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    // They were decoded together: more sequences advanced than steps were run.
    let (_, m) = server.get("/metrics");
    let counter = |name: &str| metric(&m, name);
    let (steps, rows) = (
        counter("kiln_decode_steps_total"),
        counter("kiln_decode_rows_total"),
    );
    assert!(
        rows > 1.5 * steps,
        "mean batch {rows} / {steps}: the requests did not share steps"
    );
    // Streaming equals the whole answer.
    let body = json!({"model": "a", "temperature": 0, "max_tokens": max_new,
        "messages": [{"role": "user", "content": questions[0]}]});
    let (chunks, done) = server.stream("/v1/chat/completions", None, &body);
    assert!(done);
    assert_eq!(streamed(&chunks), expected[2].2);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // Feedback: a preferred answer, and two opposite ratings of answers to one prompt.
    let (status, v) = server.post(
        "/v1/feedback",
        None,
        &json!({"id": ids[0], "preferred": "A random or multiple cylinder misfire."}),
    );
    assert_eq!((status, &v["pairs_written"]), (200, &json!(1)), "{v}");
    let (status, v) = server.post(
        "/v1/feedback",
        None,
        &json!({"id": "chatcmpl-999", "rating": 1}),
    );
    assert_eq!(status, 404, "{v}");
    let (status, v) = server.post("/v1/feedback", None, &json!({"id": ids[0], "rating": 5}));
    assert_eq!(
        (status, &v["error"]["param"]),
        (400, &json!("rating")),
        "{v}"
    );
    let pairs = std::fs::read_to_string(dir.join("pairs.jsonl")).unwrap();
    let pair: Value = serde_json::from_str(pairs.lines().next().unwrap()).unwrap();
    assert_eq!(pair["prompt"][0]["content"], questions[0]);
    assert_eq!(pair["rejected"][0]["content"], json!(expected[0].2));
    assert_eq!(
        pair["chosen"][0]["content"],
        "A random or multiple cylinder misfire."
    );
    // Six slots and no queue: six long requests hold every place, the seventh gets 429.
    let long = |i: usize| {
        json!({"model": "smol", "temperature": 0, "max_tokens": 160, "ignore_eos": true,
            "messages": [{"role": "user", "content": format!("Count to {}.", 100 + i)}]})
    };
    let holders: Vec<_> = (0..6)
        .map(|i| {
            let s = Arc::clone(&server);
            let body = long(i);
            std::thread::spawn(move || s.stream("/v1/chat/completions", None, &body))
        })
        .collect();
    // Wait until all six decode.
    let t0 = std::time::Instant::now();
    loop {
        let (_, m) = server.get("/metrics");
        if m.lines().any(|l| l == "kiln_running_requests 6") {
            break;
        }
        assert!(t0.elapsed().as_secs() < 120, "six requests never ran:\n{m}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, v) = server.post("/v1/chat/completions", None, &long(7));
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // SIGTERM while they decode: each still ends with its full answer and [DONE].
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    for h in holders {
        let (chunks, done) = h.join().unwrap();
        assert!(done, "a request in flight lost its end");
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["completion_tokens"], 160, "{usage}");
    }
    let mut server = Arc::into_inner(server).expect("the only handle");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit {exit:?}:\n{}", server.log());
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

/// An adapter the batched decoder does not compute (IA3, the committed PEFT fixture): the
/// server says so and serves one request at a time through `generate`, with the same answers
/// as `kiln generate`; a stop string cuts the answer where it begins.
#[test]
fn serve_one_at_a_time_for_other_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    tiny_model(dir);
    let ia3 =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-models/tests/fixtures/peft/llama-ia3");
    let prompts = ["code P0300 means :", "P0171 ?"];
    let models = [("tiny", None), ("ia3", Some(ia3.as_path()))];
    let expected = generate_each(dir, "tiny-model", false, &models, &prompts, 16);
    let server = Served::start(
        &[
            "--model",
            "tiny-model",
            "--name",
            "tiny",
            "--adapter",
            &format!("ia3={}", ia3.display()),
        ],
        dir,
    );
    assert!(
        server.log().contains("one request at a time"),
        "{}",
        server.log()
    );
    let server = Arc::new(server);
    all_at_once(
        &server,
        "/v1/completions",
        None,
        &expected,
        |name, p| json!({"model": name, "prompt": p, "max_tokens": 16, "temperature": 0}),
    );
    let (chunks, done) = server.stream(
        "/v1/completions",
        None,
        &json!({"model": "ia3", "prompt": prompts[0], "max_tokens": 16, "temperature": 0}),
    );
    assert!(done);
    assert_eq!(streamed(&chunks), expected[2].2);
    check_stop(&server, None, &expected, 16);
}

/// A stop string (the second word) taken from one of the `expected` answers (model, prompt,
/// answer of `max_tokens` tokens) cuts it where it begins, streamed or not.
fn check_stop(
    server: &Served,
    key: Option<&str>,
    expected: &[(&str, &str, String)],
    max_tokens: usize,
) {
    let (full_name, full_prompt, full) = expected
        .iter()
        .find(|e| e.2.split_whitespace().count() >= 2)
        .unwrap_or_else(|| panic!("no answer of two words: {expected:?}"));
    let stop = format!(" {}", full.split_whitespace().nth(1).unwrap());
    let cut = &full[..full.find(&stop).unwrap()];
    for stream in [false, true] {
        let body = json!({"model": full_name, "prompt": full_prompt, "max_tokens": max_tokens,
            "temperature": 0, "stop": [stop]});
        let got = if stream {
            let (chunks, done) = server.stream("/v1/completions", key, &body);
            assert!(done);
            assert_eq!(
                chunks.last().unwrap()["choices"][0]["finish_reason"],
                "stop"
            );
            streamed(&chunks)
        } else {
            let (status, v) = server.post("/v1/completions", key, &body);
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["choices"][0]["finish_reason"], "stop");
            answer(&v)
        };
        assert_eq!(got, cut, "stop {stop:?} in {full:?}, streamed: {stream}");
    }
}
