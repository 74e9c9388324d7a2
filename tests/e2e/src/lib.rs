//! The test bed from the tests' side: bring a bed of gateway hosts up (and
//! always down), run commands on hosts over SSH, and run test code inside the
//! bed's network namespaces (client, desktop, dispatcher), so that every byte
//! a test sends crosses the bed's own network.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// True when this machine can run the bed (root). Under CI a missing
/// prerequisite fails the test instead of skipping it.
pub fn can_run() -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the test bed needs root under CI"
    );
    eprintln!("SKIPPED: the test bed needs root");
    false
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The gateway's .deb: `$VDI_GATEWAY_DEB` (scripts/test builds it), else
/// built here (debug profile: fast to build, same code).
pub fn build_deb() -> PathBuf {
    if let Some(deb) = std::env::var_os("VDI_GATEWAY_DEB") {
        return PathBuf::from(deb);
    }
    let out = run(Command::new("bash")
        .arg(repo_root().join("packaging/build-deb"))
        .env("PROFILE", "dev"));
    assert!(
        out.status.success(),
        "build-deb failed: {}",
        text(&out.stderr)
    );
    PathBuf::from(text(&out.stdout).trim())
}

/// `testbed.sh ARGS...`, with `owner` as `VDI_TESTBED_OWNER` (none: no owner,
/// whatever this process's environment says).
pub fn testbed(args: &[&str], owner: Option<u32>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(Bed::script())
        .args(args)
        .env_remove("VDI_TESTBED_OWNER");
    if let Some(pid) = owner {
        cmd.env("VDI_TESTBED_OWNER", pid.to_string());
    }
    run(&mut cmd)
}

/// Whether `testbed.sh list` lists bed `name`.
pub fn bed_is_up(name: &str) -> bool {
    text(&testbed(&["list"], None).stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

pub struct Bed {
    pub name: String,
}

impl Bed {
    fn script() -> PathBuf {
        repo_root().join("tests/testbed/testbed.sh")
    }

    /// `testbed.sh up NAME HOSTS --deb DEB`; the bed is taken down on drop.
    pub fn up(name: &str, hosts: usize, deb: &Path) -> Bed {
        Self::up_with(name, hosts, &[deb])
    }

    /// Like [`Bed::up`] with any number of packages (none: bare hosts).
    pub fn up_with(name: &str, hosts: usize, debs: &[&Path]) -> Bed {
        let t = Instant::now();
        let mut cmd = Command::new("bash");
        cmd.arg(Self::script())
            .args(["up", name, &hosts.to_string()])
            // A bed left by a killed run of ours is reclaimed by the next `up`.
            .env("VDI_TESTBED_OWNER", std::process::id().to_string());
        for d in debs {
            cmd.arg("--deb").arg(d);
        }
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "testbed up failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        eprintln!(
            "bed {name}: {hosts} hosts up in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Bed {
            name: name.to_string(),
        }
    }

    /// The bed's SSH private key (root on every host accepts it).
    pub fn key(&self) -> PathBuf {
        PathBuf::from(format!("/run/vdi-testbed/{}/id_ed25519", self.name))
    }

    pub fn ip(&self, who: &str) -> IpAddr {
        let out = run(Command::new("bash")
            .arg(Self::script())
            .args(["ip", &self.name, who]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().parse().unwrap()
    }

    /// Runs a shell command line on a host over SSH; returns (status, stdout, stderr).
    pub fn ssh(&self, host: &str, cmd: &str) -> (i32, String, String) {
        let out = run(Command::new("bash")
            .arg(Self::script())
            .args(["ssh", &self.name, host, cmd]));
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr),
        )
    }

    /// Copies a local file to a host.
    pub fn copy_to(&self, host: &str, file: &Path, remote: &str) {
        let out = run(Command::new("bash")
            .arg(Self::script())
            .args(["cp", &self.name, host])
            .arg(file)
            .arg(remote));
        assert!(out.status.success(), "cp to {host}: {}", text(&out.stderr));
    }

    /// Like `ssh`, and the command must succeed.
    pub fn sh(&self, host: &str, cmd: &str) -> String {
        let (code, out, err) = self.ssh(host, cmd);
        assert_eq!(code, 0, "{host}: `{cmd}` failed: {out}{err}");
        out
    }

    /// The SHA256 fingerprint of `host`'s ed25519 key, as ssh-keygen prints it.
    pub fn host_fingerprint(&self, host: &str) -> String {
        let line = self.sh(host, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub");
        line.split_whitespace().nth(1).unwrap().to_string()
    }

    /// The command that writes MESSAGE at PRIORITY into `unit`'s journal on a
    /// host: attached to the unit's main process (OBJECT_PID, as root), so
    /// `journalctl -u UNIT` shows it. (A short-lived logger moved into the
    /// unit's cgroup races journald's attribution.)
    pub fn journal_line_cmd(unit: &str, message: &str, priority: u8) -> String {
        format!(
            "printf 'MESSAGE=%s\\nPRIORITY={priority}\\nOBJECT_PID=%s\\n' {message} \"$(systemctl show -p MainPID --value {unit})\" | logger --journald"
        )
    }

    /// Polls `cond` every 50 ms until it holds (bounded by `limit`); returns the time it took.
    pub fn wait(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let t = Instant::now();
        while !cond() {
            assert!(
                t.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t.elapsed()
    }

    /// Which host holds `vip` on an interface right now.
    pub fn vip_holder(&self, hosts: &[&str], vip: IpAddr) -> Option<String> {
        hosts
            .iter()
            .find(|h| self.ssh(h, "ip -br -4 addr").1.contains(&format!("{vip}/")))
            .map(|h| h.to_string())
    }

    /// Runs `f` on a thread inside the bed's namespace `ns` (`client`, `desk`,
    /// `disp`), on a runtime of its own: every socket it opens lives there.
    pub fn in_ns<T, F, Fut>(&self, ns: &str, f: F) -> std::thread::JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let path = format!("/run/netns/{}-{ns}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let out = run(Command::new("bash")
            .arg(Self::script())
            .args(["down", &self.name]));
        if !out.status.success() {
            eprintln!("testbed down {} failed: {}", self.name, text(&out.stderr));
        }
    }
}

/// Repacks `deb` with another version; `broken` makes its daemon exit at once
/// (it also fails `handover-check`, so a running daemon refuses it).
pub fn deb_variant(deb: &Path, dir: &Path, version: &str, broken: bool) -> PathBuf {
    repack(
        deb,
        dir,
        version,
        if broken { Bin::Broken } else { Bin::Works },
    )
}

/// Repacks `deb` with a build that answers `handover-check` as the real one
/// does (so `SIGUSR2` executes it) and then dies before it serves.
pub fn deb_variant_dies_serving(deb: &Path, dir: &Path, version: &str) -> PathBuf {
    repack(deb, dir, version, Bin::DiesServing)
}

enum Bin {
    Works,
    Broken,
    DiesServing,
}

fn repack(deb: &Path, dir: &Path, version: &str, bin: Bin) -> PathBuf {
    let root = dir.join(format!("pkg-{version}"));
    let _ = std::fs::remove_dir_all(&root);
    let run = |cmd: &mut std::process::Command| {
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(std::process::Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb)
        .arg(&root));
    let control = root.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version:") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text).unwrap();
    let path = root.join("usr/bin/vdi-gateway");
    let script = match bin {
        Bin::Works => None,
        // `init` (postinst) and `check` pass, `serve` dies: a bad build.
        Bin::Broken => Some(String::from(
            "#!/bin/sh\ncase \"$*\" in *init*|*check*) exit 0;; esac\necho 'vdi-gateway: broken build' >&2\nexit 1\n",
        )),
        Bin::DiesServing => {
            let o = std::process::Command::new(&path)
                .arg("handover-check")
                .output()
                .unwrap();
            assert!(o.status.success(), "handover-check of {}", path.display());
            let answer = String::from_utf8(o.stdout).unwrap();
            assert!(!answer.contains('\''), "{answer}");
            Some(format!(
                "#!/bin/sh\ncase \"$1\" in handover-check) echo '{}'; exit 0;; esac\ncase \"$*\" in *init*|*check*) exit 0;; esac\necho 'vdi-gateway: dies before it serves' >&2\nexit 1\n",
                answer.trim()
            ))
        }
    };
    if let Some(script) = script {
        std::fs::write(&path, script).unwrap();
    }
    let out = dir.join(format!("vdi-gateway_{version}_amd64.deb"));
    run(std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&root)
        .arg(&out));
    out
}

/// Starts the desktop stand-in (an echo server on desk:5901, the port
/// [`Held`] opens its tunnel to) and lets `host`'s gateway reach it; returns
/// the desktop's address.
pub fn serve_desk(bed: &Bed, host: &str) -> IpAddr {
    let desk = bed.ip("desk");
    bed.in_ns("desk", move || {
        echo_desk(std::net::SocketAddr::new(desk, 5901))
    });
    bed.sh(
        host,
        &format!(
            "vdi-gateway settings set allowed_targets={desk}/32 && systemctl reload vdi-gateway"
        ),
    );
    desk
}

/// The desktop stand-in: echoes every connection.
pub async fn echo_desk(addr: std::net::SocketAddr) {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// Sends `what` and reads the same bytes back.
pub async fn echoes(s: &mut tokio::net::TcpStream, what: &[u8]) -> bool {
    if tokio::io::AsyncWriteExt::write_all(s, what).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; what.len()];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_exact(s, &mut back),
    )
    .await;
    matches!(read, Ok(Ok(_))) && back == what
}

/// A stream from the client namespace through h1, held across an
/// operation on the host: echoes once when opened, then once more or waits
/// for the end when told.
pub struct Held {
    go: std::sync::mpsc::Sender<bool>,
    done: std::thread::JoinHandle<bool>,
}

impl Held {
    pub fn open(
        bed: &Bed,
        ip: std::net::IpAddr,
        desk: std::net::IpAddr,
        key: &str,
        vm: &str,
    ) -> Held {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<bool>();
        let (key, vm) = (key.to_string(), vm.to_string());
        let done = bed.in_ns("client", move || async move {
            let body = serde_json::json!({"target_host": desk.to_string(), "target_port": 5901, "vm_id": vm});
            let r = reqwest::Client::new()
                .post(format!("http://{ip}:8000/v3/open_connection/"))
                .header("cli_key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let port = r.json::<serde_json::Value>().await.unwrap()["port"].as_u64().unwrap() as u16;
            let mut s = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
            ready_tx.send(echoes(&mut s, b"before").await).unwrap();
            // Nothing else runs on this thread's runtime: blocking here is fine.
            let echo = go_rx.recv_timeout(Duration::from_secs(300)).unwrap();
            if echo {
                return echoes(&mut s, b"after").await;
            }
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
            // The end: EOF, or a reset.
            matches!(read, Ok(Ok(0)) | Ok(Err(_)))
        });
        assert!(
            ready_rx.recv_timeout(Duration::from_secs(60)).unwrap(),
            "the stream echoes before"
        );
        Held { go, done }
    }

    pub fn echoes_after(self) -> bool {
        self.go.send(true).unwrap();
        self.done.join().unwrap()
    }

    pub fn ends(self) -> bool {
        self.go.send(false).unwrap();
        self.done.join().unwrap()
    }
}
