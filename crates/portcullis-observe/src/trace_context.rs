//! W3C Trace Context (`traceparent`) for a gateway: continue the caller's trace with a new span
//! id for the gateway's hop, or start a trace when the caller sent none (or an invalid one).
//! `tracestate` is the vendors' business and passes through untouched.
//!
//! Hand-written: the header is 55 characters with four fixed fields, and the OpenTelemetry SDK
//! would be a large dependency for parsing and formatting it (OTLP export is a separate,
//! optional feature).

use http::HeaderValue;

/// The `traceparent` header name.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The trace context of one request's hop through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
    /// The caller's span, when it sent a valid `traceparent`.
    parent: Option<u64>,
}

impl TraceContext {
    /// Continues `incoming` (the request's `traceparent`) with a new span id, or starts a new
    /// trace (sampled) when it is absent or invalid.
    pub fn continue_or_start(incoming: Option<&HeaderValue>) -> Self {
        let span_id = nonzero_u64();
        match incoming.and_then(|v| parse(v.as_bytes())) {
            Some((trace_id, parent, flags)) => Self {
                trace_id,
                span_id,
                flags,
                parent: Some(parent),
            },
            None => Self {
                trace_id: nonzero_u128(),
                span_id,
                flags: 0x01,
                parent: None,
            },
        }
    }

    /// The trace id as a number.
    pub fn trace_id_value(&self) -> u128 {
        self.trace_id
    }

    /// This hop's span id (the parent id sent upstream).
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The caller's span id, when it sent a valid `traceparent`.
    pub fn parent_span_id(&self) -> Option<u64> {
        self.parent
    }

    /// Whether the caller asked for the trace to be recorded (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 0x01
    }

    /// The `traceparent` value to send upstream: this hop's span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        // Written by hand into a fixed buffer: `format!` with padded hex widths cost about
        // 2,700 instructions per proxied request (callgrind), this a tenth of that.
        let mut text = [b'-'; 55];
        let (version, rest) = text.split_at_mut(3);
        version.copy_from_slice(b"00-");
        let (trace, rest) = rest.split_at_mut(32);
        trace.copy_from_slice(&trace_id_hex(self.trace_id));
        let (span, rest) = rest.split_at_mut(17);
        span[1..].copy_from_slice(&hex_u64(self.span_id));
        rest[1..].copy_from_slice(&hex_u64(u64::from(self.flags))[14..]);
        // Hex digits and dashes are always a valid header value.
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A trace id's 32 lowercase hex digits (by hand, as `traceparent`: `format!` is slow here),
/// without an allocation: the access log writes them out at once.
pub fn trace_id_hex(id: u128) -> [u8; 32] {
    let mut text = [0u8; 32];
    let (high, low) = text.split_at_mut(16);
    high.copy_from_slice(&hex_u64((id >> 64) as u64));
    low.copy_from_slice(&hex_u64(id as u64));
    text
}

/// `n` as 16 lowercase hex digits, most significant first, computed eight digits at a time in
/// a `u64` (each nibble moved into a byte of its own, then turned into its digit) rather than
/// by a table lookup per digit: ids are written several times per request, and a digit at a
/// time cost about 250 instructions per trace id.
fn hex_u64(n: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hex_u32((n >> 32) as u32));
    out[8..].copy_from_slice(&hex_u32(n as u32));
    out
}

fn hex_u32(n: u32) -> [u8; 8] {
    const LOW_NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = u64::from(n);
    // 0x1234_5678 -> 0x0001_0203_0405_0607 + 0x0000...: each nibble alone in a byte, the
    // most significant in the highest byte.
    let x = (x & 0xffff_0000) << 16 | (x & 0x0000_ffff);
    let x = (x & 0x0000_ff00_0000_ff00) << 8 | (x & 0x0000_00ff_0000_00ff);
    let x = ((x & 0x00f0_00f0_00f0_00f0) << 4 | (x & 0x000f_000f_000f_000f)) & LOW_NIBBLES;
    // A byte's nibble is 10 or more exactly when adding 6 carries into bit 4 (no byte exceeds
    // 21, so nothing carries into the next byte).
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    let digits = x + u64::from(b'0') * ONES + letters * u64::from(b'a' - b'0' - 10);
    digits.to_be_bytes()
}

/// The trace id of a valid `traceparent`, if the request has one.
pub fn incoming_trace_id(value: Option<&HeaderValue>) -> Option<u128> {
    value.and_then(|v| parse(v.as_bytes())).map(|(id, _, _)| id)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

/// Trace id, parent span id and flags of a valid `traceparent` (version 00, or a later
/// version read as 00 where the spec allows it).
fn parse(v: &[u8]) -> Option<(u128, u64, u8)> {
    if v.len() < 55 {
        return None;
    }
    let version = hex_u8(&v[0..2])?;
    // Version ff is invalid; version 00 has exactly 55 characters; later versions may append
    // fields after a dash.
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = hex_u128(&v[3..35])?;
    let parent_id = u64::try_from(hex_u128(&v[36..52])?).ok()?;
    let flags = hex_u8(&v[53..55])?;
    (trace_id != 0 && parent_id != 0).then_some((trace_id, parent_id, flags))
}

/// Lowercase hex only, as the spec requires.
fn hex_u128(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(n))
    })
}

fn hex_u8(digits: &[u8]) -> Option<u8> {
    hex_u128(digits).and_then(|n| u8::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_equal_the_formatters() {
        let mut n = 0x0123_4567_89ab_cdef_u64;
        let edges = [
            0,
            1,
            9,
            10,
            15,
            16,
            0xa0,
            0xff,
            u64::MAX,
            u64::MAX - 1,
            0x9a9a_9a9a_9a9a_9a9a,
        ];
        for x in edges.into_iter().chain((0..10_000).map(|_| {
            // xorshift: values with every nibble in every position
            n ^= n << 13;
            n ^= n >> 7;
            n ^= n << 17;
            n
        })) {
            assert_eq!(hex_u64(x), *format!("{x:016x}").as_bytes(), "{x:#x}");
            let wide = u128::from(x) << 64 | u128::from(x.rotate_left(7));
            assert_eq!(trace_id_hex(wide), *format!("{wide:032x}").as_bytes());
        }
    }

    // The example from the W3C Trace Context recommendation.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_parent_is_continued_with_a_new_span() {
        let incoming = HeaderValue::from_static(EXAMPLE);
        let ctx = TraceContext::continue_or_start(Some(&incoming));
        assert_eq!(
            &trace_id_hex(ctx.trace_id_value()),
            b"4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let out = ctx.traceparent();
        let out = out.to_str().unwrap();
        assert_eq!(out.len(), 55);
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        assert_ne!(
            &out[36..52],
            "00f067aa0ba902b7",
            "a new span id for the gateway's hop"
        );
        assert_eq!(
            incoming_trace_id(Some(&incoming)).map(trace_id_hex),
            Some(*b"4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn invalid_parents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad}");
        }
        let ctx = TraceContext::continue_or_start(None);
        let out = ctx.traceparent();
        assert!(
            parse(out.as_bytes()).is_some(),
            "generated value is valid: {out:?}"
        );
        assert!(out.to_str().unwrap().ends_with("-01"));
    }

    #[test]
    fn later_versions_are_read_as_version_00() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        assert!(parse(v.as_bytes()).is_some());
    }

    #[test]
    fn the_hand_written_hex_matches_format() {
        for _ in 0..1000 {
            let ctx = TraceContext {
                trace_id: fastrand::u128(..),
                span_id: fastrand::u64(..),
                flags: fastrand::u8(..),
                parent: None,
            };
            let expected = format!(
                "00-{:032x}-{:016x}-{:02x}",
                ctx.trace_id, ctx.span_id, ctx.flags
            );
            assert_eq!(ctx.traceparent().to_str().unwrap(), expected);
            assert_eq!(
                trace_id_hex(ctx.trace_id).as_slice(),
                format!("{:032x}", ctx.trace_id).as_bytes()
            );
        }
        let small = TraceContext {
            trace_id: 1,
            span_id: 2,
            flags: 1,
            parent: None,
        };
        assert_eq!(
            small.traceparent(),
            "00-00000000000000000000000000000001-0000000000000002-01"
        );
    }
}
