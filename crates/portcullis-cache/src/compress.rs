//! The gateway's own compression of stored responses: each object is compressed once per
//! content coding, when a client first asks for that coding, and the result is stored as a
//! variant beside the identity copy. Hits never compress.
//!
//! Encoders: `flate2` (gzip, level 6), `brotli` (quality 5, a good speed/ratio point for
//! dynamic content) and `zstd` (level 3): the well-kept crates for each format.

use std::io::Write;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::CacheControl;

/// Which stored responses the gateway compresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Smaller bodies are not worth compressing.
    pub min_size: u64,
    /// Media types to compress: exact (`application/json`) or a type with `/*` (`text/*`).
    pub content_types: Vec<String>,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            min_size: 1024,
            content_types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/graphql-response+json",
                "application/problem+json",
                "image/svg+xml",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

impl Compression {
    /// Whether a response with these headers may be compressed by the gateway: a 200 the origin
    /// did not encode or vary by encoding itself, of a listed type, without `no-transform`.
    /// The size is checked when the body is complete.
    pub fn applies(
        &self,
        status: http::StatusCode,
        headers: &HeaderMap,
        cc: &CacheControl,
    ) -> bool {
        if status != http::StatusCode::OK
            || cc.no_transform
            || headers.contains_key(header::CONTENT_ENCODING)
            || headers.contains_key(header::CONTENT_RANGE)
        {
            return false;
        }
        let varies_on_encoding = headers
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|n| n.trim().eq_ignore_ascii_case("accept-encoding") || n.trim() == "*");
        if varies_on_encoding {
            return false;
        }
        let Some(media) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
        else {
            return false;
        };
        self.content_types
            .iter()
            .any(|t| match t.strip_suffix("/*") {
                Some(top) => media.split('/').next() == Some(top),
                None => *t == media,
            })
    }
}

/// Compresses `body` with `coding` (`br`, `zstd` or `gzip`); `None` for any other coding or if
/// the encoder fails.
pub fn encode(coding: &str, body: &[u8]) -> Option<Bytes> {
    let mut encoder = Encoder::new(coding, body.len() / 3)?;
    encoder.write(body).ok()?;
    Some(Bytes::from(encoder.finish().ok()?))
}

/// Makes a strong `ETag` weak: the gateway's encoding is another representation of the
/// resource (as nginx does).
pub(crate) fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG)
        && !etag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, v);
        }
    }
}

/// One coding's encoder, writing into a buffer its user drains: the whole body at once for a
/// stored variant ([`encode`]), chunk by chunk for a response passed on
/// (`compress_stream`).
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// An encoder for `coding` (`br`, `zstd` or `gzip`) whose buffer starts with `capacity`
    /// bytes; `None` for any other coding.
    pub(crate) fn new(coding: &str, capacity: usize) -> Option<Self> {
        let out = Vec::with_capacity(capacity);
        Some(match coding {
            "gzip" => Self::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(6),
            )),
            "br" => Self::Br(Box::new(brotli::CompressorWriter::new(out, 4096, 5, 22))),
            "zstd" => Self::Zstd(zstd::stream::write::Encoder::new(out, 3).ok()?),
            _ => return None,
        })
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.write_all(data),
            Self::Br(e) => e.write_all(data),
            Self::Zstd(e) => e.write_all(data),
        }
    }

    /// Pushes out everything written so far (a sync flush: the stream goes on after it).
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.flush(),
            Self::Br(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }

    /// The compressed bytes produced so far, taken out of the buffer.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        let out = match self {
            Self::Gzip(e) => e.get_mut(),
            Self::Br(e) => e.get_mut(),
            Self::Zstd(e) => e.get_mut(),
        };
        std::mem::take(out)
    }

    /// Ends the stream: the last compressed bytes (gzip's trailer, zstd's end frame...).
    pub(crate) fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Gzip(e) => e.finish(),
            Self::Br(mut e) => {
                e.flush()?;
                Ok(e.into_inner())
            }
            Self::Zstd(e) => e.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use http::StatusCode;

    #[test]
    fn every_coding_round_trips() {
        let body = "{\"items\": [1, 2, 3]} ".repeat(200);
        let gz = encode("gzip", body.as_bytes()).unwrap();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, body);
        let br = encode("br", body.as_bytes()).unwrap();
        let mut out = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body.as_bytes());
        let zs = encode("zstd", body.as_bytes()).unwrap();
        assert_eq!(
            zstd::bulk::decompress(&zs, body.len()).unwrap(),
            body.as_bytes()
        );
        assert!(
            gz.len() < body.len() / 4 && br.len() < body.len() / 4 && zs.len() < body.len() / 4
        );
        assert_eq!(encode("deflate", b"x"), None);
    }

    #[test]
    fn only_plain_listed_types_without_no_transform_are_compressed() {
        let c = Compression::default();
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let none = CacheControl::default();
        assert!(c.applies(
            StatusCode::OK,
            &h(&[("content-type", "application/json; charset=utf-8")]),
            &none
        ));
        assert!(c.applies(StatusCode::OK, &h(&[("content-type", "text/html")]), &none));
        assert!(!c.applies(StatusCode::OK, &h(&[("content-type", "image/png")]), &none));
        assert!(!c.applies(StatusCode::OK, &h(&[]), &none));
        assert!(!c.applies(
            StatusCode::OK,
            &h(&[("content-type", "text/html"), ("content-encoding", "gzip")]),
            &none
        ));
        assert!(!c.applies(
            StatusCode::OK,
            &h(&[("content-type", "text/html"), ("vary", "Accept-Encoding")]),
            &none
        ));
        assert!(!c.applies(
            StatusCode::NOT_FOUND,
            &h(&[("content-type", "text/html")]),
            &none
        ));
        assert!(!c.applies(
            StatusCode::OK,
            &h(&[("content-type", "text/html")]),
            &CacheControl::parse("no-transform")
        ));
    }
}
