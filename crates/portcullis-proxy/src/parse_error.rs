//! The contract's JSON error body for requests hyper refuses before they reach the service.
//!
//! hyper's HTTP/1 server answers a request head it cannot parse (400), one larger than
//! `max_header_bytes` (431) or a URI too long (414) by itself, with an empty body and no
//! `X-Request-Id`, and offers no hook to change that. Its answer always has the same shape
//! (`connection: close`, `content-length: 0`, `date`, nothing else), is written in one piece
//! while no response is in progress, and is followed by closing the connection. The client-side
//! socket wrapper ([`crate::watchdog::Counted`]) recognises exactly that shape, only when no
//! request reached the service since the last response began, and writes this module's
//! response in its place.

use portcullis_http::{ErrorBody, RequestId};

/// hyper's automatic responses: status line and the contract's message for each.
const AUTOMATIC: [(&[u8], &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        "malformed request: the request line or a header could not be parsed",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        "request header fields too large",
    ),
    (b"HTTP/1.1 414 URI Too Long\r\n", "request URI too long"),
];

/// The headers hyper writes after the status line, before the date value.
const FIXED_HEADERS: &[u8] = b"connection: close\r\ncontent-length: 0\r\ndate: ";
/// An IMF-fixdate: `Mon, 23 Nov 2026 13:45:47 GMT`.
const DATE_LEN: usize = 29;
const END: &[u8] = b"\r\n\r\n";

/// If `written` is exactly one of hyper's automatic error responses, the contract's response
/// to write instead: same status and date, a JSON body, `X-Request-Id`, `Connection: close`.
pub(crate) fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let (status_line, message) = AUTOMATIC
        .iter()
        .find(|(line, _)| written.starts_with(line))?;
    let rest = written[status_line.len()..].strip_prefix(FIXED_HEADERS)?;
    if rest.len() != DATE_LEN + END.len() || !rest.ends_with(END) {
        return None;
    }
    let date = &rest[..DATE_LEN];
    if !date.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    let status_code = std::str::from_utf8(&status_line[9..12]).ok()?;
    let status = http::StatusCode::from_bytes(status_code.as_bytes()).ok()?;
    let request_id = RequestId::generate();
    let json = ErrorBody {
        status,
        message,
        request_id: Some(&request_id),
    }
    .to_json();
    let mut out = Vec::with_capacity(256 + json.len());
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"content-type: application/json\r\ncache-control: no-store\r\n");
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id.as_str().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\ncontent-length: ");
    out.extend_from_slice(json.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(END);
    out.extend_from_slice(json.as_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Mon, 23 Nov 2026 13:45:47 GMT";

    fn automatic(status_line: &str) -> Vec<u8> {
        format!("{status_line}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n")
            .into_bytes()
    }

    fn split(response: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(response.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn each_automatic_response_becomes_the_contract_body() {
        for (line, status) in [
            ("HTTP/1.1 400 Bad Request", 400),
            ("HTTP/1.1 431 Request Header Fields Too Large", 431),
            ("HTTP/1.1 414 URI Too Long", 414),
        ] {
            let out = replacement(&automatic(line)).expect(line);
            let (head, body) = split(&out);
            assert!(head.starts_with(line), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            assert!(head.contains("connection: close"), "{head}");
            assert!(head.contains(&format!("date: {DATE}")), "{head}");
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .expect("x-request-id");
            assert_eq!(body["status"], status);
            assert_eq!(body["request_id"], id);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, out.len() - head.len() - 4);
        }
    }

    #[test]
    fn anything_else_is_left_alone() {
        let mut longer = automatic("HTTP/1.1 400 Bad Request");
        longer.extend_from_slice(b"x");
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nhi";
        let other_status = automatic("HTTP/1.1 404 Not Found");
        let mut truncated = automatic("HTTP/1.1 431 Request Header Fields Too Large");
        truncated.truncate(truncated.len() - 2);
        for written in [
            &longer[..],
            with_body,
            &other_status,
            &truncated,
            b"",
            b"HTTP/1.1 400",
        ] {
            assert!(
                replacement(written).is_none(),
                "{}",
                String::from_utf8_lossy(written)
            );
        }
    }
}
