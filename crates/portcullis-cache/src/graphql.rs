//! GraphQL over POST: which operation a request runs, and a key for queries.
//!
//! A GraphQL POST body is `{"query": "...", "operationName": "...", "variables": {...}}`. Only
//! queries are cached; mutations and subscriptions pass through (and invalidate). The key is a
//! digest of the normalized document (comments, commas and insignificant whitespace removed, so
//! formatting does not split the cache), the operation name and the variables with object keys
//! sorted. A hand-written tokenizer is enough for this (no crate parses just the operation type
//! without building a whole AST; `graphql-parser` would add a dependency and a full parse per
//! request).

use serde::Deserialize;
use serde_json::Value;

/// What a GraphQL request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A query: cacheable; the digest identifies document, operation and variables.
    Query {
        /// XXH3-128 of the normalized request.
        digest: u128,
    },
    /// A mutation: passed through; a success invalidates.
    Mutation,
    /// A subscription: passed through.
    Subscription,
}

#[derive(Deserialize)]
struct Body {
    query: String,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Value>,
}

/// Classifies a POST body; `None` when it is not a well-formed GraphQL request (then the
/// gateway passes it through untouched).
pub fn classify(body: &[u8]) -> Option<Operation> {
    let body: Body = serde_json::from_slice(body).ok()?;
    let tokens = tokenize(&body.query);
    let kind = operation_kind(&tokens, body.operation_name.as_deref())?;
    Some(match kind {
        "mutation" => Operation::Mutation,
        "subscription" => Operation::Subscription,
        _ => {
            let mut text = tokens.join(" ");
            text.push('\0');
            text.push_str(body.operation_name.as_deref().unwrap_or(""));
            text.push('\0');
            if let Some(v) = &body.variables {
                write_canonical(&mut text, v);
            }
            Operation::Query {
                digest: xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
            }
        }
    })
}

/// The type (`query`, `mutation`, `subscription`) of the operation to run: the one named
/// `name`, or the only one in the document.
fn operation_kind<'a>(tokens: &[&'a str], name: Option<&str>) -> Option<&'a str> {
    let mut ops: Vec<(&str, Option<&str>)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        match t {
            "{" if depth == 0 => {
                // A selection set at the top level is an anonymous query (shorthand form),
                // unless it belongs to an operation or fragment definition.
                if !opened_by_definition(tokens, i) {
                    ops.push(("query", None));
                }
                depth += 1;
            }
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            "query" | "mutation" | "subscription" if depth == 0 => {
                let name = tokens.get(i + 1).copied().filter(|n| {
                    n.chars()
                        .next()
                        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
                });
                ops.push((t, name));
            }
            "fragment" if depth == 0 => ops.push(("fragment", None)),
            _ => {}
        }
        i += 1;
    }
    let ops: Vec<_> = ops.into_iter().filter(|(k, _)| *k != "fragment").collect();
    match name {
        Some(name) => ops.iter().find(|(_, n)| *n == Some(name)).map(|(k, _)| *k),
        None if ops.len() == 1 => Some(ops[0].0),
        None => None,
    }
}

/// Whether the `{` at `at` opens the body of a `query`/`mutation`/`subscription`/`fragment`
/// definition (rather than starting a shorthand query).
fn opened_by_definition(tokens: &[&str], at: usize) -> bool {
    // Walk back over the definition's header (name, variables, directives) to the keyword,
    // stopping at the previous top-level `}`.
    let mut parens = 0usize;
    for t in tokens[..at].iter().rev() {
        match *t {
            ")" => parens += 1,
            "(" => parens = parens.saturating_sub(1),
            "}" if parens == 0 => return false,
            "query" | "mutation" | "subscription" | "fragment" if parens == 0 => return true,
            _ => {}
        }
    }
    false
}

/// Lexical tokens of a GraphQL document, without whitespace, commas and comments.
fn tokenize(doc: &str) -> Vec<&str> {
    let b = doc.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i = (i + 3).min(b.len());
                out.push(&doc[start..i]);
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                out.push(&doc[start..i]);
            }
            b'.' if b[i..].starts_with(b"...") => {
                i += 3;
                out.push(&doc[start..i]);
            }
            c if c == b'_' || c == b'-' || c.is_ascii_alphanumeric() => {
                while i < b.len()
                    && (b[i] == b'_'
                        || b[i] == b'-'
                        || b[i] == b'.'
                        || b[i] == b'+'
                        || b[i].is_ascii_alphanumeric())
                {
                    i += 1;
                }
                out.push(&doc[start..i]);
            }
            c if c.is_ascii() => {
                i += 1;
                out.push(&doc[start..i]);
            }
            _ => {
                // A non-ASCII character outside a string: keep it as its own token.
                let len = doc[i..].chars().next().map_or(1, char::len_utf8);
                i += len;
                out.push(&doc[start..i]);
            }
        }
    }
    out
}

/// JSON with object keys sorted, so `{"a":1,"b":2}` and `{"b":2,"a":1}` key alike.
fn write_canonical(out: &mut String, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(body: &str) -> Option<Operation> {
        classify(body.as_bytes())
    }

    fn digest(body: &str) -> u128 {
        match op(body) {
            Some(Operation::Query { digest }) => digest,
            other => panic!("not a query: {other:?}"),
        }
    }

    #[test]
    fn operation_types() {
        assert!(matches!(
            op(r#"{"query":"{ user { id } }"}"#),
            Some(Operation::Query { .. })
        ));
        assert!(matches!(
            op(r#"{"query":"query Q($id: ID!) { user(id: $id) { name } }"}"#),
            Some(Operation::Query { .. })
        ));
        assert_eq!(
            op(r#"{"query":"mutation { addUser(name: \"x\") { id } }"}"#),
            Some(Operation::Mutation)
        );
        assert_eq!(
            op(r#"{"query":"subscription S { events { id } }"}"#),
            Some(Operation::Subscription)
        );
        // Fragments are not operations.
        assert!(matches!(
            op(r#"{"query":"query { ...F } fragment F on User { id }"}"#),
            Some(Operation::Query { .. })
        ));
        // Several operations: operationName chooses.
        let two = r#"{"query":"query A { a } mutation B { b }","operationName":"B"}"#;
        assert_eq!(op(two), Some(Operation::Mutation));
        assert_eq!(
            op(r#"{"query":"query A { a } mutation B { b }"}"#),
            None,
            "ambiguous"
        );
        assert_eq!(op(r#"{"query":"query A { a }","operationName":"Z"}"#), None);
        assert_eq!(op("not json"), None);
        assert_eq!(op(r#"{"variables":{}}"#), None);
    }

    #[test]
    fn formatting_and_key_order_do_not_change_the_key_but_content_does() {
        let a = digest(
            r#"{"query":"query Q { user(id: 1) { id, name } }","variables":{"a":1,"b":[1,{"y":2,"x":1}]}}"#,
        );
        let b = digest(
            r##"{"variables":{"b":[1,{"x":1,"y":2}],"a":1},"query":"# list users\nquery Q {\n  user(id: 1) {\n    id\n    name\n  }\n}\n"}"##,
        );
        assert_eq!(a, b);
        let other_var = digest(
            r#"{"query":"query Q { user(id: 1) { id, name } }","variables":{"a":2,"b":[1,{"y":2,"x":1}]}}"#,
        );
        assert_ne!(a, other_var);
        let other_field = digest(
            r#"{"query":"query Q { user(id: 1) { id } }","variables":{"a":1,"b":[1,{"y":2,"x":1}]}}"#,
        );
        assert_ne!(a, other_field);
        // Whitespace inside strings is significant.
        assert_ne!(
            digest(r#"{"query":"{ search(q: \"a b\") { id } }"}"#),
            digest(r#"{"query":"{ search(q: \"a  b\") { id } }"}"#)
        );
    }
}
