//! Upstreams: named groups of targets with a balancer and a pooled keep-alive client.
//!
//! Each target has its own connection pool ([`crate::pool`]): HTTP/1.1 keep-alive connections,
//! or one multiplexed HTTP/2 connection (prior knowledge).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use http::{HeaderMap, HeaderValue, header, uri::Authority};
use portcullis_config::{
    AdaptiveTable, AllUnhealthy, HashOn, OutlierConfig, Protocol, UpstreamConfig, parse_hash_on,
    parse_target_url,
};

use portcullis_observe::{Metrics, TargetMetrics};
use portcullis_resilience::{
    AdaptiveConfig, ConcurrencyConfig, ConcurrencyLimit, Overloaded, Permit,
};
use tracing::warn;

use crate::error::ProxyError;

use crate::{
    balance::{Balancer, InFlight},
    breaker::{BreakerScope, NamedBreaker},
    pool::{PoolSettings, TargetPool},
    try_timeout::Deadlines,
};

/// One target of an upstream.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host:port`.
    pub(crate) authority: Authority,
    /// The same, as a `Host` header value.
    pub(crate) host_header: HeaderValue,
    pub(crate) pool: Arc<TargetPool>,
    /// Requests sent to this target and their latency.
    pub(crate) metrics: Arc<TargetMetrics>,
}

/// A running upstream.
#[derive(Debug)]
pub struct Upstream {
    /// Name from config.
    pub name: Arc<str>,
    targets: Box<[Target]>,
    balancer: Balancer,
    hash_on: Option<HashOn>,
    pub(crate) protocol: Protocol,
    /// Limit on waiting for the response head.
    pub timeout: Duration,
    /// The config it was built from: a reload with an equal table keeps this upstream (and its
    /// pooled connections and balancer state).
    pub(crate) config: UpstreamConfig,
    /// Passive outlier ejection state, when configured.
    outlier: Option<Outliers>,
    /// The limit of requests in flight and its queue, when configured.
    limit: Option<ConcurrencyLimit>,
    /// Retries and their budget, when configured.
    pub(crate) retry: Option<Retry>,
    /// The circuit breaker, when configured.
    pub(crate) breaker: Option<NamedBreaker>,
    /// The deadlines of the tries waiting for a response head (`timeout`, per try).
    pub(crate) deadlines: Deadlines,
}

/// `retry` with its budget (tower's TPS budget: a share of recent requests plus a floor).
pub(crate) struct Retry {
    pub(crate) config: portcullis_config::RetryConfig,
    pub(crate) budget: tower::retry::budget::TpsBudget,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Consecutive failures and past ejections per target.
#[derive(Debug)]
struct Outliers {
    config: OutlierConfig,
    consecutive: Box<[AtomicU32]>,
    ejections: Box<[AtomicU32]>,
}

impl Upstream {
    /// Builds an upstream from validated config, with metric handles from `metrics`.
    pub fn from_config(cfg: &UpstreamConfig, metrics: &Arc<Metrics>) -> Result<Self, String> {
        let settings = PoolSettings {
            protocol: cfg.protocol,
            connect_timeout: cfg.pool.connect_timeout.0,
            idle_timeout: cfg.pool.idle_timeout.0,
            max_idle: cfg.pool.max_idle_per_target,
        };
        let targets = cfg
            .targets
            .get_ref()
            .iter()
            .map(|t| {
                let authority = parse_target_url(t.url.get_ref())?.authority;
                Ok(Target {
                    metrics: metrics.target(cfg.name.get_ref(), authority.as_str()),
                    host_header: HeaderValue::from_str(authority.as_str())
                        .map_err(|e| e.to_string())?,
                    pool: TargetPool::new(authority.as_str().to_owned(), settings.clone()),
                    authority,
                })
            })
            .collect::<Result<Box<[_]>, String>>()?;
        let names: Vec<&str> = targets.iter().map(|t| t.authority.as_str()).collect();
        let weights: Vec<u32> = cfg
            .targets
            .get_ref()
            .iter()
            .map(|t| *t.weight.get_ref())
            .collect();
        let hash_on = cfg
            .hash_on
            .as_ref()
            .map(|h| parse_hash_on(h.get_ref()))
            .transpose()?;

        let balancer = Balancer::new(cfg.balance, &names, &weights);
        let balancer = match cfg.when_all_unhealthy {
            AllUnhealthy::FailOpen => balancer,
            AllUnhealthy::FailClosed => balancer.fail_closed(),
        };
        let outlier = cfg.outlier.clone().map(|config| Outliers {
            config,
            consecutive: targets.iter().map(|_| AtomicU32::new(0)).collect(),
            ejections: targets.iter().map(|_| AtomicU32::new(0)).collect(),
        });
        let limit = (cfg.pool.max_in_flight > 0).then(|| {
            ConcurrencyLimit::new(ConcurrencyConfig {
                max_in_flight: cfg.pool.max_in_flight,
                max_queue: cfg.pool.max_queue,
                queue_timeout: cfg.pool.queue_timeout.0,
                adaptive: cfg.pool.adaptive.as_ref().map(adaptive_config),
            })
        });
        let retry = cfg.retry.clone().map(|config| Retry {
            budget: tower::retry::budget::TpsBudget::new(
                Duration::from_secs(10),
                config.min_per_second,
                config.budget_percent as f32 / 100.0,
            ),
            config,
        });
        let breaker = cfg
            .breaker
            .as_ref()
            .map(|b| NamedBreaker::new(BreakerScope::Upstream, cfg.name.get_ref(), b, metrics));
        Ok(Self {
            outlier,
            limit,
            retry,
            breaker,
            name: Arc::from(cfg.name.get_ref().as_str()),
            balancer,
            targets,
            hash_on,
            protocol: cfg.protocol,
            timeout: cfg.pool.timeout.0,
            config: cfg.clone(),
            deadlines: Deadlines::default(),
        })
    }

    /// Picks a target for a request; the guard counts it in flight until dropped. `None` when
    /// no target is healthy and the upstream fails closed.
    pub(crate) fn pick(
        &self,
        headers: &HeaderMap,
        client_ip: std::net::IpAddr,
    ) -> Option<(&Target, InFlight)> {
        let ip_bytes;
        let key: Option<&[u8]> = match &self.hash_on {
            None => None,
            Some(HashOn::Header(name)) => headers.get(name).map(|v| v.as_bytes()),
            Some(HashOn::Cookie(name)) => cookie_value(headers, name),
            Some(HashOn::ClientIp) => {
                ip_bytes = client_ip.to_string();
                Some(ip_bytes.as_bytes())
            }
        };
        let guard = self.balancer.pick(key)?;
        Some((&self.targets[guard.index()], guard))
    }

    /// Waits for a slot under `pool.max_in_flight` (at once when there is one): the permit
    /// counts the request until dropped (with the response body). 503 when the queue is full
    /// or the wait exceeds `pool.queue_timeout`.
    pub(crate) async fn admit(&self) -> Result<Option<Permit>, ProxyError> {
        let Some(limit) = &self.limit else {
            return Ok(None);
        };
        limit.acquire().await.map(Some).map_err(|e| {
            ProxyError::Overloaded(match e {
                Overloaded::QueueFull => "upstream at its limit and its queue is full",
                Overloaded::QueueTimeout => {
                    "upstream at its limit; no slot within the queue timeout"
                }
            })
        })
    }

    /// The concurrency limit (current limit, in flight, waiting), when configured.
    pub fn concurrency(&self) -> Option<&ConcurrencyLimit> {
        self.limit.as_ref()
    }

    /// Feeds passive outlier ejection: whether the exchange with target `index` failed (a 5xx,
    /// a refused or reset connection, a timeout). Enough failures in a row set the target aside
    /// for `base_ejection`, doubled for each further ejection (capped at `max_ejection`), unless
    /// `max_ejected_percent` of the targets are aside already.
    pub(crate) fn observe_outcome(&self, index: usize, failed: bool) {
        let Some(o) = &self.outlier else { return };
        if !failed {
            o.consecutive[index].store(0, Ordering::Relaxed);
            return;
        }
        let run = o.consecutive[index].fetch_add(1, Ordering::Relaxed) + 1;
        if run < o.config.consecutive_failures || self.balancer.is_ejected(index) {
            return;
        }
        o.consecutive[index].store(0, Ordering::Relaxed);
        let cap = self.targets.len() * o.config.max_ejected_percent as usize / 100;
        if self.balancer.ejected_count() >= cap {
            return;
        }
        let times = o.ejections[index].fetch_add(1, Ordering::Relaxed).min(20);
        let duration = o
            .config
            .base_ejection
            .0
            .saturating_mul(1 << times)
            .min(o.config.max_ejection.0);
        self.balancer.eject(index, duration);
        warn!(upstream = %self.name, target = %self.targets[index].authority, failures = run,
              ejected_for = ?duration, "target ejected after consecutive failures");
    }

    /// The targets, in config order (for the health checker).
    pub(crate) fn target_list(&self) -> &[Target] {
        &self.targets
    }

    /// The breaker, for the admin API.
    pub fn breaker(&self) -> Option<&NamedBreaker> {
        self.breaker.as_ref()
    }

    /// Picks a target other than `previous` for a retry (the same one when it is the only
    /// target).
    pub(crate) fn pick_other(
        &self,
        headers: &HeaderMap,
        client_ip: std::net::IpAddr,
        previous: usize,
    ) -> Option<(&Target, InFlight)> {
        let n = self.targets.len();
        if n > 1 {
            for _ in 0..n {
                let (target, guard) = self.pick(headers, client_ip)?;
                if guard.index() != previous {
                    return Some((target, guard));
                }
            }
            // An affinity (consistent hash) keeps choosing `previous`: take its neighbour.
            let next = (previous + 1) % n;
            return Some((&self.targets[next], self.balancer.pick_at(next)));
        }
        self.pick(headers, client_ip)
    }

    /// Whether readiness depends on this upstream having a healthy target, and it has none.
    pub fn required_and_down(&self) -> bool {
        self.config.health.as_ref().is_some_and(|h| h.required)
            && self.balancer.healthy_count() == 0
    }

    /// The balancer, for inspection.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Each target's `host:port`, requests in flight and health, in config order.
    pub fn targets(&self) -> impl Iterator<Item = (&str, usize, bool)> {
        self.targets.iter().enumerate().map(|(i, t)| {
            (
                t.authority.as_str(),
                self.balancer.in_flight(i),
                self.balancer.is_healthy(i),
            )
        })
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
/// The adaptive limit's settings from `pool.adaptive` (the rest at their defaults).
fn adaptive_config(table: &AdaptiveTable) -> AdaptiveConfig {
    AdaptiveConfig {
        min_limit: table.min_limit,
        max_limit: table.max_limit,
        tolerance: table.tolerance,
        backoff: table.backoff,
        ..AdaptiveConfig::default()
    }
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adaptive_tables_defaults_are_the_limits_own() {
        // As for the breaker: the config crate states these defaults again.
        assert_eq!(
            adaptive_config(&AdaptiveTable::default()),
            AdaptiveConfig::default()
        );
    }

    #[test]
    fn cookie_values_are_found_across_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; sid=abc ; b=2".parse().unwrap());
        h.append(header::COOKIE, "other=x".parse().unwrap());
        assert_eq!(cookie_value(&h, "sid"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&h, "other"), Some(&b"x"[..]));
        assert_eq!(cookie_value(&h, "si"), None);
    }
}
