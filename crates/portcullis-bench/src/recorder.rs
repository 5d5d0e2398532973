//! Recording without per-request records: HdrHistograms and counters per request kind, in a
//! few shards (workers pick one by number, so threads rarely meet on a lock and no lock is held
//! across `.await`). Each shard also keeps an interval histogram that the ticker drains every
//! second for the live line and the timeline. Memory depends on the number of kinds and
//! shards, not on the number of requests or the run's length.

use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderName, StatusCode};

use crate::report::ErrorCounts;

/// Latencies are recorded in microseconds, from 1 µs up to an hour (3 significant digits).
const HIGHEST_US: u64 = 3_600_000_000;
/// Distinct values counted per header before the rest go to `(other)`.
const MAX_HEADER_VALUES: usize = 32;

/// A latency histogram in microseconds.
pub(crate) fn histogram(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants known to be valid.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HIGHEST_US, sigfig).expect("valid histogram bounds")
}

/// Why a request produced no usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Connecting failed.
    Connect = 0,
    /// The timeout expired.
    Timeout = 1,
    /// The exchange broke after connecting.
    Transport = 2,
}

impl Failure {
    /// The name used in reports.
    pub(crate) const NAMES: [&'static str; 3] = ["connect", "timeout", "transport"];
}

/// Counts of one header's values.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderCounter {
    pub(crate) values: Vec<(Box<str>, u64)>,
    pub(crate) other: u64,
    pub(crate) absent: u64,
}

impl HeaderCounter {
    fn count(&mut self, value: Option<&[u8]>) {
        let Some(value) = value else {
            self.absent += 1;
            return;
        };
        if let Some(slot) = self.values.iter_mut().find(|(v, _)| v.as_bytes() == value) {
            slot.1 += 1;
        } else if self.values.len() < MAX_HEADER_VALUES {
            self.values.push((String::from_utf8_lossy(value).into(), 1));
        } else {
            self.other += 1;
        }
    }

    fn merge(&mut self, other: &HeaderCounter) {
        for (value, n) in &other.values {
            if let Some(slot) = self.values.iter_mut().find(|(v, _)| v == value) {
                slot.1 += n;
            } else if self.values.len() < MAX_HEADER_VALUES {
                self.values.push((value.clone(), *n));
            } else {
                self.other += n;
            }
        }
        self.other += other.other;
        self.absent += other.absent;
    }
}

/// Everything measured for one request kind.
#[derive(Debug, Clone)]
pub(crate) struct KindRecord {
    pub(crate) latency: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) responses: u64,
    pub(crate) errors: ErrorCounts,
    pub(crate) status: Vec<u64>,
    pub(crate) bytes: u64,
    pub(crate) headers: Vec<HeaderCounter>,
    /// (passed, failed) per check.
    pub(crate) checks: Vec<(u64, u64)>,
    /// The first message of each failure kind (connect, timeout, transport), for diagnosis.
    pub(crate) examples: [Option<String>; 3],
}

impl KindRecord {
    pub(crate) fn new(headers: usize, checks: usize) -> Self {
        Self {
            latency: histogram(3),
            requests: 0,
            responses: 0,
            errors: ErrorCounts::default(),
            status: vec![0; 600],
            bytes: 0,
            headers: vec![HeaderCounter::default(); headers],
            checks: vec![(0, 0); checks],
            examples: [None, None, None],
        }
    }

    /// Adds another record of the same kind.
    pub(crate) fn merge(&mut self, other: &KindRecord) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.responses += other.responses;
        self.errors.add(&other.errors);
        for (a, b) in self.status.iter_mut().zip(&other.status) {
            *a += b;
        }
        self.bytes += other.bytes;
        for (a, b) in self.headers.iter_mut().zip(&other.headers) {
            a.merge(b);
        }
        for (a, b) in self.checks.iter_mut().zip(&other.checks) {
            a.0 += b.0;
            a.1 += b.1;
        }
        for (a, b) in self.examples.iter_mut().zip(&other.examples) {
            if a.is_none() {
                a.clone_from(b);
            }
        }
    }
}

/// What the ticker takes from a shard each interval.
#[derive(Debug, Default)]
pub(crate) struct IntervalCounts {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
}

/// One shard: records for every kind plus the current interval.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) kinds: Vec<KindRecord>,
    pub(crate) interval: Histogram<u64>,
    pub(crate) interval_counts: IntervalCounts,
}

impl Recorder {
    /// A recorder for kinds with these numbers of checks, counting `headers` headers.
    pub(crate) fn new(checks_per_kind: &[usize], headers: usize) -> Self {
        Self {
            kinds: checks_per_kind
                .iter()
                .map(|&c| KindRecord::new(headers, c))
                .collect(),
            interval: histogram(2),
            interval_counts: IntervalCounts::default(),
        }
    }

    /// Records a response.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn response(
        &mut self,
        kind: usize,
        latency_us: u64,
        status: StatusCode,
        headers: &HeaderMap,
        counted: &[HeaderName],
        bytes: u64,
        checks: &[bool],
    ) {
        let Some(rec) = self.kinds.get_mut(kind) else {
            return;
        };
        let latency_us = latency_us.max(1);
        rec.latency.saturating_record(latency_us);
        rec.requests += 1;
        rec.responses += 1;
        rec.bytes += bytes;
        let code = status.as_u16();
        if let Some(n) = rec.status.get_mut(usize::from(code)) {
            *n += 1;
        }
        let error = match code {
            400..=499 => {
                rec.errors.status_4xx += 1;
                true
            }
            500.. => {
                rec.errors.status_5xx += 1;
                true
            }
            _ => false,
        };
        for (counter, name) in rec.headers.iter_mut().zip(counted) {
            counter.count(headers.get(name).map(http::HeaderValue::as_bytes));
        }
        for (slot, &passed) in rec.checks.iter_mut().zip(checks) {
            if passed {
                slot.0 += 1;
            } else {
                slot.1 += 1;
            }
        }
        self.interval.saturating_record(latency_us);
        self.interval_counts.requests += 1;
        self.interval_counts.errors += u64::from(error);
    }

    /// Records a request that got no response. Timeouts are measured (they lasted at least
    /// the timeout); failed connects are not. `message` is kept for the first of each kind.
    pub(crate) fn failure(
        &mut self,
        kind: usize,
        failure: Failure,
        latency_us: u64,
        message: impl FnOnce() -> String,
    ) {
        let Some(rec) = self.kinds.get_mut(kind) else {
            return;
        };
        rec.requests += 1;
        let slot = &mut rec.examples[failure as usize];
        if slot.is_none() {
            *slot = Some(message());
        }
        match failure {
            Failure::Connect => rec.errors.connect += 1,
            Failure::Timeout => {
                rec.errors.timeout += 1;
                rec.latency.saturating_record(latency_us.max(1));
                self.interval.saturating_record(latency_us.max(1));
            }
            Failure::Transport => rec.errors.transport += 1,
        }
        self.interval_counts.requests += 1;
        self.interval_counts.errors += 1;
    }

    /// Moves the interval's data into `into` and starts a new interval.
    pub(crate) fn drain_interval(
        &mut self,
        into: &mut Histogram<u64>,
        counts: &mut IntervalCounts,
    ) {
        let _ = into.add(&self.interval);
        self.interval.reset();
        counts.requests += std::mem::take(&mut self.interval_counts.requests);
        counts.errors += std::mem::take(&mut self.interval_counts.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_failures_land_in_their_error_kinds() {
        let x_cache = HeaderName::from_static("x-cache");
        let mut r = Recorder::new(&[1], 1);
        let mut hit = HeaderMap::new();
        hit.insert(&x_cache, "HIT".parse().unwrap());
        let names = [x_cache];
        r.response(0, 1000, StatusCode::OK, &hit, &names, 10, &[true]);
        r.response(
            0,
            2000,
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            &names,
            0,
            &[false],
        );
        r.response(0, 3000, StatusCode::BAD_GATEWAY, &hit, &names, 0, &[false]);
        r.failure(0, Failure::Connect, 0, || "refused".to_owned());
        r.failure(0, Failure::Timeout, 5_000_000, String::new);
        let k = &r.kinds[0];
        assert_eq!((k.requests, k.responses, k.bytes), (5, 3, 10));
        assert_eq!(
            k.errors,
            ErrorCounts {
                connect: 1,
                timeout: 1,
                transport: 0,
                status_4xx: 1,
                status_5xx: 1
            }
        );
        assert_eq!(k.latency.len(), 4, "the connect failure is not a latency");
        assert_eq!(k.headers[0].values, vec![("HIT".into(), 2)]);
        assert_eq!(k.headers[0].absent, 1);
        assert_eq!(k.checks[0], (1, 2));
        assert_eq!(k.examples[0].as_deref(), Some("refused"));
        let mut into = histogram(2);
        let mut counts = IntervalCounts::default();
        r.drain_interval(&mut into, &mut counts);
        assert_eq!((counts.requests, counts.errors, into.len()), (5, 4, 4));
        assert_eq!(r.interval.len(), 0);
    }

    #[test]
    fn header_values_past_the_cap_go_to_other() {
        let mut c = HeaderCounter::default();
        for i in 0..40 {
            c.count(Some(format!("v{i}").as_bytes()));
        }
        assert_eq!(c.values.len(), MAX_HEADER_VALUES);
        assert_eq!(c.other, 8);
    }
}
