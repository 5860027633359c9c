//! Connection slots per destination (`delivery.per_destination_concurrency`): one semaphore per
//! (destination, limit), so that a changed limit takes effect for new deliveries. A semaphore
//! nobody holds or waits for is forgotten as the map grows: every domain we ever mailed must
//! not keep memory for ever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// Semaphores kept before the first prune; then twice what the last prune left.
const PRUNE_AT: usize = 1024;

/// The semaphores by (destination, limit), and the size at which they are next pruned.
type Semaphores = (HashMap<(String, u32), Arc<Semaphore>>, usize);

#[derive(Default)]
pub struct Destinations {
    map: Mutex<Semaphores>,
}

impl Destinations {
    /// The semaphore of `destination` under `limit` (waiters and holders keep their clone).
    pub fn semaphore(&self, destination: &str, limit: u32) -> Arc<Semaphore> {
        let mut guard = self.map.lock().expect("destinations lock");
        let (map, prune_at) = &mut *guard;
        let key = (destination.to_string(), limit);
        if let Some(s) = map.get(&key) {
            return s.clone();
        }
        if map.len() >= (*prune_at).max(PRUNE_AT) {
            // Only the map holds it: no delivery has or awaits a slot there.
            map.retain(|_, s| Arc::strong_count(s) > 1);
            *prune_at = 2 * map.len();
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(limit.max(1) as usize)))
            .clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().expect("destinations lock").0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_destinations_are_forgotten_busy_ones_kept() {
        let d = Destinations::default();
        let busy = d.semaphore("busy.example", 2);
        let permit = busy.clone().try_acquire_owned().unwrap();
        for i in 0..PRUNE_AT + 10 {
            drop(d.semaphore(&format!("d{i}.example"), 2));
        }
        assert!(d.len() < PRUNE_AT, "{}", d.len());
        assert!(
            Arc::ptr_eq(&busy, &d.semaphore("busy.example", 2)),
            "a destination in use keeps its semaphore (and its count)"
        );
        assert_eq!(busy.available_permits(), 1);
        drop(permit);
    }
}
