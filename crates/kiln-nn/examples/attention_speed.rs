//! Speed of the fused attention kernels at SmolLM2-135M's shapes (batch 4, seq 256, 9 query
//! heads, 3 key/value heads, head dim 64) or the shapes given on the command line:
//!
//! ```text
//! cargo run --release -p kiln-nn --example attention_speed [batch seq heads kv_heads head_dim [iters]]
//! ```
//!
//! Counts `4·b·h·(t²/2)·hd` FLOPs for the forward pass and 2.5 times that for the backward pass.
//! Threads: the rayon global pool (`RAYON_NUM_THREADS`).

use std::time::Instant;

use kiln_nn::kernels::{AttentionDims, attention_backward, attention_forward};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are integers"))
        .collect();
    let a = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    let dims = AttentionDims {
        batch: a(0, 4),
        seq: a(1, 256),
        heads: a(2, 9),
        kv_heads: a(3, 3),
        head_dim: a(4, 64),
    };
    let iters = a(5, 50);
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    };
    let (q, k, v, d_out) = (
        values(dims.q_len()),
        values(dims.kv_len()),
        values(dims.kv_len()),
        values(dims.q_len()),
    );
    let segments = vec![0u32; dims.batch * dims.seq];
    let scale = 1.0 / (dims.head_dim as f32).sqrt();
    let mut out = vec![0.0; dims.q_len()];
    let mut lse = vec![0.0; dims.lse_len()];
    let mut dq = vec![0.0; dims.q_len()];
    let mut dk = vec![0.0; dims.kv_len()];
    let mut dv = vec![0.0; dims.kv_len()];

    // Warm up (and fill `out`, `lse` for the backward pass).
    for _ in 0..3 {
        attention_forward(&dims, &q, &k, &v, &segments, scale, &mut out, &mut lse);
        attention_backward(
            &dims, &q, &k, &v, &segments, scale, &out, &lse, &d_out, &mut dq, &mut dk, &mut dv,
        );
    }
    let fwd = measure(iters, || {
        attention_forward(&dims, &q, &k, &v, &segments, scale, &mut out, &mut lse)
    });
    let bwd = measure(iters, || {
        attention_backward(
            &dims, &q, &k, &v, &segments, scale, &out, &lse, &d_out, &mut dq, &mut dk, &mut dv,
        )
    });
    let (b, t, h, hd) = (
        dims.batch as f64,
        dims.seq as f64,
        dims.heads as f64,
        dims.head_dim as f64,
    );
    let flop_fwd = 4.0 * b * h * (t * t / 2.0) * hd;
    let flop_bwd = 2.5 * flop_fwd;
    let threads = rayon::current_num_threads();
    println!("{dims:?}, {threads} threads, {iters} iterations");
    for (name, m, flop) in [("forward ", &fwd, flop_fwd), ("backward", &bwd, flop_bwd)] {
        println!(
            "{name}: best {:.3} ms ({:.1} GFLOP/s), mean {:.3} ms; CPU time {:.3} ms per call \
             ({:.1} GFLOP/s per busy core)",
            m.best * 1e3,
            flop / m.best * 1e-9,
            m.mean * 1e3,
            m.cpu * 1e3,
            flop / m.cpu * 1e-9,
        );
    }
    let total = flop_fwd + flop_bwd;
    println!(
        "together: best {:.3} ms ({:.1} GFLOP/s), mean {:.3} ms ({:.1} GFLOP/s); \
         {:.1} GFLOP/s per busy core",
        (fwd.best + bwd.best) * 1e3,
        total / (fwd.best + bwd.best) * 1e-9,
        (fwd.mean + bwd.mean) * 1e3,
        total / (fwd.mean + bwd.mean) * 1e-9,
        total / (fwd.cpu + bwd.cpu) * 1e-9,
    );
}

/// Wall and CPU seconds per call of `f`.
struct Timing {
    best: f64,
    mean: f64,
    /// CPU time of the process (all threads) per call; on a machine shared with other work
    /// this estimates the time on dedicated cores. 0 where `/proc` is missing.
    cpu: f64,
}

fn measure(iters: usize, mut f: impl FnMut()) -> Timing {
    let (mut best, mut sum) = (f64::INFINITY, 0.0);
    let cpu0 = cpu_seconds();
    for _ in 0..iters {
        let t0 = Instant::now();
        f();
        let dt = t0.elapsed().as_secs_f64();
        best = best.min(dt);
        sum += dt;
    }
    let cpu = (cpu_seconds() - cpu0) / iters as f64;
    Timing {
        best,
        mean: sum / iters as f64,
        cpu,
    }
}

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks per second).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): utime and stime are the 12th
    // and 13th of them.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<f64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}
