//! Wire types of the Space Gateway HTTP API v3.
//!
//! Shared by the gateway daemon and the console UI (which compiles this crate to
//! WebAssembly), so it holds data and serde attributes only: no I/O, no validation
//! (that lives in `vdi-core`), no runtime.

mod api;
pub mod console;
mod settings;

pub use api::*;
pub use settings::*;

/// Version of the gateway product, shown by `/v3/health/` and the docs page.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Port of the service tunnel on every gateway node (HAProxy forwards `VIP:443` here).
pub const SERVICE_TUNNEL_PORT: u16 = 4300;
/// Port of HAProxy's stats page and Prometheus exporter on the virtual address.
pub const HAPROXY_STATS_PORT: u16 = 8003;
/// Port HAProxy's `peers` section binds to share stick tables between nodes.
pub const HAPROXY_PEERS_PORT: u16 = 10000;
/// Public HTTPS port forwarded to the service tunnel.
pub const SERVICE_PUBLIC_PORT: u16 = 443;

/// RFC 3339 timestamps written fast (`get_connections` writes three per
/// stream: chrono's general formatter took over half of the serialisation
/// time with 10 000 streams). UTC, millisecond precision, e.g.
/// `2026-11-28T06:45:12.123Z`; read back by chrono's own parser.
pub mod ts {
    use chrono::{DateTime, Datelike, Timelike, Utc};

    pub fn format(t: &DateTime<Utc>, out: &mut [u8; 24]) {
        fn two(out: &mut [u8], at: usize, v: u32) {
            out[at] = b'0' + (v / 10 % 10) as u8;
            out[at + 1] = b'0' + (v % 10) as u8;
        }
        // Once: each accessor of a `DateTime` converts to local time again.
        let t = t.naive_utc();
        let year = t.year().clamp(0, 9999) as u32;
        two(out, 0, year / 100);
        two(out, 2, year % 100);
        out[4] = b'-';
        two(out, 5, t.month());
        out[7] = b'-';
        two(out, 8, t.day());
        out[10] = b'T';
        two(out, 11, t.hour());
        out[13] = b':';
        two(out, 14, t.minute());
        out[16] = b':';
        // A leap second shows as :59.999.
        let (sec, ms) = match t.nanosecond() {
            n if n >= 1_000_000_000 => (59, 999),
            n => (t.second(), n / 1_000_000),
        };
        two(out, 17, sec);
        out[19] = b'.';
        out[20] = b'0' + (ms / 100) as u8;
        two(out, 21, ms % 100);
        out[23] = b'Z';
    }

    pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        format(t, &mut buf);
        s.serialize_str(std::str::from_utf8(&buf).expect("ASCII"))
    }

    #[cfg(test)]
    mod tests {
        use chrono::{DateTime, TimeZone, Utc};

        #[test]
        fn round_trips_through_chrono() {
            let t = Utc.with_ymd_and_hms(2026, 11, 28, 6, 5, 9).unwrap()
                + chrono::Duration::milliseconds(7);
            let mut b = [0u8; 24];
            super::format(&t, &mut b);
            assert_eq!(std::str::from_utf8(&b).unwrap(), "2026-11-28T06:05:09.007Z");
            let back: DateTime<Utc> = std::str::from_utf8(&b).unwrap().parse().unwrap();
            assert_eq!(back, t);
            let now = Utc::now();
            super::format(&now, &mut b);
            let back: DateTime<Utc> = std::str::from_utf8(&b).unwrap().parse().unwrap();
            assert_eq!(back.timestamp_millis(), now.timestamp_millis());
        }
    }
}
