//! Streaming compression of responses the cache does not store (`no-store`, `private`, larger
//! than `max_object_size`, bypassed requests) on routes with `compress = true`: they cannot be
//! compressed once and kept, so they are compressed as they pass, chunk by chunk, without
//! buffering the body.
//!
//! The encoders are the stored variants' ([`crate::compress`]'s `Encoder`).
//! Whenever the origin has nothing more to send for the moment, the encoder is flushed, so a
//! response that streams (long polls, NDJSON) reaches the client as it is produced rather than
//! when the encoder's window fills. Server-sent events are never compressed.
//!
//! Written here rather than taken from tower-http's `CompressionLayer`: the decision belongs to
//! the cache (only responses it will not store, after it has seen them) and the encoders are
//! already in the build; the state machine is the 100 lines below.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use http_body::{Frame, SizeHint};
use portcullis_http::{Body, BoxError};

use crate::{
    CacheControl,
    compress::{Compression, Encoder, weaken_etag},
    serve::content_length,
};

/// Wraps `resp`'s body in a `coding` encoder when the route's `compression` applies to it: a
/// 200 of a listed type the origin did not encode, at least `min_size` when its length is known,
/// not an event stream. Returns the response unchanged otherwise.
pub(crate) fn compress_passing(
    compression: &Compression,
    coding: &'static str,
    mut resp: Response<Body>,
) -> Response<Body> {
    let Some(encoder) = Encoder::new(coding, 0) else {
        return resp;
    };
    let headers = resp.headers();
    let cc = CacheControl::from_headers(headers);
    let too_small = content_length(headers).is_some_and(|n| n < compression.min_size);
    let event_stream = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if too_small || event_stream || !compression.applies(resp.status(), headers, &cc) {
        return resp;
    }
    let headers = resp.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    // Ranges of the encoded stream are not offered (its length is not known ahead).
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    weaken_etag(headers);
    resp.map(|inner| {
        portcullis_http::body::boxed(Compressing {
            inner,
            encoder: Some(encoder),
            pending_trailers: None,
            unflushed: false,
        })
    })
}

/// A body compressed as it streams.
struct Compressing {
    inner: Body,
    /// `None` once finished.
    encoder: Option<Encoder>,
    /// Trailers the origin sent, held until the compressed data before them is out.
    pending_trailers: Option<HeaderMap>,
    /// Data was written since the last flush.
    unflushed: bool,
}

impl Compressing {
    fn data(bytes: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
    }
}

impl http_body::Body for Compressing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.pending_trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        encoder.write(&data)?;
                        this.unflushed = true;
                        let out = encoder.take();
                        if !out.is_empty() {
                            return Self::data(out);
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: finish the stream, then send them.
                        this.pending_trailers = frame.into_trailers().ok();
                        if let Some(encoder) = this.encoder.take() {
                            return Self::data(encoder.finish()?);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let Some(encoder) = this.encoder.take() else {
                        return Poll::Ready(None);
                    };
                    let out = encoder.finish()?;
                    return if out.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Self::data(out)
                    };
                }
                Poll::Pending => {
                    // Nothing more for now: what was written goes out rather than waiting for
                    // the encoder's window to fill.
                    if std::mem::take(&mut this.unflushed) {
                        encoder.flush()?;
                        let out = encoder.take();
                        if !out.is_empty() {
                            return Self::data(out);
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.pending_trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use http_body_util::BodyExt;

    fn response(content_type: &str, body: &str) -> Response<Body> {
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::ETAG, "\"v1\"")
            .body(portcullis_http::body::full(body.to_owned()))
            .unwrap()
    }

    async fn collect(resp: Response<Body>) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn each_coding_streams_what_the_decoder_restores() {
        let body = "{\"id\": 1, \"name\": \"item\"}\n".repeat(400);
        for coding in ["gzip", "br", "zstd"] {
            let resp = compress_passing(
                &Compression::default(),
                coding,
                response("application/json", &body),
            );
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_ENCODING], coding);
            assert_eq!(h[header::ETAG], "W/\"v1\"");
            assert!(h.get(header::CONTENT_LENGTH).is_none());
            assert!(
                h.get_all(header::VARY)
                    .iter()
                    .any(|v| v == "Accept-Encoding")
            );
            let encoded = collect(resp).await;
            assert!(
                encoded.len() < body.len() / 4,
                "{coding}: {}",
                encoded.len()
            );
            let mut decoded = Vec::new();
            match coding {
                "gzip" => {
                    flate2::read::GzDecoder::new(&encoded[..])
                        .read_to_end(&mut decoded)
                        .unwrap();
                }
                "br" => {
                    brotli::Decompressor::new(&encoded[..], 4096)
                        .read_to_end(&mut decoded)
                        .unwrap();
                }
                _ => decoded = zstd::stream::decode_all(&encoded[..]).unwrap(),
            }
            assert_eq!(decoded, body.as_bytes(), "{coding}");
        }
    }

    #[tokio::test]
    async fn small_unlisted_encoded_and_event_stream_bodies_pass_unchanged() {
        let c = Compression::default();
        let big = "x".repeat(4096);
        for (resp, len) in [
            (response("application/json", "{}"), 2),
            (response("image/png", &big), big.len()),
            (response("text/event-stream", &big), big.len()),
        ] {
            let out = compress_passing(&c, "gzip", resp);
            assert!(out.headers().get(header::CONTENT_ENCODING).is_none());
            assert_eq!(collect(out).await.len(), len);
        }
        let mut encoded = response("text/plain", &big);
        encoded
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let out = compress_passing(&c, "br", encoded);
        assert_eq!(out.headers()[header::CONTENT_ENCODING], "gzip");
        let identity = compress_passing(&c, "identity", response("text/plain", &big));
        assert!(identity.headers().get(header::CONTENT_ENCODING).is_none());
    }

    /// A body fed by the test, chunk by chunk.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
        }
    }

    #[tokio::test]
    async fn what_the_origin_has_sent_reaches_the_client_before_the_origin_finishes() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let resp = Response::builder()
            .header(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")
            .body(portcullis_http::body::boxed(Fed(rx)))
            .unwrap();
        let compression = Compression {
            content_types: vec!["application/x-ndjson".into()],
            ..Compression::default()
        };
        let mut body = compress_passing(&compression, "gzip", resp).into_body();
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        for line in ["{\"event\": 1}\n", "{\"event\": 2}\n"] {
            tx.send(Bytes::from(line)).await.unwrap();
            // The origin is still open; the line must come out decodable all the same.
            while !decoder.get_ref().ends_with(line.as_bytes()) {
                // Bounded: without the flush this would wait for the origin's end forever.
                let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
                    .await
                    .expect("the line held back until the origin finishes")
                    .unwrap()
                    .unwrap();
                decoder.write_all(&frame.into_data().unwrap()).unwrap();
                decoder.flush().unwrap();
            }
        }
        drop(tx);
        while let Some(frame) = body.frame().await {
            decoder
                .write_all(&frame.unwrap().into_data().unwrap())
                .unwrap();
        }
        assert_eq!(
            decoder.finish().unwrap(),
            b"{\"event\": 1}\n{\"event\": 2}\n"
        );
    }
}
