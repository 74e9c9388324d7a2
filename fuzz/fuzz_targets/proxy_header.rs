//! PROXY protocol v1/v2 sniffing on a connection's first bytes, and the trust
//! decision on what it found, for a trusted and an untrusted peer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use vdi_core::proxy;

fuzz_target!(|data: &[u8]| {
    let peer: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    // Every prefix, as the bytes arrive one read at a time.
    for end in [data.len().min(16), data.len().min(107), data.len()] {
        let sniff = proxy::sniff(&data[..end]);
        for trusted in [true, false] {
            if let Some(proxy::Verdict::Proxied { len, .. }) = proxy::decide(&sniff, peer, trusted)
            {
                assert!(len <= end, "a header longer than the bytes seen");
            }
        }
    }
});
