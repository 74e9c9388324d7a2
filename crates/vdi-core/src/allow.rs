//! The allow-list of tunnel targets: the gateway must never become an open proxy.
//!
//! A target is allowed when an entry of `allowed_targets` contains it. Addresses
//! an attacker would aim at through a gateway (loopback, the gateway's own
//! addresses, link-local such as cloud metadata, unspecified, multicast,
//! broadcast) are refused even inside a broad entry such as `10.0.0.0/8`; they
//! pass only when an entry names them *explicitly*: a single-host entry equal to
//! the address, or, for loopback, an entry that lies wholly inside loopback.

use ipnet::IpNet;
use std::net::IpAddr;

/// Parses `10.0.0.0/8`, `fc00::/7` or a bare address (a single-host entry).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        if net.network() != net.addr() {
            return Err(format!(
                "{s:?} has host bits set (did you mean {}?)",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not a network (CIDR) or address"))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is not in the allowed target networks")]
    NotAllowed(IpAddr),
    #[error("{0} is {1}; list it explicitly in allowed_targets to allow it")]
    Guarded(IpAddr, &'static str),
}

#[derive(Debug, Clone)]
pub struct AllowList {
    nets: Vec<IpNet>,
    own: Vec<IpAddr>,
}

impl AllowList {
    /// `entries` must have passed settings validation; a bad entry is skipped.
    pub fn new(entries: &[String], own_addrs: &[IpAddr]) -> Self {
        Self {
            nets: entries.iter().filter_map(|e| parse_net(e).ok()).collect(),
            own: own_addrs.iter().map(canonical).collect(),
        }
    }

    pub fn check(&self, target: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(&target);
        let mut containing = self.nets.iter().filter(|net| net.contains(&ip));
        match self.guard(ip) {
            None if containing.next().is_some() => Ok(()),
            None => Err(Refusal::NotAllowed(ip)),
            Some(_) if containing.any(|net| explicit(net, ip)) => Ok(()),
            Some(why) => Err(Refusal::Guarded(ip, why)),
        }
    }

    fn guard(&self, ip: IpAddr) -> Option<&'static str> {
        if ip.is_loopback() {
            return Some("a loopback address");
        }
        if self.own.contains(&ip) {
            return Some("an address of this gateway");
        }
        if ip.is_unspecified() {
            return Some("the unspecified address");
        }
        if ip.is_multicast() {
            return Some("a multicast address");
        }
        match ip {
            IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
            IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
            _ => None,
        }
    }
}

fn explicit(net: &IpNet, ip: IpAddr) -> bool {
    let single = net.prefix_len() == net.max_prefix_len() && net.addr() == ip;
    let inside_loopback =
        ip.is_loopback() && net.network().is_loopback() && net.broadcast().is_loopback();
    single || inside_loopback
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is checked as the IPv4 address it is.
fn canonical(ip: &IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(*v6)),
        v4 => *v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str], own: &[&str]) -> AllowList {
        AllowList::new(
            &entries.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &own.iter().map(|s| s.parse().unwrap()).collect::<Vec<_>>(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_private_ranges_allow_desktops() {
        let l = list(
            crate::settings::DEFAULT_ALLOWED_TARGETS,
            &["10.254.150.132"],
        );
        assert_eq!(l.check(ip("10.1.2.3")), Ok(()));
        assert_eq!(l.check(ip("172.20.0.5")), Ok(()));
        assert_eq!(l.check(ip("192.168.1.10")), Ok(()));
        assert_eq!(l.check(ip("fd00::5")), Ok(()));
        assert_eq!(l.check(ip("::ffff:10.1.2.3")), Ok(()));
    }

    #[test]
    fn public_addresses_are_not_allowed() {
        let l = list(crate::settings::DEFAULT_ALLOWED_TARGETS, &[]);
        assert_eq!(
            l.check(ip("8.8.8.8")),
            Err(Refusal::NotAllowed(ip("8.8.8.8")))
        );
        assert_eq!(
            l.check(ip("172.32.0.1")),
            Err(Refusal::NotAllowed(ip("172.32.0.1")))
        );
        assert_eq!(
            l.check(ip("2001:db8::1")),
            Err(Refusal::NotAllowed(ip("2001:db8::1")))
        );
    }

    #[test]
    fn guarded_addresses_need_an_explicit_entry() {
        let own = ["10.254.150.132"];
        let broad = list(&["10.0.0.0/8", "0.0.0.0/0"], &own);
        for (addr, why) in [
            ("127.0.0.1", "a loopback address"),
            ("10.254.150.132", "an address of this gateway"),
            ("169.254.169.254", "a link-local address"),
            ("0.0.0.0", "the unspecified address"),
            ("224.0.0.1", "a multicast address"),
            ("255.255.255.255", "the broadcast address"),
            ("::ffff:127.0.0.1", "a loopback address"),
        ] {
            let canon = canonical(&ip(addr));
            assert_eq!(
                broad.check(ip(addr)),
                Err(Refusal::Guarded(canon, why)),
                "{addr}"
            );
        }
        let explicit = list(
            &["127.0.0.0/8", "10.254.150.132/32", "169.254.169.254"],
            &own,
        );
        assert_eq!(explicit.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(explicit.check(ip("127.9.9.9")), Ok(()));
        assert_eq!(explicit.check(ip("10.254.150.132")), Ok(()));
        assert_eq!(explicit.check(ip("169.254.169.254")), Ok(()));
    }

    #[test]
    fn loopback_without_any_entry_is_refused_as_loopback() {
        let l = list(&["10.0.0.0/8"], &[]);
        assert_eq!(
            l.check(ip("127.0.0.1")),
            Err(Refusal::Guarded(ip("127.0.0.1"), "a loopback address"))
        );
    }

    #[test]
    fn parse_net_rejects_garbage_and_host_bits() {
        assert!(parse_net("10.0.0.0/8").is_ok());
        assert!(parse_net("10.0.0.7").is_ok());
        assert!(parse_net("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(parse_net("ten/8").is_err());
        assert!(parse_net("10.0.0.0/33").is_err());
    }
}
