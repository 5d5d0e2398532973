//! Config errors that say where: file, line, column, the dotted key, and the offending line with a
//! caret under it.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use toml::de::{DeTable, DeValue};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column (in characters), 0 when unknown.
    pub column: usize,
    /// Dotted key path such as `routes[1].upstream`; empty when unknown.
    pub key: String,
    /// What is wrong, and what would be right where we can tell.
    pub message: String,
    /// The source line and a caret under the span, when known.
    snippet: Option<String>,
}

impl ConfigError {
    /// An error about the file as a whole (for example, it cannot be read).
    pub fn file_only(file: &Path, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
            snippet: None,
        }
    }

    /// An error at `span` of `text`; the key path is derived from the span.
    pub(crate) fn at(file: &Path, text: &str, span: Range<usize>, message: String) -> Self {
        let (line, column) = line_column(text, span.start);
        Self {
            file: file.to_owned(),
            line,
            column,
            key: key_path_at(text, span.start).unwrap_or_default(),
            message,
            snippet: Some(snippet(text, &span, line, column)),
        }
    }

    /// An error at `span` with a key path the caller knows better than the span does (for
    /// example, a default value that has no span of its own).
    pub(crate) fn at_key(
        file: &Path,
        text: &str,
        span: Range<usize>,
        key: String,
        message: String,
    ) -> Self {
        if span == (0..0) {
            return Self {
                key,
                ..Self::file_only(file, message)
            };
        }
        Self {
            key,
            ..Self::at(file, text, span, message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

/// All problems found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn single(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Converts a toml parse/deserialize error, adding "did you mean" to unknown-key errors.
pub(crate) fn from_toml_error(e: &toml::de::Error, text: &str, file: &Path) -> ConfigError {
    let message = with_suggestion(e.message().trim());
    match e.span() {
        Some(span) => ConfigError::at(file, text, span, message),
        None => ConfigError::file_only(file, message),
    }
}

/// serde's unknown-field message is "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a`"); append the closest expected name when it is close enough to be a typo.
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let candidates = expected.split('`').skip(1).step_by(2);
    match closest(field, candidates) {
        Some(best) => format!("{message}; did you mean `{best}`?"),
        None => message.to_owned(),
    }
}

/// The candidate closest to `word` by Jaro-Winkler similarity, if similar enough to be a typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Keys whose values are secrets: a snippet of their line shows `<redacted>` instead, since
/// config errors end up in logs.
const SECRET_KEYS: [&str; 4] = ["token", "password", "secret", "api_keys"];

/// `line` with the value of a secret key replaced (`token = "..."` or inline `token = ...`).
fn redact(line: &str) -> std::borrow::Cow<'_, str> {
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(pos) = line[from..].find(key).map(|p| p + from) {
            let before_ok = pos == 0
                || !line.as_bytes()[pos - 1].is_ascii_alphanumeric()
                    && line.as_bytes()[pos - 1] != b'_';
            let after = line[pos + key.len()..].trim_start();
            if before_ok && after.starts_with('=') {
                return std::borrow::Cow::Owned(format!("{}{key} = <redacted>", &line[..pos]));
            }
            from = pos + key.len();
        }
    }
    redact_userinfo(line)
}

/// `scheme://user:password@host` → `scheme://<redacted>@host` (Redis URLs carry passwords).
fn redact_userinfo(line: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(scheme_end) = rest.find("://") {
        let after = &rest[scheme_end + 3..];
        let authority_end = after
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str(&rest[..scheme_end + 3]);
                out.push_str("<redacted>");
                rest = &after[at..];
            }
            None => {
                out.push_str(&rest[..scheme_end + 3]);
                rest = after;
            }
        }
    }
    if out.is_empty() {
        return std::borrow::Cow::Borrowed(line);
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

fn snippet(text: &str, span: &Range<usize>, line: usize, column: usize) -> String {
    let src = redact(text.lines().nth(line - 1).unwrap_or(""));
    let width = text
        .get(span.clone())
        .map_or(1, |s| s.lines().next().unwrap_or("").chars().count().max(1));
    let gutter = line.to_string().len();
    format!(
        "{:gutter$} |\n{line} | {src}\n{:gutter$} | {}{}",
        "",
        "",
        " ".repeat(column - 1),
        "^".repeat(width)
    )
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn secret_values_are_redacted_and_other_lines_kept() {
        assert_eq!(redact("token = \"abc\""), "token = <redacted>");
        assert_eq!(
            redact("admin = { listen = \"x\", token = \"abc\" }"),
            "admin = { listen = \"x\", token = <redacted>"
        );
        assert_eq!(redact("tokens_seen = 3"), "tokens_seen = 3");
        assert_eq!(redact("key = \"tls.key\""), "key = \"tls.key\"");
        assert_eq!(
            redact("url = \"rediss://gw:pw@r:6380/0\", b = \"http://h/x@y\""),
            "url = \"rediss://<redacted>@r:6380/0\", b = \"http://h/x@y\""
        );
    }
}

/// The dotted key path (`routes[1].match.host`) of the innermost key or value containing `offset`.
pub(crate) fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut path = String::new();
    walk_table(doc.get_ref(), offset, &mut path);
    (!path.is_empty()).then_some(path)
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut String) {
    for (key, value) in table.iter() {
        let in_key = key.span().contains(&offset);
        let in_value = value.span().contains(&offset)
            || matches!(value.get_ref(), DeValue::Array(_) | DeValue::Table(_))
                && contains_deep(value.get_ref(), offset);
        if in_key || in_value {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key.get_ref());
            if !in_key {
                walk_value(value.get_ref(), offset, path);
            }
            return;
        }
    }
}

fn walk_value(value: &DeValue<'_>, offset: usize, path: &mut String) {
    match value {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.span().contains(&offset) || contains_deep(item.get_ref(), offset) {
                    path.push_str(&format!("[{i}]"));
                    walk_value(item.get_ref(), offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// Whether any key or value nested in `value` covers `offset`. Tables written as `[[routes]]`
/// headers have spans that do not cover their bodies, so containment is checked through children.
fn contains_deep(value: &DeValue<'_>, offset: usize) -> bool {
    match value {
        DeValue::Table(t) => t.iter().any(|(k, v)| {
            k.span().contains(&offset)
                || v.span().contains(&offset)
                || contains_deep(v.get_ref(), offset)
        }),
        DeValue::Array(items) => items
            .iter()
            .any(|v| v.span().contains(&offset) || contains_deep(v.get_ref(), offset)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        let x = text.find("\"x").unwrap();
        assert_eq!(line_column(text, x), (2, 6));
    }

    #[test]
    fn key_path_names_array_tables_and_inline_tables() {
        let text = "[server]\nlisten = \"x\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nmatch = { host = \"h\" }\n";
        let at = |needle: &str| key_path_at(text, text.find(needle).unwrap()).unwrap();
        assert_eq!(at("\"x\""), "server.listen");
        assert_eq!(at("\"b\""), "routes[1].name");
        assert_eq!(at("\"h\""), "routes[1].match.host");
    }

    #[test]
    fn unknown_fields_get_a_suggestion_only_when_close() {
        let m = with_suggestion("unknown field `lisen`, expected one of `listen`, `tls`");
        assert!(m.ends_with("did you mean `listen`?"), "{m}");
        let m = with_suggestion("unknown field `zzzz`, expected one of `listen`, `tls`");
        assert!(!m.contains("did you mean"), "{m}");
    }
}
