//! The load generator: workers that each own one connection, a schedule they share, and a
//! ticker that drains interval data every second.
//!
//! - Closed model: worker `i` is user `i`; it runs while the profile's level is above `i`
//!   (so users ramp up and down with the stages) and measures latency from the actual send.
//! - Open model: a shared counter hands out arrival numbers; a free worker takes the next one
//!   and sends at its scheduled time ([`crate::profile::Profile::arrival`]). When every
//!   connection is busy the arrival is taken late and its latency counts from the intended
//!   time, so a stall shows up in the percentiles instead of being omitted (coordinated
//!   omission, wrk2's correction). When the worker is early and waits on the timer, the clock
//!   starts at the actual send: the timer's millisecond granularity is the generator's, not
//!   the server's.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use hdrhistogram::Histogram;
use http::HeaderName;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{
    check::Check,
    connection::{Conn, Endpoint},
    error::BenchError,
    exchange::{Exchange, Outgoing},
    plan::{Model, Plan},
    progress::Progress,
    recorder::{Failure, IntervalCounts, Recorder, histogram},
    report::{Report, SCHEMA, Sample, round},
    request::{Mix, PreparedKind, Scratch},
    summary,
    timeline::Timeline,
};

/// State shared by the workers and the ticker.
struct Shared {
    plan: Plan,
    mix: Mix,
    endpoint: Endpoint,
    counted: Vec<HeaderName>,
    /// Response headers the run reads: counted ones and those checks look for.
    wanted: Vec<HeaderName>,
    /// HTTP/2 with several streams per connection: one connection slot per group of workers.
    h2_slots: Vec<tokio::sync::Mutex<Option<Conn>>>,
    shards: Vec<Mutex<Recorder>>,
    start: Instant,
    end: Instant,
    next: AtomicU64,
    /// Open model: arrivals sent more than [`LATE`] after their intended time.
    late: AtomicU64,
    stop: watch::Receiver<bool>,
}

/// How late an open-model send may start before it counts as behind schedule (every
/// connection was busy). Timer jitter stays well below it.
const LATE: Duration = Duration::from_millis(10);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("plan", &self.plan.name)
            .finish()
    }
}

/// Runs `plan` until its profile ends, its request count is reached, or `stop` turns true;
/// then builds the report (thresholds evaluated).
pub async fn execute(plan: Plan, stop: watch::Receiver<bool>) -> Result<Report, BenchError> {
    plan.validate().map_err(BenchError::Invalid)?;
    let endpoint = Endpoint::resolve(&plan.target, &plan.verification).await?;
    let kinds = plan
        .kinds
        .iter()
        .cloned()
        .map(|k| PreparedKind::new(k, &plan.target, &plan.variables))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BenchError::Invalid)?;
    let mix = Mix::new(kinds, &plan.stage_weights).map_err(BenchError::Invalid)?;
    let mut counted = vec![summary::X_CACHE];
    for h in &plan.count_headers {
        if !counted.contains(h) {
            counted.push(h.clone());
        }
    }
    let mut wanted = counted.clone();
    for kind in &plan.kinds {
        for check in &kind.checks {
            if let Check::HeaderPresent(name) = check
                && !wanted.contains(name)
            {
                wanted.push(name.clone());
            }
        }
    }
    let checks: Vec<usize> = plan.kinds.iter().map(|k| k.checks.len()).collect();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let shards = (0..threads * 4)
        .map(|_| Mutex::new(Recorder::new(&checks, counted.len())))
        .collect();
    let h2_slots = if plan.streams > 1 {
        (0..plan.connection_count())
            .map(|_| tokio::sync::Mutex::new(None))
            .collect()
    } else {
        Vec::new()
    };
    let started_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        end: start + plan.profile.duration(),
        plan,
        mix,
        endpoint,
        counted,
        wanted,
        h2_slots,
        shards,
        start,
        next: AtomicU64::new(0),
        late: AtomicU64::new(0),
        stop,
    });

    let progress = Progress::new(
        shared.plan.progress,
        shared.plan.profile.duration(),
        shared.plan.max_requests,
    );
    let workers: Vec<_> = (0..shared.plan.workers())
        .map(|i| tokio::spawn(worker(Arc::clone(&shared), i)))
        .collect();
    let (done_tx, done_rx) = watch::channel(false);
    let ticker = tokio::spawn(ticker(Arc::clone(&shared), done_rx, progress));
    for w in workers {
        let _ = w.await;
    }
    let elapsed = shared.start.elapsed();
    let _ = done_tx.send(true);
    let timeline = ticker.await.unwrap_or_default();

    let mut report = summary::build(
        &shared.plan,
        &shared.shards,
        &shared.counted,
        elapsed,
        started_unix_ms,
        timeline,
        SCHEMA,
    );
    report.behind_schedule = shared.late.load(Ordering::Relaxed);
    Ok(report)
}

/// Every second: drain the shards' interval data into one sample.
async fn ticker(
    shared: Arc<Shared>,
    mut done: watch::Receiver<bool>,
    progress: Progress,
) -> Vec<Sample> {
    let mut timeline = Timeline::default();
    let mut acc = histogram(2);
    let (mut total_requests, mut total_errors) = (0, 0);
    let mut last = shared.start;
    let mut tick = tokio::time::interval_at(
        (shared.start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let finished = tokio::select! {
            _ = tick.tick() => false,
            _ = done.changed() => true,
        };
        let now = Instant::now();
        let sample = drain(&shared, &mut acc, last, now);
        total_requests += sample.requests;
        total_errors += sample.errors;
        last = now;
        progress.update(now - shared.start, &sample, total_requests, total_errors);
        if sample.span_s > 0.05 || sample.requests > 0 {
            timeline.push(sample);
        }
        if finished {
            progress.finish();
            return timeline.into_samples();
        }
    }
}

fn drain(shared: &Shared, acc: &mut Histogram<u64>, from: Instant, to: Instant) -> Sample {
    acc.reset();
    let mut counts = IntervalCounts::default();
    for shard in &shared.shards {
        shard.lock().drain_interval(acc, &mut counts);
    }
    let t_s = (from - shared.start).as_secs_f64();
    let ms = |us: u64| us as f64 / 1e3;
    let q = |q: f64| {
        if acc.is_empty() {
            0.0
        } else {
            ms(acc.value_at_quantile(q))
        }
    };
    Sample {
        t_s: round(t_s, 6),
        span_s: round((to - from).as_secs_f64(), 6),
        target: round(
            shared
                .plan
                .profile
                .mean_level(t_s, (to - shared.start).as_secs_f64()),
            3,
        ),
        requests: counts.requests,
        errors: counts.errors,
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        max_ms: if acc.is_empty() { 0.0 } else { ms(acc.max()) },
    }
}

/// One worker: one connection, one user (closed) or one sender of arrivals (open).
async fn worker(shared: Arc<Shared>, index: usize) {
    let mut state = WorkerState {
        conn: None,
        wire: Vec::new(),
        timer: Box::pin(tokio::time::sleep(shared.plan.timeout)),
        rng: fastrand::Rng::with_seed(0x5eed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        scratch: Scratch::default(),
        checks: Vec::new(),
        index,
    };
    let mut stop = shared.stop.clone();
    let plan = &shared.plan;
    loop {
        if *stop.borrow() {
            return;
        }
        // The time in the profile the request belongs to (its stage picks the mix): when it
        // is sent (closed model), or when it is due (open model), so a late request keeps
        // the mix of the stage that scheduled it.
        let (origin, t) = match plan.model {
            Model::Closed => {
                let now = Instant::now();
                if now >= shared.end {
                    return;
                }
                let t = (now - shared.start).as_secs_f64();
                if plan.profile.level_at(t) <= index as f64 {
                    // Not this user's turn yet (ramping up) or any more (ramping down).
                    let Some(at) = plan.profile.next_above(t, index as f64) else {
                        return;
                    };
                    if !sleep_until(shared.start + Duration::from_secs_f64(at), &mut stop).await {
                        return;
                    }
                    continue;
                }
                if plan
                    .max_requests
                    .is_some_and(|max| shared.next.fetch_add(1, Ordering::Relaxed) >= max)
                {
                    return;
                }
                (Instant::now(), t)
            }
            Model::Open => {
                let k = shared.next.fetch_add(1, Ordering::Relaxed);
                if plan.max_requests.is_some_and(|max| k >= max) {
                    return;
                }
                let Some(at) = plan.profile.arrival(k) else {
                    return;
                };
                let intended = shared.start + Duration::from_secs_f64(at);
                let now = Instant::now();
                let origin = if intended > now {
                    if !sleep_until(intended, &mut stop).await {
                        return;
                    }
                    Instant::now()
                } else {
                    if now - intended > LATE {
                        shared.late.fetch_add(1, Ordering::Relaxed);
                    }
                    intended
                };
                (origin, at)
            }
        };
        let stage = if shared.mix.varies_by_stage() {
            plan.profile.stage_at(t)
        } else {
            0
        };
        // Ctrl-C abandons the request in flight (not recorded) instead of waiting for it.
        tokio::select! {
            () = exchange(&shared, &mut state, origin, stage) => {}
            () = stopped(&mut stop) => return,
        }
        if let Some(think) = &plan.think_time {
            let pause = think.draw(&mut state.rng);
            if !sleep_until(Instant::now() + pause, &mut stop).await {
                return;
            }
        }
    }
}

/// Completes when the run is asked to stop; never, when nobody can ask any more.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|&s| s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sleeps until `at`; false when stopped first.
async fn sleep_until(at: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(at.into()) => true,
        () = stopped(stop) => false,
    }
}

struct WorkerState {
    conn: Option<Conn>,
    /// Encoding buffer for templated HTTP/1.1 requests.
    wire: Vec<u8>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    rng: fastrand::Rng,
    scratch: Scratch,
    checks: Vec<bool>,
    index: usize,
}

/// Sends one request of a kind drawn from the mix of `stage`, measuring from `origin`.
async fn exchange(shared: &Shared, state: &mut WorkerState, origin: Instant, stage: usize) {
    let kind_index = shared.mix.pick(&mut state.rng, stage);
    let kind = &shared.mix.kinds[kind_index];
    let shard = &shared.shards[state.index % shared.shards.len()];
    let keep_body = kind.kind.needs_body();
    // One timer per worker, pushed forward for each request: tokio only moves a timer entry
    // in its wheel when it fires early, so this costs far less than a new timeout each time.
    state
        .timer
        .as_mut()
        .reset((Instant::now() + shared.plan.timeout).into());
    let (target, vars) = (&shared.plan.target, &shared.plan.variables);
    let request = if shared.endpoint.uses_wire() {
        kind.wire(
            target,
            vars,
            &mut state.scratch,
            &mut state.rng,
            &mut state.wire,
        )
        .map(Outgoing::Wire)
    } else {
        kind.build(target, vars, &mut state.scratch, &mut state.rng)
            .map(Outgoing::Hyper)
    };
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            shard
                .lock()
                .failure(kind_index, Failure::Transport, 0, || e);
            return;
        }
    };
    let exchange = Exchange {
        endpoint: &shared.endpoint,
        index: state.index,
        head_only: kind.kind.method == http::Method::HEAD,
        wanted: &shared.wanted,
        keep_body,
        h2_slots: &shared.h2_slots,
        streams: shared.plan.streams,
    };
    let result = tokio::select! {
        biased;
        r = exchange.send(&mut state.conn, request) => Ok(r),
        () = state.timer.as_mut() => Err(()),
    };
    let latency_us = origin.elapsed().as_micros() as u64;
    match result {
        Ok(Ok(resp)) => {
            state.checks.clear();
            let body = resp.body.as_deref().unwrap_or_default();
            state.checks.extend(
                kind.kind
                    .checks
                    .iter()
                    .map(|c| c.passes(resp.status, &resp.headers, body)),
            );
            shard.lock().response(
                kind_index,
                latency_us,
                resp.status,
                &resp.headers,
                &shared.counted,
                resp.bytes,
                &state.checks,
            );
        }
        Ok(Err((failure, message))) => {
            state.conn = None;
            shard
                .lock()
                .failure(kind_index, failure, latency_us, || message);
        }
        Err(()) => {
            state.conn = None;
            let timeout = shared.plan.timeout;
            shard
                .lock()
                .failure(kind_index, Failure::Timeout, latency_us, || {
                    format!("no complete response within {timeout:?}")
                });
        }
    }
}
