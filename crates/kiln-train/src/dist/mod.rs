//! Data parallelism: one model replica per device or process, gradients summed across them.
//!
//! A [`Collective`] is one replica's handle on its group. [`Trainer::set_collective`] makes
//! every optimizer step a data-parallel one:
//! 1. the replicas sum their labelled-token counts, so each scales its loss by the labels of the
//!    *whole* step;
//! 2. each computes the gradients of its share of the step's micro-batches;
//! 3. the trainable gradients (the adapter only, under PEFT) are summed across replicas, in rank
//!    order, and every replica takes the same AdamW step.
//!
//! The result equals one replica running every micro-batch (up to float summation order), and
//! the optimizer state stays identical on every replica. [`Fit`](crate::Fit) shares out each
//! step's micro-batches (micro-batch `i` goes to replica `i mod world`), lets the first replica
//! alone write logs and checkpoints, and starts every replica from the first one's trainable
//! parameters.
//!
//! Two groups ship:
//! - [`LocalGroup`]: replicas in one process (one thread per device);
//! - [`TcpPeer`] with a [`Coordinator`]: one replica per process, on one machine or several,
//!   summed by the coordinator over TCP. A peer that dies, hangs past the timeout or disagrees
//!   about the run makes every other peer fail with a message naming it.
//!
//! [`Trainer::set_collective`]: crate::Trainer::set_collective

mod local;
mod tcp;

use std::fmt::Debug;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

pub use local::LocalGroup;
pub use tcp::{Coordinator, CoordinatorReport, DEFAULT_PORT, TcpPeer};

use crate::{Result, TrainError};

/// Bytes a replica has sent and received through its group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes sent.
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
    /// All-reduce calls made.
    pub calls: u64,
    /// Microseconds spent inside all-reduce calls: moving the bytes, and waiting for the
    /// slowest replica.
    pub micros: u64,
}

/// One replica's handle on a data-parallel group.
///
/// Every replica must make the same calls in the same order with buffers of the same length;
/// a replica that does not (or leaves) makes the others fail, not hang.
pub trait Collective: Send + Sync + Debug {
    /// This replica's rank, `0..world_size()`. Rank 0 writes the run's files.
    fn rank(&self) -> usize;
    /// Replicas in the group.
    fn world_size(&self) -> usize;
    /// Replaces `values` with their element-wise sum over every replica, added in rank order
    /// (so every replica gets bit-identical results).
    ///
    /// # Errors
    /// [`TrainError::Distributed`] naming the peer that is missing, died, timed out or sent a
    /// buffer of another length.
    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<()>;
    /// [`Collective::all_reduce_f32`] on `f64` values (counts and losses).
    ///
    /// # Errors
    /// As [`Collective::all_reduce_f32`].
    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()>;
    /// What this replica has moved so far.
    fn traffic(&self) -> Traffic;
}

/// Every replica's `values`, side by side: `out[r * values.len() + i]` is replica `r`'s
/// `values[i]` (an all-gather built on the sum).
///
/// # Errors
/// As [`Collective::all_reduce_f64`].
pub fn all_gather_f64(group: &dyn Collective, values: &[f64]) -> Result<Vec<f64>> {
    let k = values.len();
    let mut out = vec![0.0; k * group.world_size()];
    out[group.rank() * k..][..k].copy_from_slice(values);
    group.all_reduce_f64(&mut out)?;
    Ok(out)
}

/// Checks that every replica holds the same `facts` (named values such as the step to start
/// from or the number of trainable values), before any work that depends on them.
///
/// # Errors
/// [`TrainError::Distributed`] naming the first fact that differs and the ranks' values.
pub fn check_agreement(group: &dyn Collective, facts: &[(&str, f64)]) -> Result<()> {
    let values: Vec<f64> = facts.iter().map(|(_, v)| *v).collect();
    let all = all_gather_f64(group, &values)?;
    let k = values.len();
    for (i, (name, mine)) in facts.iter().enumerate() {
        let theirs: Vec<f64> = (0..group.world_size()).map(|r| all[r * k + i]).collect();
        if theirs.iter().any(|v| v.to_bits() != mine.to_bits()) {
            let listed = theirs
                .iter()
                .enumerate()
                .map(|(r, v)| format!("rank {r}: {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(group_error(
                group,
                format!(
                    "the replicas disagree on {name} ({listed}); start every replica with the same recipe, data and output directory"
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn group_error(group: &dyn Collective, message: String) -> TrainError {
    TrainError::Distributed {
        rank: group.rank(),
        world: group.world_size(),
        message,
    }
}

/// Values of the trainable parameters (those requiring gradients), flattened in visiting order.
pub fn trainable_values<M: Module>(model: &M) -> Vec<f32> {
    struct Flat(Vec<f32>);
    impl ModuleVisitor for Flat {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                let data = param.val().into_data().convert::<f32>();
                self.0.extend(data.iter::<f32>());
            }
        }
    }
    let mut v = Flat(Vec::new());
    model.visit(&mut v);
    v.0
}

/// Number of trainable values (the length of [`trainable_values`]).
pub fn trainable_len<M: Module>(model: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0 += param.lazy_shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    model.visit(&mut c);
    c.0
}

/// Makes every replica's trainable parameters rank 0's, exactly (the others add zeros).
///
/// # Errors
/// As [`Collective::all_reduce_f32`].
pub fn sync_trainable<M: Module>(model: M, group: &dyn Collective) -> Result<M> {
    let mut values = if group.rank() == 0 {
        trainable_values(&model)
    } else {
        vec![0.0; trainable_len(&model)]
    };
    group.all_reduce_f32(&mut values)?;
    Ok(model.map(&mut SetTrainable { values, at: 0 }))
}

struct SetTrainable {
    values: Vec<f32>,
    at: usize,
}

impl burn::module::ModuleMapper for SetTrainable {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.is_require_grad() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let data = TensorData::new(self.values[self.at..self.at + n].to_vec(), shape);
        self.at += n;
        let value = Tensor::<D>::from_data(data, &tensor.device()).require_grad();
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Sums the trainable gradients across the group and returns them (a parameter without a
/// gradient on some replica counts as zeros there). `inner` is the device gradients live on
/// (the trainer's device without autodiff); `flat` is a buffer kept from step to step.
pub(crate) fn all_reduce_grads<M: Module>(
    model: &M,
    mut grads: GradientsParams,
    group: &dyn Collective,
    inner: &Device,
    flat: &mut Vec<f32>,
) -> Result<GradientsParams> {
    struct Take<'a> {
        grads: &'a mut GradientsParams,
        flat: &'a mut Vec<f32>,
    }
    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.is_require_grad() {
                return;
            }
            match self.grads.remove::<D>(param.id) {
                Some(g) => self
                    .flat
                    .extend(g.into_data().convert::<f32>().iter::<f32>()),
                None => self
                    .flat
                    .extend(std::iter::repeat_n(0.0, param.lazy_shape().num_elements())),
            }
        }
    }
    struct Put<'a> {
        grads: &'a mut GradientsParams,
        flat: &'a [f32],
        at: usize,
        device: &'a Device,
    }
    impl ModuleVisitor for Put<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.is_require_grad() {
                return;
            }
            let shape = param.lazy_shape();
            let n = shape.num_elements();
            let data = TensorData::new(self.flat[self.at..self.at + n].to_vec(), shape);
            self.at += n;
            self.grads
                .register(param.id, Tensor::<D>::from_data(data, self.device));
        }
    }
    flat.clear();
    model.visit(&mut Take {
        grads: &mut grads,
        flat,
    });
    group.all_reduce_f32(flat)?;
    let mut out = GradientsParams::new();
    model.visit(&mut Put {
        grads: &mut out,
        flat,
        at: 0,
        device: inner,
    });
    Ok(out)
}

/// Sums `parts` (one buffer per rank, in rank order) into the first, element by element.
pub(crate) fn sum_in_rank_order<T: Copy + std::ops::AddAssign>(parts: &[&[T]], out: &mut [T]) {
    out.copy_from_slice(parts[0]);
    for part in &parts[1..] {
        for (o, v) in out.iter_mut().zip(part.iter()) {
            *o += *v;
        }
    }
}
