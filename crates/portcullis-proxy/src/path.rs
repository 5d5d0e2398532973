//! Request path normalization before routing.
//!
//! Dot segments are removed (RFC 3986 §5.2.4), including percent-encoded ones (`%2e`), so
//! `/public/../admin` is routed — and forwarded — as `/admin`. Without this, a prefix route on
//! `/public` would send a request that the upstream resolves to `/admin`.

use std::borrow::Cow;

/// Removes `.` and `..` segments; leaves every other byte as it is.
pub fn normalize(path: &str) -> Cow<'_, str> {
    if !needs_normalizing(path) {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let trailing_slash = path.ends_with('/') || last_is_dot(path);
    for seg in path.split('/').skip(1) {
        match classify(seg) {
            Dot::One => {}
            Dot::Two => {
                out.pop();
            }
            Dot::None => out.push(seg),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash && !s.ends_with('/') || s.is_empty() {
        s.push('/');
    }
    Cow::Owned(s)
}

fn needs_normalizing(path: &str) -> bool {
    path.split('/')
        .skip(1)
        .any(|seg| classify(seg) != Dot::None)
}

fn last_is_dot(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|seg| classify(seg) != Dot::None)
}

#[derive(PartialEq, Eq)]
enum Dot {
    None,
    One,
    Two,
}

fn classify(seg: &str) -> Dot {
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    if is_dot(seg) {
        return Dot::One;
    }
    let b = seg.as_bytes();
    let two = match b.len() {
        2 => seg == "..",
        4 => (is_dot(&seg[..1]) && is_dot(&seg[1..])) || (is_dot(&seg[..3]) && is_dot(&seg[3..])),
        6 => is_dot(&seg[..3]) && is_dot(&seg[3..]),
        _ => false,
    };
    if two { Dot::Two } else { Dot::None }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        assert!(matches!(
            normalize("/api/v1/users"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(normalize("/a..b/.c/"), "/a..b/.c/");
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(normalize("/public/../admin"), "/admin");
        assert_eq!(normalize("/a/./b/../c"), "/a/c");
        assert_eq!(normalize("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize("/a/b/.."), "/a/");
        assert_eq!(normalize("/.."), "/");
    }

    #[test]
    fn encoded_dots_count_as_dots() {
        assert_eq!(normalize("/public/%2e%2e/admin"), "/admin");
        assert_eq!(normalize("/public/.%2E/admin"), "/admin");
        assert_eq!(normalize("/x/%2e/y"), "/x/y");
    }
}
