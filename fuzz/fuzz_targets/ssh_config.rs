//! `~/.ssh/config` as the console reads it, and a `ProxyJump` value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    let _ = vdi_console::ssh::config::resolve(text, "gw1", Path::new("/home/admin"));
    for line in text.lines().take(4) {
        let _ = vdi_console::ssh::config::parse_jump(line);
    }
});
