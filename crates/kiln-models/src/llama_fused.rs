//! The Llama family's LoRA training step on the CPU, written out layer by layer over host
//! buffers with the fused kernels of [`kiln_nn::kernels`] (no tensor graph).
//!
//! It applies when the model lives on the `flex` CPU device, every base weight is frozen, and the
//! only trainable parameters are plain LoRA factors without dropout (no DoRA, IA3, bottleneck,
//! prompt or prefix modules, no sliding window shorter than the rows). Anything else returns
//! `None` and the trainer builds the Burn graph instead. The test
//! `tests::fused_step_matches_the_burn_graph` compares the loss and every LoRA gradient with the
//! Burn composition.
//!
//! Per layer, the forward pass keeps the layer input `x`, the RMSNorm reciprocal roots, the
//! rotated `q`/`k`, `v`, the attention output and its log-sum-exp, the residual after attention,
//! the gate and up projections, and each LoRA's `x·A`. Normalized inputs and `silu(g)·u` are
//! recomputed in the backward pass. Base weights are read in place from the flex tensors (no
//! copy); only the weights' input gradients are computed, never their own gradients.
//!
//! Notation in the shapes: `n = batch·seq` tokens, `d` hidden, `f` intermediate, `h`/`kvh`
//! query/key-value heads of width `hd`, `r` a LoRA rank.

use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use kiln_nn::AdaptableLinear;
use kiln_nn::kernels::pool::{give, take};
use kiln_nn::kernels::{
    AttentionDims, HostValues, Layout, RopeTable, attention_backward, attention_forward,
    cross_entropy_grad_inplace, matmul, rms_norm_backward, rms_norm_forward, swiglu_backward,
    swiglu_forward,
};

use crate::{CausalLm, FusedStep, HostBatch, LlamaForCausalLM};

/// Labelled rows per slice of `[c, vocab]` logits.
const LOSS_ROWS: usize = 256;

/// A LoRA adapter's factors as host values.
struct HostLora {
    /// `[d_in, r]`
    a: HostValues,
    /// `[r, d_out]`
    b: HostValues,
    r: usize,
    scaling: f32,
    a_param: burn::module::ParamId,
    b_param: burn::module::ParamId,
    device: burn::tensor::Device,
}

/// One projection: frozen weight `[d_in, d_out]`, optional bias and LoRA.
struct HostProj {
    w: HostValues,
    bias: Option<HostValues>,
    lora: Option<HostLora>,
    d_in: usize,
    d_out: usize,
}

impl HostProj {
    /// `None` when the projection holds something the fused step does not compute.
    fn of(p: &AdaptableLinear) -> Option<Self> {
        if p.ia3.is_some() || p.bottleneck.is_some() || p.weight.val().is_require_grad() {
            return None;
        }
        if let Some(b) = &p.bias
            && b.val().is_require_grad()
        {
            return None;
        }
        let w = HostValues::of(&p.weight.val());
        if !w.is_borrowed() {
            return None;
        }
        let lora = match &p.lora {
            Some(l) if !p.merged && !p.disabled => {
                if l.magnitude.is_some()
                    || l.dropout.prob > 0.0
                    || !l.lora_a.val().is_require_grad()
                    || !l.lora_b.val().is_require_grad()
                {
                    return None;
                }
                let a = l.lora_a.val();
                let [_, r] = a.dims();
                Some(HostLora {
                    a: HostValues::of(&a),
                    b: HostValues::of(&l.lora_b.val()),
                    r,
                    scaling: l.scaling as f32,
                    a_param: l.lora_a.id,
                    b_param: l.lora_b.id,
                    device: a.inner().device(),
                })
            }
            _ => None,
        };
        Some(Self {
            w,
            bias: p.bias.as_ref().map(|b| HostValues::of(&b.val())),
            lora,
            d_in: p.d_in(),
            d_out: p.d_out(),
        })
    }

    /// `y = x·W (+ bias) + s·(x·A)·B`, keeping `x·A` in `xa`.
    ///
    /// # Shapes
    /// - `x`: `[n, d_in]`; `y`: `[n, d_out]`; `xa`: `[n, r]` (empty without LoRA)
    fn forward(&self, x: &[f32], n: usize, y: &mut [f32], xa: &mut Vec<f32>, accumulate: bool) {
        let (i, o) = (self.d_in, self.d_out);
        matmul(
            x,
            Layout::Plain,
            self.w.as_slice(),
            Layout::Plain,
            [n, i, o],
            y,
            1.0,
            accumulate,
        );
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(o) {
                for (v, b) in row.iter_mut().zip(bias.as_slice()) {
                    *v += b;
                }
            }
        }
        if let Some(l) = &self.lora {
            if xa.len() != n * l.r {
                give(std::mem::take(xa));
                *xa = take(n * l.r, false);
            }
            matmul(
                x,
                Layout::Plain,
                l.a.as_slice(),
                Layout::Plain,
                [n, i, l.r],
                xa,
                1.0,
                false,
            );
            matmul(
                xa,
                Layout::Plain,
                l.b.as_slice(),
                Layout::Plain,
                [n, l.r, o],
                y,
                l.scaling,
                true,
            );
        }
    }

    /// The input gradient of [`HostProj::forward`]: `dx = dy·Wᵀ + s·(dy·Bᵀ)·Aᵀ`, or added to
    /// `dx` when `accumulate`.
    ///
    /// # Shapes
    /// - `dy`: `[n, d_out]`; `dx`: `[n, d_in]`
    fn input_grad(&self, dy: &[f32], n: usize, dx: &mut [f32], accumulate: bool) {
        let (i, o) = (self.d_in, self.d_out);
        matmul(
            dy,
            Layout::Plain,
            self.w.as_slice(),
            Layout::Transposed,
            [n, o, i],
            dx,
            1.0,
            accumulate,
        );
        if let Some(l) = &self.lora {
            let dxa = l.dxa(dy, n, o);
            matmul(
                &dxa,
                Layout::Plain,
                l.a.as_slice(),
                Layout::Transposed,
                [n, l.r, i],
                dx,
                1.0,
                true,
            );
            give(dxa);
        }
    }

    /// Pushes the LoRA gradients `dA = xᵀ·(s·dy·Bᵀ)` and `dB = s·(x·A)ᵀ·dy` (nothing without
    /// LoRA).
    ///
    /// # Shapes
    /// - `x`: `[n, d_in]`; `xa`: `[n, r]`; `dy`: `[n, d_out]`
    fn lora_grads(&self, x: &[f32], xa: &[f32], dy: &[f32], n: usize, grads: &mut Vec<HostGrad>) {
        let Some(l) = &self.lora else { return };
        let (i, o, r) = (self.d_in, self.d_out, l.r);
        let dxa = l.dxa(dy, n, o);
        let mut da = vec![0.0f32; i * r];
        matmul(
            x,
            Layout::Transposed,
            &dxa,
            Layout::Plain,
            [i, n, r],
            &mut da,
            1.0,
            false,
        );
        let mut db = vec![0.0f32; r * o];
        matmul(
            xa,
            Layout::Transposed,
            dy,
            Layout::Plain,
            [r, n, o],
            &mut db,
            l.scaling,
            false,
        );
        give(dxa);
        grads.push(HostGrad {
            id: l.a_param,
            values: da,
            shape: [i, r],
            device: l.device.clone(),
        });
        grads.push(HostGrad {
            id: l.b_param,
            values: db,
            shape: [r, o],
            device: l.device.clone(),
        });
    }
}

impl HostLora {
    /// `s·dy·Bᵀ`, `[n, r]`.
    fn dxa(&self, dy: &[f32], n: usize, d_out: usize) -> Vec<f32> {
        let mut dxa = take(n * self.r, false);
        matmul(
            dy,
            Layout::Plain,
            self.b.as_slice(),
            Layout::Transposed,
            [n, d_out, self.r],
            &mut dxa,
            self.scaling,
            false,
        );
        dxa
    }
}

/// A gradient of a 2-d parameter, on the host.
struct HostGrad {
    id: burn::module::ParamId,
    values: Vec<f32>,
    shape: [usize; 2],
    device: burn::tensor::Device,
}

/// The sizes and constants the host kernels need, read from a Llama model.
pub(crate) struct HostShape {
    /// One half of the rotary frequencies (the table repeats them: `cat(freqs, freqs)`).
    pub(crate) inv_freq: Vec<f32>,
    pub(crate) eps: f32,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) hidden: usize,
    pub(crate) inter: usize,
    pub(crate) vocab: usize,
}

impl HostShape {
    /// `None` for a model without layers.
    pub(crate) fn of(m: &LlamaForCausalLM) -> Option<Self> {
        let first = m.model.layers.first()?;
        let attn = &first.self_attn;
        let inv = HostValues::of(&m.model.rotary_emb.inv_freq);
        Some(Self {
            inv_freq: inv.as_slice()[..attn.head_dim / 2].to_vec(),
            eps: m.model.norm.eps as f32,
            heads: attn.num_heads,
            kv_heads: attn.num_kv_heads,
            head_dim: attn.head_dim,
            hidden: m.hidden_size(),
            inter: first.mlp.gate_proj.d_out(),
            vocab: m.vocab_size(),
        })
    }
}

/// One decoder layer's weights on the host, with projections of type `P`.
pub(crate) struct HostLayer<P> {
    pub(crate) in_norm: HostValues,
    pub(crate) post_norm: HostValues,
    pub(crate) q: P,
    pub(crate) k: P,
    pub(crate) v: P,
    pub(crate) o: P,
    pub(crate) gate: P,
    pub(crate) up: P,
    pub(crate) down: P,
}

impl<P> HostLayer<P> {
    /// The seven projections, in the order q, k, v, o, gate, up, down.
    pub(crate) fn projs(&self) -> impl Iterator<Item = &P> {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
        .into_iter()
    }

    /// [`Self::projs`], mutable.
    pub(crate) fn projs_mut(&mut self) -> impl Iterator<Item = &mut P> {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
        .into_iter()
    }

    /// [`Self::projs`], by value.
    pub(crate) fn into_projs(self) -> impl Iterator<Item = P> {
        [
            self.q, self.k, self.v, self.o, self.gate, self.up, self.down,
        ]
        .into_iter()
    }

    /// Every layer of `m` read through `proj`, or `None` as for [`Self::of`] with the final
    /// norm's `ε`.
    pub(crate) fn all(
        m: &LlamaForCausalLM,
        proj: impl Fn(&AdaptableLinear) -> Option<P> + Copy,
    ) -> Option<Vec<Self>> {
        let eps = m.model.norm.eps;
        m.model
            .layers
            .iter()
            .map(|l| Self::of(l, eps, proj))
            .collect()
    }

    /// Layer `l` read through `proj`; `None` when a projection cannot be read or a norm's `ε`
    /// is not `eps` (the host kernels take one `ε` for the whole model).
    pub(crate) fn of(
        l: &crate::llama::LlamaDecoderLayer,
        eps: f64,
        proj: impl Fn(&AdaptableLinear) -> Option<P>,
    ) -> Option<Self> {
        if l.input_layernorm.eps != eps || l.post_attention_layernorm.eps != eps {
            return None;
        }
        Some(Self {
            in_norm: HostValues::of(&l.input_layernorm.weight.val()),
            post_norm: HostValues::of(&l.post_attention_layernorm.weight.val()),
            q: proj(&l.self_attn.q_proj)?,
            k: proj(&l.self_attn.k_proj)?,
            v: proj(&l.self_attn.v_proj)?,
            o: proj(&l.self_attn.o_proj)?,
            gate: proj(&l.mlp.gate_proj)?,
            up: proj(&l.mlp.up_proj)?,
            down: proj(&l.mlp.down_proj)?,
        })
    }
}

impl HostLayer<HostProj> {
    fn has_lora(&self) -> bool {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
        .iter()
        .any(|p| p.lora.is_some())
    }
}

/// What the forward pass of one layer keeps for the backward pass.
#[derive(Default)]
struct Saved {
    /// Layer input `[n, d]`.
    x: Vec<f32>,
    rstd1: Vec<f32>,
    /// Rotated queries `[n, h·hd]` and keys `[n, kvh·hd]`, values `[n, kvh·hd]`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output `[n, h·hd]` and its log-sum-exp `[batch, h, seq]`.
    att: Vec<f32>,
    lse: Vec<f32>,
    /// Residual after attention `[n, d]`.
    mid: Vec<f32>,
    rstd2: Vec<f32>,
    /// Gate and up projections `[n, f]`.
    g: Vec<f32>,
    u: Vec<f32>,
    /// `x·A` of each LoRA: q, k, v, o, gate, up, down.
    xa: [Vec<f32>; 7],
}

/// What every layer's forward pass shares within a step.
struct Ctx<'a> {
    batch: &'a HostBatch,
    n: usize,
    dims: AttentionDims,
    att_scale: f32,
    rope: RopeTable,
}

/// The frozen model and its LoRA factors as host values.
struct HostModel {
    embed: HostValues,
    /// `[vocab, d]` tied table (`true`) or `[d, vocab]` head.
    head: HostValues,
    tied: bool,
    norm: HostValues,
    layers: Vec<HostLayer<HostProj>>,
    shape: HostShape,
}

impl HostModel {
    fn of(m: &LlamaForCausalLM, seq: usize) -> Option<Self> {
        if m.prompt_encoder.is_some() && !m.prompt_disabled {
            return None;
        }
        let w = m.model.sliding_window;
        if w != 0 && seq > w {
            return None;
        }
        let frozen = |p: &burn::module::Param<Tensor<1>>| !p.val().is_require_grad();
        if m.model.embed_tokens.weight.val().is_require_grad()
            || !frozen(&m.model.norm.weight)
            || m.model.layers.iter().any(|l| {
                !frozen(&l.input_layernorm.weight) || !frozen(&l.post_attention_layernorm.weight)
            })
        {
            return None;
        }
        let embed = HostValues::of(&m.model.embed_tokens.weight.val());
        if !embed.is_borrowed() {
            return None;
        }
        let (head, tied) = match &m.lm_head {
            None => (HostValues::of(&m.model.embed_tokens.weight.val()), true),
            Some(h) => {
                if h.lora.is_some()
                    || h.ia3.is_some()
                    || h.bottleneck.is_some()
                    || h.bias.is_some()
                    || h.weight.val().is_require_grad()
                {
                    return None;
                }
                (HostValues::of(&h.weight.val()), false)
            }
        };
        let shape = HostShape::of(m)?;
        let layers = HostLayer::all(m, HostProj::of)?;
        Some(Self {
            embed,
            head,
            tied,
            norm: HostValues::of(&m.model.norm.weight.val()),
            layers,
            shape,
        })
    }

    fn dims(&self, batch: &HostBatch) -> AttentionDims {
        AttentionDims {
            batch: batch.batch,
            seq: batch.seq,
            heads: self.shape.heads,
            kv_heads: self.shape.kv_heads,
            head_dim: self.shape.head_dim,
        }
    }

    /// One decoder layer's forward pass from its input `x` (moved into the returned state);
    /// returns what the backward pass needs and the layer's output.
    fn layer_forward(
        &self,
        layer: &HostLayer<HostProj>,
        c: &Ctx<'_>,
        x: Vec<f32>,
        xn: &mut [f32],
        hbuf: &mut [f32],
    ) -> (Saved, Vec<f32>) {
        let n = c.n;
        let (d, f) = (self.shape.hidden, self.shape.inter);
        let (qd, kd) = (
            self.shape.heads * self.shape.head_dim,
            self.shape.kv_heads * self.shape.head_dim,
        );
        let mut s = Saved {
            rstd1: take(n, false),
            q: take(n * qd, false),
            k: take(n * kd, false),
            v: take(n * kd, false),
            att: take(n * qd, false),
            lse: take(c.batch.batch * self.shape.heads * c.batch.seq, false),
            rstd2: take(n, false),
            g: take(n * f, false),
            u: take(n * f, false),
            ..Saved::default()
        };
        rms_norm_forward(
            &x,
            layer.in_norm.as_slice(),
            self.shape.eps,
            xn,
            &mut s.rstd1,
        );
        let [xa_q, xa_k, xa_v, xa_o, xa_g, xa_u, xa_d] = &mut s.xa;
        layer.q.forward(xn, n, &mut s.q, xa_q, false);
        layer.k.forward(xn, n, &mut s.k, xa_k, false);
        layer.v.forward(xn, n, &mut s.v, xa_v, false);
        c.rope.apply(&mut s.q, self.shape.heads, false);
        c.rope.apply(&mut s.k, self.shape.kv_heads, false);
        attention_forward(
            &c.dims,
            &s.q,
            &s.k,
            &s.v,
            &c.batch.segments,
            c.att_scale,
            &mut s.att,
            &mut s.lse,
        );
        // mid = x + att·Wo
        let mut mid = take(n * d, false);
        mid.copy_from_slice(&x);
        layer.o.forward(&s.att, n, &mut mid, xa_o, true);
        rms_norm_forward(
            &mid,
            layer.post_norm.as_slice(),
            self.shape.eps,
            xn,
            &mut s.rstd2,
        );
        layer.gate.forward(xn, n, &mut s.g, xa_g, false);
        layer.up.forward(xn, n, &mut s.u, xa_u, false);
        swiglu_forward(&s.g, &s.u, hbuf);
        // out = mid + h·Wd
        let mut out = take(n * d, false);
        out.copy_from_slice(&mid);
        layer.down.forward(hbuf, n, &mut out, xa_d, true);
        s.x = x;
        s.mid = mid;
        (s, out)
    }

    /// Loss times `scale` and the LoRA gradients. With `checkpoint`, each layer keeps only its
    /// input and recomputes the rest in the backward pass.
    fn step(&self, batch: &HostBatch, scale: f32, checkpoint: bool) -> (f64, Vec<HostGrad>) {
        let n = batch.batch * batch.seq;
        let (d, f) = (self.shape.hidden, self.shape.inter);
        let (qd, kd) = (
            self.shape.heads * self.shape.head_dim,
            self.shape.kv_heads * self.shape.head_dim,
        );
        let dims = self.dims(batch);
        let att_scale = 1.0 / (self.shape.head_dim as f32).sqrt();
        let rope = RopeTable::new(&self.shape.inv_freq, &batch.positions);

        // Forward.
        let mut x = take(n * d, false);
        let table = self.embed.as_slice();
        for (row, &id) in x.chunks_exact_mut(d).zip(&batch.input_ids) {
            let id = id as usize;
            row.copy_from_slice(&table[id * d..(id + 1) * d]);
        }
        let mut xn = take(n * d, false);
        let mut hbuf = take(n * f, false);
        let ctx = Ctx {
            batch,
            n,
            dims,
            att_scale,
            rope,
        };
        let mut saved: Vec<Saved> = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (mut s, next) = self.layer_forward(layer, &ctx, x, &mut xn, &mut hbuf);
            x = next;
            if checkpoint {
                s = s.keep_input();
            }
            saved.push(s);
        }

        // Final norm, output head and loss over the labelled rows, a slice at a time.
        let mut rstd_f = take(n, false);
        rms_norm_forward(
            &x,
            self.norm.as_slice(),
            self.shape.eps,
            &mut xn,
            &mut rstd_f,
        );
        let labelled: Vec<(usize, u32)> = batch
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| **t >= 0)
            .map(|(i, &t)| (i, t as u32))
            .collect();
        let v = self.shape.vocab;
        let mut dxn = take(n * d, true);
        let mut loss = 0.0f64;
        let mut rows = take(LOSS_ROWS.min(labelled.len()) * d, false);
        let mut logits = take(LOSS_ROWS.min(labelled.len()) * v, false);
        let mut drows = take(LOSS_ROWS.min(labelled.len()) * d, false);
        for part in labelled.chunks(LOSS_ROWS) {
            let c = part.len();
            for (k, &(i, _)) in part.iter().enumerate() {
                rows[k * d..(k + 1) * d].copy_from_slice(&xn[i * d..(i + 1) * d]);
            }
            let (head_layout, back_layout) = if self.tied {
                (Layout::Transposed, Layout::Plain)
            } else {
                (Layout::Plain, Layout::Transposed)
            };
            matmul(
                &rows[..c * d],
                Layout::Plain,
                self.head.as_slice(),
                head_layout,
                [c, d, v],
                &mut logits[..c * v],
                1.0,
                false,
            );
            let targets: Vec<u32> = part.iter().map(|&(_, t)| t).collect();
            loss += cross_entropy_grad_inplace(&mut logits[..c * v], v, &targets, scale)
                * f64::from(scale);
            matmul(
                &logits[..c * v],
                Layout::Plain,
                self.head.as_slice(),
                back_layout,
                [c, v, d],
                &mut drows[..c * d],
                1.0,
                false,
            );
            for (k, &(i, _)) in part.iter().enumerate() {
                dxn[i * d..(i + 1) * d].copy_from_slice(&drows[k * d..(k + 1) * d]);
            }
        }
        give(rows);
        give(logits);
        give(drows);
        let mut dx = take(n * d, true);
        rms_norm_backward(&x, self.norm.as_slice(), &rstd_f, &dxn, &mut dx);

        // Backward through the layers.
        let mut grads = Vec::new();
        let mut dh = take(n * f, false);
        let mut dg = take(n * f, false);
        let mut du = take(n * f, false);
        let mut datt = take(n * qd, false);
        let mut dq = take(n * qd, false);
        let mut dk = take(n * kd, false);
        let mut dv = take(n * kd, false);
        let mut rstd = take(n, false);
        let dims = ctx.dims;
        let (rope, att_scale) = (&ctx.rope, ctx.att_scale);
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let mut s = saved.pop().expect("one saved state per layer");
            if s.is_checkpoint() {
                // Recompute the layer's activations from its input.
                let (full, next) = self.layer_forward(layer, &ctx, s.x, &mut xn, &mut hbuf);
                give(next);
                s = full;
            }
            let [xa_q, xa_k, xa_v, xa_o, xa_g, xa_u, xa_d] = &s.xa;
            // MLP: dh = dx·Wdᵀ; h = silu(g)·u recomputed by the SwiGLU backward.
            layer.down.input_grad(&dx, n, &mut dh, false);
            swiglu_backward(&s.g, &s.u, &dh, &mut dg, &mut du, Some(&mut hbuf));
            layer.down.lora_grads(&hbuf, xa_d, &dx, n, &mut grads);
            rms_norm_forward(
                &s.mid,
                layer.post_norm.as_slice(),
                self.shape.eps,
                &mut xn,
                &mut rstd,
            );
            layer.gate.input_grad(&dg, n, &mut dxn, false);
            layer.up.input_grad(&du, n, &mut dxn, true);
            layer.gate.lora_grads(&xn, xa_g, &dg, n, &mut grads);
            layer.up.lora_grads(&xn, xa_u, &du, n, &mut grads);
            rms_norm_backward(&s.mid, layer.post_norm.as_slice(), &s.rstd2, &dxn, &mut dx);
            // Attention.
            layer.o.input_grad(&dx, n, &mut datt, false);
            layer.o.lora_grads(&s.att, xa_o, &dx, n, &mut grads);
            attention_backward(
                &dims,
                &s.q,
                &s.k,
                &s.v,
                &batch.segments,
                att_scale,
                &s.att,
                &s.lse,
                &datt,
                &mut dq,
                &mut dk,
                &mut dv,
            );
            rope.apply(&mut dq, self.shape.heads, true);
            rope.apply(&mut dk, self.shape.kv_heads, true);
            rms_norm_forward(
                &s.x,
                layer.in_norm.as_slice(),
                self.shape.eps,
                &mut xn,
                &mut rstd,
            );
            layer.q.lora_grads(&xn, xa_q, &dq, n, &mut grads);
            layer.k.lora_grads(&xn, xa_k, &dk, n, &mut grads);
            layer.v.lora_grads(&xn, xa_v, &dv, n, &mut grads);
            // The embeddings are frozen: the first layer's input gradient is not needed.
            if l > 0 {
                layer.q.input_grad(&dq, n, &mut dxn, false);
                layer.k.input_grad(&dk, n, &mut dxn, true);
                layer.v.input_grad(&dv, n, &mut dxn, true);
                rms_norm_backward(&s.x, layer.in_norm.as_slice(), &s.rstd1, &dxn, &mut dx);
            }
            s.give_back();
        }
        for b in [
            x, xn, hbuf, rstd_f, dxn, dx, dh, dg, du, datt, dq, dk, dv, rstd,
        ] {
            give(b);
        }
        (loss, grads)
    }
}

impl Saved {
    /// Gives back everything but the layer input (gradient checkpointing).
    fn keep_input(mut self) -> Self {
        let x = std::mem::take(&mut self.x);
        self.give_back();
        Saved {
            x,
            ..Saved::default()
        }
    }

    fn is_checkpoint(&self) -> bool {
        self.q.is_empty()
    }

    fn give_back(self) {
        let Saved {
            x,
            rstd1,
            q,
            k,
            v,
            att,
            lse,
            mid,
            rstd2,
            g,
            u,
            xa,
        } = self;
        for b in [x, rstd1, q, k, v, att, lse, mid, rstd2, g, u]
            .into_iter()
            .chain(xa)
        {
            give(b);
        }
    }
}

impl LlamaForCausalLM {
    /// The fused CPU training step (see the module docs); `None` where it does not apply.
    pub(crate) fn fused_step(
        &self,
        batch: &HostBatch,
        step: FusedStep,
    ) -> Option<(f64, GradientsParams)> {
        let n = batch.batch * batch.seq;
        if n == 0
            || [&batch.input_ids, &batch.positions, &batch.segments]
                .iter()
                .any(|v| v.len() != n)
            || batch.targets.len() != n
            || batch.num_targets() == 0
        {
            return None;
        }
        let host = HostModel::of(self, batch.seq)?;
        if !host.layers.iter().any(HostLayer::has_lora) {
            return None;
        }
        if batch
            .input_ids
            .iter()
            .any(|&t| t as usize >= host.shape.vocab)
            || batch.targets.iter().any(|&t| t >= host.shape.vocab as i64)
        {
            return None;
        }
        let (loss, host_grads) = host.step(batch, step.scale, step.recompute);
        if host_grads.is_empty() {
            return None;
        }
        let mut grads = GradientsParams::new();
        for g in host_grads {
            let t = Tensor::<2>::from_data(TensorData::new(g.values, g.shape), &g.device);
            grads.register(g.id, t);
        }
        Some((loss, grads))
    }
}
