//! `systemctl show` output read back from a gateway host (a compromised host controls it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = vdi_console::services::parse_show(text);
});
