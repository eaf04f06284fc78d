//! End-to-end behaviour of training runs on a tiny Llama with LoRA, on the flex CPU backend.

mod common;

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use kiln_data::{TokenBatch, TokenizedExample};
use kiln_models::{GenerationConfig, LlamaForCausalLM};
use kiln_nn::AdapterTarget;
use kiln_peft::{LoraConfig, attach_lora};
use kiln_train::harness::{EvalCase, HarnessConfig, compare_models, generation_metrics};
use kiln_train::{
    AdapterExporter, Callback, CheckpointManager, EarlyStopping, Fit, FitConfig, LogRecord,
    OptimizerConfig, Schedule, StopReason, Trainer, evaluate, files,
};

/// Dropout draws from the backend's process-wide RNG, which every run reseeds per step: runs in
/// parallel test threads would interleave their draws.
static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn model(dropout: f64) -> LlamaForCausalLM {
    let device = device();
    let config = common::tiny_llama();
    let model = config.init(11, &device);
    let lora = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        lora_dropout: dropout,
        target_modules: ["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    attach_lora(model, &lora, 5, &device).unwrap().0
}

/// Toy task: after `[1, x]`, continue counting `x+1, x+2, x+3` then end with 2.
fn counting(range: std::ops::Range<u32>) -> Vec<TokenizedExample> {
    range
        .map(|x| TokenizedExample::prompt_completion(&[1, x], &[x + 1, x + 2, x + 3, 2]))
        .collect()
}

fn trainer(config: &FitConfig, n: usize, opt: OptimizerConfig) -> Trainer {
    let schedule = Schedule::Cosine {
        warmup_steps: 2,
        total_steps: config.total_steps(n),
    };
    Trainer::new(opt, schedule, &device()).unwrap()
}

fn lr(lr: f64) -> OptimizerConfig {
    OptimizerConfig {
        lr,
        ..Default::default()
    }
}

#[test]
fn lora_learns_the_counting_task_and_writes_logs() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let train = counting(3..27);
    // Unseen start tokens cannot be predicted from a random base, so the validation examples
    // come from the task's seen range: evaluation measures how well the run fits it.
    let val = counting(10..12);
    let config = FitConfig {
        batch_size: 8,
        epochs: 40,
        eval_every: Some(30),
        output_dir: Some(dir.path().into()),
        progress: false,
        ..Default::default()
    };
    // Test prompts for the evaluation harness (and, on a sample, during training).
    let cases: Vec<EvalCase> = (3..27)
        .step_by(3)
        .map(|x| EvalCase {
            prompt: vec![1, x],
            prompt_text: format!("1 {x}"),
            reference: format!("{} {} {}", x + 1, x + 2, x + 3),
        })
        .collect();
    let general: Vec<TokenizedExample> = (0..4)
        .map(|i| TokenizedExample::full(&[1, 30 - i, 20 + i, 9, 4 + i, 2]))
        .collect();
    let harness = HarnessConfig {
        generation: GenerationConfig {
            max_new_tokens: 4,
            eos_token_ids: vec![2],
            ..Default::default()
        },
        ..Default::default()
    };
    let decode = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    let sample = &cases[..3];
    let mut hook = generation_metrics(sample, &harness, &decode);
    let mut t = trainer(&config, train.len(), lr(3e-2));
    let out = Fit::new(config, &train)
        .validation(&val)
        .eval_hook(&mut hook)
        .run(model(0.0), &mut t)
        .unwrap();
    let s = &out.summary;
    assert_eq!(s.steps, 120);
    assert_eq!(s.stop_reason, StopReason::Completed);
    // Random init over 32 tokens starts near ln 32 = 3.47; the task is learnable well below 0.2.
    assert!(s.losses[0] > 2.5, "first loss {}", s.losses[0]);
    let last = s.final_loss.unwrap();
    assert!(last < 0.2, "final training loss {last}: {:?}", s.losses);
    let eval = s.last_eval.unwrap();
    assert!(eval.loss < 0.2, "validation loss {}", eval.loss);
    assert!((eval.perplexity - eval.loss.exp()).abs() < 1e-9);
    assert_eq!(eval.tokens, 2 * 4);

    // One JSONL line per step and per evaluation (steps 30, 60, 90, 120).
    let text = std::fs::read_to_string(dir.path().join(files::METRICS)).unwrap();
    let records: Vec<LogRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let evals: Vec<&kiln_train::EvalLog> = records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Eval(e) => Some(e),
            LogRecord::Step(_) => None,
        })
        .collect();
    // Generation-based metrics on the sample, logged with each evaluation: they improve to
    // every answer right.
    let em: Vec<f64> = evals.iter().map(|e| e.extra["exact_match"]).collect();
    assert!(em[0] < em[3], "{em:?}");
    assert_eq!(em[3], 1.0, "{em:?}");
    let evals: Vec<usize> = evals.iter().map(|e| e.step).collect();
    assert_eq!(records.len(), 124);
    assert_eq!(evals, vec![30, 60, 90, 120]);
    let png = std::fs::read(dir.path().join(files::CURVES)).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(files::SUMMARY)).unwrap()).unwrap();
    assert_eq!(summary["steps"], 120);
    println!(
        "losses {:?}\nval {:?}, {:.0} tokens/s",
        s.losses, eval, s.tokens_per_sec
    );

    // Evaluation harness: the tuned model answers the task, the base model (same LoRA init,
    // B = 0, so the untouched base) does not; forgetting is measured on other sequences.
    let report = compare_models(
        &model(0.0),
        &out.model,
        &cases,
        Some(&general),
        &harness,
        &decode,
    )
    .unwrap();
    println!("{}", report.to_markdown());
    assert!(
        report.tuned.scores.exact_match >= 0.75,
        "{:?}",
        report.tuned
    );
    assert!(report.base.scores.exact_match < report.tuned.scores.exact_match);
    assert!(report.forgetting.is_some());
    let (md, json) = report.write(&dir.path().join("report")).unwrap();
    assert!(
        std::fs::read_to_string(md)
            .unwrap()
            .contains("| exact match |")
    );
    let back: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(back["cases"].as_array().unwrap().len(), cases.len());
}

/// Stops the run after a given step, like a killed process.
struct StopAt(usize);

impl Callback for StopAt {
    fn should_stop(&mut self, step: usize) -> bool {
        step >= self.0
    }
}

#[test]
fn resume_continues_the_exact_loss_curve() {
    let _rng = rng_lock();
    let train = counting(3..17);
    // Counting *down* from seen prompts: training makes it worse, so the best evaluation comes
    // before the interruption and keep-best must bring it back from the checkpoint.
    let val: Vec<TokenizedExample> = (5..8)
        .map(|x| TokenizedExample::prompt_completion(&[1, x], &[x - 1, x - 2, 2]))
        .collect();
    let config = |dir: &Path| FitConfig {
        batch_size: 3,
        grad_accum_steps: 2,
        epochs: 4,
        checkpoint_every: Some(3),
        eval_every: Some(2),
        keep_best: true,
        output_dir: Some(dir.into()),
        progress: false,
        plot: false,
        seed: 9,
        ..Default::default()
    };
    let opt = OptimizerConfig {
        max_grad_norm: Some(0.5),
        ..lr(1e-2).with_loraplus(4.0)
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let c = config(straight_dir.path());
    assert_eq!(c.total_steps(train.len()), 12);
    let mut t = trainer(&c, train.len(), opt.clone());
    let straight = Fit::new(c, &train)
        .validation(&val)
        .run(model(0.1), &mut t)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let mut t = trainer(&c, train.len(), opt.clone());
    let mut stop = StopAt(6);
    let first = Fit::new(c.clone(), &train)
        .validation(&val)
        .callback(&mut stop)
        .run(model(0.1), &mut t)
        .unwrap();
    assert_eq!(first.summary.stop_reason, StopReason::Callback);
    assert_eq!(first.summary.steps, 6);

    let mut t = trainer(&c, train.len(), opt);
    let second = Fit::new(FitConfig { resume: true, ..c }, &train)
        .validation(&val)
        .run(model(0.1), &mut t)
        .unwrap();
    assert!(
        second
            .summary
            .resumed_from
            .as_ref()
            .unwrap()
            .ends_with("checkpoint-6"),
        "{:?}",
        second.summary.resumed_from
    );
    assert_eq!(second.summary.steps, 12);
    let resumed: Vec<f32> = first
        .summary
        .losses
        .iter()
        .chain(&second.summary.losses)
        .copied()
        .collect();
    assert_eq!(resumed.len(), straight.summary.losses.len());
    // Bit for bit: both runs execute the same kernels in the same order on the same machine,
    // and the checkpoint restores every parameter, optimizer moment and float of the state
    // exactly.
    for (i, (a, b)) in straight.summary.losses.iter().zip(&resumed).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "step {i}: straight {a} vs resumed {b}"
        );
    }
    // The metrics log of the resumed run holds each step and evaluation once.
    let text = std::fs::read_to_string(dir.path().join(files::METRICS)).unwrap();
    assert_eq!(text.lines().count(), 12 + 6, "{text}");
    // Keep-best carries over the resume: same best step, same returned parameters.
    assert_eq!(second.summary.best, straight.summary.best);
    assert!(second.summary.restored_best);
    let a = evaluate(&straight.model, &val, 4, 0).unwrap();
    let b = evaluate(&second.model, &val, 4, 0).unwrap();
    assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{a:?} vs {b:?}");
    let best = straight.summary.best.unwrap();
    assert!(best.step <= 6, "best after the interruption: {best:?}");
    assert!((a.loss - best.value).abs() < 1e-5);
    println!(
        "straight {:?}\nresumed  {resumed:?}",
        straight.summary.losses
    );
}

#[test]
fn early_stopping_triggers_and_keep_best_restores_the_best_parameters() {
    let _rng = rng_lock();
    let train = counting(3..15);
    let val = counting(15..18);
    let dir = tempfile::tempdir().unwrap();
    let config = FitConfig {
        output_dir: Some(dir.path().into()),
        checkpoint_every: Some(1000),
        plot: false,
        batch_size: 4,
        epochs: 10,
        eval_every: Some(1),
        // A learning rate high enough to overshoot: validation loss soon stops improving.
        early_stopping: Some(EarlyStopping {
            patience: 2,
            min_delta: 0.05,
            ..Default::default()
        }),
        keep_best: true,
        progress: false,
        ..Default::default()
    };
    let mut t = trainer(&config, train.len(), lr(0.3));
    let mut evals = Recorder::default();
    let out = Fit::new(config.clone(), &train)
        .validation(&val)
        .callback(&mut evals)
        .run(model(0.0), &mut t)
        .unwrap();
    let s = &out.summary;
    println!("val losses {:?}", evals.0);
    assert_eq!(s.stop_reason, StopReason::EarlyStopped, "{:?}", evals.0);
    assert!(s.steps < config.total_steps(train.len()));
    // Stopped exactly `patience` evaluations after the best one.
    let best = s.best.unwrap();
    assert_eq!(s.steps, best.step + 2);
    let min = evals.0.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(best.value, min);
    assert!(s.restored_best);
    let again = evaluate(&out.model, &val, 4, 0).unwrap();
    assert!(
        (again.loss - best.value).abs() < 1e-5,
        "restored model evaluates to {} but the best was {}",
        again.loss,
        best.value
    );

    // The checkpoint written when it stopped resumes as stopped: no further step.
    let mut t = trainer(&config, train.len(), lr(0.3));
    let resumed = Fit::new(
        FitConfig {
            resume: true,
            ..config
        },
        &train,
    )
    .validation(&val)
    .run(model(0.0), &mut t)
    .unwrap();
    assert_eq!(resumed.summary.stop_reason, StopReason::EarlyStopped);
    assert_eq!(resumed.summary.steps, s.steps);
    assert!(resumed.summary.losses.is_empty());
    let again = evaluate(&resumed.model, &val, 4, 0).unwrap();
    assert!((again.loss - best.value).abs() < 1e-5);
}

#[derive(Default)]
struct Recorder(Vec<f64>);

impl Callback for Recorder {
    fn on_eval(&mut self, log: &kiln_train::EvalLog) {
        self.0.push(log.val_loss);
    }
}

/// Writes a partial file, then fails: a run killed in the middle of writing a checkpoint.
struct FailingExporter;

impl AdapterExporter<LlamaForCausalLM> for FailingExporter {
    fn export(
        &self,
        _model: &LlamaForCausalLM,
        dir: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        std::fs::write(dir.join("adapter_model.safetensors"), b"partial")?;
        Err("killed".into())
    }
}

/// Writes a file with the adapter's parameter count.
struct CountingExporter;

impl AdapterExporter<LlamaForCausalLM> for CountingExporter {
    fn export(
        &self,
        model: &LlamaForCausalLM,
        dir: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut n = 0;
        model.visit_linears(&mut |_, l| n += usize::from(l.lora.is_some()));
        std::fs::write(dir.join("adapters.txt"), n.to_string())?;
        Ok(())
    }
}

#[test]
fn checkpoints_are_atomic_rotated_and_survive_a_crash() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let train = counting(3..11);
    let config = FitConfig {
        batch_size: 4,
        epochs: 3,
        checkpoint_every: Some(2),
        save_total_limit: Some(2),
        output_dir: Some(dir.path().into()),
        progress: false,
        plot: false,
        ..Default::default()
    };
    let mut t = trainer(&config, train.len(), lr(1e-2));
    let mut stop = StopAt(4);
    let out = Fit::new(config.clone(), &train)
        .exporter(&CountingExporter)
        .callback(&mut stop)
        .run(model(0.0), &mut t)
        .unwrap();
    let ckpt_dir = dir.path().join(files::CHECKPOINTS);
    let manager = CheckpointManager::new(&ckpt_dir, Some(2)).unwrap();
    let steps: Vec<usize> = manager
        .checkpoints()
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, vec![2, 4]);
    let latest = manager.latest().unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(latest.join("adapters.txt")).unwrap(),
        "9"
    );
    let before: Vec<(String, Vec<u8>)> = files_of(&latest);

    // The next checkpoint dies half-written.
    let err = manager
        .save(
            &out.model,
            &t,
            &kiln_train::TrainerState {
                step: 6,
                ..CheckpointManager::read_state(&latest).unwrap()
            },
            Some(&FailingExporter),
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    assert!(ckpt_dir.join(".tmp-checkpoint-6").is_dir());
    assert_eq!(manager.latest().unwrap().unwrap(), latest);
    assert_eq!(
        files_of(&latest),
        before,
        "the published checkpoint changed"
    );

    // Resume ignores (and removes) the partial write and continues from step 4.
    let mut t = trainer(&config, train.len(), lr(1e-2));
    let resumed = Fit::new(
        FitConfig {
            resume: true,
            ..config
        },
        &train,
    )
    .run(model(0.0), &mut t)
    .unwrap();
    assert!(!ckpt_dir.join(".tmp-checkpoint-6").exists());
    assert!(
        resumed
            .summary
            .resumed_from
            .unwrap()
            .ends_with("checkpoint-4")
    );
    assert_eq!(resumed.summary.losses.len(), 2);
    let steps: Vec<usize> = manager
        .checkpoints()
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, vec![4, 6], "save_total_limit keeps the newest two");
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn accumulation_matches_one_big_batch() {
    // Examples with different lengths and label counts, so a mean of micro-batch means would
    // differ from the token-weighted mean.
    let examples = vec![
        TokenizedExample::prompt_completion(&[1, 5, 9, 3], &[7, 7, 2]),
        TokenizedExample::prompt_completion(&[1, 6], &[12, 13, 14, 15, 16, 2]),
        TokenizedExample::full(&[1, 20, 21, 22, 23, 24, 25, 2]),
        TokenizedExample::prompt_completion(&[1, 4, 4, 4, 4], &[8, 2]),
    ];
    let big = TokenBatch::pad_right(&examples, 0).unwrap();
    let micro = [
        TokenBatch::pad_right(&examples[..2], 0).unwrap(),
        TokenBatch::pad_right(&examples[2..], 0).unwrap(),
    ];
    let opt = OptimizerConfig {
        max_grad_norm: Some(0.05),
        ..lr(1e-2)
    };
    let schedule = Schedule::Constant { warmup_steps: 0 };
    let mut t_big = Trainer::new(opt.clone(), schedule, &device()).unwrap();
    let mut t_acc = Trainer::new(opt, schedule, &device()).unwrap();
    let (mut m_big, mut m_acc) = (model(0.0), model(0.0));
    for step in 0..3 {
        let (m, a) = t_big
            .train_step_accum(m_big, std::slice::from_ref(&big))
            .unwrap();
        m_big = m;
        let (m, b) = t_acc.train_step_accum(m_acc, &micro).unwrap();
        m_acc = m;
        println!("step {step}: big {a:?}\n        accum {b:?}");
        assert_eq!(a.loss_tokens, b.loss_tokens);
        assert_eq!(b.micro_batches, 2);
        assert!((a.loss - b.loss).abs() <= 1e-5 * a.loss, "{a:?} vs {b:?}");
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-4 * a.grad_norm,
            "{a:?} vs {b:?}"
        );
    }
}

/// Two parameters whose gradients are known: `d/dp sum(p * c) = c`.
#[derive(Module, Debug)]
struct Known {
    a: Param<Tensor<1>>,
    b: Param<Tensor<2>>,
}

fn known_grads(scale: f32) -> (Known, burn::optim::GradientsParams) {
    let device = device();
    let m = Known {
        a: Param::from_data([1.0, 2.0], &device),
        b: Param::from_data([[0.5], [0.25]], &device),
    };
    let ca = Tensor::<1>::from_data([3.0 * scale, 4.0 * scale], &device);
    let cb = Tensor::<2>::from_data([[12.0 * scale], [0.0]], &device);
    let loss = (m.a.val() * ca).sum() + (m.b.val() * cb).sum();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &m);
    (m, grads)
}

#[test]
fn clipping_matches_a_hand_computed_norm() {
    // ||(3, 4, 12, 0)|| = 13.
    let (m, mut grads) = known_grads(1.0);
    let norm = kiln_train::clip_grad_norm(&m, &mut grads, Some(6.5));
    assert!((norm - 13.0).abs() < 1e-6, "{norm}");
    let coef = 6.5 / (13.0 + 1e-6);
    let a: Vec<f32> = grads
        .get::<1>(m.a.id)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let b: Vec<f32> = grads
        .get::<2>(m.b.id)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let expect_a = [3.0 * coef, 4.0 * coef];
    for (g, e) in a.iter().zip(expect_a) {
        assert!((f64::from(*g) - e).abs() < 1e-6, "{a:?}");
    }
    assert!((f64::from(b[0]) - 12.0 * coef).abs() < 1e-6, "{b:?}");
    assert_eq!(b[1], 0.0);

    // Below the threshold nothing changes, as in PyTorch.
    let (m, mut grads) = known_grads(0.1);
    let norm = kiln_train::clip_grad_norm(&m, &mut grads, Some(6.5));
    assert!((norm - 1.3).abs() < 1e-6, "{norm}");
    let a: Vec<f32> = grads
        .get::<1>(m.a.id)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(a, vec![3.0f32 * 0.1, 4.0 * 0.1]);
}

#[test]
fn loraplus_scales_the_learning_rate_of_b() {
    // B starts at zero, so after one AdamW step |B| is the learning rate of B (Adam's first
    // update is ±lr wherever the gradient is not tiny).
    let batch = TokenBatch::pad_right(&counting(3..7), 0).unwrap();
    let max_b = |ratio: Option<f64>| {
        let mut opt = lr(1e-2);
        if let Some(r) = ratio {
            opt = opt.with_loraplus(r);
        }
        let mut t = Trainer::new(opt, Schedule::Constant { warmup_steps: 0 }, &device()).unwrap();
        let (m, _) = t.train_step(model(0.0), &batch).unwrap();
        let mut max = 0.0f32;
        m.visit_linears(&mut |_, l| {
            if let Some(lora) = &l.lora {
                let v: Vec<f32> = lora
                    .lora_b
                    .val()
                    .abs()
                    .max()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                max = max.max(v[0]);
            }
        });
        max
    };
    let plain = max_b(None);
    let plus = max_b(Some(4.0));
    assert!((plain - 1e-2).abs() < 1e-4, "{plain}");
    assert!((plus - 4e-2).abs() < 4e-4, "{plus}");
}

#[test]
fn search_tunes_lora_runs_and_prunes_bad_trials() {
    use kiln_train::search::{MedianPruner, Param, Sampler, SearchConfig, SearchSpace, search};
    let _rng = rng_lock();
    let train = counting(3..15);
    let val = counting(3..6);
    let mut space = SearchSpace::new();
    space.insert(
        "lr".into(),
        Param::LogUniform {
            low: 1e-4,
            high: 1e-1,
        },
    );
    space.insert(
        "r".into(),
        Param::Choice {
            values: vec![2.0, 8.0],
        },
    );
    let config = SearchConfig {
        trials: 6,
        seed: 1,
        sampler: Sampler::Tpe {
            startup_trials: 3,
            gamma: 0.34,
            candidates: 16,
        },
        direction: kiln_train::Direction::Minimize,
        pruner: Some(MedianPruner {
            warmup_evals: 1,
            min_trials: 2,
        }),
        metric: kiln_train::EvalMetric::ValLoss,
    };
    let report = search(&space, &config, |p, pruner| {
        let device = device();
        let base = common::tiny_llama().init(11, &device);
        let lora = LoraConfig {
            r: p["r"] as usize,
            lora_alpha: 2.0 * p["r"],
            target_modules: vec!["q_proj".into(), "v_proj".into(), "lm_head".into()],
            ..Default::default()
        };
        let (m, _) = attach_lora(base, &lora, 5, &device).unwrap();
        let fit = FitConfig {
            batch_size: 4,
            epochs: 4,
            eval_every: Some(3),
            progress: false,
            ..Default::default()
        };
        let mut t = trainer(&fit, train.len(), lr(p["lr"]));
        let out = Fit::new(fit, &train)
            .validation(&val)
            .callback(pruner)
            .run(m, &mut t)?;
        Ok(out.summary.last_eval.map_or(f64::NAN, |e| e.loss))
    })
    .unwrap();
    println!("{}", report.to_markdown());
    assert_eq!(report.trials.len(), 6);
    assert!(report.trials.iter().all(|t| t.error.is_none()));
    // The pruner, passed to Fit as a callback, stopped the trials behind the median.
    assert!(report.trials.iter().any(|t| t.pruned));
    let best = report.best_trial().unwrap();
    assert!(!best.pruned);
    let finished: Vec<f64> = report
        .trials
        .iter()
        .filter(|t| !t.pruned)
        .map(|t| t.value.unwrap())
        .collect();
    assert!(finished.iter().all(|v| *v >= best.value.unwrap()));
}

/// Preference pairs on the counting task: after `[1, x]` the chosen completion counts up, the
/// rejected one counts down.
fn counting_pairs(range: std::ops::Range<u32>) -> Vec<kiln_data::PreferencePair> {
    range
        .map(|x| kiln_data::PreferencePair {
            prompt: vec![1, x],
            chosen: vec![x + 1, x + 2, 2],
            rejected: vec![x - 1, x - 2, 2],
            margin: None,
        })
        .collect()
}

/// A DPO run through `Fit::preference`: the loss falls and the reward accuracy rises, steps and
/// evaluations log TRL's metrics, and a run stopped half-way resumes to the same losses.
#[test]
fn dpo_fit_learns_preferences_logs_trl_metrics_and_resumes() {
    use kiln_train::{PreferenceConfig, base_reference, reference_logps};

    let _rng = rng_lock();
    let train = counting_pairs(4..20);
    // Validation on the training prompts: the reward accuracy says the policy now prefers the
    // chosen completions (the toy model does not generalize to prompts it never saw).
    let val = counting_pairs(4..10);
    let reference = |m: &LlamaForCausalLM, b: &TokenBatch| reference_logps(&base_reference(m), b);
    let config = |dir: &Path| FitConfig {
        batch_size: 4,
        epochs: 3,
        checkpoint_every: Some(3),
        eval_every: Some(6),
        output_dir: Some(dir.into()),
        progress: false,
        plot: false,
        seed: 4,
        ..Default::default()
    };
    let objective = PreferenceConfig::default();
    let straight_dir = tempfile::tempdir().unwrap();
    let c = config(straight_dir.path());
    assert_eq!(c.total_steps(train.len()), 12);
    let mut t = trainer(&c, train.len(), lr(5e-2));
    let straight = Fit::preference(c, &train, objective.clone(), &reference)
        .preference_validation(&val)
        .run(model(0.0), &mut t)
        .unwrap();
    // DPO's loss starts at log 2 (the policy is the reference) and falls.
    let losses = &straight.summary.losses;
    assert!(
        (losses[0] - std::f32::consts::LN_2).abs() < 1e-4,
        "{losses:?}"
    );
    let late = losses[8..].iter().sum::<f32>() / 4.0;
    assert!(late < 0.7 * losses[0], "{losses:?}");
    let text = std::fs::read_to_string(straight_dir.path().join(files::METRICS)).unwrap();
    let records: Vec<LogRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let evals: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Eval(e) => Some(e.clone()),
            LogRecord::Step(s) => {
                for key in ["rewards/chosen", "rewards/margins", "logps/rejected"] {
                    assert!(s.extra.contains_key(key), "{s:?}");
                }
                None
            }
        })
        .collect();
    assert_eq!(evals.len(), 2);
    let accuracy = evals[1].extra["rewards/accuracies"];
    assert!(accuracy >= 0.8, "reward accuracy {accuracy}");
    assert!(evals[1].val_loss < std::f64::consts::LN_2, "{evals:?}");

    // Stopped at step 6 and resumed: the same losses, bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let mut t = trainer(&c, train.len(), lr(5e-2));
    let mut stop = StopAt(6);
    let first = Fit::preference(c.clone(), &train, objective.clone(), &reference)
        .preference_validation(&val)
        .callback(&mut stop)
        .run(model(0.0), &mut t)
        .unwrap();
    assert_eq!(first.summary.steps, 6);
    let mut t = trainer(&c, train.len(), lr(5e-2));
    let second = Fit::preference(
        FitConfig { resume: true, ..c },
        &train,
        objective,
        &reference,
    )
    .preference_validation(&val)
    .run(model(0.0), &mut t)
    .unwrap();
    let resumed: Vec<u32> = first
        .summary
        .losses
        .iter()
        .chain(&second.summary.losses)
        .map(|l| l.to_bits())
        .collect();
    let straight_bits: Vec<u32> = losses.iter().map(|l| l.to_bits()).collect();
    assert_eq!(resumed, straight_bits);
}

/// A reward-model run through `Fit::reward`: the Bradley–Terry loss falls from log 2 and the
/// accuracy rises, steps and evaluations log TRL's metrics, margins from the data reach the
/// loss, checkpoints hold the reward model in PEFT's `SEQ_CLS` layout (which loads back to the
/// same rewards), and a run stopped half-way resumes to the same losses.
#[test]
fn reward_fit_learns_preferences_logs_trl_metrics_and_resumes() {
    use kiln_models::RewardModel;
    use kiln_train::{RewardConfig, RewardExporter, batch_rewards, load_reward_adapter};

    let _rng = rng_lock();
    // After `[1, x]`, a token of 10..18 is preferred to one of 20..28; every other pair asks
    // for a margin of 1.
    let with_margins = |range: std::ops::Range<u32>| -> Vec<kiln_data::PreferencePair> {
        range
            .map(|x| kiln_data::PreferencePair {
                prompt: vec![1, x],
                chosen: vec![10 + x % 8],
                rejected: vec![20 + x % 8],
                margin: (x % 2 == 0).then_some(1.0),
            })
            .collect()
    };
    let train = with_margins(4..20);
    let val = with_margins(4..10);
    let rewards = |m: &RewardModel<LlamaForCausalLM>, b: &TokenBatch| batch_rewards(m, b, Some(0));
    let adapter = kiln_peft::AdapterConfig::Lora(LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        target_modules: ["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let exporter = RewardExporter {
        config: adapter.clone(),
    };
    let config = |dir: &Path| FitConfig {
        batch_size: 4,
        epochs: 5,
        checkpoint_every: Some(5),
        eval_every: Some(10),
        output_dir: Some(dir.into()),
        progress: false,
        plot: false,
        seed: 4,
        ..Default::default()
    };
    // A zero head: every reward starts at 0, so the loss starts at log 2 plus the margins'.
    let reward_model = || RewardModel::with_head(model(0.0), vec![0.0; 32]);
    let objective = RewardConfig::default();
    const LR: f64 = 2e-2;
    let straight_dir = tempfile::tempdir().unwrap();
    let c = config(straight_dir.path());
    let mut t = trainer(&c, train.len(), lr(LR));
    let straight = Fit::reward(c, &train, objective.clone(), &rewards)
        .preference_validation(&val)
        .exporter(&exporter)
        .run(reward_model(), &mut t)
        .unwrap();
    let losses = &straight.summary.losses;
    // Every reward is 0 at first, so each pair's loss is −log σ(−m) = softplus(m): the first
    // batch holds k pairs of margin 1 and 4 − k of margin 0.
    let softplus = |x: f32| (1.0 + x.exp()).ln();
    assert!(
        (0..=4).any(|k| {
            let k = k as f32;
            (losses[0] - (k * softplus(1.0) + (4.0 - k) * softplus(0.0)) / 4.0).abs() < 1e-5
        }),
        "{losses:?}"
    );
    let late = losses[16..].iter().sum::<f32>() / 4.0;
    assert!(late < 0.5 * losses[0], "{losses:?}");
    let text = std::fs::read_to_string(straight_dir.path().join(files::METRICS)).unwrap();
    let evals: Vec<_> = text
        .lines()
        .map(|l| serde_json::from_str::<LogRecord>(l).unwrap())
        .filter_map(|r| match r {
            LogRecord::Eval(e) => Some(e),
            LogRecord::Step(s) => {
                for key in [
                    "accuracy",
                    "margin",
                    "min_reward",
                    "mean_reward",
                    "max_reward",
                ] {
                    assert!(s.extra.contains_key(key), "{s:?}");
                }
                None
            }
        })
        .collect();
    assert_eq!(evals.len(), 2);
    assert!(evals[1].extra["accuracy"] >= 0.8, "{evals:?}");
    assert!(evals[1].val_loss < evals[0].val_loss, "{evals:?}");

    // The last checkpoint's export is the trained reward model.
    let ckpt = CheckpointManager::new(straight_dir.path().join(files::CHECKPOINTS), None)
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    let base = common::tiny_llama().init(11, &device());
    let (loaded, saved) = load_reward_adapter(base, &ckpt, &device()).unwrap();
    assert_eq!(saved.common().task_type.as_deref(), Some("SEQ_CLS"));
    let sequences = vec![vec![1, 5, 15], vec![1, 5, 25]];
    let (a, b) = (
        straight.model.score(&sequences, 0, 2),
        loaded.score(&sequences, 0, 2),
    );
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    assert!(a[0] > a[1], "the chosen kind of token should win: {a:?}");

    // Stopped at step 10 and resumed: the same losses, bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let mut t = trainer(&c, train.len(), lr(LR));
    let mut stop = StopAt(10);
    let first = Fit::reward(c.clone(), &train, objective.clone(), &rewards)
        .preference_validation(&val)
        .callback(&mut stop)
        .run(reward_model(), &mut t)
        .unwrap();
    assert_eq!(first.summary.steps, 10);
    let mut t = trainer(&c, train.len(), lr(LR));
    let second = Fit::reward(FitConfig { resume: true, ..c }, &train, objective, &rewards)
        .preference_validation(&val)
        .run(reward_model(), &mut t)
        .unwrap();
    let resumed: Vec<u32> = first
        .summary
        .losses
        .iter()
        .chain(&second.summary.losses)
        .map(|l| l.to_bits())
        .collect();
    let straight_bits: Vec<u32> = losses.iter().map(|l| l.to_bits()).collect();
    assert_eq!(resumed, straight_bits);
}
