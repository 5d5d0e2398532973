//! Local token leases for the Redis backend: one script call takes `N x cost` units while they
//! are all available, and the next requests of the same caller spend them here without a round
//! trip. Near the limit the script grants only the request's own cost, so decisions there stay
//! exact.
//!
//! The bound: leased units are consumed on Redis when taken, so the total never exceeds the
//! limit over the long run; but units leased just before a window and spent in it can put up to
//! `instances x N x cost` more requests into that window than an exact decision would, and
//! units an instance leased but did not spend before the lease's time-to-live ran out are lost
//! (other instances may be refused meanwhile). Leases live `ttl`, 250 ms by default.
//!
//! Refusals are remembered too, for every Redis limiter: a caller refused with `Retry-After: T`
//! cannot pass with the same or a higher cost before T (state on Redis only moves forward), so
//! until then its requests are refused here without a round trip. That is exact, give or take
//! the round trip itself (the local clock starts when the answer arrives).

use std::{
    collections::HashMap,
    hash::BuildHasherDefault,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::local::{DigestHasher, Verdict, sweep_if_doubled};

const SHARDS: usize = 16;

/// Leases of one limiter.
#[derive(Debug)]
pub(crate) struct Leases {
    /// Requests' worth of units taken per Redis call.
    pub(crate) size: u64,
    ttl: Duration,
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    leases: HashMap<u128, Lease, BuildHasherDefault<DigestHasher>>,
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    units: u64,
    expires: Duration,
    /// The decision that granted it; `remaining` counted on Redis after the lease was taken.
    verdict: Verdict,
    /// A refusal: requests costing at least `refused_cost` fail until `refused_until`.
    refused_until: Duration,
    refused_cost: u64,
    refusal: Option<Verdict>,
}

impl Lease {
    fn empty(now: Duration, verdict: Verdict) -> Self {
        Self {
            units: 0,
            expires: now,
            verdict,
            refused_until: now,
            refused_cost: u64::MAX,
            refusal: None,
        }
    }
}

impl Leases {
    pub(crate) fn new(size: u64, ttl: Duration) -> Self {
        Self {
            size,
            ttl,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            epoch: Instant::now(),
        }
    }

    fn shard(&self, key: u128) -> &Mutex<Shard> {
        &self.shards[usize::try_from(key % SHARDS as u128).unwrap_or_default()]
    }

    /// Spends `cost` units of the caller's lease; the decision to report, if the lease held them.
    pub(crate) fn spend(&self, key: u128, cost: u64) -> Option<Verdict> {
        let now = self.epoch.elapsed();
        let mut shard = self.shard(key).lock();
        let lease = shard.leases.get_mut(&key)?;
        if let Some(refusal) = lease.refusal
            && now < lease.refused_until
            && cost >= lease.refused_cost
        {
            let mut v = refusal;
            v.binding.retry_after = lease.refused_until - now;
            return Some(v);
        }
        if lease.expires <= now || lease.units < cost {
            return None;
        }
        lease.units -= cost;
        Some(reported(lease))
    }

    /// Remembers a refusal of a request costing `cost`, valid for its `retry_after`.
    pub(crate) fn refuse(&self, key: u128, cost: u64, verdict: Verdict) {
        self.update(key, verdict, |lease, now| {
            lease.refusal = Some(verdict);
            lease.refused_cost = cost;
            lease.refused_until = now.saturating_add(verdict.binding.retry_after);
            lease.expires = lease.expires.max(lease.refused_until);
        });
    }

    /// Runs `f` on the caller's entry (created if missing), then sweeps expired entries once
    /// the shard has doubled since the last sweep.
    fn update<R>(
        &self,
        key: u128,
        verdict: Verdict,
        f: impl FnOnce(&mut Lease, Duration) -> R,
    ) -> R {
        let now = self.epoch.elapsed();
        let mut shard = self.shard(key).lock();
        let lease = shard
            .leases
            .entry(key)
            .or_insert_with(|| Lease::empty(now, verdict));
        let out = f(lease, now);
        let Shard { leases, sweep_at } = &mut *shard;
        sweep_if_doubled(leases, sweep_at, |l| l.expires > now);
        out
    }

    /// Keeps `units` (what a Redis call granted beyond the request's own cost) for the caller;
    /// returns the decision to report for the request itself.
    pub(crate) fn keep(&self, key: u128, units: u64, verdict: Verdict) -> Verdict {
        let ttl = self.ttl;
        self.update(key, verdict, |lease, now| {
            lease.refusal = None;
            // Units of a live lease are kept (two requests may lease at once); expired ones are
            // lost.
            if lease.expires <= now {
                lease.units = 0;
            }
            lease.units += units;
            lease.expires = now + ttl;
            lease.verdict = verdict;
            reported(lease)
        })
    }
}

/// What a client sees: the Redis count plus the units this instance still holds for it.
fn reported(lease: &Lease) -> Verdict {
    let mut v = lease.verdict;
    v.binding.remaining += lease.units;
    v
}
