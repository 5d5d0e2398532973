//! The signed invalidation webhook: `POST /hooks/cache/purge`, for backends that purge the
//! cache when their data changes.
//!
//! The body is a purge request as for `POST /admin/cache/purge`. The sender signs it:
//!
//! ```text
//! X-Portcullis-Timestamp: 1764950400                 (Unix seconds)
//! X-Portcullis-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//! ```
//!
//! A request is accepted when the signature verifies (compared in constant time), the
//! timestamp is within `tolerance` of the gateway's clock, and the same signature has not been
//! accepted before (replays inside the window are refused, on every instance when a Redis tier
//! is attached). No admin token is needed: the signature is the credential.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::hmac;
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use parking_lot::Mutex;

use crate::{AdminState, inspect::json_error};

/// Header carrying the signing time.
pub const TIMESTAMP_HEADER: &str = "x-portcullis-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-portcullis-signature";

/// Why a webhook request was refused (all are 401: a sender learns nothing more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A header is missing or malformed.
    #[error("missing or malformed signature headers")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("timestamp outside the accepted window")]
    Stale,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// This exact request was accepted before.
    #[error("replayed request")]
    Replay,
}

/// The signature of `body` at `timestamp` with `secret`, as sent in the header.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::from("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks the headers and signature of one request; returns the signature bytes (the replay
/// key) when they hold.
pub fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<Vec<u8>, Refusal> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(Refusal::Malformed)
    };
    let timestamp: u64 = text(TIMESTAMP_HEADER)?
        .trim()
        .parse()
        .map_err(|_| Refusal::Malformed)?;
    let signature = text(SIGNATURE_HEADER)?
        .trim()
        .strip_prefix("sha256=")
        .and_then(hex)
        .ok_or(Refusal::Malformed)?;
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now_secs.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(Refusal::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = timestamp.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    // `verify` compares in constant time.
    hmac::verify(&key, &message, &signature).map_err(|_| Refusal::BadSignature)?;
    Ok(signature)
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Signatures accepted recently, to refuse replays in this process.
#[derive(Debug, Default)]
pub(crate) struct ReplayGuard {
    seen: Mutex<HashMap<Vec<u8>, Instant>>,
}

impl ReplayGuard {
    /// Records `signature`; false when it was already recorded within `window`.
    fn first_use(&self, signature: &[u8], window: Duration) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        seen.retain(|_, until| *until > now);
        if seen.contains_key(signature) {
            return false;
        }
        seen.insert(signature.to_vec(), now + window);
        true
    }
}

pub(crate) async fn purge(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = state.shared();
    let Some(hook) = shared.config().cache.webhook.clone() else {
        return json_error(StatusCode::NOT_FOUND, "no cache webhook is configured");
    };
    let tolerance = hook.tolerance.0;
    let secret = hook.secret.get_ref().expose().as_bytes().to_vec();
    let checked = verify(&secret, &headers, &body, SystemTime::now(), tolerance);
    let signature = match checked {
        Ok(s) => s,
        Err(refusal) => {
            tracing::warn!(reason = %refusal, "cache webhook refused");
            return json_error(StatusCode::UNAUTHORIZED, &refusal.to_string());
        }
    };
    // Twice the tolerance: a timestamp may be that far from the first use's.
    let window = tolerance * 2 + Duration::from_secs(1);
    let mut fresh = state.replays.first_use(&signature, window);
    if fresh && let Some(tier) = shared.cache().tier() {
        let mut id = String::from("wh:");
        for b in &signature {
            id.push_str(&format!("{b:02x}"));
        }
        // Redis unavailable: this instance's memory of signatures is the guard.
        fresh = tier.first_use(&id, window).await.unwrap_or(true);
    }
    if !fresh {
        tracing::warn!(reason = %Refusal::Replay, "cache webhook refused");
        return json_error(StatusCode::UNAUTHORIZED, &Refusal::Replay.to_string());
    }
    crate::cache::purge_from_body(shared.cache(), &body, "the webhook").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ts: u64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            TIMESTAMP_HEADER,
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn a_signed_fresh_request_verifies_and_tampering_does_not() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ts = 1_800_000_000 - 10;
        let body = br#"{"tags":["products"]}"#;
        let sig = sign(b"s3cret", ts, body);
        assert!(verify(b"s3cret", &headers(ts, &sig), body, now, WINDOW).is_ok());
        assert_eq!(
            verify(
                b"s3cret",
                &headers(ts, &sig),
                b"{\"tags\":[\"all\"]}",
                now,
                WINDOW
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(b"other", &headers(ts, &sig), body, now, WINDOW),
            Err(Refusal::BadSignature)
        );
        // The timestamp is signed too: moving it breaks the signature.
        assert_eq!(
            verify(b"s3cret", &headers(ts + 1, &sig), body, now, WINDOW),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn old_or_future_timestamps_and_malformed_headers_are_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let body = b"{}";
        for ts in [1_800_000_000 - 301, 1_800_000_000 + 301] {
            let sig = sign(b"k", ts, body);
            assert_eq!(
                verify(b"k", &headers(ts, &sig), body, now, WINDOW),
                Err(Refusal::Stale)
            );
        }
        let ts = 1_800_000_000;
        for bad in ["", "sha256=zz", "md5=00", "sha256=abcd"] {
            assert_eq!(
                verify(b"k", &headers(ts, bad), body, now, WINDOW),
                Err(Refusal::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(b"k", &HeaderMap::new(), body, now, WINDOW),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn a_signature_is_accepted_once_per_window() {
        let guard = ReplayGuard::default();
        assert!(guard.first_use(b"sig-a", WINDOW));
        assert!(!guard.first_use(b"sig-a", WINDOW));
        assert!(guard.first_use(b"sig-b", WINDOW));
        assert!(guard.first_use(b"sig-c", Duration::ZERO));
        assert!(
            guard.first_use(b"sig-c", Duration::ZERO),
            "expired entries are forgotten"
        );
    }
}
