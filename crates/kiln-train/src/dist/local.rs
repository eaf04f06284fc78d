//! Replicas in one process: one thread per device, summing through shared memory.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Collective, Traffic, sum_in_rank_order};
use crate::{Result, TrainError};

/// One round's buffers: what each rank deposited, and the sum once every rank has.
#[derive(Default)]
struct Round {
    f32_parts: Vec<Option<Vec<f32>>>,
    f64_parts: Vec<Option<Vec<f64>>>,
    f32_sum: Option<Arc<Vec<f32>>>,
    f64_sum: Option<Arc<Vec<f64>>>,
    /// Ranks that have taken this round's sum.
    taken: usize,
    /// Ranks whose handle was dropped.
    left: Vec<bool>,
    /// A failure every waiting rank reports.
    failed: Option<String>,
    calls: Vec<u64>,
    micros: Vec<u64>,
}

#[derive(Default)]
struct Shared {
    round: Mutex<Round>,
    changed: Condvar,
}

/// A replica of an in-process group (see [`LocalGroup::new`]).
#[derive(Debug)]
pub struct LocalGroup {
    shared: Arc<SharedHandle>,
    rank: usize,
    world: usize,
    timeout: Duration,
}

struct SharedHandle(Shared);

impl std::fmt::Debug for SharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl LocalGroup {
    /// `world` handles on one group, rank 0 first: give one to each replica's thread. A rank
    /// that waits longer than `timeout` for the others fails, naming the ranks it waited for.
    ///
    /// # Panics
    /// `world` is 0.
    pub fn new(world: usize, timeout: Duration) -> Vec<LocalGroup> {
        assert!(world > 0, "a group needs at least one replica");
        let shared = Arc::new(SharedHandle(Shared::default()));
        {
            let mut r = shared.0.round.lock().unwrap_or_else(|e| e.into_inner());
            r.f32_parts = vec![None; world];
            r.f64_parts = vec![None; world];
            r.left = vec![false; world];
            r.calls = vec![0; world];
            r.micros = vec![0; world];
        }
        (0..world)
            .map(|rank| LocalGroup {
                shared: shared.clone(),
                rank,
                world,
                timeout,
            })
            .collect()
    }

    fn error(&self, message: String) -> TrainError {
        TrainError::Distributed {
            rank: self.rank,
            world: self.world,
            message,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        self.shared
            .0
            .round
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Deposits this rank's part, waits for the sum, and returns it.
    fn reduce<T>(
        &self,
        values: &mut [T],
        parts: fn(&mut Round) -> &mut Vec<Option<Vec<T>>>,
        sum: fn(&mut Round) -> &mut Option<Arc<Vec<T>>>,
    ) -> Result<()>
    where
        T: Copy + Default + std::ops::AddAssign,
    {
        let cv = &self.shared.0.changed;
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut r = self.lock();
        // Wait until the previous round's sum has been taken by every rank.
        while sum(&mut r).is_some() {
            r = self.wait(r, deadline, cv)?;
        }
        parts(&mut r)[self.rank] = Some(values.to_vec());
        r.calls[self.rank] += 1;
        if parts(&mut r).iter().all(Option::is_some) {
            let lens: Vec<usize> = parts(&mut r).iter().flatten().map(Vec::len).collect();
            if lens.iter().any(|&l| l != lens[0]) {
                let message = format!("the replicas passed buffers of different lengths {lens:?}");
                r.failed = Some(message.clone());
                cv.notify_all();
                return Err(self.error(message));
            }
            let taken: Vec<Vec<T>> = parts(&mut r)
                .iter_mut()
                .map(|p| p.take().unwrap())
                .collect();
            let slices: Vec<&[T]> = taken.iter().map(Vec::as_slice).collect();
            let mut out = vec![T::default(); lens[0]];
            sum_in_rank_order(&slices, &mut out);
            *sum(&mut r) = Some(Arc::new(out));
            cv.notify_all();
        }
        // A sum present now is this round's: a round's sum is cleared only after every rank,
        // this one included, has taken it.
        while sum(&mut r).is_none() {
            r = self.wait(r, deadline, cv)?;
        }
        let out = sum(&mut r).clone().expect("the sum of this round");
        if out.len() != values.len() {
            return Err(self.error(format!(
                "this replica passed {} values, the others {}",
                values.len(),
                out.len()
            )));
        }
        values.copy_from_slice(&out);
        r.micros[self.rank] += start.elapsed().as_micros() as u64;
        r.taken += 1;
        if r.taken == self.world {
            r.taken = 0;
            *sum(&mut r) = None;
            cv.notify_all();
        }
        Ok(())
    }

    /// Waits for a change, failing on a group failure, a departed rank or the deadline.
    fn wait<'a>(
        &self,
        r: MutexGuard<'a, Round>,
        deadline: Instant,
        cv: &Condvar,
    ) -> Result<MutexGuard<'a, Round>> {
        if let Some(message) = &r.failed {
            return Err(self.error(message.clone()));
        }
        let missing: Vec<usize> = (0..self.world)
            .filter(|&k| r.calls[k] < r.calls[self.rank])
            .collect();
        if let Some(&k) = missing.iter().find(|&&k| r.left[k]) {
            return Err(self.error(format!(
                "replica {k} left the group before this all-reduce (call {})",
                r.calls[self.rank]
            )));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(self.error(format!(
                "waited {:.0} s for replicas {missing:?} to reach all-reduce call {}",
                self.timeout.as_secs_f64(),
                r.calls[self.rank]
            )));
        }
        // Wake at least every 100 ms to recheck departures.
        let step = (deadline - now).min(Duration::from_millis(100));
        let (r, _) = cv.wait_timeout(r, step).unwrap_or_else(|e| e.into_inner());
        if let Some(message) = &r.failed {
            return Err(self.error(message.clone()));
        }
        Ok(r)
    }
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<()> {
        self.reduce(values, |r| &mut r.f32_parts, |r| &mut r.f32_sum)
    }

    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()> {
        self.reduce(values, |r| &mut r.f64_parts, |r| &mut r.f64_sum)
    }

    fn traffic(&self) -> Traffic {
        let r = self.lock();
        Traffic {
            sent: 0,
            received: 0,
            calls: r.calls[self.rank],
            micros: r.micros[self.rank],
        }
    }
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        let mut r = self.lock();
        r.left[self.rank] = true;
        self.shared.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_rank_order_and_repeats() {
        let group = LocalGroup::new(3, Duration::from_secs(10));
        let handles: Vec<_> = group
            .into_iter()
            .map(|g| {
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for round in 0..20 {
                        let mut v = vec![(g.rank() + 1) as f32 * 0.1, round as f32];
                        g.all_reduce_f32(&mut v).unwrap();
                        let mut c = [g.rank() as f64];
                        g.all_reduce_f64(&mut c).unwrap();
                        out.push((v, c[0]));
                    }
                    out
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (round, (v, c)) in results[0].iter().enumerate() {
            let want = 0.1f32 + 0.2f32 + 0.3f32;
            assert_eq!(v[0].to_bits(), want.to_bits());
            assert_eq!(v[1], 3.0 * round as f32);
            assert_eq!(*c, 3.0);
        }
        assert!(results.iter().all(|r| r == &results[0]));
    }

    #[test]
    fn a_departed_replica_fails_the_others_quickly() {
        let mut group = LocalGroup::new(2, Duration::from_secs(60));
        let second = group.pop().unwrap();
        let first = group.pop().unwrap();
        let t = std::thread::spawn(move || {
            let mut v = [1.0f32];
            second.all_reduce_f32(&mut v).unwrap();
            drop(second); // leaves before the second call
        });
        let mut v = [1.0f32];
        first.all_reduce_f32(&mut v).unwrap();
        assert_eq!(v[0], 2.0);
        t.join().unwrap();
        let start = Instant::now();
        let err = first.all_reduce_f32(&mut v).unwrap_err().to_string();
        assert!(err.contains("replica 1 left the group"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_replica_times_out() {
        let group = LocalGroup::new(2, Duration::from_millis(300));
        let mut v = [1.0f32];
        let err = group[0].all_reduce_f32(&mut v).unwrap_err().to_string();
        assert!(err.contains("replicas [1]"), "{err}");
    }
}
