//! A `known_hosts` file as the console checks a host key against it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi_console::ssh::hostkeys::HostKeys;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA9g76CvtJUOkF+p6uvid+hQGVndonXmyg1N/wkKIGA4";

fuzz_target!(|data: &[u8]| {
    // The checker reads files: one per fuzzing process, in memory (/dev/shm).
    let file = std::path::PathBuf::from(format!(
        "/dev/shm/vdi-fuzz-known-hosts-{}",
        std::process::id()
    ));
    std::fs::write(&file, data).unwrap();
    let key = russh::keys::PublicKey::from_openssh(KEY).unwrap();
    let keys = HostKeys::new(None, file.clone());
    let _ = keys.check("gw1.example", 22, &key);
    let _ = keys.check("10.0.0.1", 2222, &key);
});
