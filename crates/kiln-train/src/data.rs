use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// The order in which a run visits its training examples.
///
/// Every epoch is a permutation drawn from `(seed, epoch)` alone, and an optimizer step is a
/// fixed run of consecutive micro-batches of that epoch. So the data position of a run is a
/// function of its step count: resuming at step `s` needs nothing but `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOrder {
    /// Training examples.
    pub num_examples: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum_steps: usize,
    /// Shuffle each epoch (otherwise the file order).
    pub shuffle: bool,
    /// Seed of the permutations.
    pub seed: u64,
}

impl DataOrder {
    /// Micro-batches per epoch (the last one may be short).
    pub fn batches_per_epoch(&self) -> usize {
        self.num_examples.div_ceil(self.batch_size.max(1))
    }

    /// Optimizer steps per epoch (the last one may accumulate fewer micro-batches).
    pub fn steps_per_epoch(&self) -> usize {
        self.batches_per_epoch()
            .div_ceil(self.grad_accum_steps.max(1))
    }

    /// The permutation of example indices for `epoch`.
    pub fn epoch_permutation(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.num_examples).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, epoch as u64));
            order.shuffle(&mut rng);
        }
        order
    }

    /// The epoch of optimizer step `step` (0-based) and the example indices of each of its
    /// micro-batches.
    pub fn step_batches(&self, step: usize) -> (usize, Vec<Vec<usize>>) {
        let per_epoch = self.steps_per_epoch().max(1);
        let epoch = step / per_epoch;
        let in_epoch = step % per_epoch;
        let order = self.epoch_permutation(epoch);
        let bs = self.batch_size.max(1);
        let accum = self.grad_accum_steps.max(1);
        let first = in_epoch * accum;
        let last = (first + accum).min(self.batches_per_epoch());
        let batches = (first..last)
            .map(|b| order[b * bs..((b + 1) * bs).min(order.len())].to_vec())
            .collect();
        (epoch, batches)
    }
}

/// SplitMix64 of `seed` and `stream`: decorrelated seeds for per-epoch and per-step generators.
pub(crate) fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_once_per_epoch_and_reproducible() {
        let order = DataOrder {
            num_examples: 10,
            batch_size: 3,
            grad_accum_steps: 2,
            shuffle: true,
            seed: 4,
        };
        assert_eq!(order.batches_per_epoch(), 4);
        assert_eq!(order.steps_per_epoch(), 2);
        let mut seen: Vec<usize> = (0..2)
            .flat_map(|s| order.step_batches(s).1.into_iter().flatten())
            .collect();
        let (_, second) = order.step_batches(1);
        assert_eq!(second.len(), 2);
        assert_eq!(second[1].len(), 1, "last micro-batch holds the remainder");
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(order.step_batches(2).0, 1);
        assert_ne!(order.epoch_permutation(0), order.epoch_permutation(1));
        assert_eq!(order.step_batches(3), order.step_batches(3));
        let plain = DataOrder {
            shuffle: false,
            ..order
        };
        assert_eq!(plain.step_batches(0).1, vec![vec![0, 1, 2], vec![3, 4, 5]]);
    }
}
