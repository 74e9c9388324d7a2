//! The local demo cluster: two real gateway hosts of the test bed
//! (`tests/testbed/testbed.sh`: systemd, journald, sshd, HAProxy and
//! Keepalived in containers, the bundled gateway package installed), a
//! desktop stand-in and a demo client, so a newcomer sees every view with
//! real data: services with restarts, the journal, config previews, the VIP
//! holder, deploy, drain.
//!
//! The bed never touches the machine's own network namespace, and neither
//! does this module: the console reaches each host's sshd and API through
//! relays it listens with on loopback (127.0.78.1x, ports the kernel picks),
//! whose outgoing side is a socket made in the bed's client namespace
//! ([`crate::netns`]). The desktop stand-in listens in the bed's desk
//! namespace and the demo streams start in its client namespace, so every
//! byte of the demo crosses the bed's own network and its gateways.
//!
//! Lifecycle: [`Console::start_cluster`] brings it up in the background
//! (the state says which step), [`Console::stop_cluster`] and the console's
//! exit take it down (its fleet entries, host keys, relays and the bed). A
//! console that died leaves the bed behind: the bed records its owner
//! (`VDI_TESTBED_OWNER`), so the next start reclaims it, and entries tagged
//! [`TAG`] left in the fleet are removed first.

use crate::demo::{self, Demo};
use crate::netns::{Net, Netns};
use crate::{Console, Error, Result};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use vdi_wire::console::{ClusterPhase, ClusterState, GatewayDraft, SshAuth};
use vdi_wire::{OpenConnection, Secret};

/// The tag of the fleet entries the demo cluster adds (and removes).
pub const TAG: &str = "demo-cluster";
/// Gateway hosts in the cluster.
pub const HOSTS: usize = 2;
/// The desktop stand-in's port in the bed's desk namespace.
pub const DESK_PORT: u16 = 5900;
/// How long the hosts may take, once installed, to answer and elect a VIP holder.
const SETTLE: Duration = Duration::from_secs(60);
/// The loopback address of host `i` (0-based) on the console's side.
fn alias(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 78, 11 + i as u8))
}

/// What the cluster needs on this machine, found.
#[derive(Clone, Debug)]
pub struct Plan {
    pub script: PathBuf,
    pub deb: PathBuf,
    pub bed: String,
}

/// The cluster's plan, or why it cannot run here (said to the admin as is).
pub fn plan() -> std::result::Result<Plan, String> {
    if !cfg!(target_os = "linux") {
        return Err("the demo cluster runs on Linux only".into());
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err("the demo cluster needs root (sudo bash scripts/run); without it, add a host with “Add gateway” to see the SSH views".into());
    }
    let script = std::env::var_os("VDI_TESTBED_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/testbed/testbed.sh"
            ))
        });
    if !script.is_file() {
        return Err(format!(
            "the test bed script is not at {} (set VDI_TESTBED_SCRIPT)",
            script.display()
        ));
    }
    let deb = crate::bundled_gateway_deb().ok_or(
        "no gateway package to install on the demo hosts (scripts/run builds one; or set VDI_GATEWAY_DEB)",
    )?;
    if !on_path("systemd-nspawn") || !on_path("debootstrap") {
        return Err(format!(
            "the test bed's packages are missing: run `bash {} deps` (scripts/run does)",
            script.display()
        ));
    }
    let bed = std::env::var("VDI_DEMO_BED").unwrap_or_else(|_| "demo".into());
    Ok(Plan { script, deb, bed })
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// The bed's `env` file, the parts the cluster uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BedEnv {
    pub bed: String,
    pub prefix: String,
    pub desk: IpAddr,
    pub hosts: Vec<IpAddr>,
    pub ssh_key: PathBuf,
    pub known_hosts: PathBuf,
}

impl BedEnv {
    /// Parses `KEY=VALUE` lines (what `testbed.sh up` writes).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| format!("the bed's env has no {k}"))
        };
        let ip = |k: &str| -> std::result::Result<IpAddr, String> {
            get(k)?
                .parse()
                .map_err(|e| format!("the bed's {k} is not an address: {e}"))
        };
        let n: usize = get("HOSTS")?
            .parse()
            .map_err(|e| format!("the bed's HOSTS: {e}"))?;
        Ok(Self {
            bed: get("BED")?,
            prefix: get("PREFIX")?,
            desk: ip("DESK_IP")?,
            hosts: (1..=n)
                .map(|i| ip(&format!("H{i}_IP")))
                .collect::<std::result::Result<_, _>>()?,
            ssh_key: get("SSH_KEY")?.into(),
            known_hosts: get("KNOWN_HOSTS")?.into(),
        })
    }

    pub fn netns(&self, name: &str) -> Netns {
        Netns::new(format!("/run/netns/{}-{name}", self.bed))
    }

    /// The cluster's virtual address: `.100` of the bed's subnet.
    pub fn vip(&self) -> String {
        format!("{}.100", self.prefix)
    }
}

/// The host keys `known_hosts` (the bed's) lists for `host`, as the
/// `type base64` halves; none is an error (never trust on first use).
pub fn host_keys(known_hosts: &str, host: &str) -> std::result::Result<Vec<String>, String> {
    let keys: Vec<String> = known_hosts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let names = f.next()?;
            if !names.split(',').any(|n| n == host) {
                return None;
            }
            Some(format!("{} {}", f.next()?, f.next()?))
        })
        .collect();
    if keys.is_empty() {
        return Err(format!("the bed's known_hosts has no key of {host}"));
    }
    Ok(keys)
}

/// The demo cluster's state and what a teardown undoes.
#[derive(Default)]
pub struct Cluster {
    state: Mutex<ClusterState>,
    run: Mutex<Option<Run>>,
    /// Held by a bring-up while it runs: a stop waits for it to give up.
    busy: tokio::sync::Mutex<()>,
}

struct Run {
    plan: Plan,
    stop: CancellationToken,
    /// Fleet entries added, with the host key name (`host`, port) recorded.
    entries: Vec<(i64, String, u16)>,
    demos: Vec<Demo>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cluster(format!("{what}: {e}"))
}

impl Cluster {
    fn set(&self, f: impl FnOnce(&mut ClusterState)) {
        f(&mut self.state.lock().unwrap());
    }

    fn step(&self, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(step = %detail, "demo cluster");
        self.set(|s| s.detail = detail);
    }

    fn with_run(&self, f: impl FnOnce(&mut Run)) {
        if let Some(r) = self.run.lock().unwrap().as_mut() {
            f(r)
        }
    }
}

/// `testbed.sh ARGS...`, its stdout on success; on failure, the last lines
/// it wrote.
async fn testbed(plan: &Plan, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("bash")
        .arg(&plan.script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| failed("testbed.sh", e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(failed(
            &format!("testbed.sh {}", args.first().unwrap_or(&"")),
            last_lines(&err, 3),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// A loopback listener whose connections go on to `to` from namespace
/// `via`; its address (the kernel picks the port).
async fn relay(
    listen: IpAddr,
    via: Netns,
    to: SocketAddr,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind(SocketAddr::new(listen, 0))
        .await
        .map_err(|e| failed(&format!("relay on {listen}"), e))?;
    let addr = l.local_addr().map_err(|e| failed("relay", e))?;
    tokio::spawn(async move {
        loop {
            let mut inbound = tokio::select! {
                _ = stop.cancelled() => return,
                a = l.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
            };
            let (via, stop) = (via.clone(), stop.clone());
            tokio::spawn(async move {
                let mut out = match via.connect(to).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::info!(%to, error = %e, "demo cluster relay: no connection");
                        return;
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                }
            });
        }
    });
    Ok(addr)
}

impl Console {
    /// The demo cluster now (with why it cannot run here, if so).
    pub fn cluster_state(&self) -> ClusterState {
        let mut s = self.cluster.state.lock().unwrap().clone();
        s.unavailable = plan().err();
        if let Some(r) = self.cluster.run.lock().unwrap().as_ref() {
            s.streams = r.demos.iter().map(Demo::streams).sum();
        }
        s
    }

    /// Starts bringing the demo cluster up in the background (see
    /// [`cluster`](crate::cluster)); a cluster starting or up is left as is.
    pub fn start_cluster(self: &Arc<Self>) -> ClusterState {
        let plan = match plan() {
            Ok(p) => p,
            Err(_) => return self.cluster_state(),
        };
        {
            let mut s = self.cluster.state.lock().unwrap();
            if matches!(
                s.phase,
                ClusterPhase::Starting | ClusterPhase::Up | ClusterPhase::Stopping
            ) {
                drop(s);
                return self.cluster_state();
            }
            *s = ClusterState {
                phase: ClusterPhase::Starting,
                detail: "starting".into(),
                ..Default::default()
            };
        }
        let stop = CancellationToken::new();
        *self.cluster.run.lock().unwrap() = Some(Run {
            plan: plan.clone(),
            stop: stop.clone(),
            entries: vec![],
            demos: vec![],
        });
        let me = self.clone();
        tokio::spawn(async move {
            let _busy = me.cluster.busy.lock().await;
            let t = Instant::now();
            match me.bring_up(&plan, &stop).await {
                Ok(()) => me.cluster.set(|s| {
                    s.phase = ClusterPhase::Up;
                    s.detail = format!("up in {:.0} s", t.elapsed().as_secs_f64());
                }),
                // A stop asked for it: the stop tears down.
                Err(_) if stop.is_cancelled() => {}
                Err(e) => {
                    tracing::warn!(error = %e, "demo cluster did not come up");
                    me.teardown().await;
                    me.cluster.set(|s| {
                        s.phase = ClusterPhase::Failed;
                        s.detail = e.to_string();
                    });
                }
            }
        });
        self.cluster_state()
    }

    /// Takes the demo cluster down (a bring-up in progress gives up first);
    /// returns once the bed is gone.
    pub async fn stop_cluster(&self) -> ClusterState {
        let token = self
            .cluster
            .run
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| r.stop.clone());
        let Some(token) = token else {
            return self.cluster_state();
        };
        self.cluster.set(|s| {
            s.phase = ClusterPhase::Stopping;
            s.detail = "stopping".into();
        });
        token.cancel();
        let _busy = self.cluster.busy.lock().await;
        self.teardown().await;
        self.cluster.set(|s| *s = ClusterState::default());
        self.cluster_state()
    }

    /// Undoes what a bring-up did (idempotent: the run is taken once).
    async fn teardown(&self) {
        let Some(run) = self.cluster.run.lock().unwrap().take() else {
            return;
        };
        run.stop.cancel();
        drop(run.demos);
        for (id, host, port) in &run.entries {
            let _ = self.remove(*id);
            let _ = self.hostkeys.trust_all(host, *port, &[]);
        }
        let _ = self.remove_cluster_entries();
        self.cluster.step("taking the test bed down");
        if let Err(e) = testbed(&run.plan, &["down", &run.plan.bed]).await {
            tracing::warn!(error = %e, "demo cluster: the bed did not come down");
        }
        self.cluster.set(|s| s.hosts.clear());
    }

    /// Removes fleet entries a demo cluster added (left by a console that died).
    fn remove_cluster_entries(&self) -> Result<()> {
        let stale: Vec<i64> = self
            .list()?
            .into_iter()
            .filter(|g| g.tags.iter().any(|t| t == TAG))
            .map(|g| g.id)
            .collect();
        for id in stale {
            self.remove(id)?;
        }
        Ok(())
    }

    async fn bring_up(&self, plan: &Plan, stop: &CancellationToken) -> Result<()> {
        let c = &self.cluster;
        self.remove_cluster_entries()?;
        c.step("starting the test bed (the first start builds its base system: a few minutes)");
        self.bed_up(plan, stop).await?;
        let env_file = format!("/run/vdi-testbed/{}/env", plan.bed);
        let text = std::fs::read_to_string(&env_file).map_err(|e| failed(&env_file, e))?;
        let env = BedEnv::parse(&text).map_err(Error::Cluster)?;
        let known =
            std::fs::read_to_string(&env.known_hosts).map_err(|e| failed("known_hosts", e))?;

        // The desktop stand-in, in the desk namespace.
        let desk = SocketAddr::new(env.desk, DESK_PORT);
        let l = env
            .netns("desk")
            .listen(desk)
            .map_err(|e| failed("the desktop stand-in", e))?;
        demo::serve_desktop(l, stop.child_token());
        let client = env.netns("client");

        let all = env
            .hosts
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut ids = vec![];
        for (i, ip) in env.hosts.iter().enumerate() {
            if stop.is_cancelled() {
                return Err(Error::Cluster("stopped".into()));
            }
            let host = format!("h{}", i + 1);
            c.step(format!("configuring {host} for HA (VIP {})", env.vip()));
            testbed(
                plan,
                &[
                    "ssh",
                    &plan.bed,
                    &host,
                    &format!(
                        "vdi-gateway settings set internal_addrs={all} virtual_addr={} \
                         allowed_targets={}/32 ha_managed=true vrrp_advert_int=0.2 \
                         && systemctl reload vdi-gateway",
                        env.vip(),
                        env.desk
                    ),
                ],
            )
            .await?;
            let shown = testbed(
                plan,
                &[
                    "ssh",
                    &plan.bed,
                    &host,
                    "vdi-gateway settings show --reveal",
                ],
            )
            .await?;
            let keys: serde_json::Value =
                serde_json::from_str(&shown).map_err(|e| failed("settings show", e))?;
            let key = |k: &str| keys[k].as_str().map(|v| Secret::new(v.to_string()));
            let api_port = keys["api_port"].as_u64().unwrap_or(8000) as u16;
            let a = alias(i);
            let ssh = relay(a, client.clone(), SocketAddr::new(*ip, 22), stop.clone()).await?;
            let api = relay(
                a,
                client.clone(),
                SocketAddr::new(*ip, api_port),
                stop.clone(),
            )
            .await?;
            // The host keys as the bed generated them: never trust on first use.
            let recorded = host_keys(&known, &host)
                .map_err(Error::Cluster)?
                .iter()
                .map(|k| russh::keys::PublicKey::from_openssh(k))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| failed("a host key", e))?;
            self.hostkeys
                .trust_all(&a.to_string(), ssh.port(), &recorded)
                .map_err(|e| Error::HostKeys(e.to_string()))?;
            let name = format!("demo-{host}");
            let entry = self.add(&GatewayDraft {
                name: name.clone(),
                api_url: format!("http://{api}"),
                api_key: key("api_key"),
                cli_key: key("cli_key"),
                ssh_host: Some(a.to_string()),
                ssh_port: Some(ssh.port()),
                ssh_user: Some("root".into()),
                ssh_auth: Some(SshAuth::KeyFile {
                    path: env.ssh_key.display().to_string(),
                }),
                tags: vec![TAG.into(), "demo".into()],
                ..Default::default()
            })?;
            c.with_run(|r| r.entries.push((entry.id, a.to_string(), ssh.port())));
            c.set(|s| s.hosts.push(name));
            ids.push(entry.id);
        }

        c.step("waiting for both gateways to answer and one to hold the VIP");
        let t = Instant::now();
        loop {
            let (rows, _) = self.overview().await?;
            let ours: Vec<_> = rows.iter().filter(|r| ids.contains(&r.id)).collect();
            let up = ours.iter().all(|r| r.health.is_some());
            let vip = ours
                .iter()
                .any(|r| r.health.as_ref().is_some_and(|h| h.holds_vip));
            if up && vip {
                break;
            }
            if t.elapsed() > SETTLE || stop.is_cancelled() {
                return Err(Error::Cluster(format!(
                    "after {} s: {}",
                    SETTLE.as_secs(),
                    if up {
                        "no host holds the VIP"
                    } else {
                        "a host's API does not answer"
                    }
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        c.step("starting demo traffic");
        for id in ids {
            let opened = self
                .client(id)?
                .open_connection(&OpenConnection {
                    target_host: env.desk.to_string(),
                    target_port: DESK_PORT,
                    protocol: Some("demo".into()),
                    vm_id: Some("demo-desktop".into()),
                })
                .await?;
            let addr: IpAddr = opened
                .address
                .parse()
                .map_err(|e| failed("the tunnel's address", e))?;
            let d = Demo::start(
                opened.id,
                SocketAddr::new(addr, opened.port),
                Net::In(client.clone()),
                stop,
            );
            c.with_run(|r| r.demos.push(d));
        }
        Ok(())
    }

    /// `testbed.sh up` with this process as the bed's owner, its progress
    /// lines as the cluster's step; a stop sends it SIGTERM (its trap takes
    /// the half-made bed down).
    async fn bed_up(&self, plan: &Plan, stop: &CancellationToken) -> Result<()> {
        let mut child = tokio::process::Command::new("bash")
            .arg(&plan.script)
            .args(["up", &plan.bed, &HOSTS.to_string(), "--deb"])
            .arg(&plan.deb)
            .env("VDI_TESTBED_OWNER", std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| failed("testbed.sh up", e))?;
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut tail = VecDeque::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    if let Some(pid) = child.id() {
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    let _ = child.wait().await;
                    return Err(Error::Cluster("stopped".into()));
                }
                l = lines.next_line() => match l {
                    Ok(Some(l)) => {
                        self.cluster.step(format!("test bed: {}", l.trim_start_matches("testbed.sh: ")));
                        if tail.len() == 3 {
                            tail.pop_front();
                        }
                        tail.push_back(l);
                    }
                    _ => break,
                }
            }
        }
        let status = child.wait().await.map_err(|e| failed("testbed.sh up", e))?;
        if !status.success() {
            return Err(failed("testbed.sh up", Vec::from(tail).join(" / ")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "BED=demo\nHOSTS=2\nSUBNET_ID=7\nPREFIX=10.213.7\nCLIENT_IP=10.213.7.2\n\
        DESK_IP=10.213.7.3\nDISP_IP=10.213.7.4\nH1_IP=10.213.7.11\nH2_IP=10.213.7.12\n\
        SSH_KEY=/run/vdi-testbed/demo/id_ed25519\nKNOWN_HOSTS=/run/vdi-testbed/demo/known_hosts\n";

    #[test]
    fn the_bed_env_parses() {
        let e = BedEnv::parse(ENV).unwrap();
        assert_eq!(
            e.hosts,
            [
                "10.213.7.11".parse::<IpAddr>().unwrap(),
                "10.213.7.12".parse().unwrap()
            ]
        );
        assert_eq!(e.desk, "10.213.7.3".parse::<IpAddr>().unwrap());
        assert_eq!(e.vip(), "10.213.7.100");
        assert_eq!(e.ssh_key, PathBuf::from("/run/vdi-testbed/demo/id_ed25519"));
        assert_eq!(
            BedEnv::parse(&ENV.replace("H2_IP=10.213.7.12\n", "")).unwrap_err(),
            "the bed's env has no H2_IP"
        );
        assert!(
            BedEnv::parse(&ENV.replace("DESK_IP=10.213.7.3", "DESK_IP=x"))
                .unwrap_err()
                .starts_with("the bed's DESK_IP is not an address")
        );
    }

    #[test]
    fn host_keys_are_those_the_bed_recorded_for_the_host() {
        let kh = "h1,10.213.7.11 ssh-ed25519 AAAA1\nh1,10.213.7.11 ecdsa-sha2-nistp256 BBBB1\n\
                  h2,10.213.7.12 ssh-ed25519 AAAA2\nh12,10.213.7.22 ssh-ed25519 CCCC\n";
        assert_eq!(
            host_keys(kh, "h1").unwrap(),
            ["ssh-ed25519 AAAA1", "ecdsa-sha2-nistp256 BBBB1"]
        );
        assert_eq!(host_keys(kh, "h2").unwrap(), ["ssh-ed25519 AAAA2"]);
        assert_eq!(
            host_keys(kh, "h3").unwrap_err(),
            "the bed's known_hosts has no key of h3"
        );
    }

    #[test]
    fn progress_keeps_the_last_lines() {
        assert_eq!(last_lines("a\n\nb\nc\nd\n", 3), "b / c / d");
        assert_eq!(last_lines("", 3), "");
    }
}
