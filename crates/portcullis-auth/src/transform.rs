//! Header transforms: remove, rename and add request or response headers, with templates
//! (`$request_id`, `$consumer_id`, `$upstream`, `$route`), e.g. service identification headers.

use http::{HeaderMap, HeaderName, HeaderValue};

/// One direction's transform (plain data). Applied in this order: remove, rename, add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderTransformOptions {
    /// Headers set (replacing any value), with templates in the values.
    pub add: Vec<(String, String)>,
    /// Headers removed.
    pub remove: Vec<String>,
    /// Headers renamed (`from`, `to`), keeping their values.
    pub rename: Vec<(String, String)>,
}

/// What templates may name.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateVars<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The authenticated consumer (empty when none).
    pub consumer_id: Option<&'a str>,
    /// The upstream's name.
    pub upstream: &'a str,
    /// The route's name.
    pub route: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    RequestId,
    ConsumerId,
    Upstream,
    Route,
}

#[derive(Debug, Clone)]
enum Template {
    /// No variables: built once.
    Fixed(HeaderValue),
    Parts(Vec<Part>),
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        const VARS: [(&str, Part); 4] = [
            ("$request_id", Part::RequestId),
            ("$consumer_id", Part::ConsumerId),
            ("$upstream", Part::Upstream),
            ("$route", Part::Route),
        ];
        let mut parts = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        while let Some(pos) = rest.find('$') {
            literal.push_str(&rest[..pos]);
            rest = &rest[pos..];
            let Some((name, part)) = VARS.iter().find(|(n, _)| rest.starts_with(n)) else {
                return Err(format!(
                    "{text:?}: unknown variable; use $request_id, $consumer_id, $upstream or $route"
                ));
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(part.clone());
            rest = &rest[name.len()..];
        }
        literal.push_str(rest);
        if parts.is_empty() {
            return HeaderValue::from_str(&literal)
                .map(Self::Fixed)
                .map_err(|_| format!("{text:?} is not a valid header value"));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        for p in &parts {
            if let Part::Text(t) = p
                && HeaderValue::from_str(t).is_err()
            {
                return Err(format!("{text:?} is not a valid header value"));
            }
        }
        Ok(Self::Parts(parts))
    }

    fn render(&self, vars: &TemplateVars<'_>) -> Option<HeaderValue> {
        match self {
            Self::Fixed(v) => Some(v.clone()),
            Self::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    out.push_str(match p {
                        Part::Text(t) => t,
                        Part::RequestId => vars.request_id,
                        Part::ConsumerId => vars.consumer_id.unwrap_or(""),
                        Part::Upstream => vars.upstream,
                        Part::Route => vars.route,
                    });
                }
                HeaderValue::from_str(&out).ok()
            }
        }
    }
}

/// A built transform.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderTransform {
    add: Vec<(HeaderName, Template)>,
    remove: Vec<HeaderName>,
    rename: Vec<(HeaderName, HeaderName)>,
}

fn name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("{text:?} is not a valid header name"))
}

impl HeaderTransform {
    pub(crate) fn new(o: &HeaderTransformOptions) -> Result<Self, String> {
        Ok(Self {
            add: o
                .add
                .iter()
                .map(|(n, v)| Ok((name(n)?, Template::parse(v)?)))
                .collect::<Result<_, String>>()?,
            remove: o.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            rename: o
                .rename
                .iter()
                .map(|(from, to)| Ok((name(from)?, name(to)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.rename.is_empty()
    }

    pub(crate) fn apply(&self, headers: &mut HeaderMap, vars: &TemplateVars<'_>) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (from, to) in &self.rename {
            let values: Vec<HeaderValue> = match headers.entry(from) {
                http::header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
                http::header::Entry::Vacant(_) => continue,
            };
            headers.remove(to);
            for v in values {
                headers.append(to.clone(), v);
            }
        }
        for (n, template) in &self.add {
            if let Some(v) = template.render(vars) {
                headers.insert(n.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_rename_then_add_with_templates() {
        let t = HeaderTransform::new(&HeaderTransformOptions {
            add: vec![
                ("X-Service".into(), "orders".into()),
                (
                    "X-Trace".into(),
                    "$route/$upstream id=$request_id by $consumer_id".into(),
                ),
            ],
            remove: vec!["Cookie".into()],
            rename: vec![("X-Old".into(), "X-New".into())],
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1"));
        h.append("x-old", HeaderValue::from_static("1"));
        h.append("x-old", HeaderValue::from_static("2"));
        h.insert("x-service", HeaderValue::from_static("client-says"));
        let vars = TemplateVars {
            request_id: "rid",
            consumer_id: Some("acme"),
            upstream: "api",
            route: "r1",
        };
        t.apply(&mut h, &vars);
        assert!(h.get("cookie").is_none());
        assert!(h.get("x-old").is_none());
        let new: Vec<_> = h.get_all("x-new").iter().collect();
        assert_eq!(new, ["1", "2"]);
        assert_eq!(h["x-service"], "orders");
        assert_eq!(h["x-trace"], "r1/api id=rid by acme");
    }

    #[test]
    fn unknown_variables_and_bad_values_are_refused() {
        assert!(Template::parse("$nope").is_err());
        assert!(Template::parse("a\nb").is_err());
        assert!(Template::parse("cost: $5").is_err());
        assert!(matches!(
            Template::parse("plain").unwrap(),
            Template::Fixed(_)
        ));
    }
}
