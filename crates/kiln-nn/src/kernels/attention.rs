//! Causal grouped-query attention over packed rows.

use rayon::prelude::*;

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

fn allowed(seg: &[u32], i: usize, j: usize) -> bool {
    j <= i && seg[i] == seg[j]
}

/// Forward pass. See the module docs.
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
    let AttentionDims { batch, seq, heads, kv_heads, head_dim: hd } = *dims;
    let g = heads / kv_heads;
    out.par_chunks_mut(seq * heads * hd)
        .zip(lse.par_chunks_mut(heads * seq))
        .enumerate()
        .for_each(|(b, (out, lse))| {
            let seg = &segments[b * seq..(b + 1) * seq];
            let mut p = vec![0.0f32; seq];
            for h in 0..heads {
                let kh = h / g;
                for i in 0..seq {
                    let qi = &q[((b * seq + i) * heads + h) * hd..][..hd];
                    let mut m = f32::NEG_INFINITY;
                    for j in 0..=i {
                        if allowed(seg, i, j) {
                            let kj = &k[((b * seq + j) * kv_heads + kh) * hd..][..hd];
                            p[j] = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                            m = m.max(p[j]);
                        }
                    }
                    let mut s = 0.0f32;
                    let o = &mut out[(i * heads + h) * hd..][..hd];
                    o.fill(0.0);
                    for j in 0..=i {
                        if allowed(seg, i, j) {
                            let e = (p[j] - m).exp();
                            s += e;
                            let vj = &v[((b * seq + j) * kv_heads + kh) * hd..][..hd];
                            for (o, v) in o.iter_mut().zip(vj) {
                                *o += e * v;
                            }
                        }
                    }
                    for o in o.iter_mut() {
                        *o /= s;
                    }
                    lse[h * seq + i] = m + s.ln();
                }
            }
        });
}

/// Backward pass. See the module docs.
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
    let AttentionDims { batch, seq, heads, kv_heads, head_dim: hd } = *dims;
    let g = heads / kv_heads;
    dq.fill(0.0);
    dk.fill(0.0);
    dv.fill(0.0);
    for b in 0..batch {
        let seg = &segments[b * seq..(b + 1) * seq];
        for h in 0..heads {
            let kh = h / g;
            for i in 0..seq {
                let at = ((b * seq + i) * heads + h) * hd;
                let qi = &q[at..at + hd];
                let doi = &d_out[at..at + hd];
                let delta: f32 = doi.iter().zip(&out[at..at + hd]).map(|(a, b)| a * b).sum();
                let l = lse[(b * heads + h) * seq + i];
                for j in 0..=i {
                    if !allowed(seg, i, j) {
                        continue;
                    }
                    let kat = ((b * seq + j) * kv_heads + kh) * hd;
                    let kj = &k[kat..kat + hd];
                    let vj = &v[kat..kat + hd];
                    let s = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                    let p = (s - l).exp();
                    let dp: f32 = doi.iter().zip(vj).map(|(a, b)| a * b).sum();
                    let ds = p * (dp - delta) * scale;
                    for d in 0..hd {
                        dv[kat + d] += p * doi[d];
                        dq[at + d] += ds * kj[d];
                        dk[kat + d] += ds * qi[d];
                    }
                }
            }
        }
    }
}
