//! Shared by the console's integration tests: a real OS keyring (a private
//! D-Bus session bus with gnome-keyring-daemon serving the Secret Service
//! API), read back with libsecret's own `secret-tool`.

#![allow(dead_code)] // each test binary uses its part

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A session bus and a keyring daemon that die with the test.
pub struct Session {
    bus: Child,
    /// The bus, for `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
    /// A scratch directory that goes with the session.
    pub home: PathBuf,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The keyring daemon exits when its bus goes away.
        let _ = self.bus.kill();
        let _ = self.bus.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// None (skip) only outside CI when the tools are not installed.
pub fn session() -> Option<Session> {
    let tools = ["dbus-daemon", "gnome-keyring-daemon", "secret-tool"];
    if let Some(missing) = tools.iter().find(|t| !have(t)) {
        assert!(
            std::env::var("CI").is_err(),
            "{missing} is missing: scripts/setup installs it"
        );
        eprintln!("skipped: {missing} is not installed (scripts/setup installs it)");
        return None;
    }
    let home = std::env::temp_dir().join(format!("vdi-keyring-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&home).unwrap();
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-daemon starts");
    // The bus prints its address once it accepts connections: readiness, no sleep.
    let mut address = String::new();
    BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();
    let address = address.trim().to_string();
    assert!(address.starts_with("unix:"), "bus address: {address:?}");
    let mut daemon = Command::new("gnome-keyring-daemon")
        .args(["--unlock", "--components=secrets", "--daemonize"])
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", &home)
        .env("XDG_RUNTIME_DIR", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("gnome-keyring-daemon starts");
    // The login keyring's password, on stdin as with PAM.
    daemon.stdin.take().unwrap().write_all(b"test").unwrap();
    // --daemonize returns once the daemon is on the bus.
    assert!(daemon.wait().unwrap().success());
    Some(Session { bus, address, home })
}

/// The secret stored for `account` of the console, through libsecret.
pub fn lookup(s: &Session, account: &str) -> Option<String> {
    let out = Command::new("secret-tool")
        .args(["lookup", "service", "vdi-console", "username", account])
        .env("DBUS_SESSION_BUS_ADDRESS", &s.address)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

#[allow(unused_imports)]
pub use vdi_gateway::testing::TempDir;
