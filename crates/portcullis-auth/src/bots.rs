//! Bot rules: `User-Agent` patterns that are refused (403), with exceptions.

/// Scanners and attack tools refused by default (case-insensitive substrings of the
/// `User-Agent`). Search engines and monitoring bots are not on it.
pub const DEFAULT_BAD_BOTS: [&str; 18] = [
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "acunetix",
    "netsparker",
    "dirbuster",
    "gobuster",
    "wpscan",
    "havij",
    "w3af",
    "openvas",
    "zmeu",
    "jorgee",
    "morfeus",
    "fimap",
];

/// Which `User-Agent`s are refused. Patterns are case-insensitive substrings; an `allow`
/// match wins over a `deny` match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BotRules {
    /// Refused patterns (add [`DEFAULT_BAD_BOTS`] for the default list).
    pub deny: Vec<String>,
    /// Patterns admitted even when a deny pattern matches.
    pub allow: Vec<String>,
    /// Refuse requests without a `User-Agent` (or with an empty one).
    pub deny_empty: bool,
}

impl BotRules {
    /// Whether the rules refuse anything.
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && !self.deny_empty
    }

    /// Whether a request with `user_agent` may pass.
    pub fn allows(&self, user_agent: Option<&[u8]>) -> bool {
        let ua = user_agent.unwrap_or_default();
        if ua.trim_ascii().is_empty() {
            return !self.deny_empty;
        }
        let matches = |p: &String| contains_ignore_case(ua, p.as_bytes());
        !self.deny.iter().any(matches) || self.allow.iter().any(matches)
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_patterns_match_case_insensitively_and_allow_wins() {
        let rules = BotRules {
            deny: DEFAULT_BAD_BOTS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(["bot".to_owned()])
                .collect(),
            allow: vec!["Googlebot".into()],
            deny_empty: true,
        };
        let ok = |ua: &str| rules.allows(Some(ua.as_bytes()));
        assert!(!ok("sqlmap/1.7.2#stable (https://sqlmap.org)"));
        assert!(!ok("Mozilla/5.0 (compatible; Nmap Scripting Engine)"));
        assert!(!ok("SomeBot/1.0"));
        assert!(ok("Mozilla/5.0 (compatible; Googlebot/2.1)"));
        assert!(ok("curl/8.5.0"));
        assert!(!rules.allows(None));
        assert!(!ok("  "));
        assert!(BotRules::default().allows(None));
    }
}
