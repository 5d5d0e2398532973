//! From recorded shards to a [`Report`]: merges the per-shard histograms and counters per
//! request kind and overall, derives rates (throughput, error rate, cache hit rate) and
//! evaluates the thresholds against the merged histograms.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use http::HeaderName;
use parking_lot::Mutex;

use crate::{
    plan::Plan,
    recorder::{Failure, KindRecord, Recorder},
    report::{CheckStats, Latency, Report, Sample, Stats, ThresholdResult, round},
};

/// `X-Cache`, counted on every run for the cache hit rate.
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Builds the report of a finished run.
pub(crate) fn build(
    plan: &Plan,
    shards: &[Mutex<Recorder>],
    counted: &[HeaderName],
    elapsed: Duration,
    started_unix_ms: u64,
    timeline: Vec<Sample>,
    schema: &str,
) -> Report {
    let mut kinds: Vec<KindRecord> = plan
        .kinds
        .iter()
        .map(|k| KindRecord::new(counted.len(), k.checks.len()))
        .collect();
    for shard in shards {
        let shard = shard.lock();
        for (total, part) in kinds.iter_mut().zip(&shard.kinds) {
            total.merge(part);
        }
    }
    // The overall record has no checks of its own (zero slots): merging skips them, and the
    // report lists every kind's checks under the kind's name instead.
    let mut overall = KindRecord::new(counted.len(), 0);
    for k in &kinds {
        overall.merge(k);
    }
    let secs = elapsed.as_secs_f64();
    let mut overall_stats = stats("all", &overall, counted, secs);
    let kind_stats: Vec<Stats> = plan
        .kinds
        .iter()
        .zip(&kinds)
        .map(|(kind, rec)| {
            let mut s = stats(&kind.name, rec, counted, secs);
            s.checks = kind
                .checks
                .iter()
                .zip(&rec.checks)
                .map(|(c, &(passed, failed))| CheckStats {
                    check: c.describe(),
                    passed,
                    failed,
                })
                .collect();
            s
        })
        .collect();
    overall_stats.checks = kind_stats
        .iter()
        .flat_map(|s| {
            s.checks.iter().map(|c| CheckStats {
                check: format!("{}: {}", s.name, c.check),
                ..c.clone()
            })
        })
        .collect();

    let thresholds: Vec<ThresholdResult> = plan
        .thresholds
        .iter()
        .map(|t| {
            let (stats, hist) = match &t.scope {
                None => (&overall_stats, &overall.latency),
                Some(scope) => plan
                    .kinds
                    .iter()
                    .position(|k| &*k.name == scope)
                    .map_or((&overall_stats, &overall.latency), |i| {
                        (&kind_stats[i], &kinds[i].latency)
                    }),
            };
            let actual = t
                .actual(stats, |p| quantile_ms(hist, p / 100.0))
                .map(|a| round(a, 6));
            ThresholdResult {
                expression: t.text.clone(),
                actual,
                passed: t.holds(actual),
            }
        })
        .collect();
    let passed = thresholds.iter().all(|t| t.passed);
    Report {
        schema: schema.to_owned(),
        name: plan.name.clone(),
        target: plan.target.origin(),
        model: plan.model.label().to_owned(),
        http_version: plan.target.version.label().to_owned(),
        connections: plan.connection_count(),
        started_unix_ms,
        duration_s: round(secs, 6),
        behind_schedule: 0,
        overall: overall_stats,
        requests: kind_stats,
        timeline,
        thresholds,
        passed,
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e3
    }
}

/// Microseconds as milliseconds (exact to three decimals).
fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1e3
}

fn stats(name: &str, rec: &KindRecord, counted: &[HeaderName], secs: f64) -> Stats {
    let h = &rec.latency;
    let latency = Latency {
        min: if h.is_empty() { 0.0 } else { us_to_ms(h.min()) },
        mean: if h.is_empty() {
            0.0
        } else {
            round(h.mean() / 1e3, 3)
        },
        p50: quantile_ms(h, 0.5),
        p90: quantile_ms(h, 0.9),
        p95: quantile_ms(h, 0.95),
        p99: quantile_ms(h, 0.99),
        p999: quantile_ms(h, 0.999),
        max: if h.is_empty() { 0.0 } else { us_to_ms(h.max()) },
    };
    let mut headers = BTreeMap::new();
    let mut cache_hit_rate = None;
    for (name, counter) in counted.iter().zip(&rec.headers) {
        let mut values: BTreeMap<String, u64> = counter
            .values
            .iter()
            .map(|(v, n)| (v.to_string(), *n))
            .collect();
        if counter.other > 0 {
            values.insert("(other)".to_owned(), counter.other);
        }
        let present: u64 = counter.values.iter().map(|(_, n)| n).sum::<u64>() + counter.other;
        if *name == X_CACHE && present > 0 {
            let hits: u64 = counter
                .values
                .iter()
                .filter(|(v, _)| v.to_ascii_lowercase().contains("hit"))
                .map(|(_, n)| n)
                .sum();
            cache_hit_rate = Some(round(hits as f64 / (present + counter.absent) as f64, 6));
        }
        if present == 0 && *name == X_CACHE {
            continue;
        }
        if counter.absent > 0 {
            values.insert("(absent)".to_owned(), counter.absent);
        }
        headers.insert(name.as_str().to_owned(), values);
    }
    Stats {
        name: name.to_owned(),
        requests: rec.requests,
        responses: rec.responses,
        rps: if secs > 0.0 {
            round(rec.requests as f64 / secs, 3)
        } else {
            0.0
        },
        error_rate: if rec.requests == 0 {
            0.0
        } else {
            round(rec.errors.total() as f64 / rec.requests as f64, 6)
        },
        errors: rec.errors,
        status: rec
            .status
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code as u16, *n))
            .collect(),
        latency_ms: latency,
        bytes_received: rec.bytes,
        headers,
        cache_hit_rate,
        checks: Vec::new(),
        error_examples: rec
            .examples
            .iter()
            .zip(Failure::NAMES)
            .filter_map(|(m, name)| Some((name.to_owned(), m.clone()?)))
            .collect(),
    }
}
