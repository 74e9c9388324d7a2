//! The rules of `open_connection` that need no I/O: which requests are
//! well-formed, and when an open tunnel serves a new request.

use vdi_wire::OpenConnection;

/// Longest `protocol` and `vm_id` accepted (they are only shown and logged).
pub const MAX_LABEL_LEN: usize = 128;

/// Why a request is malformed, said to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Checks the shape of a request before anything is resolved or bound.
pub fn check(req: &OpenConnection) -> Result<(), BadRequest> {
    if !is_target_host(&req.target_host) {
        return Err(BadRequest(
            "target_host must be an IP address or a DNS name".into(),
        ));
    }
    if req.target_port == 0 {
        return Err(BadRequest("target_port must be 1-65535".into()));
    }
    for (name, v) in [("protocol", &req.protocol), ("vm_id", &req.vm_id)] {
        // Characters as JSON Schema counts them (code points), not bytes.
        if v.as_ref()
            .is_some_and(|v| v.chars().count() > MAX_LABEL_LEN)
        {
            return Err(BadRequest(format!(
                "{name} is longer than {MAX_LABEL_LEN} characters"
            )));
        }
    }
    Ok(())
}

/// The grammar of `target_host`, exactly [`vdi_wire::TARGET_HOST_PATTERN`] with at
/// most 253 characters: dot-separated labels of letters, digits, `-` and `_`
/// (1-63 each, an optional final dot; IPv4 literals are such names), or an
/// IPv6 literal's characters. Whether it resolves is found out later; the
/// grammar only keeps odd bytes away from the resolver and the logs.
pub fn is_target_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    if host.contains(':') {
        return host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    name.split('.').all(|l| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Whether an open tunnel opened for `open` serves `req` too (*our design*:
/// the same vm, target and protocol reuse the tunnel and extend it).
pub fn reuses(open: &OpenConnection, req: &OpenConnection) -> bool {
    open.vm_id == req.vm_id
        && open.target_host == req.target_host
        && open.target_port == req.target_port
        && open.protocol == req.protocol
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, port: u16) -> OpenConnection {
        OpenConnection {
            target_host: host.into(),
            target_port: port,
            protocol: Some("spice".into()),
            vm_id: Some("vm-1".into()),
        }
    }

    /// The OpenAPI pattern and the check agree on every string of a
    /// bounded random walk over the characters that matter.
    #[test]
    fn the_documented_pattern_is_the_check() {
        let re = regex::Regex::new(vdi_wire::TARGET_HOST_PATTERN).unwrap();
        let alphabet: Vec<char> = "aZ09-_.:fG \u{e9}\n/".chars().collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut accepted = 0;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 12) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((x >> (i * 4 + 3)) % alphabet.len() as u64) as usize])
                .collect();
            let ok = is_target_host(&s);
            assert_eq!(ok, re.is_match(&s), "{s:?}");
            accepted += ok as u32;
        }
        assert!(
            accepted > 1000,
            "the walk reached accepted names {accepted} times"
        );
        for s in [
            "a".repeat(63),
            format!("{}.", "a".repeat(63)),
            "::1".into(),
            "10.1.2.3".into(),
        ] {
            assert!(is_target_host(&s) && re.is_match(&s), "{s}");
        }
        assert!(!is_target_host(&"a".repeat(64)) && !re.is_match(&"a".repeat(64)));
        // The pattern has no length bound; maxLength 253 says it in the schema.
        assert!(!is_target_host(&"a.".repeat(127)));
    }

    #[test]
    fn malformed_requests_are_refused_with_the_reason() {
        assert!(check(&req("10.0.0.1", 5900)).is_ok());
        assert!(check(&req("desk.example", 1)).is_ok());
        for (r, why) in [
            (req("", 5900), "target_host"),
            (req("a b", 5900), "target_host"),
            (req("a\nb", 5900), "target_host"),
            (req("d\u{e9}sk", 5900), "target_host"),
            (req("a/b", 5900), "target_host"),
            (req("a..b", 5900), "target_host"),
            (req(&"a".repeat(254), 5900), "target_host"),
            (req("10.0.0.1", 0), "target_port"),
        ] {
            let e = check(&r).unwrap_err();
            assert!(e.0.contains(why), "{e}");
        }
        let mut long = req("10.0.0.1", 5900);
        long.vm_id = Some("v".repeat(MAX_LABEL_LEN + 1));
        assert!(check(&long).unwrap_err().0.contains("vm_id"));
        long.vm_id = Some("v".repeat(MAX_LABEL_LEN));
        assert!(check(&long).is_ok());
    }

    /// `maxLength: 128` in the OpenAPI document counts characters: 128
    /// two- and three-byte characters pass, 129 do not (schemathesis found
    /// the byte count refusing a schema-valid label).
    #[test]
    fn labels_are_measured_in_characters_as_the_schema_says() {
        for c in ['é', 'Ω', '≈', 'a'] {
            let mut r = req("10.0.0.5", 5900);
            r.protocol = Some(c.to_string().repeat(MAX_LABEL_LEN));
            r.vm_id = Some(c.to_string().repeat(MAX_LABEL_LEN));
            assert!(check(&r).is_ok(), "128 x {c}");
            r.vm_id = Some(c.to_string().repeat(MAX_LABEL_LEN + 1));
            assert!(check(&r).is_err(), "129 x {c}");
        }
    }

    #[test]
    fn reuse_needs_the_same_vm_target_and_protocol() {
        let a = req("10.0.0.1", 5900);
        assert!(reuses(&a, &a.clone()));
        let mut b = a.clone();
        b.protocol = Some("rdp".into());
        assert!(!reuses(&a, &b));
        let mut c = a.clone();
        c.vm_id = None;
        assert!(!reuses(&a, &c));
        assert!(!reuses(&a, &req("10.0.0.1", 5901)));
        assert!(!reuses(&a, &req("10.0.0.2", 5900)));
    }
}
