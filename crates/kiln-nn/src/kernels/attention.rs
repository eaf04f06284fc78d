//! Fused causal attention with grouped-query heads, computed blockwise on the CPU
//! (FlashAttention-2 style). The forward pass computes, per chunk of `CHUNK` (16) queries, one
//! strip of scores `[CHUNK, keys]` over the keys the chunk may attend (from the start of its
//! earliest query's segment to its last query), takes the softmax row by row and multiplies
//! by the values; it saves the log-sum-exp of each query. The backward pass recomputes the
//! probabilities per block of `BLOCK` (64) keys, transposed (`[keys, queries]`, over the queries
//! from the block's first key to the end of its last key's segment), from the saved
//! log-sum-exp. No `[seq, seq]` matrix is stored: the largest buffer is `[BLOCK, seq]`.

use rayon::prelude::*;

use crate::simd::exp::{exp_sub_each, exp_sub_sum};
use crate::simd::{
    Isa,
    attention::{matmul, transpose},
    best_isa,
};

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Sequences in the batch.
    pub batch: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads; divides `heads`. Query head `h` uses key/value head
    /// `h / (heads / kv_heads)`.
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

impl AttentionDims {
    /// Length of `q`, `out`, `d_out` and `dq`: `batch · seq · heads · head_dim`.
    pub fn q_len(&self) -> usize {
        self.batch * self.seq * self.heads * self.head_dim
    }

    /// Length of `k`, `v`, `dk` and `dv`: `batch · seq · kv_heads · head_dim`.
    pub fn kv_len(&self) -> usize {
        self.batch * self.seq * self.kv_heads * self.head_dim
    }

    /// Length of `lse`: `batch · heads · seq`.
    pub fn lse_len(&self) -> usize {
        self.batch * self.heads * self.seq
    }

    /// Query heads per key/value head.
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    fn check(&self, q: usize, k: usize, v: usize, segments: usize, lse: usize) {
        assert!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            "attention: kv_heads = {} does not divide heads = {}",
            self.kv_heads,
            self.heads
        );
        assert!(self.head_dim > 0, "attention: head_dim is 0");
        assert_eq!(q, self.q_len(), "attention: q/out length");
        assert_eq!(k, self.kv_len(), "attention: k length");
        assert_eq!(v, self.kv_len(), "attention: v length");
        assert_eq!(
            segments,
            self.batch * self.seq,
            "attention: segments length"
        );
        assert_eq!(lse, self.lse_len(), "attention: lse length");
    }
}

/// Keys per block of the backward pass (the inner size of `dQ`'s block product); a multiple
/// of [`CHUNK`].
const BLOCK: usize = 64;
/// Rows per causal sub-strip: each strip of scores ends at the last row's diagonal, so at most
/// `CHUNK` columns per row above the diagonal are computed and thrown away.
const CHUNK: usize = 16;

fn round8(x: usize) -> usize {
    x.div_ceil(8) * 8
}

/// Row strides of the packed `[·, seq]` and `[·, head_dim]` buffers: the padded width plus one
/// cache line, so that the rows of a column panel do not all fall into the same few L1 sets.
fn strides(t: usize, d: usize) -> (usize, usize) {
    (round8(t) + 16, round8(d) + 16)
}

/// Where each position's segment spans in one sequence.
struct Runs {
    /// `start[i]`: the first position with `i`'s segment id.
    start: Vec<usize>,
    /// `end[i]`: one past the last position with `i`'s segment id.
    end: Vec<usize>,
    /// Whether every id occupies one contiguous run; otherwise the positions between `start`
    /// and `end` are masked one by one.
    contiguous: bool,
}

impl Runs {
    fn new(seg: &[u32]) -> Self {
        let t = seg.len();
        let mut span: std::collections::HashMap<u32, (usize, usize)> = Default::default();
        let mut runs = 0;
        for (i, &id) in seg.iter().enumerate() {
            span.entry(id).or_insert((i, i)).1 = i;
            runs += usize::from(i == 0 || seg[i - 1] != id);
        }
        let start = (0..t).map(|i| span[&seg[i]].0).collect();
        let end = (0..t).map(|i| span[&seg[i]].1 + 1).collect();
        Self {
            start,
            end,
            contiguous: runs == span.len(),
        }
    }
}

/// What the forward and backward passes derive from the sizes of a call, or `None` when it has
/// nothing to compute (no sequence, position or head):
/// - `(t, d, h, kvh, g)`: positions per sequence, values per head, query heads, key/value heads
///   and query heads per key/value head;
/// - `(tp, dp, dw)`: the row strides of the packed `[·, seq]` and `[·, head_dim]` buffers and
///   the padded head width the products compute;
/// - the segment runs of each sequence.
#[allow(clippy::type_complexity)]
fn plan(
    dims: &AttentionDims,
    segments: &[u32],
) -> Option<(
    (usize, usize, usize, usize, usize),
    (usize, usize, usize),
    Vec<Runs>,
)> {
    let (t, d, h) = (dims.seq, dims.head_dim, dims.heads);
    if dims.batch == 0 || t == 0 || h == 0 {
        return None;
    }
    let (tp, dp) = strides(t, d);
    let runs = segments.chunks(t).map(Runs::new).collect();
    Some((
        (t, d, h, dims.kv_heads, dims.group()),
        (tp, dp, round8(d)),
        runs,
    ))
}

/// Sets `row[c]` to `-∞` where position `first + c` is in another segment than `id`.
fn mask_other_segments(row: &mut [f32], seg: &[u32], first: usize, id: u32) {
    for (x, s) in row.iter_mut().zip(&seg[first..]) {
        if *s != id {
            *x = f32::NEG_INFINITY;
        }
    }
}

/// `buf` resized to `n` zeros; its allocation is kept from call to call.
fn zeroed(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.clear();
    buf.resize(n, 0.0);
    buf
}

/// Copies head `head` of `x: [batch, seq, nh, d]` for sequence `b` into rows of stride `dp`
/// (zero padding), times `scale`.
fn pack_rows(
    x: &[f32],
    (b, head, nh): (usize, usize, usize),
    dims: &AttentionDims,
    scale: f32,
    buf: &mut Vec<f32>,
) {
    let (t, d) = (dims.seq, dims.head_dim);
    let (tp, dp) = strides(t, d);
    let out = zeroed(buf, tp * dp);
    for i in 0..t {
        let src = &x[((b * t + i) * nh + head) * d..][..d];
        for (o, s) in out[i * dp..i * dp + d].iter_mut().zip(src) {
            *o = s * scale;
        }
    }
}

/// Copies head `head` of `x: [batch, seq, nh, d]` for sequence `b` transposed into `d` rows
/// of stride `tp` (zero padding), times `scale`.
fn pack_cols(
    isa: Isa,
    x: &[f32],
    (b, head, nh): (usize, usize, usize),
    dims: &AttentionDims,
    scale: f32,
    buf: &mut Vec<f32>,
) {
    let (t, d) = (dims.seq, dims.head_dim);
    let (tp, _) = strides(t, d);
    let out = zeroed(buf, d * tp);
    transpose(
        isa,
        (t, d),
        &x[((b * t) * nh + head) * d..],
        nh * d,
        scale,
        out,
        tp,
    );
}

/// Head `head` of `x: [batch, seq, nh, d]` for sequence `b` as `seq` rows and their stride:
/// the input itself when `d` is a multiple of 8 (the products read whole rows of 8), else a
/// zero-padded copy in `buf`.
fn head_rows<'a>(
    x: &'a [f32],
    (b, head, nh): (usize, usize, usize),
    dims: &AttentionDims,
    buf: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    let (t, d) = (dims.seq, dims.head_dim);
    if d.is_multiple_of(8) {
        return (&x[(b * t * nh + head) * d..], nh * d);
    }
    pack_rows(x, (b, head, nh), dims, 1.0, buf);
    (buf, strides(t, d).1)
}

/// `Σ a[i]·b[i]` in eight lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// The largest value of `xs` (`-∞` if empty).
fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (m, x) in lanes.iter_mut().zip(c) {
            *m = if *x > *m { *x } else { *m };
        }
    }
    for (m, x) in lanes.iter_mut().zip(chunks.remainder()) {
        *m = if *x > *m { *x } else { *m };
    }
    lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Splits `x`, viewed as `[batch, seq, kv_heads, w]`, into one list of `seq` rows of `w`
/// values per (sequence, kv head), in task order: the parts of an output one task owns.
fn task_rows<'a>(x: &'a mut [f32], dims: &AttentionDims, w: usize) -> Vec<Vec<&'a mut [f32]>> {
    let (t, kvh) = (dims.seq, dims.kv_heads);
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..dims.batch * kvh)
        .map(|_| Vec::with_capacity(t))
        .collect();
    for (idx, row) in x.chunks_mut(w).enumerate() {
        tasks[idx / (t * kvh) * kvh + idx % kvh].push(row);
    }
    tasks
}

/// Buffers of one worker thread, reused from task to task.
#[derive(Default)]
struct Scratch {
    kt: Vec<f32>,
    kp: Vec<f32>,
    vp: Vec<f32>,
    qs: Vec<f32>,
    qst: Vec<f32>,
    dot: Vec<f32>,
    dop: Vec<f32>,
    strip: Vec<f32>,
    pt: Vec<f32>,
    dst: Vec<f32>,
    o: Vec<f32>,
    dqt: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    delta: Vec<f32>,
}

/// Causal attention with grouped-query heads over packed sequences, forward pass.
///
/// Query `i` attends key `j` of the same sequence iff `j ≤ i` and
/// `segments[j] == segments[i]`; scores are `scale · q·k`. Also writes the log-sum-exp of
/// each query's scaled scores for [`attention_backward`].
///
/// Work runs on the rayon global pool, one task per (sequence, key/value head).
///
/// # Shapes
/// - `q`, `out`: `[batch, seq, heads, head_dim]` (row-major; the query projection's output
///   as is).
/// - `k`, `v`: `[batch, seq, kv_heads, head_dim]`.
/// - `segments`: `[batch, seq]`; each id occupies one contiguous run of positions of its
///   sequence (padding gets an id of its own).
/// - `lse`: `[batch, heads, seq]`.
///
/// # Panics
/// If a slice length does not match `dims` or `kv_heads` does not divide `heads`.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    dims: &AttentionDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    segments: &[u32],
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) {
    forward_with(best_isa(), dims, q, k, v, segments, scale, out, lse);
}

/// [`attention_forward`] with the instruction set `isa` (lowered to what the CPU has).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_with(
    isa: Isa,
    dims: &AttentionDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    segments: &[u32],
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) {
    dims.check(q.len(), k.len(), v.len(), segments.len(), lse.len());
    assert_eq!(out.len(), dims.q_len(), "attention: out length");
    let Some(((t, d, h, kvh, g), (tp, dp, dw), runs)) = plan(dims, segments) else {
        return;
    };

    // One task per (sequence, kv head); it returns, per query head, the output `[t, d]` and
    // then the lse `[t]`.
    // Task (b, kv) owns the `g·d` outputs of its query heads at every position, and their lse
    // (`[g, t]`, contiguous).
    let out_rows = task_rows(out, dims, g * d);
    out_rows
        .into_par_iter()
        .zip(lse.par_chunks_mut(g * t))
        .enumerate()
        .for_each_init(Scratch::default, |s, (task, (mut out_rows, lse_task))| {
            let (b, kv) = (task / kvh, task % kvh);
            let (start, seg) = (&runs[b].start, &segments[b * t..(b + 1) * t]);
            // The scale goes into the keys.
            pack_cols(isa, k, (b, kv, kvh), dims, scale, &mut s.kt);
            let (vr, ldv) = head_rows(v, (b, kv, kvh), dims, &mut s.vp);
            let strip = zeroed(&mut s.strip, CHUNK * tp);
            let mut inv = [0.0f32; CHUNK];
            for (hh, l) in lse_task.chunks_mut(t).enumerate() {
                let head = kv * g + hh;
                let (qr, ldq) = head_rows(q, (b, head, h), dims, &mut s.qs);
                let o = zeroed(&mut s.o, tp * dp);
                for c0 in (0..t).step_by(CHUNK) {
                    let c1 = (c0 + CHUNK).min(t);
                    let rows = c1 - c0;
                    // Keys from the start of the earliest query's segment (rounded down to 8)
                    // to the last query's diagonal (rounded up to 8).
                    let ka = start[c0..c1].iter().min().map_or(0, |&x| x) / 8 * 8;
                    let n = round8(c1) - ka;
                    matmul(
                        isa,
                        false,
                        (rows, n, d),
                        &qr[c0 * ldq..],
                        ldq,
                        &s.kt[ka..],
                        tp,
                        strip,
                        tp,
                    );
                    for r in 0..rows {
                        let i = c0 + r;
                        let row = &mut strip[r * tp..r * tp + n];
                        let (lo, hi) = (start[i] - ka, i + 1 - ka);
                        if !runs[b].contiguous {
                            mask_other_segments(&mut row[lo..hi], seg, start[i], seg[i]);
                        }
                        let m = max(&row[lo..hi]);
                        let sum = exp_sub_sum(isa, &mut row[lo..hi], m);
                        row[..lo].fill(0.0);
                        row[hi..].fill(0.0);
                        l[i] = m + sum.ln();
                        inv[r] = 1.0 / sum;
                    }
                    matmul(
                        isa,
                        false,
                        // Keys past the sequence have probability 0: not read.
                        (rows, dw, n.min(t - ka)),
                        strip,
                        tp,
                        &vr[ka * ldv..],
                        ldv,
                        &mut o[c0 * dp..],
                        dp,
                    );
                    for (r, inv) in inv.iter().enumerate().take(rows) {
                        let i = c0 + r;
                        let dst = &mut out_rows[i][hh * d..(hh + 1) * d];
                        for (x, y) in dst.iter_mut().zip(&o[i * dp..]) {
                            *x = y * inv;
                        }
                    }
                }
            }
        });
}

/// Causal attention with grouped-query heads over packed sequences, backward pass.
///
/// Given the forward pass's inputs, its `out` and `lse`, and the gradient `d_out` of the loss
/// with respect to `out`, writes (overwrites) the gradients `dq`, `dk`, `dv`. The
/// probabilities are recomputed blockwise from `q`, `k` and `lse`; `Dᵢ = Σ dOᵢ·Oᵢ` replaces
/// the softmax's row sums (FlashAttention-2). The gradient of a key/value head sums over its
/// query heads.
///
/// Work runs on the rayon global pool, one task per (sequence, key/value head), so each task
/// owns its part of `dk` and `dv`.
///
/// # Shapes
/// - `q`, `out`, `d_out`, `dq`: `[batch, seq, heads, head_dim]`.
/// - `k`, `v`, `dk`, `dv`: `[batch, seq, kv_heads, head_dim]`.
/// - `segments`: `[batch, seq]`, as for [`attention_forward`].
/// - `lse`: `[batch, heads, seq]`.
///
/// # Panics
/// As [`attention_forward`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dims: &AttentionDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    segments: &[u32],
    scale: f32,
    out: &[f32],
    lse: &[f32],
    d_out: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    backward_with(
        best_isa(),
        dims,
        (q, k, v),
        segments,
        scale,
        (out, lse, d_out),
        (dq, dk, dv),
    );
}

/// [`attention_backward`] with the instruction set `isa` (lowered to what the CPU has).
pub(crate) fn backward_with(
    isa: Isa,
    dims: &AttentionDims,
    (q, k, v): (&[f32], &[f32], &[f32]),
    segments: &[u32],
    scale: f32,
    (out, lse, d_out): (&[f32], &[f32], &[f32]),
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
) {
    dims.check(q.len(), k.len(), v.len(), segments.len(), lse.len());
    assert_eq!(out.len(), dims.q_len(), "attention: out length");
    assert_eq!(d_out.len(), dims.q_len(), "attention: d_out length");
    assert_eq!(dq.len(), dims.q_len(), "attention: dq length");
    assert_eq!(dk.len(), dims.kv_len(), "attention: dk length");
    assert_eq!(dv.len(), dims.kv_len(), "attention: dv length");
    let Some(((t, d, h, kvh, g), (tp, dp, dw), runs)) = plan(dims, segments) else {
        return;
    };

    // Task (b, kv) owns the `g·d` query gradients of its query heads at every position and the
    // `d` key and value gradients of its kv head.
    let tasks = task_rows(dq, dims, g * d)
        .into_iter()
        .zip(task_rows(dk, dims, d))
        .zip(task_rows(dv, dims, d));
    let tasks: Vec<_> = tasks.collect();
    tasks.into_par_iter().enumerate().for_each_init(
        Scratch::default,
        |s, (task, ((mut dq_rows, mut dk_rows), mut dv_rows))| {
            let (b, kv) = (task / kvh, task % kvh);
            let (end, seg) = (&runs[b].end, &segments[b * t..(b + 1) * t]);
            let (kr, ldk) = head_rows(k, (b, kv, kvh), dims, &mut s.kp);
            pack_cols(isa, k, (b, kv, kvh), dims, 1.0, &mut s.kt);
            let (vr, ldv) = head_rows(v, (b, kv, kvh), dims, &mut s.vp);
            let kt = &s.kt;
            let dk_acc = zeroed(&mut s.dk, tp * dp);
            let dv_acc = zeroed(&mut s.dv, tp * dp);
            // Transposed probabilities and score gradients of one block of keys: `[BLOCK, tp]`,
            // column `c` is query `qa + c`.
            let pt = zeroed(&mut s.pt, BLOCK * tp);
            let dst = zeroed(&mut s.dst, BLOCK * tp);
            for hh in 0..g {
                let head = kv * g + hh;
                pack_cols(isa, q, (b, head, h), dims, scale, &mut s.qst);
                let (qr, ldq) = head_rows(q, (b, head, h), dims, &mut s.qs);
                pack_cols(isa, d_out, (b, head, h), dims, 1.0, &mut s.dot);
                let (dr, ldo) = head_rows(d_out, (b, head, h), dims, &mut s.dop);
                let (qst, dot_t) = (&s.qst, &s.dot);
                let lse_h = &lse[(b * h + head) * t..][..t];
                s.delta.clear();
                s.delta.extend((0..t).map(|i| {
                    let at = ((b * t + i) * h + head) * d;
                    let (o, g) = (&out[at..at + d], &d_out[at..at + d]);
                    dot(o, g)
                }));
                let delta = &s.delta;
                let dqt = zeroed(&mut s.dqt, d * tp);
                for j0 in (0..t).step_by(BLOCK) {
                    let j1 = (j0 + BLOCK).min(t);
                    // Queries from the block's first key to the end of its last key's segment.
                    let last = end[j0..j1].iter().max().map_or(0, |&x| x);
                    let (qa, qb) = (j0, round8(last));
                    for c0 in (j0..j1).step_by(CHUNK) {
                        let c1 = (c0 + CHUNK).min(j1);
                        let (rows, n, off) = (c1 - c0, qb - c0, c0 - qa);
                        // Queries past the sequence have probability 0: not read.
                        let kk = qb.min(t) - c0;
                        let at = (c0 - j0) * tp;
                        // Sᵀ = K·(scale·Q)ᵀ, then Pᵀ = exp(Sᵀ − lse) where allowed, else 0.
                        matmul(
                            isa,
                            false,
                            (rows, n, d),
                            &kr[c0 * ldk..],
                            ldk,
                            &qst[c0..],
                            tp,
                            &mut pt[at + off..],
                            tp,
                        );
                        // dPᵀ = V·dOᵀ.
                        matmul(
                            isa,
                            false,
                            (rows, n, d),
                            &vr[c0 * ldv..],
                            ldv,
                            &dot_t[c0..],
                            tp,
                            &mut dst[at + off..],
                            tp,
                        );
                        for r in 0..rows {
                            let j = c0 + r;
                            let prow = &mut pt[at + r * tp..at + r * tp + off + n];
                            let drow = &mut dst[at + r * tp..at + r * tp + off + n];
                            // Allowed queries of key j: j ..< end of its segment.
                            let (lo, hi) = (j - qa, end[j] - qa);
                            if !runs[b].contiguous {
                                mask_other_segments(&mut prow[lo..hi], seg, j, seg[j]);
                            }
                            exp_sub_each(isa, &mut prow[lo..hi], &lse_h[j..end[j]]);
                            prow[..lo].fill(0.0);
                            prow[hi..].fill(0.0);
                            // dSᵀ = Pᵀ ∘ (dPᵀ − D).
                            drow[..lo].fill(0.0);
                            drow[hi..].fill(0.0);
                            for ((ds, p), dl) in drow[lo..hi]
                                .iter_mut()
                                .zip(&prow[lo..hi])
                                .zip(&delta[j..end[j]])
                            {
                                *ds = p * (*ds - dl);
                            }
                        }
                        // dV += Pᵀ·dO, dK += dSᵀ·Q (times scale at the end).
                        matmul(
                            isa,
                            true,
                            (rows, dw, kk),
                            &pt[at + off..],
                            tp,
                            &dr[c0 * ldo..],
                            ldo,
                            &mut dv_acc[c0 * dp..],
                            dp,
                        );
                        matmul(
                            isa,
                            true,
                            (rows, dw, kk),
                            &dst[at + off..],
                            tp,
                            &qr[c0 * ldq..],
                            ldq,
                            &mut dk_acc[c0 * dp..],
                            dp,
                        );
                    }
                    // dQᵀ += Kᵀ·dSᵀ (times scale at the end).
                    matmul(
                        isa,
                        true,
                        (d, qb - qa, j1 - j0),
                        &kt[j0..],
                        tp,
                        dst,
                        tp,
                        &mut dqt[qa..],
                        tp,
                    );
                }
                let dq_h = zeroed(&mut s.o, t * d);
                transpose(isa, (d, t), dqt, tp, scale, dq_h, d);
                for (row, x) in dq_rows.iter_mut().zip(dq_h.chunks(d)) {
                    row[hh * d..(hh + 1) * d].copy_from_slice(x);
                }
            }
            for i in 0..t {
                for (o, x) in dk_rows[i].iter_mut().zip(&dk_acc[i * dp..]) {
                    *o = x * scale;
                }
                dv_rows[i].copy_from_slice(&dv_acc[i * dp..i * dp + d]);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in `[-amp, amp)`.
    fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                amp * ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            })
            .collect()
    }

    /// `(out, dq, dk, dv)` of the definition, in `f64` on the host.
    #[allow(clippy::type_complexity)]
    fn naive(
        dims: &AttentionDims,
        (q, k, v, seg, d_out): (&[f32], &[f32], &[f32], &[u32], &[f32]),
        scale: f64,
    ) -> [Vec<f64>; 4] {
        let AttentionDims {
            batch,
            seq: t,
            heads: h,
            kv_heads: kvh,
            head_dim: d,
        } = *dims;
        let f = |x: &[f32], at: usize| -> Vec<f64> {
            x[at..at + d].iter().map(|&a| f64::from(a)).collect()
        };
        let (mut out, mut dq) = (vec![0.0; dims.q_len()], vec![0.0; dims.q_len()]);
        let (mut dk, mut dv) = (vec![0.0; dims.kv_len()], vec![0.0; dims.kv_len()]);
        for b in 0..batch {
            for hi in 0..h {
                let kv = hi / (h / kvh);
                for i in 0..t {
                    let qa = ((b * t + i) * h + hi) * d;
                    let qi = f(q, qa);
                    let keys: Vec<usize> = (0..=i)
                        .filter(|&j| seg[b * t + j] == seg[b * t + i])
                        .collect();
                    let ka = |j: usize| ((b * t + j) * kvh + kv) * d;
                    let s: Vec<f64> = keys
                        .iter()
                        .map(|&j| {
                            f(k, ka(j)).iter().zip(&qi).map(|(a, b)| a * b).sum::<f64>() * scale
                        })
                        .collect();
                    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
                    let doi = f(d_out, qa);
                    let dp: Vec<f64> = keys
                        .iter()
                        .map(|&j| f(v, ka(j)).iter().zip(&doi).map(|(a, b)| a * b).sum())
                        .collect();
                    let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                    for (n, &j) in keys.iter().enumerate() {
                        let (vj, kj) = (f(v, ka(j)), f(k, ka(j)));
                        let ds = p[n] * (dp[n] - delta) * scale;
                        for c in 0..d {
                            out[qa + c] += p[n] * vj[c];
                            dq[qa + c] += ds * kj[c];
                            dk[ka(j) + c] += ds * qi[c];
                            dv[ka(j) + c] += p[n] * doi[c];
                        }
                    }
                }
            }
        }
        [out, dq, dk, dv]
    }

    fn rel_err(a: &[f32], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((f64::from(*x) - y).abs()));
        diff / scale
    }

    /// Every instruction set, the scalar one included, matches the definition.
    #[test]
    fn every_path_matches_the_definition() {
        let dims = AttentionDims {
            batch: 2,
            seq: 45,
            heads: 6,
            kv_heads: 2,
            head_dim: 12,
        };
        let segments: Vec<u32> = (0..90u32)
            .map(|i| if i < 45 { i / 20 } else { 9 + (i - 45) / 7 })
            .collect();
        let q = values(dims.q_len(), 1, 2.0);
        let k = values(dims.kv_len(), 2, 2.0);
        let v = values(dims.kv_len(), 3, 1.0);
        let d_out = values(dims.q_len(), 4, 1.0);
        let scale = 0.3f32;
        let want = naive(&dims, (&q, &k, &v, &segments, &d_out), f64::from(scale));
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
            let mut out = vec![0.0; dims.q_len()];
            let mut lse = vec![0.0; dims.lse_len()];
            forward_with(isa, &dims, &q, &k, &v, &segments, scale, &mut out, &mut lse);
            let mut dq = vec![0.0; dims.q_len()];
            let (mut dk, mut dv) = (vec![0.0; dims.kv_len()], vec![0.0; dims.kv_len()]);
            backward_with(
                isa,
                &dims,
                (&q, &k, &v),
                &segments,
                scale,
                (&out, &lse, &d_out),
                (&mut dq, &mut dk, &mut dv),
            );
            for (name, got, want) in [
                ("out", &out, &want[0]),
                ("dq", &dq, &want[1]),
                ("dk", &dk, &want[2]),
                ("dv", &dv, &want[3]),
            ] {
                let e = rel_err(got, want);
                assert!(e < 1e-5, "{isa:?}: {name} relative error {e:e}");
            }
        }
    }
}
