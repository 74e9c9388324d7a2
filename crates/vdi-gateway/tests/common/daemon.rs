//! The `vdi-gateway` binary run as systemd would run it (shared by the tests
//! of the binary: `cli`, `handover`).

use super::TempDir;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vdi-gateway");

pub fn cli(db: &Path, args: &[&str]) -> (i32, String, String) {
    run(Command::new(BIN).arg("--db").arg(db).args(args))
}

/// Runs `cmd` to its end: (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A database for a gateway on its own loopback address.
pub fn prepared_db(dir: &TempDir, ip: IpAddr) -> std::path::PathBuf {
    let db = dir.0.join("settings.db");
    let (store, _) =
        vdi_gateway::Store::open_or_create(&db, vdi_gateway::first_start_settings).unwrap();
    store
        .update(
            json!({"internal_addrs": [ip.to_string()], "public_addr": ip.to_string(), "virtual_addr": ip.to_string(),
                   "port_range_start": 21000, "port_range_stop": 21009, "allowed_targets": ["127.0.0.1/32"]})
            .as_object()
            .unwrap(),
        )
        .unwrap();
    db
}

pub struct Daemon {
    pub child: Child,
    /// Its standard error, read as it comes (a full pipe would block it).
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    notify: UnixDatagram,
    /// Its control socket (`vdi-gateway drain` and co.).
    control: std::path::PathBuf,
    _sock_dir: TempDir,
}

impl Daemon {
    /// Starts `vdi-gateway serve` as systemd would (NOTIFY_SOCKET, JOURNAL_STREAM)
    /// and returns once it sent READY=1.
    pub fn start(db: &Path) -> Daemon {
        Self::start_with(Path::new(BIN), db, &[])
    }

    /// [`Daemon::start`] of the binary at `bin`, with more environment.
    pub fn start_with(bin: &Path, db: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::start_command(Command::new(bin), db, env)
    }

    /// [`Daemon::start`] through `cmd` (a binary, with whatever it needs set).
    pub fn start_command(mut cmd: Command, db: &Path, env: &[(&str, &str)]) -> Daemon {
        let sock_dir = TempDir::new();
        let sock_path = sock_dir.0.join("notify");
        let notify = UnixDatagram::bind(&sock_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut child = cmd
            .envs(env.iter().copied())
            .arg("--db")
            .arg(db)
            .arg("serve")
            .env("VDI_GATEWAY_CONTROL", sock_dir.0.join("control.sock"))
            .env("NOTIFY_SOCKET", &sock_path)
            .env("JOURNAL_STREAM", "0:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let d = Daemon {
            child,
            log,
            reader: Some(reader),
            notify,
            control: sock_dir.0.join("control.sock"),
            _sock_dir: sock_dir,
        };
        d.expect_notify("READY=1");
        d
    }

    pub fn expect_notify(&self, what: &str) {
        let mut buf = [0u8; 512];
        loop {
            let n = self
                .notify
                .recv(&mut buf)
                .expect("a notification from the daemon");
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == what)
            {
                return;
            }
        }
    }

    /// `vdi-gateway ARGS` against this daemon's control socket.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        run(Command::new(BIN)
            .env("VDI_GATEWAY_CONTROL", &self.control)
            .args(args))
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends SIGTERM, waits for the exit; returns (exit code, time taken, stderr).
    pub fn terminate(mut self) -> (i32, Duration, String) {
        let t = Instant::now();
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        let took = t.elapsed();
        // The pipe closed with the process: the reader has every line.
        self.reader.take().unwrap().join().unwrap();
        (status.code().unwrap_or(-1), took, self.log())
    }

    /// Its standard error so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until a line of its standard error contains `what`.
    pub fn wait_log(&self, what: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "no log line with {what:?} within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
