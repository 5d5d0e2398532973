//! The in-process backend: one state per key in sharded maps, decided under the shards' locks.
//!
//! Hand-written rather than governor (STACK.md row 10) for three needs governor does not meet:
//! a request under several limits is decided all-or-nothing (a refusal consumes no quota from
//! any of them), the sliding-window algorithm, and arithmetic identical to the Redis script so
//! the two backends (and the fallback between them) agree. Idle keys are swept when a shard
//! has doubled since its last sweep, so memory follows the number of active clients.

use std::{
    collections::{HashMap, hash_map::Entry},
    hash::{BuildHasherDefault, Hasher},
    time::Instant,
};

use parking_lot::{Mutex, MutexGuard};

use crate::quota::{self, Outcome, Quota, State};

const SHARDS: usize = 64;
const MIN_SWEEP_LEN: usize = 1024;

/// One limit of a decision: the key's digest and its quota.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Check<'a> {
    pub(crate) key: u128,
    pub(crate) quota: &'a Quota,
}

/// The outcome of a decision over several limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether every limit allowed the request.
    pub allowed: bool,
    /// The limit that decides the headers: when allowed, the one with the fewest requests
    /// left; when refused, the one that makes the client wait longest.
    pub binding: Outcome,
    /// The index of the binding limit among those decided.
    pub rule: usize,
}

impl Verdict {
    /// Folds one limit's outcome into the verdict so far.
    pub(crate) fn fold(acc: Option<Self>, rule: usize, o: Outcome) -> Self {
        let Some(acc) = acc else {
            return Self {
                allowed: o.allowed,
                binding: o,
                rule,
            };
        };
        let allowed = acc.allowed && o.allowed;
        let takes_over = match (acc.binding.allowed, o.allowed) {
            (true, false) => true,
            (false, true) => false,
            (false, false) => o.retry_after > acc.binding.retry_after,
            (true, true) => {
                o.remaining < acc.binding.remaining
                    || (o.remaining == acc.binding.remaining && o.reset > acc.binding.reset)
            }
        };
        if takes_over {
            Self {
                allowed,
                binding: o,
                rule,
            }
        } else {
            Self { allowed, ..acc }
        }
    }
}

/// Keys are already uniform 128-bit digests: hashing them again (SipHash, by default) would
/// only cost time. The low 64 bits are the hash.
#[derive(Debug, Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed; this path is a fallback that still spreads well.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(b);
        }
    }

    #[allow(clippy::cast_possible_truncation)]
    fn write_u128(&mut self, i: u128) {
        // Folded and multiplied (Fibonacci hashing), so even non-uniform keys spread over the
        // map's buckets and control bits.
        self.0 = ((i >> 64) as u64 ^ i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type States = HashMap<u128, (State, u64), BuildHasherDefault<DigestHasher>>;

#[derive(Debug, Default)]
struct Shard {
    states: States,
    sweep_at: usize,
}

/// Limit state held in this process.
#[derive(Debug)]
pub(crate) struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            epoch: Instant::now(),
        }
    }
}

impl LocalStore {
    /// Nanoseconds on this store's monotonic clock.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Decides a request of `cost` against all `checks` at `now`: consumed from every limit if
    /// all allow it, from none otherwise.
    pub(crate) fn decide(&self, checks: &[Check<'_>], cost: u64, now: u64) -> Option<Verdict> {
        match checks {
            [] => None,
            [one] => {
                let mut shard = self.shards[shard_of(one.key)].lock();
                // One lookup: decide on the entry and update it in place.
                let outcome = match shard.states.entry(one.key) {
                    Entry::Occupied(mut e) => {
                        let (outcome, next) = quota::decide(one.quota, Some(e.get().0), now, cost);
                        if let Some(next) = next {
                            e.get_mut().0 = next;
                        }
                        outcome
                    }
                    Entry::Vacant(e) => {
                        let (outcome, next) = quota::decide(one.quota, None, now, cost);
                        if let Some(next) = next {
                            e.insert((next, one.quota.window_ns()));
                            sweep_if_grown(&mut shard, now);
                        }
                        outcome
                    }
                };
                Some(Verdict::fold(None, 0, outcome))
            }
            many => {
                // Lock every shard involved, in index order so two decisions never deadlock.
                let mut order: Vec<usize> = many.iter().map(|c| shard_of(c.key)).collect();
                order.sort_unstable();
                order.dedup();
                let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
                    order.iter().map(|&i| (i, self.shards[i].lock())).collect();
                let guard_of = |guards: &mut Vec<(usize, MutexGuard<'_, Shard>)>, key: u128| {
                    let i = shard_of(key);
                    guards.iter().position(|(s, _)| *s == i).unwrap_or_default()
                };
                let mut verdict = None;
                let mut pending = Vec::with_capacity(many.len());
                for (rule, check) in many.iter().enumerate() {
                    let g = guard_of(&mut guards, check.key);
                    let state = state_of(&guards[g].1, check.key);
                    let (outcome, next) = quota::decide(check.quota, state, now, cost);
                    verdict = Some(Verdict::fold(verdict, rule, outcome));
                    pending.push(next);
                }
                let verdict = verdict?;
                if verdict.allowed {
                    for (check, next) in many.iter().zip(pending) {
                        if let Some(next) = next {
                            let g = guard_of(&mut guards, check.key);
                            store(
                                &mut guards[g].1,
                                check.key,
                                next,
                                check.quota.window_ns(),
                                now,
                            );
                        }
                    }
                }
                Some(verdict)
            }
        }
    }

    /// Keys held, for tests and stats.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().states.len()).sum()
    }
}

fn shard_of(key: u128) -> usize {
    // The digest is uniform; its low bits pick the shard.
    usize::try_from(key % SHARDS as u128).unwrap_or_default()
}

fn state_of(shard: &Shard, key: u128) -> Option<State> {
    shard.states.get(&key).map(|(s, _)| *s)
}

fn store(shard: &mut Shard, key: u128, state: State, window_ns: u64, now: u64) {
    if shard.states.insert(key, (state, window_ns)).is_none() {
        sweep_if_grown(shard, now);
    }
}

/// Drops idle keys once the shard has doubled since its last sweep.
fn sweep_if_grown(shard: &mut Shard, now: u64) {
    sweep_if_doubled(&mut shard.states, &mut shard.sweep_at, |(state, window)| {
        state.is_live(now, *window)
    });
}

/// Keeps only the `live` entries of `map` once it has doubled since the last sweep (and holds
/// at least 1024), so idle callers cost memory only until the map next grows.
pub(crate) fn sweep_if_doubled<V, S>(
    map: &mut HashMap<u128, V, S>,
    sweep_at: &mut usize,
    mut live: impl FnMut(&V) -> bool,
) {
    if map.len() >= (*sweep_at).max(MIN_SWEEP_LEN) {
        map.retain(|_, v| live(v));
        *sweep_at = map.len() * 2;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::quota::Rate;

    #[test]
    fn a_request_refused_by_one_limit_consumes_none_of_the_others() {
        let store = LocalStore::default();
        let per_second = Quota::gcra(Rate::new(10, Duration::from_secs(1)));
        let per_hour = Quota::gcra(Rate::new(3, Duration::from_secs(3600)));
        let checks = [
            Check {
                key: 1,
                quota: &per_second,
            },
            Check {
                key: 2,
                quota: &per_hour,
            },
        ];
        let now = 5_000_000_000;
        for _ in 0..3 {
            assert!(store.decide(&checks, 1, now).expect("limits").allowed);
        }
        for _ in 0..20 {
            let v = store.decide(&checks, 1, now).expect("limits");
            assert!(!v.allowed);
            assert_eq!(v.binding.limit, 3, "the hourly limit refuses");
        }
        // Only the 3 admitted requests were taken from the per-second limit.
        let alone = store.decide(&checks[..1], 1, now).expect("limits");
        assert_eq!(alone.binding.remaining, 10 - 3 - 1);
    }

    #[test]
    fn the_binding_limit_is_the_one_closest_to_exhaustion() {
        let store = LocalStore::default();
        let big = Quota::gcra(Rate::new(100, Duration::from_secs(1)));
        let small = Quota::gcra(Rate::new(5, Duration::from_secs(1)));
        let checks = [
            Check {
                key: 7,
                quota: &big,
            },
            Check {
                key: 8,
                quota: &small,
            },
        ];
        let v = store.decide(&checks, 1, 1).expect("limits");
        assert_eq!((v.binding.limit, v.binding.remaining), (5, 4));
    }

    #[test]
    fn idle_keys_are_swept() {
        let store = LocalStore::default();
        let quota = Quota::gcra(Rate::new(1, Duration::from_secs(1)));
        for key in 0..(SHARDS as u128 * 2000) {
            store.decide(&[Check { key, quota: &quota }], 1, 0);
        }
        let busy = store.len();
        // Much later, fresh keys trigger sweeps that drop the idle ones.
        let later = 10_000_000_000;
        for key in 0..(SHARDS as u128 * 2000) {
            store.decide(
                &[Check {
                    key: key + (1 << 64),
                    quota: &quota,
                }],
                1,
                later,
            );
        }
        assert!(
            store.len() < busy * 2,
            "{} keys after sweeping",
            store.len()
        );
    }
}
