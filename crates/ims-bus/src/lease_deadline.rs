//! How long a replicated node may still answer as its region's leader, by its own clock.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ims_domain::RegionId;
use ims_wire::{WireError, WireErrorCode};

/// Until when this node holds its region's lease, as its own clock sees it: moved on by each
/// renewal of the lease, read by the endpoints that answer from the node's own log.
///
/// A leader paused past its lease (SIGSTOP, a stalled VM) wakes with requests queued on its
/// socket, and would answer them from a log that the new leader has moved past: a reader
/// whose checkpoint is beyond that stale head stops, taking it for another log. Checking the
/// deadline before each answer refuses them instead; the writer itself is fenced by the
/// replicated stream either way.
#[derive(Clone, Debug)]
pub struct LeaseDeadline(Arc<Mutex<Instant>>);

impl LeaseDeadline {
    /// A deadline already passed: nothing is answered until the lease is taken.
    pub fn lapsed() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }

    /// The lease is held until `until`.
    pub fn hold_until(&self, until: Instant) {
        *self.0.lock().expect("the lease deadline is never poisoned") = until;
    }

    /// The lease is no longer held.
    pub fn end(&self) {
        *self.0.lock().expect("the lease deadline is never poisoned") = Instant::now();
    }

    /// Whether the lease is still held by this node's clock.
    pub fn held(&self) -> bool {
        Instant::now() < *self.0.lock().expect("the lease deadline is never poisoned")
    }

    /// What a request to the leader of `region` is answered once the lease lapsed: `unavailable`,
    /// so that the client asks again and reaches the node that leads now.
    pub fn refusal(&self, region: &RegionId) -> Option<WireError> {
        (!self.held()).then(|| {
            WireError::new(
                WireErrorCode::Unavailable,
                format!(
                    "this node's lease of region {region} lapsed and another node may lead it \
                     by now; retry"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_deadline_is_held_until_it_passes_or_ends() {
        let deadline = LeaseDeadline::lapsed();
        assert!(!deadline.held());
        deadline.hold_until(Instant::now() + Duration::from_secs(60));
        assert!(deadline.held());
        deadline.end();
        assert!(!deadline.held());
        deadline.hold_until(Instant::now() + Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!deadline.held());
    }
}
