//! The processes under test, each on its own: HAProxy and `vdi-gateway`
//! (configured through its own CLI, as an admin would), plus what the report
//! reads of them (RSS, CPU time).

use anyhow::{Context, Result, bail};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Kills the child on drop.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Raises the open-files limit as far as this process may; returns it.
pub fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: plain libc calls on a local struct.
    unsafe {
        // As a privileged root the hard limit itself can go up (to
        // fs.nr_open); else the soft limit goes up to the hard one. HAProxy
        // and the gateway inherit it.
        let want = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

/// Runs the command's process (all its threads) on these CPUs only.
pub fn pin(cmd: &mut Command, cpus: Option<&[usize]>) {
    let Some(cpus) = cpus else { return };
    let cpus = cpus.to_vec();
    // Safety: between fork and exec only async-signal-safe calls
    // (sched_setaffinity on a set built before the fork).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in &cpus {
        unsafe { libc::CPU_SET(*c, &mut set) };
    }
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Pins the calling process's threads (the load side) to these CPUs.
pub fn pin_self(cpus: &[usize]) -> Result<()> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus {
        unsafe { libc::CPU_SET(*c, &mut set) };
    }
    // Every thread of this process: /proc/self/task lists them.
    for t in std::fs::read_dir("/proc/self/task")? {
        let tid: libc::pid_t = t?.file_name().to_string_lossy().parse()?;
        // Safety: a valid set for a thread of this process.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) }
            != 0
        {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

pub async fn wait_listening(addr: SocketAddr, what: &str) -> Result<()> {
    let t = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("{what} does not listen on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// HAProxy `mode tcp` (optionally `option splice-auto`) on `bind`, to `target`.
pub fn haproxy(
    dir: &Path,
    bind: SocketAddr,
    target: SocketAddr,
    splice: bool,
    cpus: Option<&[usize]>,
) -> Result<Proc> {
    let port = bind.port();
    let cfg = dir.join(format!("haproxy-{port}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 4000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\nfrontend f\n    bind {bind}\n{}    default_backend b\n\nbackend b\n    server s {target}\n",
            if splice {
                "    option splice-auto\n"
            } else {
                ""
            }
        ),
    )?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            dir.join(format!("haproxy-{port}.log")),
        )?);
    pin(&mut cmd, cpus);
    let child = cmd.spawn().context("haproxy (apt install haproxy)")?;
    Ok(Proc(child))
}

/// What a client needs to drive one gateway's API, wherever it runs (a
/// process of the bench's, or a test bed host's daemon).
pub struct Api {
    pub ip: IpAddr,
    pub api: String,
    pub api_key: String,
    pub cli_key: String,
    pub http: reqwest::Client,
}

/// One `vdi-gateway serve` process of the bench's and its API.
pub struct Gateway {
    pub proc: Proc,
    pub client: Api,
}

impl std::ops::Deref for Gateway {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.client
    }
}

impl std::ops::DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut Api {
        &mut self.client
    }
}

/// Where and how to run one gateway.
pub struct GatewaySpec<'a> {
    pub bin: &'a Path,
    pub dir: &'a Path,
    pub name: &'a str,
    /// `splice` or `copy` (`VDI_GATEWAY_RELAY`).
    pub relay: &'a str,
    pub ip: IpAddr,
    pub range: (u16, u16),
    pub api_port: u16,
    pub cpus: Option<&'a [usize]>,
    /// More `KEY=VALUE` settings, after the bench's own.
    pub extra: Vec<String>,
    /// More environment for the daemon.
    pub env: Vec<(&'static str, String)>,
    /// The daemon's open-files limit (soft and hard).
    pub nofile: Option<u64>,
    /// Where the daemon's log goes (default: nowhere).
    pub log: Option<PathBuf>,
    /// A command the daemon runs under, given the prepared database: the
    /// program and its arguments before `vdi-gateway` (e.g. `unshare
    /// --mount …`), and the database path the daemon is to use.
    #[allow(clippy::type_complexity)]
    pub wrap: Option<Box<dyn Fn(&Path) -> (Vec<String>, PathBuf) + 'a>>,
}

impl<'a> GatewaySpec<'a> {
    pub fn new(bin: &'a Path, dir: &'a Path, name: &'a str, ip: IpAddr, api_port: u16) -> Self {
        GatewaySpec {
            bin,
            dir,
            name,
            relay: "splice",
            ip,
            range: (20_000, 29_999),
            api_port,
            cpus: None,
            extra: Vec::new(),
            env: Vec::new(),
            nofile: None,
            log: None,
            wrap: None,
        }
    }
}

pub async fn gateway(spec: GatewaySpec<'_>) -> Result<Gateway> {
    let (bin, g) = (spec.bin, spec.ip);
    let db = spec.dir.join(format!("gw-{}.db", spec.name));
    let _ = std::fs::remove_file(&db);
    let run = |a: &[&str]| -> Result<String> {
        let out = Command::new(bin)
            .arg("--db")
            .arg(&db)
            .args(a)
            .output()
            .with_context(|| format!("{}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "vdi-gateway {a:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["init"])?;
    run(&[
        "settings",
        "set",
        &format!("internal_addrs={g}"),
        &format!("public_addr={g}"),
        &format!("virtual_addr={g}"),
        &format!("disp_addrs={g}"),
        &format!("api_port={}", spec.api_port),
        &format!("balancer_api_port={}", spec.api_port + 1),
        &format!("port_range_start={}", spec.range.0),
        &format!("port_range_stop={}", spec.range.1),
        "allowed_targets=127.0.61.0/24",
        "max_streams_per_tunnel=100000",
        // One load generator is one client address: no per-client quota.
        "max_streams_per_client=100000",
        "max_tunnels_per_client=100000",
        "tunnel_idle_secs=3600",
        "tunnel_ttl_secs=3600",
        "ha_managed=false",
    ])?;
    if !spec.extra.is_empty() {
        let extra: Vec<&str> = spec.extra.iter().map(String::as_str).collect();
        run(&[&["settings", "set"], &extra[..]].concat())?;
    }
    let doc: serde_json::Value = serde_json::from_str(&run(&["settings", "show", "--reveal"])?)?;
    let (mut cmd, db_arg) = match &spec.wrap {
        Some(wrap) => {
            let (w, db_arg) = wrap(&db);
            let mut c = Command::new(&w[0]);
            c.args(&w[1..]).arg(bin);
            (c, db_arg)
        }
        None => (Command::new(bin), db.clone()),
    };
    cmd.arg("--db")
        .arg(&db_arg)
        .arg("serve")
        // Its own control socket, not the host's /run/vdi-gateway.
        .env("VDI_GATEWAY_CONTROL", db_arg.with_file_name("control.sock"))
        .env("VDI_GATEWAY_RELAY", spec.relay)
        .env("VDI_GATEWAY_LOG", "warn")
        .env(
            "VDI_GATEWAY_WORKERS",
            std::env::var("VDI_GATEWAY_WORKERS").unwrap_or_default(),
        )
        // The spec's own environment last: it may override the above.
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(match &spec.log {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        });
    pin(&mut cmd, spec.cpus);
    if let Some(n) = spec.nofile {
        // Safety: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let gw = Gateway {
        proc: Proc(cmd.spawn()?),
        client: Api {
            ip: g,
            api: format!("http://{g}:{}", spec.api_port),
            api_key: doc["api_key"].as_str().unwrap_or_default().into(),
            cli_key: doc["cli_key"].as_str().unwrap_or_default().into(),
            http: reqwest::Client::new(),
        },
    };
    wait_listening(SocketAddr::new(g, spec.api_port), "the gateway's API").await?;
    Ok(gw)
}

impl Api {
    /// `open_connection` to `target`: the tunnel's address. (Without a
    /// `vm_id`, every call for one target reuses one tunnel.)
    pub async fn open(&self, target: SocketAddr) -> Result<SocketAddr> {
        self.open_vm(target, None).await
    }

    /// `open_connection` to `target` for `vm_id`: a tunnel of its own per
    /// vm (the reuse rule: same vm, target and protocol share one).
    pub async fn open_vm(&self, target: SocketAddr, vm_id: Option<&str>) -> Result<SocketAddr> {
        let mut req = serde_json::json!({"target_host": target.ip().to_string(), "target_port": target.port()});
        if let Some(vm) = vm_id {
            req["vm_id"] = vm.into();
        }
        let r: serde_json::Value = self
            .http
            .post(format!("{}/v3/open_connection/", self.api))
            .header("cli_key", &self.cli_key)
            .json(&req)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let port = r["port"].as_u64().context("a port")? as u16;
        Ok(SocketAddr::new(self.ip, port))
    }

    pub async fn disconnect_all(&self) -> Result<()> {
        self.http
            .post(format!("{}/v3/disconnect/", self.api))
            .header("api_key", &self.api_key)
            .json(&serde_json::json!({"all": true}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `get_connections`: the whole exchange's time, its `Server-Timing`
    /// header, and the body.
    pub async fn get_connections(&self) -> Result<(Duration, String, Vec<u8>)> {
        self.get_connections_since(None).await
    }

    /// The same with `?since=CURSOR` (only what changed after it).
    pub async fn get_connections_since(
        &self,
        since: Option<&str>,
    ) -> Result<(Duration, String, Vec<u8>)> {
        let query = since.map(|c| format!("?since={c}")).unwrap_or_default();
        let t = Instant::now();
        let resp = self
            .http
            .get(format!("{}/v3/get_connections/{query}", self.api))
            .header("api_key", &self.api_key)
            .send()
            .await?
            .error_for_status()?;
        let server = resp
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.bytes().await?;
        let took = t.elapsed();
        Ok((took, server, body.to_vec()))
    }

    /// Streams the gateway reports open.
    pub async fn streams_open(&self) -> Result<usize> {
        let (_, _, body) = self.get_connections().await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(v["tunnels"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| t["streams"].as_array().map_or(0, |s| s.len()))
                    .sum()
            })
            .unwrap_or(0))
    }

    /// Waits (bounded) until the gateway has accepted and connected `n` streams.
    pub async fn wait_streams(&self, n: usize) -> Result<()> {
        let t = Instant::now();
        loop {
            let open = self.streams_open().await?;
            if open >= n {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("the gateway holds {open} of {n} streams after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Gateway {
    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }
}

/// The duration (milliseconds) of metric `name` in a `Server-Timing` header:
/// `app;dur=12.5, collect;dur=3` → `app` 12.5.
pub fn server_timing_ms(h: &str, name: &str) -> Option<f64> {
    h.split(',').find_map(|m| {
        let mut parts = m.split(';').map(str::trim);
        (parts.next()? == name)
            .then(|| parts.find_map(|p| p.strip_prefix("dur="))?.parse().ok())
            .flatten()
    })
}

/// Resident memory (KiB) of a process.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory (KiB) of a process by kind of mapping: `heap` (the main
/// allocator arena), `anon` (other anonymous memory: allocator arenas of other
/// threads, large allocations), `stack`, `file` (the binary and libraries).
/// Says where memory a process keeps is held.
pub fn rss_by_kind(pid: u32) -> std::collections::BTreeMap<&'static str, u64> {
    let mut by = std::collections::BTreeMap::new();
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut kind = "anon";
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-')
            && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
            && !first.ends_with(':')
        {
            // address perms offset dev inode [name]: the name is the fifth after the address.
            let name = f.nth(4).unwrap_or("");
            kind = match name {
                "" => "anon",
                "[heap]" => "heap",
                n if n.starts_with("[stack") => "stack",
                n if n.starts_with('[') => "kernel",
                _ => "file",
            };
        } else if first == "Rss:" {
            let kib: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by.entry(kind).or_default() += kib;
        }
    }
    by
}

/// CPU time (user + system, clock ticks) of a process.
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The machine's CPU time so far and the part of it the hypervisor gave to
/// others (steal), in clock ticks, from `/proc/stat`.
pub fn cpu_and_steal() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    (f.iter().take(8).sum(), f.get(7).copied().unwrap_or(0))
}

/// Percent of the CPU time between two `cpu_and_steal` readings that the
/// hypervisor took away (a busy neighbour on a shared host).
pub fn steal_pct(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.0.saturating_sub(a.0);
    if total == 0 {
        return 0.0;
    }
    b.1.saturating_sub(a.1) as f64 * 100.0 / total as f64
}

pub fn gateway_bin(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("vdi-gateway")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_timing() {
        use super::server_timing_ms as st;
        assert_eq!(st("app;dur=12.5", "app"), Some(12.5));
        assert_eq!(st("app;desc=\"x\";dur=3", "app"), Some(3.0));
        assert_eq!(st("app;dur=9, collect;dur=3.5", "collect"), Some(3.5));
        assert_eq!(st("apps;dur=9", "app"), None);
        assert_eq!(st("app", "app"), None);
    }
}
