//! Data-parallel training: replicas in threads (in-process group) and over loopback TCP give
//! the trainable parameters of one replica running every micro-batch.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::Device;
use kiln_data::TokenizedExample;
use kiln_models::LlamaForCausalLM;
use kiln_peft::{LoraConfig, attach_lora, full_fine_tuning};
use kiln_train::dist::{Collective, Coordinator, LocalGroup, TcpPeer, trainable_values};
use kiln_train::{
    Callback, Fit, FitConfig, LogRecord, OptimizerConfig, Schedule, StopReason, Trainer, files,
};

fn device() -> Device {
    Device::flex().autodiff()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Lora,
    Full,
}

fn model(method: Method) -> LlamaForCausalLM {
    let device = device();
    let config = common::tiny_llama();
    let model = config.init(11, &device);
    match method {
        Method::Lora => {
            let lora = LoraConfig {
                r: 8,
                lora_alpha: 16.0,
                target_modules: ["q_proj", "v_proj", "down_proj"].map(String::from).to_vec(),
                ..Default::default()
            };
            attach_lora(model, &lora, 5, &device).unwrap().0
        }
        Method::Full => full_fine_tuning(model),
    }
}

/// After `[1, x]`, count on `x+1, x+2, x+3`, then 2 (examples of two lengths).
fn counting() -> Vec<TokenizedExample> {
    (3..23)
        .map(|x| {
            let tail: Vec<u32> = (1..=(2 + x % 3)).map(|k| x + k).chain([2]).collect();
            TokenizedExample::prompt_completion(&[1, x], &tail)
        })
        .collect()
}

fn config(dir: Option<&Path>) -> FitConfig {
    FitConfig {
        batch_size: 3,
        grad_accum_steps: 2,
        max_steps: Some(6),
        checkpoint_every: dir.map(|_| 2),
        output_dir: dir.map(Into::into),
        progress: false,
        plot: false,
        seed: 3,
        ..Default::default()
    }
}

fn trainer(method: Method) -> Trainer {
    let opt = OptimizerConfig {
        lr: if method == Method::Lora { 1e-2 } else { 2e-3 },
        max_grad_norm: Some(1.0),
        ..Default::default()
    };
    let schedule = Schedule::Cosine {
        warmup_steps: 1,
        total_steps: 6,
    };
    Trainer::new(opt, schedule, &device()).unwrap()
}

/// One replica's run: its parameters and per-step losses.
fn run(
    method: Method,
    group: Option<Arc<dyn Collective>>,
    config: FitConfig,
    callback: Option<&mut dyn Callback>,
) -> (Vec<f32>, Vec<f32>, StopReason) {
    let train = counting();
    let mut t = trainer(method);
    if let Some(g) = group {
        t.set_collective(g);
    }
    let mut fit = Fit::new(config, &train);
    if let Some(cb) = callback {
        fit = fit.callback(cb);
    }
    let out = fit.run(model(method), &mut t).unwrap();
    (
        trainable_values(&out.model),
        out.summary.losses,
        out.summary.stop_reason,
    )
}

fn in_threads(
    groups: Vec<Arc<dyn Collective>>,
    method: Method,
    config: FitConfig,
) -> Vec<(Vec<f32>, Vec<f32>, StopReason)> {
    let handles: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let c = config.clone();
            std::thread::spawn(move || run(method, Some(g), c, None))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn local(n: usize) -> Vec<Arc<dyn Collective>> {
    LocalGroup::new(n, Duration::from_secs(120))
        .into_iter()
        .map(|g| Arc::new(g) as Arc<dyn Collective>)
        .collect()
}

fn tcp(n: usize) -> (Vec<Arc<dyn Collective>>, std::thread::JoinHandle<()>) {
    let c = Coordinator::bind("127.0.0.1:0", n).unwrap();
    let addr = c.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        c.serve(Duration::from_secs(60), Duration::from_secs(120))
            .unwrap();
    });
    let peers = (0..n)
        .map(|rank| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                Arc::new(
                    TcpPeer::connect(
                        &addr,
                        rank,
                        n,
                        Duration::from_secs(60),
                        Duration::from_secs(120),
                    )
                    .unwrap(),
                ) as Arc<dyn Collective>
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    (peers, server)
}

/// Largest difference relative to the largest magnitude.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check_equal_to_one_replica(method: Method) {
    let (single, single_losses, _) = run(method, None, config(None), None);
    let initial = trainable_values(&model(method));
    assert!(
        rel_diff(&single, &initial) > 1e-3,
        "{method:?}: the run must move the parameters"
    );
    let by_threads = in_threads(local(2), method, config(None));
    let (peers, server) = tcp(2);
    let by_tcp = in_threads(peers, method, config(None));
    server.join().unwrap();
    for (how, replicas) in [("threads", &by_threads), ("tcp", &by_tcp)] {
        for (rank, (values, losses, _)) in replicas.iter().enumerate() {
            let d = rel_diff(values, &single);
            println!("{method:?} {how} rank {rank}: relative difference {d:e}");
            assert!(d <= 1e-5, "{method:?} {how} rank {rank}: {d}");
            assert_eq!(losses.len(), single_losses.len());
            for (a, b) in losses.iter().zip(&single_losses) {
                assert!((a - b).abs() <= 1e-5 * b.abs(), "{how}: loss {a} vs {b}");
            }
        }
        // The optimizer state and parameters stay identical on every replica.
        assert_eq!(replicas[0].0, replicas[1].0, "{how}");
    }
}

#[test]
fn lora_replicas_equal_one_replica_on_the_combined_batch() {
    check_equal_to_one_replica(Method::Lora);
}

#[test]
fn full_fine_tuning_replicas_equal_one_replica_on_the_combined_batch() {
    check_equal_to_one_replica(Method::Full);
}

struct StopAt(usize);

impl Callback for StopAt {
    fn should_stop(&mut self, step: usize) -> bool {
        step >= self.0
    }
}

#[test]
fn rank_zero_writes_once_and_the_run_resumes_into_another_replica_count() {
    let method = Method::Lora;
    let (single, _, _) = run(method, None, config(None), None);

    let dir = tempfile::tempdir().unwrap();
    // Two replicas; rank 1 alone asks to stop after step 3, and both stop there.
    let groups = local(2);
    let handles: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let c = config(Some(dir.path()));
            std::thread::spawn(move || {
                let mut stop = StopAt(3);
                let cb: Option<&mut dyn Callback> = (g.rank() == 1).then_some(&mut stop as _);
                run(method, Some(g), c, cb)
            })
        })
        .collect();
    for h in handles {
        let (_, losses, reason) = h.join().unwrap();
        assert_eq!(losses.len(), 3);
        assert_eq!(reason, StopReason::Callback);
    }
    // One metrics log with each step once, and the checkpoints of rank 0.
    let text = std::fs::read_to_string(dir.path().join(files::METRICS)).unwrap();
    let steps: Vec<usize> = text
        .lines()
        .filter_map(|l| match serde_json::from_str::<LogRecord>(l).unwrap() {
            LogRecord::Step(s) => Some(s.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [1, 2, 3]);
    let mut ckpts: Vec<String> = std::fs::read_dir(dir.path().join(files::CHECKPOINTS))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ckpts.sort();
    assert_eq!(ckpts, ["checkpoint-2", "checkpoint-3"]);

    // One replica resumes at step 3 and finishes where the single run did.
    let resumed = FitConfig {
        resume: true,
        ..config(Some(dir.path()))
    };
    let (values, losses, _) = run(method, None, resumed.clone(), None);
    assert_eq!(losses.len(), 3);
    let d = rel_diff(&values, &single);
    assert!(d <= 1e-5, "resumed into one replica: {d}");

    // Three replicas are refused: two micro-batches per step cannot feed them.
    let train = counting();
    let mut t = trainer(method);
    t.set_collective(local(3).remove(0));
    let err = Fit::new(resumed, &train)
        .run(model(method), &mut t)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("grad_accum_steps") && err.contains("3 replicas"),
        "{err}"
    );
}
