//! Security headers added to responses (HSTS, frame options, CSP, ...), and removal of headers
//! that advertise the upstream's software.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// `X-Powered-By`.
pub(crate) const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Response headers a route adds (plain data). `None` leaves a header out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityHeaderOptions {
    /// `Strict-Transport-Security`.
    pub hsts: Option<String>,
    /// `X-Frame-Options`.
    pub frame_options: Option<String>,
    /// `X-Content-Type-Options: nosniff`.
    pub content_type_options: bool,
    /// `Referrer-Policy`.
    pub referrer_policy: Option<String>,
    /// `Content-Security-Policy`.
    pub content_security_policy: Option<String>,
    /// `Permissions-Policy`.
    pub permissions_policy: Option<String>,
    /// Remove `Server` and `X-Powered-By` from upstream responses.
    pub remove_server_headers: bool,
}

/// The headers of [`SecurityHeaderOptions`], built once.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecurityHeaders {
    set: Vec<(HeaderName, HeaderValue)>,
    remove_server: bool,
}

impl SecurityHeaders {
    pub(crate) fn new(o: &SecurityHeaderOptions) -> Result<Self, String> {
        let mut set = Vec::new();
        let mut add = |name: HeaderName, value: &Option<String>| -> Result<(), String> {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                let value = HeaderValue::from_str(v)
                    .map_err(|_| format!("{name}: {v:?} is not a valid header value"))?;
                set.push((name, value));
            }
            Ok(())
        };
        add(header::STRICT_TRANSPORT_SECURITY, &o.hsts)?;
        add(header::X_FRAME_OPTIONS, &o.frame_options)?;
        add(header::REFERRER_POLICY, &o.referrer_policy)?;
        add(header::CONTENT_SECURITY_POLICY, &o.content_security_policy)?;
        add(
            HeaderName::from_static("permissions-policy"),
            &o.permissions_policy,
        )?;
        if o.content_type_options {
            set.push((
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ));
        }
        Ok(Self {
            set,
            remove_server: o.remove_server_headers,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty() && !self.remove_server
    }

    /// Adds each header the response does not set itself (the upstream's own policy wins),
    /// and removes `Server`/`X-Powered-By` if configured.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        if self.remove_server {
            headers.remove(header::SERVER);
            headers.remove(X_POWERED_BY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_added_unless_the_upstream_set_them() {
        let h = SecurityHeaders::new(&SecurityHeaderOptions {
            hsts: Some("max-age=63072000".into()),
            frame_options: Some("DENY".into()),
            content_type_options: true,
            referrer_policy: Some(String::new()),
            content_security_policy: Some("default-src 'none'".into()),
            permissions_policy: None,
            remove_server_headers: true,
        })
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        headers.insert(header::SERVER, HeaderValue::from_static("nginx/1.2"));
        headers.insert(X_POWERED_BY, HeaderValue::from_static("PHP/5"));
        h.apply(&mut headers);
        assert_eq!(
            headers[header::STRICT_TRANSPORT_SECURITY],
            "max-age=63072000"
        );
        assert_eq!(headers[header::X_FRAME_OPTIONS], "SAMEORIGIN");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'"
        );
        assert!(
            !headers.contains_key(header::REFERRER_POLICY),
            "empty: left out"
        );
        assert!(!headers.contains_key(header::SERVER));
        assert!(!headers.contains_key(X_POWERED_BY));
    }
}
