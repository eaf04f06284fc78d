//! Buffers reused across layers and steps, so a training step does not fault in fresh pages.
//!
//! A step takes its buffers with [`take`] and gives them back with [`give`] when it ends; the
//! next step finds them already mapped. The pool keeps what was given back until [`clear`].

use std::sync::Mutex;

static FREE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `len` values. With `zeroed`, every value is 0; without, the values are whatever
/// the buffer held before (for outputs that are written in full).
pub fn take(len: usize, zeroed: bool) -> Vec<f32> {
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    // The smallest buffer that fits, else the largest one (grown).
    let pick = free
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
        .map(|(i, _)| i);
    let mut buf = pick.map(|i| free.swap_remove(i)).unwrap_or_default();
    drop(free);
    if zeroed {
        buf.clear();
        buf.resize(len, 0.0);
    } else {
        buf.resize(len, 0.0);
        buf.truncate(len);
    }
    buf
}

/// Returns a buffer to the pool.
pub fn give(buf: Vec<f32>) {
    if buf.capacity() > 0 {
        FREE.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
    }
}

/// Frees every pooled buffer.
pub fn clear() {
    FREE.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Values held by the pool.
pub fn pooled_len() -> usize {
    FREE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(Vec::capacity)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_when_asked() {
        let mut a = take(1000, true);
        assert!(a.iter().all(|&x| x == 0.0));
        a.fill(3.0);
        let p = a.as_ptr();
        give(a);
        let b = take(500, true);
        assert_eq!(b.len(), 500);
        assert!(b.iter().all(|&x| x == 0.0));
        // The pooled buffer was reused (other tests may share the pool, so only when it is ours).
        if b.as_ptr() == p {
            assert!(b.capacity() >= 1000);
        }
        give(b);
    }
}
