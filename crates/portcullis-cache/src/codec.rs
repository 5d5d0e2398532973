//! The shared tier's entry format: one key's variants as bytes, versioned.
//!
//! ```text
//! offset 0   "PCE"           magic
//!        3   u8              format version (FORMAT)
//!        4   u64 BE          soft-purge stamp: ms since the epoch, 0 = not purged
//!        12  u8              flags (bit 0: payload is zstd-compressed)
//!        13  payload         the slot (below), zstd-compressed when large and worth it
//! ```
//!
//! The stamp sits at a fixed offset outside the compressed payload so a soft purge is one
//! `SETRANGE` in Redis, without reading the entry. A reader that finds another magic or
//! version treats the entry as a miss, so an upgrade never misreads an older gateway's
//! entries (and the next store overwrites them).
//!
//! Hand-written rather than serde: `HeaderMap`, `StatusCode` and `SystemTime` have no serde
//! form of their own, the layout needs the fixed-offset stamp, and the format stays readable
//! in one screen.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::{
    decision::StoredMeta,
    entry::{Slot, StoredResponse},
};

/// The magic bytes.
const MAGIC: &[u8; 3] = b"PCE";
/// The current format version; bump on any layout change.
pub const FORMAT: u8 = 1;
/// Offset of the soft-purge stamp.
pub const STAMP_OFFSET: usize = 4;
const HEADER_LEN: usize = 13;
const FLAG_ZSTD: u8 = 1;
/// zstd level: fast, most of the gain on JSON and HTML.
const ZSTD_LEVEL: i32 = 1;

/// Why bytes could not be read as an entry (each is a miss for the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an entry of this format (another magic or an unknown version).
    #[error("unknown entry format")]
    UnknownFormat,
    /// Truncated or inconsistent.
    #[error("corrupt entry")]
    Corrupt,
}

/// A decoded entry: the slot and its soft-purge stamp.
#[derive(Debug)]
pub struct Decoded {
    /// The readable key, URL length and variants still worth keeping.
    pub slot: Slot,
    /// When it was soft-purged, if it was.
    pub purged_at: Option<SystemTime>,
}

/// Encodes `slot`; payloads of at least `compress_min` bytes are zstd-compressed when that
/// shrinks them.
pub fn encode(slot: &Slot, compress_min: usize) -> Vec<u8> {
    let mut payload = BytesMut::with_capacity(
        256 + slot
            .variants
            .iter()
            .map(|v| v.body.len() + 64 * v.headers.len())
            .sum::<usize>(),
    );
    put_str(&mut payload, &slot.key);
    payload.put_u32(u32::try_from(slot.url_len).unwrap_or(u32::MAX));
    payload.put_u16(u16::try_from(slot.variants.len()).unwrap_or(u16::MAX));
    for v in &slot.variants {
        put_variant(&mut payload, v);
    }
    let mut flags = 0;
    let mut body: &[u8] = &payload;
    let compressed;
    if payload.len() >= compress_min
        && let Ok(c) = zstd::bulk::compress(&payload, ZSTD_LEVEL)
        && c.len() < payload.len()
    {
        compressed = c;
        body = &compressed;
        flags |= FLAG_ZSTD;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&0u64.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(body);
    out
}

/// The stamp bytes a soft purge writes at [`STAMP_OFFSET`].
pub fn stamp(at: SystemTime) -> [u8; 8] {
    millis(at).max(1).to_be_bytes()
}

/// Decodes an entry, dropping variants whose retention ended before `now` and applying a
/// soft purge (variants become stale as of the purge). An uncompressed entry's bodies and
/// header values are slices of `bytes` (no copy).
pub fn decode(
    bytes: impl Into<Bytes>,
    now: SystemTime,
    max_payload: usize,
) -> Result<Decoded, DecodeError> {
    let bytes: Bytes = bytes.into();
    if bytes.len() < HEADER_LEN || &bytes[..3] != MAGIC {
        return Err(DecodeError::UnknownFormat);
    }
    if bytes[3] != FORMAT {
        return Err(DecodeError::UnknownFormat);
    }
    let stamp = u64::from_be_bytes(bytes[4..12].try_into().map_err(|_| DecodeError::Corrupt)?);
    let purged_at = (stamp != 0).then(|| UNIX_EPOCH + Duration::from_millis(stamp));
    let flags = bytes[12];
    let payload: Bytes = if flags & FLAG_ZSTD != 0 {
        zstd::bulk::decompress(&bytes[HEADER_LEN..], max_payload)
            .map_err(|_| DecodeError::Corrupt)?
            .into()
    } else {
        bytes.slice(HEADER_LEN..)
    };
    let mut r = Reader(payload);
    let key: Arc<str> = Arc::from(r.str()?);
    let url_len = r.u32()? as usize;
    if url_len > key.len() || !key.is_char_boundary(url_len) {
        return Err(DecodeError::Corrupt);
    }
    let count = r.u16()?;
    let mut variants = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (mut v, retain_until) = r.variant()?;
        let Ok(left) = retain_until.duration_since(now) else {
            continue;
        };
        v.retain = left;
        if let Some(at) = purged_at {
            v = v.softened(at);
        }
        variants.push(Arc::new(v));
    }
    Ok(Decoded {
        slot: Slot {
            key,
            url_len,
            variants,
        },
        purged_at,
    })
}

/// When a variant may be dropped, as a time: its response time plus its retention.
pub fn retain_until(v: &StoredResponse) -> SystemTime {
    v.meta.response_time + v.retain
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn put_str(b: &mut BytesMut, s: &str) {
    put_bytes(b, s.as_bytes());
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    b.put_slice(s);
}

fn put_variant(b: &mut BytesMut, v: &StoredResponse) {
    b.put_u16(v.status.as_u16());
    b.put_u32(u32::try_from(v.headers.len()).unwrap_or(u32::MAX));
    for (name, value) in &v.headers {
        put_str(b, name.as_str());
        put_bytes(b, value.as_bytes());
        b.put_u8(u8::from(value.is_sensitive()));
    }
    put_bytes(b, &v.body);
    let m = &v.meta;
    b.put_u64(millis(m.response_time));
    b.put_u64(duration_ms(m.initial_age));
    b.put_u64(duration_ms(m.lifetime));
    b.put_u8(u8::from(m.no_cache) | (u8::from(m.must_revalidate) << 1));
    b.put_u64(duration_ms(m.stale_while_revalidate));
    b.put_u64(duration_ms(m.stale_if_error));
    b.put_u16(u16::try_from(v.vary.len()).unwrap_or(u16::MAX));
    for (name, value) in &v.vary {
        put_str(b, name.as_str());
        match value {
            Some(value) => {
                b.put_u8(1);
                put_str(b, value);
            }
            None => b.put_u8(0),
        }
    }
    b.put_u16(u16::try_from(v.tags.len()).unwrap_or(u16::MAX));
    for tag in &v.tags {
        put_str(b, tag);
    }
    b.put_u64(millis(retain_until(v)));
    b.put_u8(u8::from(v.compressible) | (u8::from(v.derived) << 1));
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            Err(DecodeError::Corrupt)
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }

    fn ms(&mut self) -> Result<Duration, DecodeError> {
        self.u64().map(Duration::from_millis)
    }

    fn time(&mut self) -> Result<SystemTime, DecodeError> {
        Ok(UNIX_EPOCH + self.ms()?)
    }

    /// A length-prefixed byte string, shared with the payload (no copy).
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    fn str(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| DecodeError::Corrupt)
    }

    fn variant(&mut self) -> Result<(StoredResponse, SystemTime), DecodeError> {
        let status = StatusCode::from_u16(self.u16()?).map_err(|_| DecodeError::Corrupt)?;
        let n = self.u32()? as usize;
        let mut headers = HeaderMap::with_capacity(n.min(256) + 1);
        for _ in 0..n {
            let name = HeaderName::from_bytes(&self.bytes()?).map_err(|_| DecodeError::Corrupt)?;
            let mut value =
                HeaderValue::from_maybe_shared(self.bytes()?).map_err(|_| DecodeError::Corrupt)?;
            value.set_sensitive(self.u8()? != 0);
            headers.append(name, value);
        }
        let body = self.bytes()?;
        let response_time = self.time()?;
        let initial_age = self.ms()?;
        let lifetime = self.ms()?;
        let flags = self.u8()?;
        let meta = StoredMeta {
            response_time,
            initial_age,
            lifetime,
            no_cache: flags & 1 != 0,
            must_revalidate: flags & 2 != 0,
            stale_while_revalidate: self.ms()?,
            stale_if_error: self.ms()?,
        };
        let nv = self.u16()?;
        let mut vary = Vec::with_capacity(usize::from(nv));
        for _ in 0..nv {
            let name =
                HeaderName::from_bytes(self.str()?.as_bytes()).map_err(|_| DecodeError::Corrupt)?;
            let value = if self.u8()? == 1 {
                Some(self.str()?)
            } else {
                None
            };
            vary.push((name, value));
        }
        let nt = self.u16()?;
        let mut tags = Vec::with_capacity(usize::from(nt));
        for _ in 0..nt {
            tags.push(Arc::from(self.str()?));
        }
        let retain_until = self.time()?;
        let kinds = self.u8()?;
        Ok((
            StoredResponse {
                status,
                headers,
                body,
                meta,
                vary,
                tags,
                retain: Duration::ZERO,
                compressible: kinds & 1 != 0,
                derived: kinds & 2 != 0,
            },
            retain_until,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &'static [u8], at: SystemTime) -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("set-x", HeaderValue::from_static("a"));
        headers.append("set-x", HeaderValue::from_static("b"));
        StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            meta: StoredMeta {
                response_time: at,
                initial_age: Duration::from_secs(3),
                lifetime: Duration::from_secs(60),
                no_cache: false,
                must_revalidate: true,
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(7),
            },
            vary: vec![
                (
                    HeaderName::from_static("accept-language"),
                    Some("en".into()),
                ),
                (HeaderName::from_static("x-absent"), None),
            ],
            tags: vec![Arc::from("products"), Arc::from("p:1")],
            retain: Duration::from_secs(600),
            compressible: true,
            derived: false,
        }
        .seal()
    }

    fn slot(variants: Vec<StoredResponse>) -> Slot {
        Slot {
            key: Arc::from("GET http://h/p?a=1|h:x=y"),
            url_len: 16,
            variants: variants.into_iter().map(Arc::new).collect(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let t = at(1_800_000_000);
        let original = slot(vec![response(b"{\"id\":1}", t), response(b"[]", t)]);
        let bytes = encode(&original, usize::MAX);
        let decoded = decode(bytes, t + Duration::from_secs(10), 1 << 20).expect("decodes");
        assert_eq!(decoded.purged_at, None);
        let s = decoded.slot;
        assert_eq!(s.key, original.key);
        assert_eq!(s.url_len, original.url_len);
        assert_eq!(s.variants.len(), 2);
        let (a, b) = (&s.variants[0], &original.variants[0]);
        assert_eq!(a.status, b.status);
        assert_eq!(a.headers, b.headers);
        assert_eq!(a.body, b.body);
        assert_eq!(a.meta, b.meta);
        assert_eq!(a.vary, b.vary);
        assert_eq!(a.tags, b.tags);
        assert_eq!((a.compressible, a.derived), (true, false));
        assert_eq!(a.retain, Duration::from_secs(590), "retention counts on");
    }

    #[test]
    fn large_payloads_are_compressed_and_read_back() {
        let t = at(1_800_000_000);
        let body: &'static [u8] =
            Box::leak(b"{\"name\":\"value\"},".repeat(2000).into_boxed_slice());
        let original = slot(vec![response(body, t)]);
        let plain = encode(&original, usize::MAX);
        let small = encode(&original, 1024);
        assert!(
            small.len() * 4 < plain.len(),
            "{} vs {}",
            small.len(),
            plain.len()
        );
        assert_eq!(small[12] & FLAG_ZSTD, FLAG_ZSTD);
        let decoded = decode(small, t, 1 << 20).expect("decodes");
        assert_eq!(decoded.slot.variants[0].body, Bytes::from_static(body));
    }

    #[test]
    fn expired_variants_are_dropped() {
        let t = at(1_800_000_000);
        let bytes = encode(&slot(vec![response(b"x", t)]), usize::MAX);
        let later = t + Duration::from_secs(601);
        assert!(
            decode(bytes, later, 1 << 20)
                .unwrap()
                .slot
                .variants
                .is_empty()
        );
    }

    #[test]
    fn a_stamp_makes_variants_stale_as_of_the_purge() {
        let t = at(1_800_000_000);
        let mut bytes = encode(&slot(vec![response(b"x", t)]), usize::MAX);
        let purge = t + Duration::from_secs(10);
        bytes[STAMP_OFFSET..STAMP_OFFSET + 8].copy_from_slice(&stamp(purge));
        let d = decode(bytes.clone(), purge, 1 << 20).unwrap();
        assert_eq!(d.purged_at, Some(purge));
        let v = &d.slot.variants[0];
        // Age at the purge: 3 s initial + 10 s resident.
        assert_eq!(v.meta.lifetime, Duration::from_secs(13));
        assert_eq!(v.meta.staleness(purge), Duration::ZERO);
        assert!(v.meta.staleness(purge + Duration::from_secs(1)) > Duration::ZERO);
    }

    #[test]
    fn other_formats_and_garbage_are_misses_not_panics() {
        let t = at(1_800_000_000);
        let mut bytes = encode(&slot(vec![response(b"x", t)]), usize::MAX);
        assert_eq!(
            decode(&b"hello"[..], t, 64).unwrap_err(),
            DecodeError::UnknownFormat
        );
        bytes[3] = FORMAT + 1;
        assert_eq!(
            decode(bytes.clone(), t, 64).unwrap_err(),
            DecodeError::UnknownFormat
        );
        bytes[3] = FORMAT;
        for cut in [HEADER_LEN, HEADER_LEN + 5, bytes.len() - 1] {
            assert_eq!(
                decode(bytes[..cut].to_vec(), t, 1 << 20).unwrap_err(),
                DecodeError::Corrupt,
                "cut at {cut}"
            );
        }
        let mut compressed_flag = bytes.clone();
        compressed_flag[12] = FLAG_ZSTD;
        assert_eq!(
            decode(compressed_flag, t, 1 << 20).unwrap_err(),
            DecodeError::Corrupt
        );
    }
}
