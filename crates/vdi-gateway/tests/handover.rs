//! Zero-drop re-execution (`SIGUSR2`) of the real binary: streams carrying
//! checked bytes both ways, a reader that stalls so bytes sit inside the
//! gateway at the instant of the handover, an idle stream, a half-closed
//! one; the binary replaced on disk before each handover as a package
//! upgrade would. Also the refusals: a binary on disk that cannot take the
//! streams, and a snapshot of an unknown format.

mod common;

use common::daemon::*;
use common::*;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The byte at `i` of stream `seed`'s data (the reader checks every one).
fn byte(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0x2545_F491_4F6C_DD1D);
    (x >> 56) as u8
}

fn chunk(seed: u64, from: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|k| byte(seed, from + k)).collect()
}

/// One stream through the gateway to the echo desktop: the writer sends
/// checked bytes until told to stop, the reader checks every echoed byte.
struct Flow {
    got: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    done: tokio::task::JoinHandle<Result<(u64, u64), String>>,
}

/// Bytes per write; bounded in time and count by `stop` and `MAX_BYTES`.
const CHUNK: usize = 32 * 1024;
const MAX_BYTES: u64 = 400 << 20;

fn flow(sock: TcpStream, seed: u64, pace: Duration) -> Flow {
    let (got, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (g2, st2) = (got.clone(), stop.clone());
    let done = tokio::spawn(async move {
        let (mut r, mut w) = sock.into_split();
        let writer = async {
            let mut at = 0u64;
            while !st2.load(Ordering::Relaxed) && at < MAX_BYTES {
                w.write_all(&chunk(seed, at, CHUNK))
                    .await
                    .map_err(|e| format!("write at {at}: {e}"))?;
                at += CHUNK as u64;
                tokio::time::sleep(pace).await;
            }
            w.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
            Ok::<u64, String>(at)
        };
        let reader = async {
            let mut at = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("read at {at}: {e}"))?;
                if n == 0 {
                    return Ok::<u64, String>(at);
                }
                if buf[..n] != chunk(seed, at, n)[..] {
                    return Err(format!("stream {seed}: corrupted bytes at {at}"));
                }
                at += n as u64;
                g2.store(at, Ordering::Relaxed);
            }
        };
        tokio::try_join!(writer, reader)
    });
    Flow { got, stop, done }
}

/// Waits (bounded) until every flow has received more than `before`.
async fn all_move(flows: &[Flow], before: &[u64]) {
    let end = Instant::now() + Duration::from_secs(20);
    while flows
        .iter()
        .zip(before)
        .any(|(f, b)| f.got.load(Ordering::Relaxed) <= *b)
    {
        assert!(Instant::now() < end, "a stream stopped moving");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn got(flows: &[Flow]) -> Vec<u64> {
    flows
        .iter()
        .map(|f| f.got.load(Ordering::Relaxed))
        .collect()
}

/// The binary copied to `dir` (a new file each time, as an upgrade writes it).
fn install(dir: &Path) -> PathBuf {
    let to = dir.join("vdi-gateway");
    let tmp = dir.join(".vdi-gateway.new");
    std::fs::copy(BIN, &tmp).unwrap();
    std::fs::rename(&tmp, &to).unwrap();
    to
}

struct Api {
    http: reqwest::Client,
    base: String,
    api_key: String,
    cli_key: String,
}

impl Api {
    fn new(db: &Path, ip: IpAddr) -> Api {
        let s = vdi_gateway::Store::open(db).unwrap().load().unwrap();
        Api {
            // The process is replaced: no pooled connections across it.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            base: format!("http://{ip}:8000"),
            api_key: s.api_key.expose().to_string(),
            cli_key: s.cli_key.expose().to_string(),
        }
    }

    async fn open(&self, target: SocketAddr, vm: &str) -> u16 {
        let r = self
            .http
            .post(format!("{}/v3/open_connection/", self.base))
            .header("cli_key", &self.cli_key)
            .json(&json!({"target_host": target.ip().to_string(), "target_port": target.port(), "vm_id": vm}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["port"].as_u64().unwrap() as u16
    }

    /// stream id -> (tunnel id, bytes to target, bytes to client)
    async fn streams(&self) -> std::collections::BTreeMap<String, (String, u64, u64)> {
        let v: Value = self
            .http
            .get(format!("{}/v3/get_connections/", self.base))
            .header("api_key", &self.api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut out = std::collections::BTreeMap::new();
        for t in v["tunnels"].as_array().unwrap() {
            for s in t["streams"].as_array().unwrap() {
                out.insert(
                    s["id"].as_str().unwrap().to_string(),
                    (
                        t["id"].as_str().unwrap().to_string(),
                        s["bytes_to_target"].as_u64().unwrap(),
                        s["bytes_to_client"].as_u64().unwrap(),
                    ),
                );
            }
        }
        out
    }
}

/// Five handovers, each to a binary newly written on disk: every stream
/// keeps its id, its counters, its tunnel and every byte, both ways; the PID
/// stays; bytes stuck behind a stalled reader cross too; new tunnels and
/// streams work after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_every_stream_to_the_binary_on_disk_without_losing_a_byte() {
    let dir = TempDir::new();
    let bin_dir = TempDir::new();
    let ip = unique_loopback();
    let db = prepared_db(&dir, ip);
    let bin = install(&bin_dir.0);
    let daemon = Daemon::start_with(&bin, &db, &[]);
    let pid = daemon.child.id();
    let api = Api::new(&db, ip);
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;

    let mut ports = Vec::new();
    for vm in ["vm-1", "vm-2", "vm-3"] {
        ports.push(api.open(desk.addr, vm).await);
    }
    let mut flows = Vec::new();
    for (i, port) in ports.iter().cycle().take(9).enumerate() {
        let sock = TcpStream::connect((ip, *port)).await.unwrap();
        flows.push(flow(sock, i as u64, Duration::from_millis(2)));
    }
    // A client that stops reading: what the desktop echoes piles up in the
    // gateway (its pipe, its socket buffers) while the handovers happen.
    let mut stalled = TcpStream::connect((ip, ports[0])).await.unwrap();
    let stalled_data = chunk(99, 0, 6 << 20);
    stalled.write_all(&stalled_data[..64 * 1024]).await.unwrap();
    let mut first = vec![0u8; 64 * 1024];
    stalled.read_exact(&mut first).await.unwrap();
    assert!(first == stalled_data[..64 * 1024]);
    // An idle stream.
    let mut idle = TcpStream::connect((ip, ports[1])).await.unwrap();
    assert!(echoes(&mut idle, b"idle before").await);
    all_move(&flows, &vec![0; flows.len()]).await;
    let (mut stalled_r, mut stalled_w) = stalled.into_split();
    let writer = tokio::spawn(async move {
        stalled_w
            .write_all(&stalled_data[64 * 1024..])
            .await
            .unwrap();
        stalled_w
    });
    let before = api.streams().await;
    assert_eq!(before.len(), 11, "{before:?}");
    // A client that half-closed: the echo desktop answers what it got, then
    // ends, whichever process relays it.
    let mut half = TcpStream::connect((ip, ports[2])).await.unwrap();
    half.write_all(b"half-closed").await.unwrap();
    half.shutdown().await.unwrap();

    for round in 0..5 {
        // An upgrade: a new file at the binary's path.
        install(&bin_dir.0);
        let moved = got(&flows);
        daemon.signal(libc::SIGUSR2);
        daemon.expect_notify("RELOADING=1");
        daemon.expect_notify("READY=1");
        assert!(daemon.child.id() == pid, "same process");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, bin, "round {round}: runs the file now on disk");
        all_move(&flows, &moved).await;
        // A new tunnel and a new stream of an old one.
        let port = api.open(desk.addr, &format!("vm-new-{round}")).await;
        let mut s = TcpStream::connect((ip, port)).await.unwrap();
        assert!(echoes(&mut s, b"after the handover").await);
        let mut s = TcpStream::connect((ip, ports[round % 3])).await.unwrap();
        assert!(echoes(&mut s, b"old tunnel, new stream").await);
    }
    let log = daemon.log();
    assert_eq!(
        log.matches("handover: tunnels and streams taken over")
            .count(),
        5,
        "{log}"
    );
    assert!(!log.contains("not restored"), "{log}");

    // Same ids, same tunnels, counters carried on.
    let after = api.streams().await;
    for (id, (tunnel, to_target, to_client)) in &before {
        let (t2, tt2, tc2) = after.get(id).unwrap_or_else(|| panic!("{id} is gone"));
        assert_eq!(tunnel, t2, "{id} in its tunnel");
        assert!(tt2 >= to_target && tc2 >= to_client, "{id}: counters go on");
    }
    assert!(echoes(&mut idle, b"idle after").await);
    let mut rest = Vec::new();
    half.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"half-closed");

    // The stalled client reads now: every byte, in order.
    let mut got_back = first;
    got_back.resize(6 << 20, 0);
    stalled_r
        .read_exact(&mut got_back[64 * 1024..])
        .await
        .unwrap();
    assert!(
        got_back == chunk(99, 0, 6 << 20),
        "the stalled stream's bytes"
    );
    drop(writer.await.unwrap());

    for f in &flows {
        f.stop.store(true, Ordering::Relaxed);
    }
    for f in flows {
        let (sent, got) = f.done.await.unwrap().expect("no reset, no corruption");
        assert_eq!(sent, got, "every byte echoed back");
        assert!(sent > 0);
    }
    let (code, _, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
}

/// A binary on disk that cannot take the streams (it reads another snapshot
/// format, or does not run at all) is not executed: nothing stops, the
/// refusal says why.
#[tokio::test]
async fn sigusr2_refuses_a_binary_that_cannot_take_the_streams() {
    let dir = TempDir::new();
    let bin_dir = TempDir::new();
    let ip = unique_loopback();
    let db = prepared_db(&dir, ip);
    let bin = install(&bin_dir.0);
    let daemon = Daemon::start_with(&bin, &db, &[]);
    let api = Api::new(&db, ip);
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let port = api.open(desk.addr, "vm-1").await;
    let mut live = TcpStream::connect((ip, port)).await.unwrap();
    assert!(echoes(&mut live, b"before").await);

    let replace = |text: &str| {
        let tmp = bin_dir.0.join(".new");
        std::fs::write(&tmp, text).unwrap();
        let exec = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&tmp, exec).unwrap();
        std::fs::rename(&tmp, &bin).unwrap();
    };
    // A later version that reads only a newer format.
    replace("#!/bin/sh\necho '{\"version\":\"9.0.0\",\"formats\":[7]}'\n");
    daemon.signal(libc::SIGUSR2);
    let line = daemon.wait_log("re-execution refused", Duration::from_secs(20));
    assert!(line.contains("formats [7]"), "{line}");
    assert!(echoes(&mut live, b"still here").await);
    // Something that does not run.
    replace("not a program");
    daemon.signal(libc::SIGUSR2);
    let end = Instant::now() + Duration::from_secs(20);
    while daemon.log().matches("re-execution refused").count() < 2 {
        assert!(Instant::now() < end, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(echoes(&mut live, b"and still").await);
    assert_eq!(api.streams().await.len(), 1);
    assert!(!daemon.log().contains("executing the binary on disk"));
    let (code, _, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
}

/// A snapshot of a format this build does not read (a downgrade past a
/// format change): refused with one clear line, every handed socket closed
/// (its peer sees the end at once), and the gateway starts afresh.
#[tokio::test]
async fn a_snapshot_of_an_unknown_format_is_refused_and_its_sockets_closed() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new();
    let ip = unique_loopback();
    let db = prepared_db(&dir, ip);
    // A connected pair: the gateway gets one end as a "stream" socket.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (handed, _) = l.accept().unwrap();
    let snapshot = vdi_gateway::handover::Snapshot {
        written_at_ms: 0,
        next_stream: 1,
        listeners: vec![],
        tunnels: vec![],
        streams: vec![],
    };
    let mut bytes = vdi_gateway::handover::encode(&snapshot, &Default::default());
    bytes[8..12].copy_from_slice(&(vdi_gateway::handover::FORMAT + 1).to_le_bytes());
    let memfd = vdi_gateway::handover::write_memfd(&bytes).unwrap();
    let (m, h) = (memfd.as_raw_fd(), handed.as_raw_fd());
    let env = format!("{m},{h}");
    let mut cmd = std::process::Command::new(BIN);
    // Safety: only fcntl between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [m, h] {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let daemon = Daemon::start_command(cmd, &db, &[("VDI_GATEWAY_HANDOVER", &env)]);
    drop((handed, memfd));
    let line = daemon.wait_log("handover refused", Duration::from_secs(5));
    assert!(
        line.contains(&format!("format {}", vdi_gateway::handover::FORMAT + 1)),
        "{line}"
    );
    // The only other holder closed it: the peer reads the end.
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 8];
    let n = std::io::Read::read(&mut peer, &mut buf).unwrap();
    assert_eq!(n, 0, "closed, not left open");
    // And the gateway serves.
    let api = Api::new(&db, ip);
    assert!(api.streams().await.is_empty());
    let (code, _, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
}

/// A child process killed when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The programs the SPICE test needs (Debian packages, `scripts/setup`):
/// missing ones fail the test under CI, and skip it elsewhere.
fn spice_tools() -> bool {
    let missing: Vec<&str> = ["qemu-system-x86_64", "spicy", "Xvfb", "xdotool", "import"]
        .into_iter()
        .filter(|t| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "missing {missing:?}: run scripts/setup"
    );
    eprintln!("skipped: missing {missing:?} (scripts/setup installs them)");
    false
}

/// A real SPICE session (qemu's SPICE server, spice-gtk's `spicy` client
/// under Xvfb) through a tunnel, across a handover to a binary newly written
/// on disk: the client keeps its four channels (same stream ids), input it
/// sends afterwards reaches the server, and the window shows the desktop
/// before and after. `VDI_SCREENSHOTS=DIR` keeps the two pictures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_spice_session_survives_an_upgrade() {
    if !spice_tools() {
        return;
    }
    let dir = TempDir::new();
    let bin_dir = TempDir::new();
    let ip = unique_loopback();
    let db = prepared_db(&dir, ip);
    let bin = install(&bin_dir.0);
    let daemon = Daemon::start_with(&bin, &db, &[]);
    let api = Api::new(&db, ip);

    // The desktop: qemu's SPICE server (no disk: the BIOS screen is enough).
    let spice_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _qemu = Proc(
        std::process::Command::new("qemu-system-x86_64")
            .args([
                "-display",
                "none",
                "-vga",
                "qxl",
                "-m",
                "128",
                "-nodefaults",
            ])
            .args(["-serial", "none", "-monitor", "none", "-spice"])
            .arg(format!(
                "port={spice_port},addr=127.0.0.1,disable-ticketing=on"
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let desk: SocketAddr = ([127, 0, 0, 1], spice_port).into();
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(desk).await.is_err() {
        assert!(Instant::now() < end, "qemu's SPICE server did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A display of our own.
    // A display number no X server holds (the window test runs its own).
    let n = (0..200)
        .map(|k| 90 + (std::process::id() + k) % 800)
        .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
        .expect("a free display number");
    let display = format!(":{n}");
    let socket = format!("/tmp/.X11-unix/X{n}");
    let _xvfb = Proc(
        std::process::Command::new("Xvfb")
            .args([&display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(30);
    while !Path::new(&socket).exists() {
        assert!(Instant::now() < end, "Xvfb did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let port = api.open(desk, "spice-vm").await;
    let mut spicy = Proc(
        std::process::Command::new("spicy")
            .args(["-h", &ip.to_string(), "-p", &port.to_string()])
            .env("DISPLAY", &display)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Its channels: main, display, inputs, cursor (at least).
    let end = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let s = api.streams().await;
        if s.len() >= 4 && s.values().all(|(_, _, to_client)| *to_client > 0) {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the SPICE client did not open its channels: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shot = |name: &str| {
        let to = dir.0.join(name);
        let ok = std::process::Command::new("import")
            .args(["-display", &display, "-window", "root"])
            .arg(&to)
            .status()
            .unwrap()
            .success();
        assert!(ok, "screenshot {name}");
        if let Ok(keep) = std::env::var("VDI_SCREENSHOTS") {
            std::fs::copy(&to, Path::new(&keep).join(name)).unwrap();
        }
        std::fs::metadata(&to).unwrap().len()
    };
    assert!(shot("spice-before-upgrade.png") > 1000);

    install(&bin_dir.0);
    daemon.signal(libc::SIGUSR2);
    daemon.expect_notify("RELOADING=1");
    daemon.expect_notify("READY=1");
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", daemon.child.id())).unwrap(),
        bin
    );
    // Input after the handover reaches the desktop through the same channels.
    let moved = || {
        std::process::Command::new("xdotool")
            .args([
                "mousemove",
                "300",
                "300",
                "mousemove",
                "400",
                "350",
                "click",
                "1",
            ])
            .env("DISPLAY", &display)
            .status()
            .unwrap()
    };
    let sent: u64 = before.values().map(|(_, to_target, _)| to_target).sum();
    let end = Instant::now() + Duration::from_secs(30);
    let after = loop {
        moved();
        let s = api.streams().await;
        if s.values().map(|(_, to_target, _)| to_target).sum::<u64>() > sent {
            break s;
        }
        assert!(Instant::now() < end, "no input reached the desktop: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for id in before.keys() {
        assert!(after.contains_key(id), "channel {id} kept: {after:?}");
    }
    assert!(
        spicy.0.try_wait().unwrap().is_none(),
        "the client still runs"
    );
    assert!(shot("spice-after-upgrade.png") > 1000);
    assert!(!daemon.log().contains("not restored"));
}
