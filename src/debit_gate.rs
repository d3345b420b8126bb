//! How many debits of one user's balance this process sends to Postgres at once.
//!
//! A debit holds its user's account lock for its statement and its commit, so one user's debits
//! run one at a time whatever we do. Sending more of them at once only parks more connections on
//! that lock: each one is a pooled connection no other request can use, and every hand-over of
//! the lock wakes a backend that must re-read the row the last one changed. Measured on one
//! user's balance with 32 callers (docs/performance.md), two in flight ran ~1.4x faster than
//! eight: one holding the lock, the next already waiting at it, so the hand-over happens inside
//! Postgres without a round trip. The rest wait here, in memory, in arrival order.
//!
//! This is throughput, not correctness: the lock in Postgres is what keeps a balance exact, for
//! any number of processes.

use std::{
    hash::{BuildHasher, RandomState},
    sync::Arc,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Debits of one user in flight at once (see above).
const IN_FLIGHT_PER_USER: usize = 2;
/// Users map onto this many gates (two users rarely share one, and then only wait a little): a
/// fixed table never grows with the users and needs no clean-up.
const GATES: usize = 1024;

#[derive(Clone)]
pub struct DebitGate {
    gates: Arc<[Arc<Semaphore>]>,
    hasher: RandomState,
}

impl Default for DebitGate {
    fn default() -> Self {
        Self {
            gates: (0..GATES)
                .map(|_| Arc::new(Semaphore::new(IN_FLIGHT_PER_USER)))
                .collect(),
            hasher: RandomState::new(),
        }
    }
}

impl DebitGate {
    /// Waits until this user's debit may go; it may until the permit is dropped.
    pub async fn enter(&self, user_id: &str) -> OwnedSemaphorePermit {
        let gate = &self.gates[self.hasher.hash_one(user_id) as usize % GATES];
        gate.clone().acquire_owned().await.expect("the gates are never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_user_gets_two_debits_in_flight_and_another_user_is_not_held_up() {
        let gate = DebitGate::default();
        let first = gate.enter("alice").await;
        let _second = gate.enter("alice").await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), gate.enter("alice")).await;
        assert!(
            third.is_err(),
            "a third debit of one user went in while two were in flight"
        );
        // Another user waits only if it shares alice's gate, which one of 1024 does.
        let other = (0..10)
            .map(|n| format!("user-{n}"))
            .find(|user| {
                gate.hasher.hash_one(user.as_str()) as usize % GATES != gate.hasher.hash_one("alice") as usize % GATES
            })
            .unwrap();
        let _other = gate.enter(&other).await;
        drop(first);
        let _third = gate.enter("alice").await;
    }
}
