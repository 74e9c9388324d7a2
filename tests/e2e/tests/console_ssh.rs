//! The console's SSH features against real hosts of the test bed (systemd,
//! journald, sshd, HAProxy, Keepalived): host keys, logins, jump host,
//! services and their actions, the followed journal across a dropped
//! connection, configuration drift. The console runs in the bed's client
//! namespace, like an admin's workstation on that network.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vdi_console::journal::Query;
use vdi_console::secrets::Secrets;
use vdi_console::{Console, Error, audit::AuditFilter};
use vdi_e2e::{Bed, build_deb, can_run, deb_variant};
use vdi_wire::console::{DeployOutcome, GatewayDraft, JournalEvent, ServiceAction, SshAuth};

/// Runs a bed command off the async runtime (it blocks on a subprocess).
async fn sh(bed: &Arc<Bed>, host: &'static str, cmd: String) -> String {
    let bed = bed.clone();
    tokio::task::spawn_blocking(move || bed.sh(host, &cmd))
        .await
        .unwrap()
}

fn draft(name: &str, host: &str, key: &Path) -> GatewayDraft {
    GatewayDraft {
        name: name.into(),
        api_url: format!("http://{host}:8000"),
        ssh_host: Some(host.into()),
        ssh_auth: Some(SshAuth::KeyFile {
            path: key.display().to_string(),
        }),
        ..Default::default()
    }
}

fn expect_err(
    r: Result<impl std::fmt::Debug, Error>,
    code: &str,
) -> vdi_wire::console::ConsoleError {
    let e: vdi_wire::console::ConsoleError = r.expect_err("an error").into();
    assert_eq!(e.code, code, "{}", e.message);
    e
}

/// First contact: the unknown key is shown with its fingerprint, trusted,
/// then known. Returns nothing; panics on any deviation.
async fn trust_first_use(c: &Console, id: i64, bed: &Bed, host: &str) {
    let e = expect_err(c.services(id).await, "host_key_unknown");
    let d = e.detail.expect("the key to confirm");
    assert_eq!(d.fingerprint, bed.host_fingerprint(host), "{}", e.message);
    assert!(e.message.contains(&d.fingerprint));
    let ip = d.host.clone();
    // A fingerprint other than the one shown is refused.
    expect_err(
        c.trust_host_key(id, &ip, 22, "SHA256:AAAAnotthekeyAAAA")
            .await,
        "invalid_input",
    );
    c.trust_host_key(id, &ip, 22, &d.fingerprint).await.unwrap();
}

#[test]
fn console_over_ssh() {
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let bed = Arc::new(Bed::up("cssh", 2, &deb));
    let (h1, h2) = (bed.ip("h1"), bed.ip("h2"));
    // A home of its own: the user's ~/.ssh/config and known_hosts, an agent.
    let home = std::env::temp_dir().join(format!("vdi-cssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/config"),
        format!("Host gw2-via-bastion\n    HostName {h2}\n    ProxyJump root@{h1}\n"),
    )
    .unwrap();
    let agent_sock = home.join("agent.sock");
    let agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent_sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let agent = scopeguard(agent);
    bed.wait("ssh-agent socket", Duration::from_secs(5), || {
        agent_sock.exists()
    });
    let added = std::process::Command::new("ssh-add")
        .arg(bed.key())
        .env("SSH_AUTH_SOCK", &agent_sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    // A copy of the bed key behind a passphrase.
    let locked = home.join("locked_ed25519");
    std::fs::copy(bed.key(), &locked).unwrap();
    let p = std::process::Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", "s3cret phrase", "-f"])
        .arg(&locked)
        .output()
        .unwrap();
    assert!(p.status.success(), "{p:?}");
    // Safety: before any thread of this test starts.
    unsafe {
        std::env::set_var("HOME", &home);
        std::env::set_var("SSH_AUTH_SOCK", &agent_sock);
    }
    // h1 manages HA (so both configuration files exist) and accepts a password.
    let keys: serde_json::Value =
        serde_json::from_str(&bed.sh("h1", "vdi-gateway settings show --reveal")).unwrap();
    let api_key = keys["api_key"].as_str().unwrap().to_string();
    bed.sh(
        "h1",
        &format!(
            "vdi-gateway settings set virtual_addr={}.100 ha_managed=true vrrp_advert_int=0.2 && systemctl reload vdi-gateway",
            h1.to_string().rsplit_once('.').unwrap().0
        ),
    );
    bed.wait(
        "keepalived started by the gateway",
        Duration::from_secs(20),
        || bed.ssh("h1", "systemctl is-active keepalived").1.trim() == "active",
    );
    bed.sh(
        "h1",
        "echo 'root:pw-for-test' | chpasswd && printf 'PermitRootLogin yes\\nPasswordAuthentication yes\\n' > /etc/ssh/sshd_config.d/00-password.conf && systemctl reload ssh",
    );
    let fp_h2_before = bed.host_fingerprint("h2");
    let key = bed.key();
    let data = home.join("console");

    let b = bed.clone();
    bed.in_ns("client", move || async move {
        let bed = b;
        let c = Arc::new(Console::with_secrets(&data, Secrets::file(data.join("secrets.json"))).unwrap());
        let g1 = c
            .add(&GatewayDraft {
                api_key: Some(api_key.clone().into()),
                ..draft("h1", &h1.to_string(), &key)
            })
            .unwrap()
            .id;

        // Host keys: unknown → asked with the right fingerprint → trusted.
        trust_first_use(&c, g1, &bed, "h1").await;
        let known = std::fs::read_to_string(data.join("known_hosts")).unwrap();
        assert!(known.starts_with(&format!("{h1} ssh-ed25519 ")), "{known}");

        // Services, parsed from `systemctl show`, match the host's own view.
        let units = c.services(g1).await.unwrap();
        assert_eq!(
            units.iter().map(|u| u.unit.as_str()).collect::<Vec<_>>(),
            ["vdi-gateway", "haproxy", "keepalived"]
        );
        for u in &units {
            assert_eq!((u.load_state.as_str(), u.active_state.as_str(), u.sub_state.as_str()), ("loaded", "active", "running"), "{u:?}");
            let pid = sh(&bed, "h1", format!("systemctl show -p MainPID --value {}", u.unit)).await;
            assert_eq!(u.main_pid, pid.trim().parse().ok(), "{u:?}");
            assert!(u.since.is_some_and(|s| s > 1_700_000_000), "{u:?}");
            assert_eq!(u.restarts, Some(0));
            assert_eq!(u.condition_met, Some(true));
        }

        // Restart each unit: tracked until active again (a new run).
        for u in &units {
            let o = c.service_action(g1, &u.unit, ServiceAction::Restart).await.unwrap();
            let st = o.status.clone().unwrap();
            assert!(o.ok, "{o:?}");
            assert_eq!(st.active_state, "active");
            assert_ne!(st.invocation_id, u.invocation_id, "a new run of {}", u.unit);
            assert!(o.summary.starts_with("active (running) after"), "{}", o.summary);
        }
        let o = c.service_action(g1, "haproxy", ServiceAction::Reload).await.unwrap();
        assert!(o.ok, "{o:?}");
        expect_err(c.service_action(g1, "sshd", ServiceAction::Restart).await, "invalid_input");

        // Config previews: none drifted; a hand edit shows up as drift.
        for which in ["haproxy", "keepalived"] {
            let p = c.config_preview(g1, which).await.unwrap();
            assert!(p.check_ok, "{which}: {}", p.check_output);
            assert!(p.managed, "{which}: the gateway manages HA here");
            assert!(!p.drift, "{which} drifted already:\n{}", p.diff);
            assert!(p.on_host.is_some() && p.rendered.is_some());
        }
        sh(&bed, "h1", "sed -i 's/timeout client .*/timeout client 1m/' /etc/haproxy/haproxy.cfg".into()).await;
        let p = c.config_preview(g1, "haproxy").await.unwrap();
        assert!(p.drift, "the hand edit is drift");
        assert!(p.diff.contains("\n+    timeout client 1m\n") || p.diff.contains("\n+\ttimeout client 1m\n"), "{}", p.diff);
        assert!(p.check_ok, "still a valid file: {}", p.check_output);

        // A restart that fails reports it, with the unit's last log lines.
        sh(&bed, "h1", "echo 'this_is_no_keyword' >> /etc/haproxy/haproxy.cfg".into()).await;
        let p = c.config_preview(g1, "haproxy").await.unwrap();
        assert!(!p.check_ok && p.check_output.contains("this_is_no_keyword"), "{}", p.check_output);
        let o = c.service_action(g1, "haproxy", ServiceAction::Restart).await.unwrap();
        assert!(!o.ok, "{o:?}");
        assert!(o.summary.contains("failed"), "{}", o.summary);
        assert!(o.log.iter().any(|l| l.contains("this_is_no_keyword")), "{:#?}", o.log);
        // The gateway rewrites its file (after HAProxy's failed starts are
        // forgiven: systemd's start limit); HAProxy comes back.
        sh(&bed, "h1", "systemctl reset-failed haproxy; vdi-gateway apply".into()).await;
        let o = c.service_action(g1, "haproxy", ServiceAction::Start).await.unwrap();
        assert!(o.ok, "{o:?}");

        // The journal: a line written into haproxy's journal arrives live.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let follower = {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let q = Query { unit: "haproxy", lines: 5, ..Default::default() };
                c.follow_journal(g1, q, stop, move |e| tx.send(e).is_ok()).await
            })
        };
        // Writes MESSAGE at PRIORITY (3 err, 4 warning, 6 info) into haproxy's journal.
        let write = |msg: String, prio: u8| sh(&bed, "h1", Bed::journal_line_cmd("haproxy", &msg, prio));
        async fn until(rx: &mut mpsc::UnboundedReceiver<JournalEvent>, limit: Duration, mut f: impl FnMut(&JournalEvent) -> bool) -> Vec<JournalEvent> {
            let mut seen = vec![];
            let t = Instant::now();
            loop {
                let left = limit.checked_sub(t.elapsed()).unwrap_or_else(|| panic!("not within {limit:?}; got {seen:#?}"));
                let e = tokio::time::timeout(left, rx.recv()).await.unwrap_or_else(|_| panic!("not within {limit:?}; got {seen:#?}")).expect("stream open");
                let hit = f(&e);
                seen.push(e);
                if hit {
                    return seen;
                }
            }
        }
        let has = |e: &JournalEvent, m: &str| matches!(e, JournalEvent::Entries { entries } if entries.iter().any(|x| x.message == m));
        // The first batch (recent lines) comes once the stream runs.
        until(&mut rx, Duration::from_secs(10), |e| matches!(e, JournalEvent::Entries { .. })).await;
        let marker = format!("vdi-e2e-live-{}", std::process::id());
        write(marker.clone(), 3).await;
        let t = Instant::now();
        let seen = until(&mut rx, Duration::from_secs(1), |e| has(e, &marker)).await;
        eprintln!("journal line arrived {:?} after the write returned", t.elapsed());
        let entry = seen.iter().rev().find_map(|e| match e {
            JournalEvent::Entries { entries } => entries.iter().find(|x| x.message == marker).cloned(),
            _ => None,
        }).unwrap();
        assert_eq!((entry.priority, entry.unit.as_str()), (3, "haproxy"));

        // The connection drops: the gap is marked, the line written during it
        // is not lost, and the stream goes on.
        let _ = tokio::task::spawn_blocking({
            let bed = bed.clone();
            move || bed.ssh("h1", "pkill -KILL -f 'sshd: root@notty'")
        }).await;
        let during = format!("vdi-e2e-during-gap-{}", std::process::id());
        write(during.clone(), 4).await;
        let seen = until(&mut rx, Duration::from_secs(30), |e| has(e, &during)).await;
        let gap = seen.iter().position(|e| matches!(e, JournalEvent::Gap { .. })).expect("a gap marker");
        let resumed = seen.iter().position(|e| matches!(e, JournalEvent::Resumed { .. })).expect("a resumed marker");
        assert!(gap < resumed && resumed < seen.len() - 1 + 1, "{seen:#?}");
        assert!(c.ssh_reconnects(g1).await >= 1);
        let after = format!("vdi-e2e-after-gap-{}", std::process::id());
        write(after.clone(), 6).await;
        until(&mut rx, Duration::from_secs(5), |e| has(e, &after)).await;
        stop.cancel();
        follower.await.unwrap().unwrap();

        // Priority filter and load-earlier, on the same journal.
        let q = Query { unit: "haproxy", lines: 50, priority: Some(3), ..Default::default() };
        let errs = c.journal(g1, &q, None).await.unwrap();
        assert!(errs.iter().any(|e| e.message == marker));
        assert!(errs.iter().all(|e| e.priority <= 3), "{errs:#?}");
        assert!(!errs.iter().any(|e| e.message == after), "info is filtered out");
        let all = c.journal(g1, &Query { unit: "haproxy", lines: 3, ..Default::default() }, None).await.unwrap();
        assert_eq!(all.len(), 3);
        let earlier = c.journal(g1, &Query { unit: "haproxy", lines: 2, ..Default::default() }, Some(&all[0].cursor)).await.unwrap();
        assert_eq!(earlier.len(), 2);
        assert!(earlier[1].ts_us <= all[0].ts_us && earlier[0].ts_us <= earlier[1].ts_us);

        // Other logins: password, key behind a passphrase, ssh-agent.
        let mut d = draft("h1-password", &h1.to_string(), &key);
        d.ssh_auth = Some(SshAuth::Password);
        d.ssh_password = Some("wrong".into());
        let gp = c.add(&d).unwrap().id;
        expect_err(c.services(gp).await, "ssh_auth");
        d.ssh_password = Some("pw-for-test".into());
        c.update(gp, &d).unwrap();
        c.ssh_disconnect(gp).await;
        assert_eq!(c.services(gp).await.unwrap().len(), 3);
        let mut d = draft("h1-locked", &h1.to_string(), &locked);
        let gl = c.add(&d).unwrap().id;
        expect_err(c.services(gl).await, "ssh_passphrase");
        d.ssh_password = Some("s3cret phrase".into());
        c.update(gl, &d).unwrap();
        assert_eq!(c.services(gl).await.unwrap().len(), 3);
        let mut d = draft("h1-agent", &h1.to_string(), &key);
        d.ssh_auth = Some(SshAuth::Agent);
        let ga = c.add(&d).unwrap().id;
        assert_eq!(c.services(ga).await.unwrap().len(), 3);

        // h2 through h1 as a jump host: from the inventory, and from ~/.ssh/config.
        let mut d = draft("h2-jump", &h2.to_string(), &key);
        d.ssh_jump = Some(format!("root@{h1}"));
        let gj = c.add(&d).unwrap().id;
        // h1 is trusted already; h2 is asked about.
        trust_first_use(&c, gj, &bed, "h2").await;
        let s = c.ssh(gj).await.unwrap();
        let from = s.exec("echo $SSH_CONNECTION", Duration::from_secs(10)).await.unwrap();
        assert_eq!(from.stdout_text().split_whitespace().next(), Some(h1.to_string().as_str()), "h2 sees h1 as the client");
        let gc = c.add(&draft("h2-config", "gw2-via-bastion", &key)).unwrap().id;
        let s = c.ssh(gc).await.unwrap();
        let from = s.exec("echo $SSH_CONNECTION", Duration::from_secs(10)).await.unwrap();
        assert_eq!(from.stdout_text().split_whitespace().next(), Some(h1.to_string().as_str()));

        // Rolling: one host after the other, each back before the next.
        let mut order = vec![];
        let done = c
            .rolling_action(&[g1, gj], "haproxy", ServiceAction::Restart, |o| order.push(o.host.clone()))
            .await
            .unwrap();
        assert!(done.iter().all(|o| o.ok), "{done:#?}");
        assert_eq!(order, [h1.to_string(), h2.to_string()]);
        // vdi-gateway: also its API must answer before the next host.
        let done = c.rolling_action(&[g1], "vdi-gateway", ServiceAction::Restart, |_| {}).await.unwrap();
        assert!(done[0].ok, "{done:#?}");
        // The first failure stops the run: h2 is not touched.
        sh(&bed, "h1", "echo 'this_is_no_keyword' >> /etc/haproxy/haproxy.cfg".into()).await;
        let pid_h2 = c.services(gj).await.unwrap().into_iter().find(|u| u.unit == "haproxy").unwrap().main_pid;
        let done = c.rolling_action(&[g1, gj], "haproxy", ServiceAction::Restart, |_| {}).await.unwrap();
        assert_eq!(done.len(), 1, "stopped after the failure: {done:#?}");
        assert!(!done[0].ok);
        let still = c.services(gj).await.unwrap().into_iter().find(|u| u.unit == "haproxy").unwrap().main_pid;
        assert_eq!(still, pid_h2, "h2's HAProxy was not restarted");
        sh(&bed, "h1", "systemctl reset-failed haproxy; vdi-gateway apply".into()).await;
        let o = c.service_action(g1, "haproxy", ServiceAction::Start).await.unwrap();
        assert!(o.ok, "{o:?}");

        // A changed host key is refused, plainly, until it is replaced explicitly.
        sh(&bed, "h2", "rm /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh".into()).await;
        c.ssh_disconnect(gj).await;
        let e = expect_err(c.services(gj).await, "host_key_changed");
        let d = e.detail.unwrap();
        assert_eq!(d.expected.as_deref(), Some(fp_h2_before.as_str()));
        assert_ne!(d.fingerprint, fp_h2_before);
        assert!(e.message.contains("HAS CHANGED") && e.message.contains("refuses"), "{}", e.message);
        c.trust_host_key(gj, &h2.to_string(), 22, &d.fingerprint).await.unwrap();
        assert_eq!(c.services(gj).await.unwrap().len(), 3);

        // Everything the admin did is in the audit log, without secrets.
        let log = c.audit_log(&AuditFilter::default()).unwrap();
        let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
        for a in ["trust_host_key", "service"] {
            assert!(actions.contains(&a), "{actions:?}");
        }
        assert!(log.iter().any(|r| r.action == "service" && r.result == "failed" && r.params.contains("haproxy")));
        let dump = serde_json::to_string(&log).unwrap();
        assert!(!dump.contains("pw-for-test") && !dump.contains("s3cret"), "{dump}");
    })
    .join()
    .unwrap();
    drop(agent);
    let _ = std::fs::remove_dir_all(&home);
}

/// Kills the child when dropped.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

#[test]
fn console_deploys_upgrades_and_rolls_back() {
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let dir = std::env::temp_dir().join(format!("vdi-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let v2 = deb_variant(&deb, &dir, "0.1.0+up1", false);
    let bad = deb_variant(&deb, &dir, "0.1.0+up2", true);
    let bed = Arc::new(Bed::up_with("cdep", 1, &[]));
    let h1 = bed.ip("h1");
    assert_eq!(
        bed.ssh("h1", "dpkg-query -W vdi-gateway").0,
        1,
        "no gateway yet"
    );
    let key = bed.key();
    let data = dir.join("console");
    let b = bed.clone();
    bed.in_ns("client", move || async move {
        let bed = b;
        let c = Console::with_secrets(&data, Secrets::file(data.join("secrets.json"))).unwrap();
        let g = c.add(&draft("h1", &h1.to_string(), &key)).unwrap().id;
        // As the CLI does: trust by the fingerprint read on the host itself,
        // in a process that was never shown the key (it connects to see it).
        c.trust_host_key(g, &h1.to_string(), 22, &bed.host_fingerprint("h1"))
            .await
            .unwrap();

        // Only the bundled package or one confirmed by its SHA-256 (v2 is
        // neither): unconfirmed or confirmed with another hash, nothing is sent.
        let sha = |p: &Path| vdi_console::deploy::sha256_hex(&std::fs::read(p).unwrap());
        let e = expect_err(c.deploy(g, Some(&v2), false, None, |_| {}).await, "package_unconfirmed");
        assert!(e.message.contains(&sha(&v2)), "{}", e.message);
        expect_err(
            c.deploy(g, Some(&v2), false, Some(&sha(&deb)), |_| {}).await,
            "package_unconfirmed",
        );
        assert_eq!(sh(&bed, "h1", format!("ls -A {} 2>/dev/null | wc -l", vdi_console::deploy::STASH)).await.trim(), "0");
        let mut steps = vec![];
        let r = c
            .deploy(g, Some(&deb), false, Some(&sha(&deb).to_uppercase()), |p| steps.push(p))
            .await
            .unwrap();
        assert_eq!(r.sha256, sha(&deb));
        assert!(steps.iter().any(|p| p.step == "verify"), "{steps:?}");
        assert_eq!(
            (r.outcome.as_str(), r.before.as_deref(), r.after.as_deref()),
            ("installed", None, Some("0.1.0")),
            "{r:?}"
        );
        assert!(
            steps
                .iter()
                .any(|p| p.step == "upload" && p.fraction == Some(1.0)),
            "{steps:?}"
        );
        assert_eq!(
            sh(&bed, "h1", "systemctl is-active vdi-gateway".into())
                .await
                .trim(),
            "active"
        );

        // The host's copy hashes otherwise (here a sha256sum that says so):
        // removed, nothing installed.
        sh(&bed, "h1", "printf '#!/bin/sh\\necho 0000000000000000000000000000000000000000000000000000000000000000  \"$3\"\\n' > /usr/local/bin/sha256sum && chmod +x /usr/local/bin/sha256sum".into()).await;
        let e = expect_err(c.deploy(g, Some(&v2), false, Some(&sha(&v2)), |_| {}).await, "package_mismatch");
        assert!(e.message.contains(&sha(&v2)) && e.message.contains("0000000000"), "{}", e.message);
        assert_eq!(sh(&bed, "h1", "dpkg-query -W -f='${Version}' vdi-gateway".into()).await, "0.1.0");
        assert_eq!(sh(&bed, "h1", format!("ls -A {} | grep -c upload || true", vdi_console::deploy::STASH)).await.trim(), "0", "the upload is gone");
        sh(&bed, "h1", "rm /usr/local/bin/sha256sum".into()).await;

        let r = c.deploy(g, Some(&v2), false, Some(&sha(&v2)), |_| {}).await.unwrap();
        assert_eq!(
            (r.outcome.as_str(), r.after.as_deref()),
            ("upgraded", Some("0.1.0+up1")),
            "{r:?}"
        );
        let r = c.deploy(g, Some(&v2), false, Some(&sha(&v2)), |_| {}).await.unwrap();
        assert_eq!(r.outcome, DeployOutcome::Unchanged);

        let mut steps = vec![];
        let r = c
            .deploy(g, Some(&bad), false, Some(&sha(&bad)), |p| steps.push(p))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome.as_str(), r.after.as_deref()),
            ("rolled_back", Some("0.1.0+up1")),
            "{r:?}"
        );
        assert!(
            r.log.iter().any(|l| l.contains("broken build")),
            "{:#?}",
            r.log
        );
        assert!(steps.iter().any(|p| p.step == "rollback"));
        assert_eq!(
            sh(&bed, "h1", "systemctl is-active vdi-gateway".into())
                .await
                .trim(),
            "active"
        );
        assert_eq!(
            sh(
                &bed,
                "h1",
                "dpkg-query -W -f='${Version}' vdi-gateway".into()
            )
            .await,
            "0.1.0+up1"
        );

        // Not a gateway package: refused before anything is installed.
        let junk = data.join("junk.deb");
        std::fs::write(&junk, b"not a package").unwrap();
        // The file is at fault, not the connection.
        expect_err(
            c.deploy(g, Some(&junk), false, Some(&sha(&junk)), |_| {}).await,
            "invalid_input",
        );
        let log = c
            .audit_log(&AuditFilter {
                action: Some("deploy".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            log.iter().map(|r| r.result.as_str()).collect::<Vec<_>>(),
            ["failed", "failed", "ok", "ok", "failed", "ok", "failed", "failed"]
        );
        // Each record names the package's hash.
        let hashes: Vec<String> = log
            .iter()
            .map(|r| serde_json::from_str::<serde_json::Value>(&r.params).unwrap()["sha256"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(hashes[5], sha(&deb));
        assert_eq!((hashes[2].as_str(), hashes[7].as_str()), (sha(&v2).as_str(), sha(&v2).as_str()));
    })
    .join()
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Host-local settings, which the API refuses, set by the console over SSH
/// through the host's own CLI: a mixed change (one field over the API, two on
/// the host, quoting put to the test) read back on the host and in force; a
/// path the console's own check refuses, and one only the host can refuse
/// (the database's directory), both per field, nothing written anywhere.
#[test]
fn console_sets_host_local_fields_over_ssh() {
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let bed = Arc::new(Bed::up("chl", 1, &deb));
    let h1 = bed.ip("h1");
    let keys: serde_json::Value =
        serde_json::from_str(&bed.sh("h1", "vdi-gateway settings show --reveal")).unwrap();
    let api_key = keys["api_key"].as_str().unwrap().to_string();
    let key = bed.key();
    let data = std::env::temp_dir().join(format!("vdi-chl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let b = bed.clone();
    bed.in_ns("client", move || async move {
        let bed = b;
        let c = Console::with_secrets(&data, Secrets::file(data.join("secrets.json"))).unwrap();
        let g = c
            .add(&GatewayDraft {
                api_key: Some(api_key.clone().into()),
                ..draft("h1", &h1.to_string(), &key)
            })
            .unwrap()
            .id;
        c.trust_host_key(g, &h1.to_string(), 22, &bed.host_fingerprint("h1"))
            .await
            .unwrap();
        let patch = |v: serde_json::Value| v.as_object().unwrap().clone();
        let show = || sh(&bed, "h1", "vdi-gateway settings show".into());

        // A quote and spaces in a command survive the remote shell.
        let socket = "/run/haproxy/other.sock";
        let cmd = "/usr/local/bin/it's-reload keepalived.service";
        let r = c
            .change_settings(
                g,
                patch(serde_json::json!({"haproxy_admin_socket": socket,
                    "keepalived_reload_cmd": cmd, "tunnel_ttl_secs": 90})),
            )
            .await
            .unwrap();
        assert_eq!(
            r.changed,
            [
                "tunnel_ttl_secs",
                "keepalived_reload_cmd",
                "haproxy_admin_socket"
            ]
        );
        let on_host: serde_json::Value = serde_json::from_str(&show().await).unwrap();
        assert_eq!(on_host["haproxy_admin_socket"], socket, "{on_host}");
        assert_eq!(on_host["keepalived_reload_cmd"], cmd, "{on_host}");
        assert_eq!(on_host["tunnel_ttl_secs"], 90, "{on_host}");
        // In force in the running gateway (reloaded), as its API says.
        let now = c.settings(g).await.unwrap();
        assert_eq!(now.haproxy_admin_socket.as_deref(), Some(socket));
        assert_eq!(now.keepalived_reload_cmd.as_deref(), Some(cmd));
        assert_eq!(r.settings, now);

        let before = show().await;
        let db_sum = || {
            sh(
                &bed,
                "h1",
                "sha256sum /opt/vdi-gateway/app/settings.db".into(),
            )
        };
        let sum = db_sum().await;
        // The database itself: the console's own check (vdi-core) refuses it.
        let e = expect_err(
            c.change_settings(
                g,
                patch(serde_json::json!({"haproxy_cfg_path": "/opt/vdi-gateway/app/settings.db"})),
            )
            .await,
            "invalid_input",
        );
        assert_eq!(e.fields[0].field, "haproxy_cfg_path", "{e:?}");
        // Next to the database: only the host can tell; its CLI refuses per
        // field, and the API half of the change is not sent either.
        let e = expect_err(
            c.change_settings(
                g,
                patch(serde_json::json!({"tunnel_ttl_secs": 91,
                    "haproxy_cfg_path": "/opt/vdi-gateway/app/settings.db.cfg",
                    "keepalived_conf_path": "/srv/keepalived.conf"})),
            )
            .await,
            "host_refused",
        );
        let fields: Vec<_> = e.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["haproxy_cfg_path", "keepalived_conf_path"],
            "{e:?}"
        );
        assert!(e.fields[0].message.contains("settings database"), "{e:?}");
        assert!(e.fields[1].message.contains("/etc/keepalived"), "{e:?}");
        assert_eq!(show().await, before, "the host's settings are unchanged");
        assert_eq!(db_sum().await, sum, "the database file is untouched");
        assert_eq!(c.settings(g).await.unwrap().tunnel_ttl_secs, Some(90));

        // Accepted by the CLI, refused by the running gateway on reload (with
        // HA managed, a new admin socket rewrites haproxy.cfg and HAProxy's
        // reload command fails): the previous values are put back on the host.
        let net = h1.to_string().rsplit_once('.').unwrap().0.to_string();
        sh(&bed, "h1", format!("vdi-gateway settings set haproxy_admin_socket=null keepalived_reload_cmd=null virtual_addr={net}.100 ha_managed=true && systemctl reload vdi-gateway")).await;
        let b2 = bed.clone();
        tokio::task::spawn_blocking(move || {
            b2.wait("the gateway's haproxy.cfg", Duration::from_secs(20), || {
                b2.ssh("h1", "grep -q 'Written by vdi-gateway' /etc/haproxy/haproxy.cfg").0 == 0
            })
        })
        .await
        .unwrap();
        let before = show().await;
        let e = expect_err(
            c.change_settings(
                g,
                patch(serde_json::json!({"haproxy_admin_socket": "/run/haproxy/other.sock",
                    "haproxy_reload_cmd": "/bin/false"})),
            )
            .await,
            "host_not_applied",
        );
        assert!(e.message.contains("previous values were put back"), "{e:?}");
        assert_eq!(show().await, before, "put back on the host");
        let now = c.settings(g).await.unwrap();
        assert_eq!((now.haproxy_admin_socket, now.haproxy_reload_cmd), (None, None));

        // Audited with field names, never values.
        let log = c
            .audit_log(&AuditFilter {
                action: Some("change_settings".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            log.iter().map(|r| r.result.as_str()).collect::<Vec<_>>(),
            ["failed", "failed", "failed", "ok"]
        );
        assert!(
            log[3].params.contains("haproxy_admin_socket"),
            "{:?}",
            log[3]
        );
        assert!(
            log.iter()
                .all(|r| !r.params.contains("other.sock") && !r.params.contains(&api_key)),
            "{log:?}"
        );
    })
    .join()
    .unwrap();
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("vdi-chl-{}", std::process::id())),
    );
}

/// Runs `cmd` (which reloads or restarts sshd) on `host`, then waits until
/// sshd takes connections again (a reload re-executes it: a moment refused).
async fn sshd_changed(bed: &Arc<Bed>, host: &'static str, cmd: String) {
    sh(bed, host, cmd).await;
    let bed = bed.clone();
    tokio::task::spawn_blocking(move || {
        bed.wait("sshd back", Duration::from_secs(10), || {
            bed.ssh(host, "true").0 == 0
        })
    })
    .await
    .unwrap();
}

/// `c.ssh(id)` once sshd takes connections again (a reload or restart
/// refuses them for a moment).
async fn settled(c: &Console, id: i64) -> Result<Arc<vdi_console::ssh::Session>, Error> {
    let t = Instant::now();
    loop {
        match c.ssh(id).await {
            Err(e) if e.code() == "unreachable" && t.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            r => return r,
        }
    }
}

/// The SSH side under a hostile network or host (issue 13): a host recorded
/// with one key type that now offers another is refused as CHANGED (not
/// asked about); the recorded type is asked for first, so a host with
/// several keys presents the recorded one; RSA never with SHA-1 (user
/// signatures and host keys); a jump host logs in with its own credentials,
/// never the target's password; a command printing without end is cut off.
#[test]
fn console_ssh_hardened() {
    if !can_run() {
        return;
    }
    let bed = Arc::new(Bed::up_with("chard", 2, &[]));
    let (h1, h2) = (bed.ip("h1"), bed.ip("h2"));
    let client = bed.ip("client");
    let dir = std::env::temp_dir().join(format!("vdi-chard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // An RSA key of the admin's, accepted by h1.
    let rsa = dir.join("id_rsa");
    let k = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "3072", "-N", "", "-f"])
        .arg(&rsa)
        .output()
        .unwrap();
    assert!(k.status.success(), "{k:?}");
    let rsa_pub = std::fs::read_to_string(dir.join("id_rsa.pub")).unwrap();
    bed.sh(
        "h1",
        &format!("echo '{}' >> /root/.ssh/authorized_keys", rsa_pub.trim()),
    );
    // Both hosts take the same root password (what the target's password would open).
    for h in ["h1", "h2"] {
        bed.sh(
            h,
            "echo 'root:same-pw-4-both' | chpasswd && printf 'PermitRootLogin yes\\nPasswordAuthentication yes\\n' > /etc/ssh/sshd_config.d/00-password.conf && systemctl reload ssh",
        );
        bed.wait("sshd back", Duration::from_secs(10), || {
            bed.ssh(h, "true").0 == 0
        });
    }
    bed.sh("h2", "test -f /etc/ssh/ssh_host_ecdsa_key.pub");
    let ecdsa_fp = bed
        .sh("h2", "ssh-keygen -lf /etc/ssh/ssh_host_ecdsa_key.pub")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let key = bed.key();
    let data = dir.join("console");
    // No agent: a jump host without credentials of its own has none.
    unsafe { std::env::remove_var("SSH_AUTH_SOCK") };
    let b = bed.clone();
    bed.in_ns("client", move || async move {
        let bed = b;
        let c = Console::with_secrets(&data, Secrets::file(data.join("secrets.json"))).unwrap();
        let g2 = c.add(&draft("h2", &h2.to_string(), &key)).unwrap().id;
        let h2s = h2.to_string();
        c.trust_host_key(g2, &h2s, 22, &bed.host_fingerprint("h2")).await.unwrap();
        c.ssh(g2).await.unwrap();

        // h2 now offers only its ECDSA key, as a man in the middle with a key
        // of his own would: CHANGED, refused, not a Trust prompt.
        // (the bed's sshd has an Ed25519 and an ECDSA key, both in testbed.conf)
        sshd_changed(&bed, "h2", "sed -i '/ssh_host_ed25519_key/d' /etc/ssh/sshd_config.d/testbed.conf && systemctl restart ssh".into()).await;
        c.ssh_disconnect(g2).await;
        let e = expect_err(c.ssh(g2).await.map(|_| ()), "host_key_changed");
        let d = e.detail.clone().unwrap();
        assert_eq!(d.algorithm.as_deref(), Some("ecdsa-sha2-nistp256"), "{}", e.message);
        assert_eq!(d.fingerprint, ecdsa_fp);
        assert_eq!(d.expected.as_deref(), Some(bed.host_fingerprint("h2").as_str()));
        assert!(e.message.contains("ssh-ed25519") && e.message.contains("refuses"), "{}", e.message);
        // The admin checked it on the host and replaces the record: ECDSA only.
        c.trust_host_key(g2, &h2s, 22, &ecdsa_fp).await.unwrap();
        c.ssh(g2).await.unwrap();
        // h2 offers every key again (Ed25519 first in a default order): the
        // recorded ECDSA is asked for first, so it is known.
        sshd_changed(&bed, "h2", "echo 'HostKey /etc/ssh/ssh_host_ed25519_key' >> /etc/ssh/sshd_config.d/testbed.conf && systemctl restart ssh".into()).await;
        c.ssh_disconnect(g2).await;
        let s = c.ssh(g2).await.expect("the recorded key type is negotiated");
        assert_eq!(s.exec("echo ok", Duration::from_secs(10)).await.unwrap().stdout_text(), "ok\n");

        // Output without end (a compromised host): cut off at the limit, a
        // typed error, and the connection still serves.
        let t = Instant::now();
        let e = expect_err(
            s.exec("head -c 40000000 /dev/zero", Duration::from_secs(60)).await.map_err(Error::from),
            "too_large",
        );
        assert!(e.message.contains("16 MiB") && e.message.contains("`head -c`"), "{}", e.message);
        eprintln!("40 MB of output refused after {:?}", t.elapsed());
        assert_eq!(s.exec("echo still", Duration::from_secs(10)).await.unwrap().stdout_text(), "still\n");
        assert_eq!(
            s.exec_bounded("head -c 1000 /dev/zero", Duration::from_secs(10), 1000).await.unwrap().stdout.len(),
            1000,
            "exactly the limit is read"
        );

        // RSA user keys: never a SHA-1 signature. h1 takes RSA only as ssh-rsa (SHA-1;
        // Ed25519 for the bed's own key): refused.
        let mut d = draft("h1-rsa", &h1.to_string(), &rsa);
        let g1 = c.add(&d).unwrap().id;
        let h1s = h1.to_string();
        c.trust_host_key(g1, &h1s, 22, &bed.host_fingerprint("h1")).await.unwrap();
        let pubkey_algs = |algs: &'static str| {
            sh(&bed, "h1", format!("printf 'PubkeyAcceptedAlgorithms {algs}\\n' > /etc/ssh/sshd_config.d/01-pubkey.conf && systemctl reload ssh"))
        };
        let since = sh(&bed, "h1", "date +%s".into()).await.trim().to_string();
        pubkey_algs("ssh-rsa,ssh-ed25519").await;
        c.ssh_disconnect(g1).await;
        let e = expect_err(settled(&c, g1).await.map(|_| ()), "ssh_auth");
        // A console signing with SHA-1 would be let in here. h1 says what it got.
        let log = sh(&bed, "h1", format!("journalctl -u ssh.service --since=@{since} --no-pager -o cat | grep -E 'signature algorithm|Accepted' || true")).await;
        assert!(log.contains("signature algorithm rsa-sha2-") && log.contains("not in PubkeyAcceptedAlgorithms"), "{log}\n{}", e.message);
        assert!(!log.contains("ssh2: RSA"), "the RSA key was not let in (Ed25519: the bed's own logins): {log}");
        // SHA-2 RSA signatures allowed: taken.
        pubkey_algs("rsa-sha2-512,rsa-sha2-256,ssh-ed25519").await;
        let s1 = settled(&c, g1).await.unwrap();
        assert!(s1.exec("true", Duration::from_secs(10)).await.unwrap().success());
        sshd_changed(&bed, "h1", "rm /etc/ssh/sshd_config.d/01-pubkey.conf && systemctl reload ssh".into()).await;

        // h2 through h1, logging in to h2 with a password: h1 never gets it.
        let mut dj = draft("h2-pw-via-h1", &h2s, &key);
        dj.ssh_auth = Some(SshAuth::Password);
        dj.ssh_password = Some("same-pw-4-both".into());
        dj.ssh_jump = Some(format!("root@{h1s}"));
        c.remove(g1).unwrap();
        let gj = c.add(&dj).unwrap().id;
        assert_eq!(gj, g1, "SQLite gives the removed entry's id again: its SSH session must be gone");
        let since = sh(&bed, "h1", "date +%s".into()).await.trim().to_string();
        let h1_auth = || {
            sh(&bed, "h1", format!("journalctl -u ssh.service --since=@{since} --no-pager -o cat | grep -E 'password|publickey' | grep -F ' {client} ' || true"))
        };
        // h1 has no entry (nor ~/.ssh/config, nor agent): no credentials for it.
        let e = expect_err(c.ssh(gj).await.map(|_| ()), "ssh_auth");
        assert!(e.message.contains(&h1s) && e.message.contains("ssh-agent"), "{}", e.message);
        // h1 as a gateway of its own (its key): the jump host logs in with that.
        d.ssh_auth = Some(SshAuth::KeyFile { path: key.display().to_string() });
        d.name = "h1".into();
        let gh1 = c.add(&d).unwrap().id;
        let s = c.ssh(gj).await.unwrap();
        let from = s.exec("echo $SSH_CONNECTION", Duration::from_secs(10)).await.unwrap();
        assert_eq!(from.stdout_text().split_whitespace().next(), Some(h1s.as_str()), "h2 is reached through h1");
        let on_h1 = h1_auth().await;
        assert!(on_h1.contains("Accepted publickey for root"), "{on_h1}");
        assert!(!on_h1.contains("password"), "the target's password never reached the jump host:\n{on_h1}");
        let on_h2 = sh(&bed, "h2", format!("journalctl -u ssh.service --since=@{since} --no-pager -o cat | grep 'Accepted' || true")).await;
        assert!(on_h2.contains("Accepted password for root"), "{on_h2}");
        // A host that signs only with ssh-rsa (SHA-1) host keys is not reached.
        // (last: the bed's own ssh cannot reach a host with only an RSA host key)
        sh(&bed, "h1", "ssh-keygen -q -t rsa -N '' -f /etc/ssh/ssh_host_rsa_key && printf 'HostKey /etc/ssh/ssh_host_rsa_key\\nHostKeyAlgorithms ssh-rsa\\n' > /etc/ssh/sshd_config.d/00-hostkeyalg.conf && systemctl restart ssh".into()).await;
        c.ssh_disconnect(gh1).await;
        let e: vdi_wire::console::ConsoleError = settled(&c, gh1).await.err().expect("refused").into();
        assert_eq!(e.code, "ssh", "{e:?}");
        assert!(!e.code.starts_with("host_key"), "no SHA-1 host key is even looked at: {e:?}");
    })
    .join()
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `host` over the bed's SSH until `cmd` exits 0, through a reboot
/// (SSH refused meanwhile); panics after `limit`.
async fn until_true(bed: &Arc<Bed>, host: &'static str, cmd: &'static str, limit: Duration) {
    let bed = bed.clone();
    tokio::task::spawn_blocking(move || {
        bed.wait(cmd, limit, || bed.ssh(host, cmd).0 == 0);
    })
    .await
    .unwrap();
}

/// (drained, streams open) on h1, from the gateway's control socket.
async fn drained(bed: &Arc<Bed>) -> (bool, u64) {
    let st: serde_json::Value =
        serde_json::from_str(&sh(bed, "h1", "vdi-gateway status --json".into()).await).unwrap();
    (
        st["draining"].as_bool().unwrap(),
        st["streams"].as_u64().unwrap(),
    )
}

/// The plan on the host through the console, once SSH answers again after
/// a reboot (the console's old session died with the host).
async fn plan_when_back(c: &Console, id: i64) -> vdi_wire::console::RebootPlan {
    let t = Instant::now();
    loop {
        match c.reboot_plan(id).await {
            Ok(p) => return p,
            Err(e) if t.elapsed() < Duration::from_secs(60) => {
                eprintln!("plan not readable yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => panic!("the plan after a reboot: {e}"),
        }
    }
}

/// "Reboot when empty or after T" on a real systemd host (issue 14): the
/// plan drains, waits while a stream runs (its log says so), is refused a
/// second time and beyond 24 h, can be cancelled (the drain stays), reboots
/// as soon as the last stream ends, and at the bound with a stream still
/// open; the host comes back drained.
#[test]
fn console_reboots_when_empty_or_after_t() {
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let bed = Arc::new(Bed::up("crb", 1, &deb));
    let h1 = bed.ip("h1");
    let desk = vdi_e2e::serve_desk(&bed, "h1");
    let keys: serde_json::Value =
        serde_json::from_str(&bed.sh("h1", "vdi-gateway settings show --reveal")).unwrap();
    let cli_key = keys["cli_key"].as_str().unwrap().to_string();
    let mark = "touch /run/vdi-boot-mark";
    bed.sh("h1", mark);
    let held = vdi_e2e::Held::open(&bed, h1, desk, &cli_key, "vm-reboot");

    let key = bed.key();
    let data = std::env::temp_dir().join(format!("vdi-crb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let b = bed.clone();
    bed.in_ns("client", move || async move {
        let bed = b;
        let c = Console::with_secrets(&data, Secrets::file(data.join("secrets.json"))).unwrap();
        let g = c.add(&draft("h1", &h1.to_string(), &key)).unwrap().id;
        c.trust_host_key(g, &h1.to_string(), 22, &bed.host_fingerprint("h1"))
            .await
            .unwrap();
        assert_eq!(c.reboot_plan(g).await.unwrap(), Default::default());
        expect_err(c.plan_reboot(g, 86_401).await, "invalid_input");

        // Planned with a stream open: drained, waiting, and saying why.
        let p = c.plan_reboot(g, 600).await.unwrap();
        assert!(p.scheduled && p.failed.is_none(), "{p:?}");
        assert_eq!(p.after_secs, Some(600));
        assert_eq!(p.deadline, p.since.map(|s| s + 600), "{p:?}");
        assert_eq!(drained(&bed).await, (true, 1));
        let t = Instant::now();
        let p = loop {
            let p = c.reboot_plan(g).await.unwrap();
            if p.last_line
                .as_deref()
                .is_some_and(|l| l.contains("1 stream(s) still open"))
                || t.elapsed() > Duration::from_secs(20)
            {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(p.scheduled, "{p:?}");
        assert!(
            p.last_line
                .as_deref()
                .unwrap_or("")
                .contains("1 stream(s) still open"),
            "{p:?}"
        );
        // A second plan would race the first to the reboot.
        let e = expect_err(c.plan_reboot(g, 5).await, "action_failed");
        assert!(e.message.contains("cancel it first"), "{}", e.message);

        // Cancelled: no plan, the host still up (same boot) and still drained.
        let p = c.cancel_reboot(g).await.unwrap();
        assert!(!p.scheduled, "{p:?}");
        assert_eq!(c.reboot_plan(g).await.unwrap(), Default::default());
        assert_eq!(drained(&bed).await, (true, 1));
        sh(&bed, "h1", "test -e /run/vdi-boot-mark".into()).await;

        // Planned again; the last stream ends, and the host reboots at once.
        let p = c.plan_reboot(g, 600).await.unwrap();
        assert!(p.scheduled, "{p:?}");
        let t = Instant::now();
        assert!(
            tokio::task::spawn_blocking(move || held.echoes_after())
                .await
                .unwrap(),
            "the held stream echoes until its client closes it"
        );
        until_true(
            &bed,
            "h1",
            "! test -e /run/vdi-boot-mark",
            Duration::from_secs(90),
        )
        .await;
        let empty_after = t.elapsed();
        assert!(empty_after < Duration::from_secs(60), "{empty_after:?}");
        until_true(
            &bed,
            "h1",
            "systemctl is-active -q vdi-gateway",
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            drained(&bed).await,
            (true, 0),
            "the host comes back drained"
        );
        assert_eq!(plan_when_back(&c, g).await, Default::default());

        // At the bound: a stream still open does not hold the reboot off.
        sh(&bed, "h1", format!("vdi-gateway undrain && {mark}")).await;
        let b2 = bed.clone();
        let k2 = cli_key.clone();
        let held = tokio::task::spawn_blocking(move || {
            vdi_e2e::Held::open(&b2, h1, desk, &k2, "vm-bound")
        })
        .await
        .unwrap();
        assert_eq!(drained(&bed).await, (false, 1));
        let t = Instant::now();
        let p = c.plan_reboot(g, 3).await.unwrap();
        assert_eq!(p.after_secs, Some(3));
        until_true(
            &bed,
            "h1",
            "! test -e /run/vdi-boot-mark",
            Duration::from_secs(90),
        )
        .await;
        let bound_after = t.elapsed();
        assert!(
            bound_after >= Duration::from_secs(3),
            "rebooted before the bound with a stream open: {bound_after:?}"
        );
        assert!(
            tokio::task::spawn_blocking(move || held.ends())
                .await
                .unwrap(),
            "the stream still open at the bound ends with the reboot"
        );
        until_true(
            &bed,
            "h1",
            "systemctl is-active -q vdi-gateway",
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(drained(&bed).await, (true, 0));
        eprintln!("reboot when empty: {empty_after:?}; at the 3 s bound: {bound_after:?}");

        // Audited: both outcomes of each action, the bound in the params.
        let log = c.audit_log(&AuditFilter::default()).unwrap();
        let seen: Vec<(&str, &str)> = log
            .iter()
            .filter(|r| r.action.starts_with("reboot_"))
            .map(|r| (r.action.as_str(), r.result.as_str()))
            .collect();
        for want in [
            ("reboot_plan", "ok"),
            ("reboot_plan", "failed"),
            ("reboot_cancel", "ok"),
        ] {
            assert!(seen.contains(&want), "{want:?} in {seen:?}");
        }
        assert_eq!(
            seen.iter().filter(|s| **s == ("reboot_plan", "ok")).count(),
            3
        );
        assert!(
            log.iter()
                .any(|r| r.action == "reboot_plan" && r.params.contains("\"after_secs\":3")),
            "{log:?}"
        );
    })
    .join()
    .unwrap();
}

/// Whether each gateway of the fleet is drained, in the fleet's order.
async fn draining(c: &Console) -> Vec<bool> {
    let (rows, _) = c.overview().await.unwrap();
    rows.iter()
        .map(|r| r.health.as_ref().expect("healthy").draining)
        .collect()
}

/// Over two real hosts, one at a time: an upgrade (drain, install, healthy,
/// undrain) with a stream held through h1; a broken build stops the roll at
/// the first host, which rolls back and stays drained while the second is
/// never touched; then a settings change with a key rotated per host.
#[test]
fn console_rolls_an_upgrade_and_a_change_over_two_hosts() {
    use vdi_wire::console::{BulkChange, HostPlan, Planned, RollingOp};
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let dir = std::env::temp_dir().join(format!("vdi-roll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let v2 = deb_variant(&deb, &dir, "0.1.0+up1", false);
    let bad = deb_variant(&deb, &dir, "0.1.0+up2", true);
    // Bare hosts, the package installed by the console (which keeps it on
    // the host, so a failed upgrade can roll back to it).
    let bed = Arc::new(Bed::up_with("croll", 2, &[]));
    let (h1, h2) = (bed.ip("h1"), bed.ip("h2"));
    let key = bed.key();
    let data = dir.join("console");
    let (b, d, k, first) = (bed.clone(), data.clone(), key.clone(), deb.clone());
    bed.in_ns("client", move || async move {
        let c = Console::with_secrets(&d, Secrets::file(d.join("secrets.json"))).unwrap();
        let sha = vdi_console::deploy::sha256_hex(&std::fs::read(&first).unwrap());
        for (name, ip) in [("h1", h1), ("h2", h2)] {
            let mut g = draft(name, &ip.to_string(), &k);
            g.tags = vec!["bed".into()];
            let id = c.add(&g).unwrap().id;
            c.trust_host_key(id, &ip.to_string(), 22, &b.host_fingerprint(name))
                .await
                .unwrap();
            let r = c
                .deploy(id, Some(&first), false, Some(&sha), |_| {})
                .await
                .unwrap();
            assert_eq!(r.outcome, DeployOutcome::Installed, "{r:?}");
        }
    })
    .join()
    .unwrap();
    let desk = vdi_e2e::serve_desk(&bed, "h1");
    let keys = |h: &str| -> (String, String) {
        let v: serde_json::Value =
            serde_json::from_str(&bed.sh(h, "vdi-gateway settings show --reveal")).unwrap();
        (
            v["api_key"].as_str().unwrap().into(),
            v["cli_key"].as_str().unwrap().into(),
        )
    };
    let (k1, k2) = (keys("h1"), keys("h2"));
    let held = vdi_e2e::Held::open(&bed, h1, desk, &k1.1, "vm-roll");
    let b = bed.clone();
    bed.in_ns("client", move || async move {
        let bed = b;
        let c = Console::with_secrets(&data, Secrets::file(data.join("secrets.json"))).unwrap();
        let ids = c.tagged("bed").unwrap();
        assert_eq!(ids.len(), 2);
        for ((id, ip), (api, cli)) in ids.iter().zip([h1, h2]).zip([&k1, &k2]) {
            let mut d = draft(&c.get(*id).unwrap().name, &ip.to_string(), &key);
            d.api_key = Some(api.clone().into());
            d.cli_key = Some(cli.clone().into());
            d.tags = vec!["bed".into()];
            c.update(*id, &d).unwrap();
        }
        let version = |h: &'static str| {
            let bed = bed.clone();
            async move { sh(&bed, h, "dpkg-query -W -f='${Version}' vdi-gateway".into()).await }
        };
        let sha = |p: &Path| vdi_console::deploy::sha256_hex(&std::fs::read(p).unwrap());

        // The upgrade rolls over both, each drained only while it upgrades.
        let mut seen = vec![];
        let v2_sha = sha(&v2);
        let out = c
            .rolling_maintenance(&ids, RollingOp::Upgrade, Some((&v2, &v2_sha)), |o| {
                seen.push(o.clone())
            })
            .await
            .unwrap();
        assert_eq!(out, seen);
        assert_eq!(out.len(), 2, "{out:?}");
        for o in &out {
            assert!(o.ok, "{o:?}");
            assert!(o.summary.starts_with("drained"), "{o:?}");
            assert!(o.summary.contains("upgraded: 0.1.0 → 0.1.0+up1"), "{o:?}");
            assert!(o.summary.contains(", undrained"), "{o:?}");
        }
        assert_eq!(
            (version("h1").await, version("h2").await),
            ("0.1.0+up1".into(), "0.1.0+up1".into())
        );
        assert_eq!(draining(&c).await, [false, false]);

        // A build that cannot start: h1 rolls back and stays drained (out of
        // the VIP's way); the roll stops there, h2 is not touched.
        let bad_sha = sha(&bad);
        let out = c
            .rolling_maintenance(&ids, RollingOp::Upgrade, Some((&bad, &bad_sha)), |_| {})
            .await
            .unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(!out[0].ok, "{out:?}");
        assert!(
            out[0].summary.contains("rolled_back") && out[0].summary.ends_with("left drained"),
            "{out:?}"
        );
        assert_eq!(
            (version("h1").await, version("h2").await),
            ("0.1.0+up1".into(), "0.1.0+up1".into())
        );
        assert_eq!(draining(&c).await, [true, false]);
        let out = c
            .rolling_maintenance(&ids[..1], RollingOp::Undrain, None, |_| {})
            .await
            .unwrap();
        assert!(out[0].ok, "{out:?}");
        assert_eq!(draining(&c).await, [false, false]);

        // A change previewed on both and rolled: each host its own new cli_key.
        let change = BulkChange {
            set: serde_json::json!({"tunnel_idle_secs": 90})
                .as_object()
                .unwrap()
                .clone(),
            rotate: vec!["cli_key".into()],
        };
        let plan = c.plan_bulk_change(&ids, &change).await.unwrap();
        assert!(
            plan.iter().all(|p| p.error.is_none() && p.diff.len() == 2),
            "{plan:?}"
        );
        let planned: Vec<Planned> = plan.iter().map(HostPlan::planned).collect();
        let out = c
            .apply_bulk_change(&change, &planned, |_| {})
            .await
            .unwrap();
        assert!(out.iter().all(|o| o.ok), "{out:?}");
        let mut cli = vec![];
        for h in ["h1", "h2"] {
            let v: serde_json::Value = serde_json::from_str(
                &sh(&bed, h, "vdi-gateway settings show --reveal".into()).await,
            )
            .unwrap();
            assert_eq!(v["tunnel_idle_secs"], 90, "{h}");
            cli.push(v["cli_key"].as_str().unwrap().to_string());
        }
        assert!(
            cli[0] != k1.1 && cli[1] != k2.1 && cli[0] != cli[1],
            "{cli:?}"
        );

        let log = c.audit_log(&AuditFilter::default()).unwrap();
        let runs: Vec<(&str, &str)> = log
            .iter()
            .rev()
            .filter(|r| r.gateway.is_none() && r.host == "fleet")
            .map(|r| (r.action.as_str(), r.result.as_str()))
            .collect();
        assert_eq!(
            runs,
            [
                ("rolling_upgrade", "ok"),
                ("rolling_upgrade", "failed"),
                ("rolling_undrain", "ok"),
                ("bulk_change", "ok")
            ]
        );
    })
    .join()
    .unwrap();
    assert!(
        held.echoes_after(),
        "the stream through h1 runs on through two upgrades and a rollback"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
