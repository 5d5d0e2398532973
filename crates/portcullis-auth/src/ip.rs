//! Allow and deny lists of client addresses (CIDRs, IPv4 and IPv6).

use std::net::IpAddr;

use ipnet::IpNet;

/// Which client addresses may use a route. Deny wins; a non-empty allow list admits only the
/// addresses it contains. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) count as IPv4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    /// Networks admitted (empty: every address not denied).
    pub allow: Vec<IpNet>,
    /// Networks refused.
    pub deny: Vec<IpNet>,
}

impl IpRules {
    /// Whether the rules restrict anything.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `ip` may pass.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn deny_wins_and_allow_lists_restrict() {
        let rules = IpRules {
            allow: nets(&["10.0.0.0/8", "2001:db8::/32"]),
            deny: nets(&["10.9.0.0/16"]),
        };
        let ok = |s: &str| rules.allows(s.parse().unwrap());
        assert!(ok("10.1.2.3"));
        assert!(!ok("10.9.1.1"), "denied inside an allowed network");
        assert!(!ok("192.0.2.1"), "not in the allow list");
        assert!(ok("2001:db8::1"));
        assert!(!ok("2001:db9::1"));
        assert!(ok("::ffff:10.1.2.3"), "IPv4-mapped IPv6 counts as IPv4");
        let deny_only = IpRules {
            allow: Vec::new(),
            deny: nets(&["192.0.2.0/24"]),
        };
        assert!(deny_only.allows("198.51.100.1".parse().unwrap()));
        assert!(!deny_only.allows("192.0.2.7".parse().unwrap()));
    }
}
