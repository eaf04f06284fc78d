//! The Llama family's inference on the CPU over host buffers (no tensor graph): a prompt goes
//! through the blocked attention kernel of [`kiln_nn::kernels`] with memory linear in its length,
//! then each new token runs against a key/value cache preallocated per sequence and written in
//! place, through the block-quantized matrix products of [`kiln_nn::quant`] (the checkpoint's
//! blocks, read as stored) with unmerged LoRA adapters added on the fly.
//!
//! It applies on the `flex` CPU device when nothing needs the graph: no active prompt encoder,
//! no unmerged IA3 or DoRA adapter, no active bottleneck adapter. [`generate`](crate::generate())
//! uses it when [`CachedCausalLm::host_decoder`](crate::CachedCausalLm::host_decoder) offers one;
//! `tests::host_decoder_matches_the_burn_graph` compares the two paths' logits.
//!
//! Notation in the shapes: `n` new tokens of all sequences together, `d` hidden, `f`
//! intermediate, `h`/`kvh` query/key-value heads of width `hd`, `r` a LoRA rank, `cap` the
//! positions a sequence's cache holds.

use rayon::prelude::*;

use kiln_nn::kernels::{
    AttentionDims, HostValues, Layout, RopeTable, attend_cached, attention_forward, matmul,
    rms_norm_rows, swiglu_forward,
};
use kiln_nn::quant::QUANTIZED_MAX_ROWS;
use kiln_nn::{AdaptableLinear, QuantizedMatrix};

use crate::LlamaForCausalLM;
use crate::causal_lm::HostDecoder;
use crate::llama_fused::{HostLayer, HostShape};

/// Prompts longer than this go through the blocked attention kernel (when nothing is cached
/// yet); shorter runs attend the cache query by query.
const BLOCKED_PREFILL: usize = 32;

/// Below this many (query head, cached position) pairs per layer, attention runs on the
/// calling thread.
const SERIAL_ATTENTION: usize = 1024;

/// A LoRA adapter's factors: `y += s·(x·A)·B`.
struct Lora {
    /// `[d_in, r]`
    a: HostValues,
    /// `[r, d_out]`
    b: HostValues,
    r: usize,
    scaling: f32,
}

/// One projection as inference computes it.
struct Proj {
    /// `[d_in, d_out]`
    w: HostValues,
    /// The checkpoint's blocks of `w` (`[d_out, d_in]`), used for up to
    /// [`QUANTIZED_MAX_ROWS`] rows.
    quant: Option<QuantizedMatrix>,
    bias: Option<HostValues>,
    lora: Option<Lora>,
    /// The LoRA factors of each resident adapter ([`LlamaDecoder::with_adapters`]), applied to
    /// the rows of the sequences decoded with that adapter.
    extra: Vec<Option<Lora>>,
    d_in: usize,
    d_out: usize,
}

/// Rows of one sequence among the `n` rows of a step: `(first row, rows, adapter)`.
type Group = (usize, usize, Option<usize>);

impl Proj {
    /// `None` when the projection's forward pass holds something this path does not compute.
    fn of(p: &AdaptableLinear) -> Option<Self> {
        let active = !p.disabled && p.has_adapter();
        if active && p.bottleneck.is_some() {
            return None;
        }
        let unmerged = active && !p.merged;
        if unmerged && p.ia3.is_some() {
            return None;
        }
        let lora = match &p.lora {
            Some(l) if unmerged => {
                if l.magnitude.is_some() {
                    return None;
                }
                let a = HostValues::of(&l.lora_a.val());
                let b = HostValues::of(&l.lora_b.val());
                if !a.is_borrowed() || !b.is_borrowed() {
                    return None;
                }
                Some(Lora {
                    a,
                    b,
                    r: l.rank(),
                    scaling: l.scaling as f32,
                })
            }
            _ => None,
        };
        let w = HostValues::of(&p.weight.val());
        if !w.is_borrowed() {
            return None;
        }
        Some(Self {
            w,
            quant: p.quantized().filter(|_| !p.merged).cloned(),
            bias: p.bias.as_ref().map(|b| HostValues::of(&b.val())),
            lora,
            extra: Vec::new(),
            d_in: p.d_in(),
            d_out: p.d_out(),
        })
    }

    /// `y = x·W (+ bias) + s·(x·A)·B`, with each group's resident adapter added to its rows.
    ///
    /// # Shapes
    /// - `x`: `[n, d_in]`; `y`: `[n, d_out]` (overwritten)
    fn forward(&self, x: &[f32], n: usize, y: &mut [f32], groups: &[Group]) {
        let (i, o) = (self.d_in, self.d_out);
        match &self.quant {
            Some(q) if n <= QUANTIZED_MAX_ROWS => q.matmul_into(x, n, y),
            _ => matmul(
                x,
                Layout::Plain,
                self.w.as_slice(),
                Layout::Plain,
                [n, i, o],
                y,
                1.0,
                false,
            ),
        }
        self.finish(x, n, y, groups);
    }

    /// Adds the bias and the LoRA updates to the base product `y`.
    fn finish(&self, x: &[f32], n: usize, y: &mut [f32], groups: &[Group]) {
        let (i, o) = (self.d_in, self.d_out);
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(o) {
                for (v, b) in row.iter_mut().zip(bias.as_slice()) {
                    *v += b;
                }
            }
        }
        if let Some(l) = &self.lora {
            l.add(x, n, i, o, y);
        }
        // One sequence's rows at a time: its update takes the path it takes decoded alone.
        for &(row, rows, adapter) in groups {
            if let Some(Some(l)) = adapter.and_then(|a| self.extra.get(a)) {
                l.add(
                    &x[row * i..(row + rows) * i],
                    rows,
                    i,
                    o,
                    &mut y[row * o..(row + rows) * o],
                );
            }
        }
    }
}

/// `ys[i] = projs[i](x)` for projections that read the same input: for one row on blocks,
/// one parallel region over the rows of all of them (the input prepared once).
fn forward_many(projs: &[&Proj], x: &[f32], n: usize, ys: &mut [&mut [f32]], groups: &[Group]) {
    let blocks: Option<Vec<&QuantizedMatrix>> = projs.iter().map(|p| p.quant.as_ref()).collect();
    match blocks {
        Some(mats) if n == 1 => {
            QuantizedMatrix::matmul_many(&mats, x, ys);
            if projs
                .iter()
                .any(|p| p.lora.is_some() || !p.extra.is_empty())
            {
                // The adapters' updates read their `f32` factors: one projection per task.
                projs
                    .par_iter()
                    .zip(ys.par_iter_mut())
                    .for_each(|(p, y)| p.finish(x, n, y, groups));
            } else {
                for (p, y) in projs.iter().zip(ys.iter_mut()) {
                    p.finish(x, n, y, groups);
                }
            }
        }
        _ => {
            for (p, y) in projs.iter().zip(ys.iter_mut()) {
                p.forward(x, n, y, groups);
            }
        }
    }
}

impl Lora {
    /// `y += s·(x·A)·B`: loops on the calling thread for a few rows, the `gemm` kernels for
    /// more.
    fn add(&self, x: &[f32], n: usize, d_in: usize, d_out: usize, y: &mut [f32]) {
        let (a, b, r) = (self.a.as_slice(), self.b.as_slice(), self.r);
        if n > QUANTIZED_MAX_ROWS {
            let mut xa = vec![0.0f32; n * r];
            matmul(
                x,
                Layout::Plain,
                a,
                Layout::Plain,
                [n, d_in, r],
                &mut xa,
                1.0,
                false,
            );
            matmul(
                &xa,
                Layout::Plain,
                b,
                Layout::Plain,
                [n, r, d_out],
                y,
                self.scaling,
                true,
            );
            return;
        }
        let mut xa = vec![0.0f32; r];
        for (xr, yr) in x.chunks_exact(d_in).zip(y.chunks_exact_mut(d_out)) {
            xa.fill(0.0);
            for (xv, ar) in xr.iter().zip(a.chunks_exact(r)) {
                for (acc, av) in xa.iter_mut().zip(ar) {
                    *acc += xv * av;
                }
            }
            for (c, br) in xa.iter().zip(b.chunks_exact(d_out)) {
                let c = c * self.scaling;
                for (yv, bv) in yr.iter_mut().zip(br) {
                    *yv += c * bv;
                }
            }
        }
    }
}

type Layer = HostLayer<Proj>;

/// The output head.
enum Head {
    /// Tied to the `[vocab, d]` embedding table, with the table's blocks when the checkpoint
    /// has them.
    Tied(Option<QuantizedMatrix>),
    /// A projection `[d, vocab]` of its own.
    Proj(Box<Proj>),
}

/// One sequence's key/value cache.
struct Seq {
    /// Positions filled.
    len: usize,
    /// Positions allocated.
    cap: usize,
    /// Keys and values, `[layers, kvh, cap, hd]` each.
    k: Vec<f32>,
    v: Vec<f32>,
    /// The resident adapter this sequence decodes with (`None`: the model as loaded).
    adapter: Option<usize>,
}

/// The frozen model as host values, and the caches of the sequences it decodes.
pub(crate) struct LlamaDecoder {
    embed: HostValues,
    head: Head,
    norm: HostValues,
    layers: Vec<Layer>,
    shape: HostShape,
    /// Sliding-window width (0: attend every earlier position).
    window: usize,
    seqs: Vec<Seq>,
    /// Resident adapters ([`Self::with_adapters`]).
    adapters: usize,
}

impl LlamaDecoder {
    /// A decoder of `capacity.len()` sequences of up to `capacity[i]` positions each, or `None`
    /// when the model holds something this path does not compute, or is not on the `flex`
    /// device.
    pub(crate) fn of(m: &LlamaForCausalLM, capacity: &[usize]) -> Option<Self> {
        if m.prompt_encoder.is_some() && !m.prompt_disabled {
            return None;
        }
        let embed = HostValues::of(&m.model.embed_tokens.weight.val());
        if !embed.is_borrowed() {
            return None;
        }
        let head = match &m.lm_head {
            None => Head::Tied(m.quantized_head.clone()),
            Some(h) => Head::Proj(Box::new(Proj::of(h)?)),
        };
        let shape = HostShape::of(m)?;
        let layers = Layer::all(m, Proj::of)?;
        let mut dec = Self {
            embed,
            head,
            norm: HostValues::of(&m.model.norm.weight.val()),
            layers,
            shape,
            window: m.model.sliding_window,
            seqs: Vec::new(),
            adapters: 0,
        };
        dec.seqs = capacity
            .iter()
            .map(|&cap| {
                let size = dec.layers.len() * dec.shape.kv_heads * cap * dec.shape.head_dim;
                Seq {
                    len: 0,
                    cap,
                    k: vec![0.0; size],
                    v: vec![0.0; size],
                    adapter: None,
                }
            })
            .collect();
        Some(dec)
    }

    /// A decoder of the base model `base` that also holds the LoRA updates of `adapters`
    /// (each `base` with one unmerged LoRA adapter attached) as resident adapters: sequences
    /// pick one with [`HostDecoder::restart`], and sequences of different adapters decode in
    /// one step, the base projections shared. `None` when `base` or an adapter model holds
    /// something this path does not compute (an adapter other than plain LoRA among them).
    pub(crate) fn with_adapters(
        base: &LlamaForCausalLM,
        adapters: &[&LlamaForCausalLM],
        capacity: &[usize],
    ) -> Option<Self> {
        let mut dec = Self::of(base, capacity)?;
        if dec
            .layers
            .iter()
            .any(|l| l.projs().any(|p| p.lora.is_some()))
        {
            return None;
        }
        for (a, model) in adapters.iter().enumerate() {
            let other = Self::of(model, &[])?;
            if other.layers.len() != dec.layers.len() {
                return None;
            }
            for (mine, theirs) in dec.layers.iter_mut().zip(other.layers) {
                for (p, q) in mine.projs_mut().zip(theirs.into_projs()) {
                    p.extra.resize_with(a, || None);
                    p.extra.push(q.lora);
                }
            }
            match (&mut dec.head, other.head) {
                (Head::Proj(p), Head::Proj(q)) => {
                    p.extra.resize_with(a, || None);
                    p.extra.push(q.lora);
                }
                (Head::Tied(_), Head::Tied(_)) => {}
                _ => return None,
            }
        }
        dec.adapters = adapters.len();
        Some(dec)
    }

    /// Makes room for `need` positions in sequence `s` (a larger cache, the filled positions
    /// moved over).
    fn reserve(&mut self, s: usize, need: usize) {
        let (layers, kvh, hd) = (self.layers.len(), self.shape.kv_heads, self.shape.head_dim);
        let seq = &mut self.seqs[s];
        if need <= seq.cap {
            return;
        }
        let cap = need.max(2 * seq.cap);
        let grow = |old: &[f32]| {
            let mut new = vec![0.0f32; layers * kvh * cap * hd];
            for lh in 0..layers * kvh {
                new[lh * cap * hd..][..seq.len * hd]
                    .copy_from_slice(&old[lh * seq.cap * hd..][..seq.len * hd]);
            }
            new
        };
        seq.k = grow(&seq.k);
        seq.v = grow(&seq.v);
        seq.cap = cap;
    }

    /// Attention of the new tokens of every sequence, `att: [n, h·hd]`, after their keys and
    /// values were written to the caches. `runs[i] = (sequence, first token row, tokens, first
    /// position)`; `q`, `k`, `v`: `[n, ·]` of this layer.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        runs: &[(usize, usize, usize, usize)],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        att: &mut [f32],
        lse: &mut Vec<f32>,
    ) {
        let (h, kvh, hd) = (self.shape.heads, self.shape.kv_heads, self.shape.head_dim);
        let scale = 1.0 / (hd as f32).sqrt();
        let group = h / kvh;
        // Fresh long prompts: the blocked kernel, over the run's own keys and values.
        let blocked = |&(_, _, t, p0): &(usize, usize, usize, usize)| {
            p0 == 0 && t > BLOCKED_PREFILL && (self.window == 0 || t <= self.window)
        };
        for &(_, row, t, _) in runs.iter().filter(|r| blocked(r)) {
            let dims = AttentionDims {
                batch: 1,
                seq: t,
                heads: h,
                kv_heads: kvh,
                head_dim: hd,
            };
            lse.resize(h * t, 0.0);
            let segments = vec![0u32; t];
            attention_forward(
                &dims,
                &q[row * h * hd..(row + t) * h * hd],
                &k[row * kvh * hd..(row + t) * kvh * hd],
                &v[row * kvh * hd..(row + t) * kvh * hd],
                &segments,
                scale,
                &mut att[row * h * hd..(row + t) * h * hd],
                lse,
            );
        }
        // Everything else: each (token, head) against the cache, in parallel.
        let mut at: Vec<Option<(usize, usize)>> = vec![None; att.len() / (h * hd)];
        for &(s, row, t, p0) in runs.iter().filter(|r| !blocked(r)) {
            for i in 0..t {
                at[row + i] = Some((s, p0 + i));
            }
        }
        let work = |(task, out): (usize, &mut [f32])| {
            let (row, head) = (task / h, task % h);
            let Some((s, pos)) = at[row] else { return };
            let seq = &self.seqs[s];
            let base = (layer * kvh + head / group) * seq.cap * hd;
            let start = if self.window > 0 {
                (pos + 1).saturating_sub(self.window)
            } else {
                0
            };
            let keys = &seq.k[base + start * hd..base + (pos + 1) * hd];
            let values = &seq.v[base + start * hd..base + (pos + 1) * hd];
            attend_cached(&q[task * hd..(task + 1) * hd], keys, values, scale, out);
        };
        // Positions attended, over all heads: a short context is cheaper on this thread than
        // handed over to the pool.
        let positions: usize = at.iter().flatten().map(|&(_, pos)| pos + 1).sum::<usize>() * h;
        if positions < SERIAL_ATTENTION {
            att.chunks_mut(hd).enumerate().for_each(work);
        } else {
            att.par_chunks_mut(hd).enumerate().for_each(work);
        }
    }

    /// Runs the new tokens of each sequence and returns the logits of each one's last token,
    /// `[sequences with tokens, vocab]`.
    fn run(&mut self, tokens: &[&[u32]]) -> Vec<f32> {
        assert_eq!(tokens.len(), self.seqs.len(), "one token list per sequence");
        let (d, f) = (self.shape.hidden, self.shape.inter);
        let (h, kvh, hd) = (self.shape.heads, self.shape.kv_heads, self.shape.head_dim);
        // (sequence, first row, tokens, first position)
        let mut runs = Vec::new();
        let mut n = 0;
        for (s, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            let p0 = self.seqs[s].len;
            self.reserve(s, p0 + t.len());
            runs.push((s, n, t.len(), p0));
            n += t.len();
        }
        if n == 0 {
            return Vec::new();
        }
        let positions: Vec<u32> = runs
            .iter()
            .flat_map(|&(_, _, t, p0)| (p0..p0 + t).map(|p| p as u32))
            .collect();
        let groups: Vec<Group> = runs
            .iter()
            .map(|&(s, row, t, _)| (row, t, self.seqs[s].adapter))
            .collect();
        let rope = RopeTable::new(&self.shape.inv_freq, &positions);
        let table = self.embed.as_slice();
        let mut x: Vec<f32> = tokens
            .iter()
            .flat_map(|t| t.iter())
            .flat_map(|&id| {
                table[id as usize * d..(id as usize + 1) * d]
                    .iter()
                    .copied()
            })
            .collect();
        let mut xn = vec![0.0f32; n * d];
        let mut tmp = vec![0.0f32; n * d];
        let mut q = vec![0.0f32; n * h * hd];
        let mut k = vec![0.0f32; n * kvh * hd];
        let mut v = vec![0.0f32; n * kvh * hd];
        let mut att = vec![0.0f32; n * h * hd];
        let mut g = vec![0.0f32; n * f];
        let mut u = vec![0.0f32; n * f];
        let mut hb = vec![0.0f32; n * f];
        let mut lse = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&x, layer.in_norm.as_slice(), self.shape.eps, &mut xn);
            forward_many(
                &[&layer.q, &layer.k, &layer.v],
                &xn,
                n,
                &mut [&mut q, &mut k, &mut v],
                &groups,
            );
            rope.apply(&mut q, h, false);
            rope.apply(&mut k, kvh, false);
            for &(s, row, t, p0) in &runs {
                let seq = &mut self.seqs[s];
                for i in 0..t {
                    for kv in 0..kvh {
                        let at = ((l * kvh + kv) * seq.cap + p0 + i) * hd;
                        let from = ((row + i) * kvh + kv) * hd;
                        seq.k[at..at + hd].copy_from_slice(&k[from..from + hd]);
                        seq.v[at..at + hd].copy_from_slice(&v[from..from + hd]);
                    }
                }
            }
            self.attention(l, &runs, &q, &k, &v, &mut att, &mut lse);
            layer.o.forward(&att, n, &mut tmp, &groups);
            add(&mut x, &tmp);
            rms_norm_rows(&x, layer.post_norm.as_slice(), self.shape.eps, &mut xn);
            forward_many(
                &[&layer.gate, &layer.up],
                &xn,
                n,
                &mut [&mut g, &mut u],
                &groups,
            );
            swiglu_forward(&g, &u, &mut hb);
            layer.down.forward(&hb, n, &mut tmp, &groups);
            add(&mut x, &tmp);
        }
        for &(s, _, t, _) in &runs {
            self.seqs[s].len += t;
        }
        // The last token of each run: final norm and head.
        let m = runs.len();
        let mut last = vec![0.0f32; m * d];
        for (i, &(_, row, t, _)) in runs.iter().enumerate() {
            last[i * d..(i + 1) * d].copy_from_slice(&x[(row + t - 1) * d..(row + t) * d]);
        }
        let mut normed = vec![0.0f32; m * d];
        rms_norm_rows(&last, self.norm.as_slice(), self.shape.eps, &mut normed);
        let mut logits = vec![0.0f32; m * self.shape.vocab];
        match &self.head {
            Head::Proj(p) => {
                let last_rows: Vec<Group> = groups
                    .iter()
                    .enumerate()
                    .map(|(i, &(_, _, a))| (i, 1, a))
                    .collect();
                p.forward(&normed, m, &mut logits, &last_rows);
            }
            Head::Tied(Some(qh)) if m <= QUANTIZED_MAX_ROWS => {
                qh.matmul_into(&normed, m, &mut logits);
            }
            Head::Tied(_) => matmul(
                &normed,
                Layout::Plain,
                table,
                Layout::Transposed,
                [m, d, self.shape.vocab],
                &mut logits,
                1.0,
                false,
            ),
        }
        logits
    }
}

impl HostDecoder for LlamaDecoder {
    fn step(&mut self, tokens: &[&[u32]]) -> Vec<f32> {
        self.run(tokens)
    }

    fn sequences(&self) -> usize {
        self.seqs.len()
    }

    fn adapters(&self) -> usize {
        self.adapters
    }

    fn restart(&mut self, seq: usize, adapter: Option<usize>) {
        assert!(
            adapter.is_none_or(|a| a < self.adapters()),
            "restart: adapter {adapter:?} of {}",
            self.adapters()
        );
        let s = &mut self.seqs[seq];
        s.len = 0;
        s.adapter = adapter;
    }
}

/// `x += y`.
fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
