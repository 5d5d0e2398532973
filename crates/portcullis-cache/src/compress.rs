//! The gateway's own compression of stored responses: each object is compressed once per
//! content coding, when a client first asks for that coding, and the result is stored as a
//! variant beside the identity copy. Hits never compress.
//!
//! Encoders: `flate2` (gzip, level 6), `brotli` (quality 5, a good speed/ratio point for
//! dynamic content) and `zstd` (level 3): the well-kept crates for each format.

use std::io::Write;

use bytes::Bytes;
use http::{HeaderMap, header};

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
    let out = match coding {
        "gzip" => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::new(6),
            );
            enc.write_all(body).ok()?;
            enc.finish().ok()?
        }
        "br" => {
            let mut out = Vec::with_capacity(body.len() / 3);
            {
                let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                enc.write_all(body).ok()?;
                enc.flush().ok()?;
            }
            out
        }
        "zstd" => zstd::bulk::compress(body, 3).ok()?,
        _ => return None,
    };
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use http::{HeaderValue, StatusCode};

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
