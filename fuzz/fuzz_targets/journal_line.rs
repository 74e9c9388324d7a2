//! One line of `journalctl -o json` from a gateway host.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    let _ = vdi_console::journal::parse_line(line);
});
