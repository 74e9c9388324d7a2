//! Sniffing the PROXY protocol header (v1 text, v2 binary) at the start of a
//! connection. HAProxy sends it (`send-proxy-v2`) so the gateway learns the real
//! client address. Whether a header is *accepted* depends on who sent it: only
//! trusted peers (loopback and `internal_addrs`) may; that policy is
//! [`decide`]'s.

use std::net::{IpAddr, SocketAddr};

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_SIG: &[u8; 6] = b"PROXY ";
/// Longest v1 header, CRLF included (the spec's bound).
const V1_MAX: usize = 107;
/// Longest v2 header we accept (16-byte preamble + addresses + TLVs).
const V2_MAX: usize = 16 + 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Too few bytes to tell; read more.
    NeedMore,
    /// The stream does not start with a PROXY header.
    NoHeader,
    /// A complete header of `len` bytes. `source` is the client it names, or
    /// `None` for LOCAL/UNKNOWN (health checks from the proxy itself).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// It starts like a PROXY header but is not a valid one.
    Invalid(String),
}

/// Looks at the first bytes of a stream.
pub fn sniff(buf: &[u8]) -> Sniff {
    if is_prefix(buf, V2_SIG) || is_prefix(buf, V1_SIG) {
        return Sniff::NeedMore;
    }
    if buf.starts_with(V2_SIG) {
        sniff_v2(buf)
    } else if buf.starts_with(V1_SIG) {
        sniff_v1(buf)
    } else {
        Sniff::NoHeader
    }
}

/// `buf` is shorter than `sig` and agrees with it so far (empty included).
fn is_prefix(buf: &[u8], sig: &[u8]) -> bool {
    buf.len() < sig.len() && sig.starts_with(buf)
}

fn sniff_v2(buf: &[u8]) -> Sniff {
    if buf.len() < 16 {
        return Sniff::NeedMore;
    }
    let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > V2_MAX {
        return Sniff::Invalid(format!("PROXY v2 header of {len} bytes is too long"));
    }
    if buf.len() < len {
        return Sniff::NeedMore;
    }
    match ppp::v2::Header::try_from(&buf[..len]) {
        Ok(header) => {
            let source = match header.command {
                ppp::v2::Command::Local => None,
                ppp::v2::Command::Proxy => match header.addresses {
                    ppp::v2::Addresses::IPv4(a) => {
                        Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                    }
                    ppp::v2::Addresses::IPv6(a) => {
                        Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                    }
                    _ => None,
                },
            };
            Sniff::Header { len, source }
        }
        Err(e) => Sniff::Invalid(format!("bad PROXY v2 header: {e}")),
    }
}

fn sniff_v1(buf: &[u8]) -> Sniff {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Sniff::Invalid("PROXY v1 header has no end within 107 bytes".into())
        } else {
            Sniff::NeedMore
        };
    };
    let len = end + 2;
    // The spec's header is US-ASCII. (ppp slices the text at its first CR
    // plus two bytes, which panics inside a multi-byte character: found by
    // fuzzing.)
    let Some(text) = std::str::from_utf8(&buf[..len])
        .ok()
        .filter(|t| t.is_ascii())
    else {
        return Sniff::Invalid("PROXY v1 header is not ASCII text".into());
    };
    match ppp::v1::Header::try_from(text) {
        Ok(header) => {
            let source = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Sniff::Header { len, source }
        }
        Err(e) => Sniff::Invalid(format!("bad PROXY v1 header: {e}")),
    }
}

/// What to do with a connection once its first bytes are sniffed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Relay everything as it came; the client is the TCP peer.
    Plain,
    /// Strip `len` bytes; the real client is `client`.
    Proxied { len: usize, client: SocketAddr },
    /// Close the connection, for the reason given.
    Refuse(String),
}

/// Applies the trust policy: a PROXY header is accepted from trusted peers only.
/// Returns `None` while more bytes are needed.
pub fn decide(sniffed: &Sniff, peer: SocketAddr, trusted: bool) -> Option<Verdict> {
    Some(match sniffed {
        Sniff::NeedMore => return None,
        Sniff::NoHeader => Verdict::Plain,
        Sniff::Header { .. } if !trusted => {
            Verdict::Refuse(format!("PROXY header from untrusted peer {peer}"))
        }
        Sniff::Header { len, source } => Verdict::Proxied {
            len: *len,
            client: source.unwrap_or(peer),
        },
        Sniff::Invalid(why) => Verdict::Refuse(why.clone()),
    })
}

/// Loopback and the gateway nodes' own addresses (where HAProxy runs).
pub fn is_trusted(peer: IpAddr, internal_addrs: &[IpAddr]) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
        v4 => v4,
    };
    peer.is_loopback() || internal_addrs.contains(&peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(src: &str, dst: &str) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn v2_header_found_at_every_split() {
        let mut bytes = v2("203.0.113.7:51000", "10.0.0.1:5900");
        let hlen = bytes.len();
        bytes.extend_from_slice(b"REDQ-spice-payload");
        for cut in 0..hlen {
            assert_eq!(sniff(&bytes[..cut]), Sniff::NeedMore, "cut at {cut}");
        }
        assert_eq!(
            sniff(&bytes),
            Sniff::Header {
                len: hlen,
                source: Some("203.0.113.7:51000".parse().unwrap())
            }
        );
    }

    #[test]
    fn v1_header_and_unknown() {
        let b = b"PROXY TCP4 198.51.100.2 10.0.0.1 40000 5900\r\nhello";
        assert_eq!(
            sniff(b),
            Sniff::Header {
                len: 45,
                source: Some("198.51.100.2:40000".parse().unwrap())
            }
        );
        assert_eq!(sniff(&b[..20]), Sniff::NeedMore);
        assert_eq!(
            sniff(b"PROXY UNKNOWN\r\n"),
            Sniff::Header {
                len: 15,
                source: None
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 5900\r\n";
        assert_eq!(
            sniff(v6),
            Sniff::Header {
                len: v6.len(),
                source: Some("[2001:db8::1]:1234".parse().unwrap())
            }
        );
    }

    #[test]
    fn ordinary_protocols_are_not_headers() {
        assert_eq!(sniff(b"REDQ\x02\x00"), Sniff::NoHeader);
        assert_eq!(sniff(b"\x03\x00\x00\x13"), Sniff::NoHeader); // RDP TPKT
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::NoHeader);
        assert_eq!(sniff(b"PROXZ"), Sniff::NoHeader);
        assert_eq!(sniff(b"\r\n\r\nX"), Sniff::NoHeader);
        assert_eq!(sniff(b""), Sniff::NeedMore);
    }

    #[test]
    fn malformed_headers_are_invalid() {
        assert!(matches!(
            sniff(b"PROXY TCP4 garbage\r\n"),
            Sniff::Invalid(_)
        ));
        assert!(matches!(
            sniff(&[b"PROXY ".as_slice(), &[b'1'; 120]].concat()),
            Sniff::Invalid(_)
        ));
        let mut long = V2_SIG.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(sniff(&long), Sniff::Invalid(_)));
    }

    #[test]
    fn trust_policy() {
        let peer: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        let h = sniff(&v2("203.0.113.7:51000", "10.0.0.1:5900"));
        assert_eq!(
            decide(&h, peer, true),
            Some(Verdict::Proxied {
                len: 28,
                client: "203.0.113.7:51000".parse().unwrap()
            })
        );
        assert!(matches!(decide(&h, peer, false), Some(Verdict::Refuse(_))));
        assert_eq!(decide(&Sniff::NoHeader, peer, false), Some(Verdict::Plain));
        assert_eq!(decide(&Sniff::NeedMore, peer, true), None);
        let local = Sniff::Header {
            len: 16,
            source: None,
        };
        assert_eq!(
            decide(&local, peer, true),
            Some(Verdict::Proxied {
                len: 16,
                client: peer
            })
        );
        let internal = ["10.0.0.9".parse().unwrap()];
        assert!(is_trusted("10.0.0.9".parse().unwrap(), &internal));
        assert!(is_trusted("127.0.0.1".parse().unwrap(), &internal));
        assert!(is_trusted("::1".parse().unwrap(), &internal));
        assert!(is_trusted("::ffff:10.0.0.9".parse().unwrap(), &internal));
        assert!(!is_trusted("10.0.0.10".parse().unwrap(), &internal));
    }
}

#[cfg(test)]
mod fuzz_findings {
    use super::*;

    /// Found by `scripts/fuzz` (proxy_header): a lone CR before the end and a
    /// multi-byte character made the PROXY v1 parser panic.
    #[test]
    fn a_non_ascii_v1_header_is_refused_not_a_panic() {
        let crash = b"PROXY TCP6 .7PROXY TC P4 100\r\xcf\xbe8\r\n\xff";
        assert!(matches!(sniff(crash), Sniff::Invalid(_)));
        let lone_cr = b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n";
        assert!(matches!(sniff(lone_cr), Sniff::Invalid(_)));
    }
}
