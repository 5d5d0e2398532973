//! Cache warming: GET requests for a list of URLs, sent through the gateway's own request path
//! (routing, security, limits, the cache) as a local client would, so what the origin allows to
//! be stored is stored before the first client asks. A semaphore caps the requests in flight, so
//! warming never floods an origin.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Empty};
use portcullis_http::headers::X_CACHE;
use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet};
use tower::Service;

use crate::{ConnInfo, GatewayHandle, ProxyService};

/// What a warming run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WarmReport {
    /// URLs requested.
    pub requested: usize,
    /// Fetched from the origin (`X-Cache: MISS`): stored when the response allows it.
    pub fetched: usize,
    /// Already in the cache (a hit: nothing to do).
    pub cached: usize,
    /// URLs that could not be warmed, with why.
    pub failed: Vec<WarmFailure>,
}

/// One URL that could not be warmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarmFailure {
    /// The URL as given.
    pub url: String,
    /// Why: a status, "not a cached route", or "not an absolute http(s) URL".
    pub reason: String,
}

impl WarmReport {
    /// Logs the counts, and each failure; `via` names who asked.
    pub fn log(&self, via: &str) {
        tracing::info!(
            requested = self.requested,
            fetched = self.fetched,
            cached = self.cached,
            failed = self.failed.len(),
            via,
            "cache warmed"
        );
        for f in &self.failed {
            tracing::warn!(url = %f.url, reason = %f.reason, "cache warming failed");
        }
    }
}

enum Outcome {
    Fetched,
    Cached,
    Failed(String),
}

/// Warms `urls` through the gateway behind `handle`, at most `concurrency` at once.
pub async fn warm(handle: &GatewayHandle, urls: &[String], concurrency: usize) -> WarmReport {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for url in urls {
        let (handle, url, permits) = (handle.clone(), url.clone(), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let outcome = warm_one(handle, &url).await;
            (url, outcome)
        });
    }
    let mut report = WarmReport {
        requested: urls.len(),
        ..WarmReport::default()
    };
    while let Some(done) = tasks.join_next().await {
        let Ok((url, outcome)) = done else { continue };
        match outcome {
            Outcome::Fetched => report.fetched += 1,
            Outcome::Cached => report.cached += 1,
            Outcome::Failed(reason) => report.failed.push(WarmFailure { url, reason }),
        }
    }
    report.failed.sort_by(|a, b| a.url.cmp(&b.url));
    report
}

async fn warm_one(handle: GatewayHandle, url: &str) -> Outcome {
    let Some((req, https)) = request_for(url) else {
        return Outcome::Failed("not an absolute http(s) URL".into());
    };
    let conn = ConnInfo::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), https);
    let Ok(resp) = ProxyService::new(handle, conn).call(req).await;
    let status = resp.status();
    let x_cache = resp.headers().get(X_CACHE).cloned();
    // The body must be read to its end for the cache to store it.
    let complete = resp.into_body().collect().await.is_ok();
    if !status.is_success() {
        return Outcome::Failed(format!("status {}", status.as_u16()));
    }
    if !complete {
        return Outcome::Failed("the response body failed".into());
    }
    match x_cache.as_ref().map(HeaderValue::as_bytes) {
        Some(b"MISS") => Outcome::Fetched,
        Some(b"HIT" | b"STALE" | b"REVALIDATED") => Outcome::Cached,
        Some(_) | None => Outcome::Failed("not a cached route".into()),
    }
}

/// A GET for `url` as a client would send it (path and query, `Host` from the authority);
/// whether it is https.
fn request_for(url: &str) -> Option<(Request<Empty<Bytes>>, bool)> {
    let uri: http::Uri = url.parse().ok()?;
    let https = match uri.scheme_str()? {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let authority = uri.authority()?.as_str().to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut req = Request::get(path).body(Empty::new()).ok()?;
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_str(&authority).ok()?);
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("portcullis-cache-warmer"),
    );
    Some((req, https))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_requests_carry_the_host_and_path_of_the_url() {
        let (req, https) = request_for("https://API.example.com:8443/p?x=1").unwrap();
        assert!(https);
        assert_eq!(req.uri(), "/p?x=1");
        assert_eq!(req.headers()[header::HOST], "API.example.com:8443");
        let (req, https) = request_for("http://h").unwrap();
        assert!(!https);
        assert_eq!(req.uri(), "/");
        assert!(request_for("/relative").is_none());
        assert!(request_for("ftp://h/").is_none());
    }
}
