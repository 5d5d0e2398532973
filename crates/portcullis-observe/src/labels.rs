//! Bounded label values: the request method and the status class.

use http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// The request method as a metric label: the standard methods by name, anything else `other`,
/// so a client inventing methods cannot grow the number of series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// Any other method.
    Other,
}

impl MethodLabel {
    /// How many distinct values there are.
    pub const COUNT: usize = 8;

    /// The label for `method`.
    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET => Self::Get,
            Method::HEAD => Self::Head,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::PATCH => Self::Patch,
            Method::DELETE => Self::Delete,
            Method::OPTIONS => Self::Options,
            _ => Self::Other,
        }
    }

    /// Position in a table of [`Self::COUNT`] entries.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Other => "other",
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The status class of a response: `1xx` to `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 100-199
    Informational,
    /// 200-299
    Success,
    /// 300-399
    Redirection,
    /// 400-499
    ClientError,
    /// 500-599 (and anything out of range)
    ServerError,
}

impl StatusClass {
    /// How many distinct values there are.
    pub const COUNT: usize = 5;

    /// The class of `status`.
    pub fn of(status: StatusCode) -> Self {
        match status.as_u16() {
            100..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }

    /// Position in a table of [`Self::COUNT`] entries.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirection => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
        }
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_classes_are_bounded() {
        assert_eq!(MethodLabel::of(&Method::GET).as_str(), "GET");
        let invented = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(MethodLabel::of(&invented), MethodLabel::Other);
        assert!(MethodLabel::Other.index() < MethodLabel::COUNT);
        assert_eq!(StatusClass::of(StatusCode::NOT_FOUND).as_str(), "4xx");
        assert_eq!(
            StatusClass::of(StatusCode::SWITCHING_PROTOCOLS).as_str(),
            "1xx"
        );
        assert!(StatusClass::ServerError.index() < StatusClass::COUNT);
    }
}
