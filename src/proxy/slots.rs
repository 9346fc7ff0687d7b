//! The process-wide connection limit, sized from the open-file limit.
//!
//! Every proxied connection costs two descriptors (client and upstream). An
//! accept loop that takes clients until `accept` fails with EMFILE holds
//! clients it cannot pair with an upstream socket: their dials fail and the
//! clients are reset. So, as HAProxy derives `maxconn` from `ulimit -n`,
//! each accepted client takes a slot before its upstream socket is made;
//! when none is free, the accept loop waits with that one client (a reserved
//! descriptor) and later clients wait in the kernel's listen backlog, to be
//! served in order as connections close.
//!
//! At first use the soft open-file limit is raised to the hard one (as the
//! Go runtime does for Toxiproxy), then a sixteenth of it plus
//! [`RESERVED_FDS`] is kept back for the API, the runner, HTTP upstream
//! pools and cancel-request dials.

use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors always kept back from proxied connections.
pub const RESERVED_FDS: u64 = 16;

/// Upper bound on slots, whatever the limit says (`RLIM_INFINITY`).
const MAX_SLOTS: u64 = 1 << 20;

static SLOTS: OnceLock<(Arc<Semaphore>, u64)> = OnceLock::new();

/// The shared slots and their number; the first call raises the soft limit
/// and sizes them.
fn shared() -> &'static (Arc<Semaphore>, u64) {
    SLOTS.get_or_init(|| {
        let n = capacity(raise_nofile());
        (Arc::new(Semaphore::new(n as usize)), n)
    })
}

/// How many connections fit in `nofile` descriptors.
pub fn capacity(nofile: u64) -> u64 {
    let reserve = RESERVED_FDS + nofile / 16;
    (nofile.saturating_sub(reserve) / 2).clamp(1, MAX_SLOTS)
}

/// Total slots (free and taken).
pub fn total() -> u64 {
    shared().1
}

/// Slots taken by open connections.
pub fn in_use() -> u64 {
    let (sem, n) = shared();
    n - sem.available_permits() as u64
}

/// A free slot now, if there is one.
pub fn try_take() -> Option<OwnedSemaphorePermit> {
    shared().0.clone().try_acquire_owned().ok()
}

/// Waits for a slot.
pub async fn take() -> OwnedSemaphorePermit {
    shared()
        .0
        .clone()
        .acquire_owned()
        .await
        .expect("the slot semaphore is never closed")
}

/// Raises the soft open-file limit to the hard one; returns the soft limit
/// now in force.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_keeps_a_reserve_and_pairs_descriptors() {
        // ulimit -n 48: 48 - (16 + 3) = 29 descriptors, 14 connections.
        assert_eq!(capacity(48), 14);
        assert_eq!(capacity(1024), (1024 - 16 - 64) / 2);
        assert_eq!(capacity(10), 1, "never zero: one client at a time");
        assert_eq!(capacity(u64::MAX), MAX_SLOTS);
    }
}
