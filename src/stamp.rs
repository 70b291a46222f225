//! A tiny lock-free timestamp: the connection timers need "when did X last happen",
//! read rarely and written at most once per request, without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since a process-wide epoch, plus one; 0 means unset.
#[derive(Debug, Default)]
pub struct Stamp(AtomicU64);

impl Stamp {
    /// Records now.
    pub fn touch(&self) {
        self.0
            .store(epoch().elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// Records now unless a time is already set.
    pub fn touch_if_unset(&self) {
        if self.0.load(Ordering::Relaxed) == 0 {
            self.touch();
        }
    }

    /// Forgets the recorded time.
    pub fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// The recorded time, if set.
    pub fn get(&self) -> Option<Instant> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(epoch() + Duration::from_millis(ms - 1)),
        }
    }
}
