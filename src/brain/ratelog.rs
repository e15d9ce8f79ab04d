//! Rate limits for refusal logs: a flood of bad requests must not become a log
//! storm. Each limiter lets `per_sec` lines through per second and counts the
//! rest; the next line that passes says how many were suppressed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub(crate) struct RateLog {
    per_sec: u32,
    window: Mutex<(u64, u32)>,
    suppressed: AtomicU64,
    /// Every event offered, logged or not (for counters).
    total: AtomicU64,
}

impl RateLog {
    pub(crate) const fn new(per_sec: u32) -> RateLog {
        RateLog {
            per_sec,
            window: Mutex::new((0, 0)),
            suppressed: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this line may be logged, `n` being how many were
    /// suppressed before it; `None` when it must be dropped.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let sec = super::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0 != sec {
            *w = (sec, 0);
        }
        if w.1 >= self.per_sec {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        w.1 += 1;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }

    /// How many events were offered since start.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Log a refusal through `limiter` at warn level, naming suppressed lines.
#[macro_export]
macro_rules! refusal {
    ($limiter:expr, $($arg:tt)+) => {
        if let Some(n) = $limiter.admit() {
            if n > 0 {
                tracing::warn!(suppressed = n, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_counted() {
        let r = RateLog::new(5);
        let admitted = (0..1000).filter(|_| r.admit().is_some()).count();
        // At most two one-second windows can pass during the loop.
        assert!((5..=10).contains(&admitted), "{admitted}");
        assert_eq!(r.total(), 1000);
    }
}
