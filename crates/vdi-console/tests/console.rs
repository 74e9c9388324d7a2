//! The console's library against real gateways on loopback.

use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use vdi_console::secrets::Secrets;
use vdi_console::{Console, Error};
use vdi_gateway::testing::{LocalGateway, TempDir};
use vdi_wire::console::{GatewayDraft, SshAuth};
use vdi_wire::{Disconnect, OpenConnection};

struct Gw {
    url: String,
    api_key: String,
    cli_key: String,
    ip: IpAddr,
    stop: CancellationToken,
    _gw: LocalGateway,
}

async fn gateway() -> Gw {
    let gw = LocalGateway::start(json!({})).await.unwrap();
    let h = &gw.handle;
    Gw {
        url: h.api_url(),
        api_key: h.api_key(),
        cli_key: h.cli_key(),
        ip: gw.ip,
        stop: h.shutdown_token(),
        _gw: gw,
    }
}

/// A settings patch as `change_settings` takes it.
fn patch(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().expect("a JSON object").clone()
}

fn console(dir: &TempDir) -> Console {
    Console::with_secrets(&dir.0, Secrets::file(dir.0.join("secrets.json"))).unwrap()
}

fn draft(name: &str, url: &str, g: Option<&Gw>) -> GatewayDraft {
    GatewayDraft {
        name: name.into(),
        api_url: url.into(),
        api_key: g.map(|g| g.api_key.clone().into()),
        cli_key: g.map(|g| g.cli_key.clone().into()),
        ..Default::default()
    }
}

#[test]
fn inventory_round_trip_and_validation() {
    let dir = TempDir::new();
    let c = console(&dir);
    let mut d = draft("gw-a", "http://10.0.0.11:8000/", None);
    d.tags = vec!["prod".into(), " dc1 ".into(), "prod".into()];
    d.ssh_host = Some("10.0.0.11".into());
    d.ssh_auth = Some(SshAuth::KeyFile {
        path: "/home/admin/.ssh/id_ed25519".into(),
    });
    d.api_key = Some("QUJDREVGR0hJSktMTU5PUA==".into());
    let a = c.add(&d).unwrap();
    assert_eq!(a.api_url, "http://10.0.0.11:8000");
    assert_eq!(a.tags, ["dc1", "prod"]);
    assert_eq!((a.ssh_port, a.ssh_user.as_str()), (22, "root"));
    assert!(a.has_api_key && !a.has_cli_key);
    // The inventory file holds no key; the secret store does, owner-only.
    let inv = std::fs::read(dir.0.join("inventory.db")).unwrap();
    assert!(!inv.windows(24).any(|w| w == b"QUJDREVGR0hJSktMTU5PUA=="));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.0.join("secrets.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Reopened: the same entries.
    drop(c);
    let c = console(&dir);
    assert_eq!(c.list().unwrap(), vec![a.clone()]);

    // Edit: rename, drop the key.
    let mut e = d.clone();
    e.name = "gw-a2".into();
    e.api_key = Some(String::new().into());
    let b = c.update(a.id, &e).unwrap();
    assert_eq!(b.name, "gw-a2");
    assert!(!b.has_api_key);

    // Bad input: clear errors, per field, nothing stored.
    for (d, field) in [
        (draft("", "http://x:8000", None), "name"),
        (draft("x", "ftp://x", None), "api_url"),
        (draft("x", "http://x:8000/v3/health/", None), "api_url"),
        (draft("x", "not a url", None), "api_url"),
        (draft("gw-a2", "http://10.0.0.12:8000", None), "name"),
    ] {
        match c.add(&d) {
            Err(Error::Invalid(_, fields)) => assert_eq!(fields[0].field, field, "{d:?}"),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    assert_eq!(c.list().unwrap().len(), 1);
    c.remove(b.id).unwrap();
    assert!(c.list().unwrap().is_empty());
    assert!(matches!(c.remove(b.id), Err(Error::NotFound(_))));
}

/// Adding, editing and removing gateways is in the audit log (the real
/// SQLite files): who, which entry, which secrets changed (by name, never
/// their values), refusals as failures; the CSV export keeps a hostile name
/// as text.
#[test]
fn inventory_changes_are_audited() {
    use vdi_console::audit::AuditFilter;
    use vdi_wire::console::AuditFormat;
    let dir = TempDir::new();
    let c = console(&dir);
    let mut d = draft("=HYPERLINK(\"http://evil\")", "http://10.0.0.11:8000", None);
    d.api_key = Some("api-secret-value-1".into());
    d.ssh_password = Some("ssh-secret-value-2".into());
    let g = c.add(&d).unwrap();
    assert!(c.add(&d).is_err(), "the same name twice");
    d.name = "gw-renamed".into();
    d.api_key = None;
    d.ssh_password = Some("".into());
    c.update(g.id, &d).unwrap();
    c.remove(g.id).unwrap();
    assert!(c.remove(g.id).is_err());

    let log = c.audit_log(&AuditFilter::default()).unwrap();
    let seen: Vec<(&str, &str)> = log
        .iter()
        .rev()
        .map(|r| (r.action.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("inventory_add", "ok"),
            ("inventory_add", "failed"),
            ("inventory_edit", "ok"),
            ("inventory_remove", "ok"),
            ("inventory_remove", "failed"),
        ]
    );
    let added: serde_json::Value = serde_json::from_str(&log[4].params).unwrap();
    assert_eq!(
        added["credentials_changed"],
        json!(["api_key", "ssh_password"])
    );
    assert_eq!(added["api_url"], "http://10.0.0.11:8000");
    assert_eq!(log[4].gateway, Some(g.id));
    let edited: serde_json::Value = serde_json::from_str(&log[2].params).unwrap();
    assert_eq!(edited["credentials_changed"], json!(["ssh_password"]));
    assert!(log[2].detail.contains("was \"=HYPERLINK"), "{:?}", log[2]);
    assert_eq!(log[1].host, "gw-renamed");
    let dump = serde_json::to_string(&log).unwrap();
    assert!(!dump.contains("secret-value"), "{dump}");

    let csv = c
        .audit_export(&AuditFilter::default(), AuditFormat::Csv)
        .unwrap();
    assert!(csv.contains(",\"'=HYPERLINK("), "{csv}");
    assert!(
        !csv.contains(",\"=HYPERLINK(") && !csv.contains(",=HYPERLINK("),
        "{csv}"
    );
}

/// A gateway (or something in its place) answering without end: the
/// console reads at most `client::MAX_ANSWER` bytes, with a declared length
/// or chunked, and says so (`too_large`); a real gateway's answers pass.
#[tokio::test]
async fn oversized_api_answers_are_refused() {
    use vdi_console::client::MAX_ANSWER;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let mut sent = vec![];
        for chunked in [false, true] {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 4096];
            let _ = sock.read(&mut req).await.unwrap();
            let head = if chunked {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    MAX_ANSWER + 1
                )
            };
            sock.write_all(head.as_bytes()).await.unwrap();
            // Up to twice the limit, then the console must have hung up.
            let piece = vec![b' '; 64 * 1024];
            let mut n = 0;
            while n < 2 * MAX_ANSWER {
                let w = if chunked {
                    let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                    c.extend_from_slice(&piece);
                    c.extend_from_slice(b"\r\n");
                    sock.write_all(&c).await
                } else {
                    sock.write_all(&piece).await
                };
                if w.is_err() {
                    break;
                }
                n += piece.len();
            }
            sent.push(n);
        }
        sent
    });
    let dir = TempDir::new();
    let c = console(&dir);
    let mut d = draft("hostile", &format!("http://{addr}"), None);
    d.api_key = Some("k".into());
    let id = c.add(&d).unwrap().id;
    for _ in 0..2 {
        let e = c.settings(id).await.unwrap_err();
        assert_eq!(e.code(), "too_large", "{e}");
        assert!(e.to_string().contains("8 MiB"), "{e}");
    }
    let sent = served.await.unwrap();
    assert!(
        sent[1] < 2 * MAX_ANSWER,
        "the console stopped reading a chunked answer: {sent:?}"
    );
    // A real gateway's answers are well within.
    let g = gateway().await;
    let real = c.add(&draft("real", &g.url, Some(&g))).unwrap().id;
    c.settings(real).await.unwrap();
    g.stop.cancel();
}

#[tokio::test]
async fn overview_in_parallel_with_dead_and_silent_hosts() {
    let g = gateway().await;
    let dir = TempDir::new();
    let c = console(&dir);
    c.add(&draft("live", &g.url, Some(&g))).unwrap();
    // Nothing listens here: refused at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    c.add(&draft("dead", &format!("http://{dead}"), Some(&g)))
        .unwrap();
    // Accepts and never answers: the per-host time limit ends it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            SILENT_ACCEPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    c.add(&draft("silent", &format!("http://{silent_addr}"), Some(&g)))
        .unwrap();
    c.add(&draft("no-key", &g.url, None)).unwrap();

    let (rows, summary) = c.overview().await.unwrap();
    let by = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
    let live = by("live");
    assert!(live.reachable);
    assert_eq!(live.health.as_ref().unwrap().ports_free, 10);
    assert_eq!(by("dead").error.unwrap().code, "unreachable");
    assert_eq!(by("silent").error.unwrap().code, "timeout");
    assert_eq!(by("no-key").error.unwrap().code, "missing_key");
    assert_eq!(
        (summary.gateways, summary.reachable, summary.ports_free),
        (4, 1, 10)
    );

    // As a view polls: by its deadline, whatever the silent host does. The
    // others are fresh; the silent one shows its last answer, flagged slow,
    // and is not asked again while its call is out.
    let accepted_before = SILENT_ACCEPTS.load(std::sync::atomic::Ordering::SeqCst);
    for round in 0..3 {
        let t = std::time::Instant::now();
        let (rows, _) = c
            .overview_within(std::time::Duration::from_millis(300))
            .await
            .unwrap();
        assert!(
            t.elapsed() < std::time::Duration::from_millis(800),
            "round {round}: {:?}",
            t.elapsed()
        );
        let by = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        assert!(by("live").reachable && by("live").pending_ms.is_none());
        let silent = by("silent");
        assert!(silent.pending_ms.is_some(), "{silent:?}");
        assert!(!silent.problems.is_empty(), "it stands out: {silent:?}");
        assert_eq!(
            silent.error.unwrap().code,
            "timeout",
            "the last answer shown"
        );
    }
    assert_eq!(
        SILENT_ACCEPTS.load(std::sync::atomic::Ordering::SeqCst),
        accepted_before + 1,
        "one call out at a time"
    );
    g.stop.cancel();
}

/// Connections the silent host of the overview test has accepted.
static SILENT_ACCEPTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[tokio::test]
async fn settings_change_and_rejection() {
    let g = gateway().await;
    let dir = TempDir::new();
    let c = console(&dir);
    let id = c.add(&draft("gw", &g.url, Some(&g))).unwrap().id;
    let changed = c
        .change_settings(id, patch(json!({"port_range_stop": 21004})))
        .await
        .unwrap();
    assert_eq!(changed.changed, ["port_range_stop"]);
    assert_eq!(c.settings(id).await.unwrap().port_range_stop, 21004);
    // Rotating the api_key through the console keeps the console connected.
    let rotated = c
        .change_settings(id, patch(json!({"api_key": "Um90YXRlZEtleTEyMzQ1Ng=="})))
        .await
        .unwrap();
    assert_eq!(rotated.changed, ["api_key"]);
    assert_eq!(
        c.settings(id).await.unwrap().api_key.expose(),
        "Um90YXRlZEtleTEyMzQ1Ng=="
    );
    // Refused by the console's own check (the gateway's rules), per field.
    match c
        .change_settings(id, patch(json!({"api_port": 0, "public_addr": "x"})))
        .await
    {
        Err(Error::Invalid(_, fields)) => {
            let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(names, ["public_addr", "api_port"]);
        }
        other => panic!("{other:?}"),
    }
    // Refused by the gateway (cannot apply): its own code and message come through.
    let _taken = std::net::TcpListener::bind((g.ip, 8300)).unwrap();
    let e: vdi_wire::console::ConsoleError = c
        .change_settings(id, patch(json!({"api_port": 8300})))
        .await
        .unwrap_err()
        .into();
    assert_eq!(e.code, "cannot_apply");
    assert!(e.message.contains("8300"), "{e:?}");
    assert_eq!(c.settings(id).await.unwrap().api_port, 8000);
    g.stop.cancel();
}

#[tokio::test]
async fn host_local_fields_need_an_ssh_host_and_nothing_is_applied_without() {
    let g = gateway().await;
    let dir = TempDir::new();
    let c = console(&dir);
    let id = c.add(&draft("gw", &g.url, Some(&g))).unwrap().id;
    let before = c.settings(id).await.unwrap();
    // A mixed patch: the host-local half cannot go anywhere, so neither does the rest.
    let e: vdi_wire::console::ConsoleError = c
        .change_settings(
            id,
            patch(
                json!({"tunnel_ttl_secs": 77, "haproxy_admin_socket": "/run/haproxy/other.sock",
                "keepalived_reload_cmd": "systemctl reload keepalived"}),
            ),
        )
        .await
        .unwrap_err()
        .into();
    assert_eq!(e.code, "invalid_input", "{e:?}");
    let fields: Vec<_> = e.fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["haproxy_admin_socket", "keepalived_reload_cmd"]);
    assert!(
        e.fields
            .iter()
            .all(|f| f.message == vdi_wire::console::NO_SSH_FOR_HOST_LOCAL)
    );
    assert_eq!(c.settings(id).await.unwrap(), before);
    // The gateway's own rules still come first and together, per field.
    let e: vdi_wire::console::ConsoleError = c
        .change_settings(
            id,
            patch(json!({"haproxy_cfg_path": "relative.cfg", "api_port": 0})),
        )
        .await
        .unwrap_err()
        .into();
    let mut fields: Vec<_> = e.fields.iter().map(|f| f.field.as_str()).collect();
    fields.sort();
    fields.dedup();
    assert_eq!(fields, ["api_port", "haproxy_cfg_path"], "{e:?}");
    assert!(e.message.contains("absolute"), "{e:?}");
    // The other fields go through the API as before; the audit log names
    // the fields of each half, never a value.
    let changed = c
        .change_settings(id, patch(json!({"cli_key": "Q2xpS2V5Um90YXRlZDEyMzQ="})))
        .await
        .unwrap();
    assert_eq!(changed.changed, ["cli_key"]);
    let log = c
        .audit_log(&vdi_console::audit::AuditFilter {
            action: Some("change_settings".into()),
            ..Default::default()
        })
        .unwrap();
    let params: Vec<_> = log.iter().map(|r| r.params.as_str()).collect();
    assert!(
        params.contains(&r#"{"api":["cli_key"],"host":[]}"#),
        "{params:?}"
    );
    assert!(
        params.contains(&r#"{"api":["tunnel_ttl_secs"],"host":["haproxy_admin_socket","keepalived_reload_cmd"]}"#),
        "{params:?}"
    );
    assert!(
        log.iter()
            .all(|r| !r.params.contains("Q2xpS2V5") && !r.params.contains("other.sock")),
        "{log:?}"
    );
    g.stop.cancel();
}

#[tokio::test]
async fn connections_and_disconnect() {
    let g = gateway().await;
    let dir = TempDir::new();
    let c = console(&dir);
    let id = c.add(&draft("gw", &g.url, Some(&g))).unwrap().id;
    let desk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let desk_addr = desk.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = desk.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let open = OpenConnection {
        target_host: "127.0.0.1".into(),
        target_port: desk_addr.port(),
        protocol: None,
        vm_id: Some("vm".into()),
    };
    let opened = c.client(id).unwrap().open_connection(&open).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(SocketAddr::new(g.ip, opened.port))
        .await
        .unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await.unwrap();
    let conns = c.connections(id).await.unwrap();
    assert_eq!(conns.tunnels.len(), 1);
    assert_eq!(conns.tunnels[0].id, opened.id);
    assert_eq!(conns.tunnels[0].streams[0].bytes_to_target, 2);
    let closed = c
        .disconnect(
            id,
            &Disconnect {
                tunnel_id: Some(opened.id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(closed.tunnels, [opened.id]);
    assert_eq!(s.read(&mut two).await.unwrap_or(0), 0);
    assert!(c.connections(id).await.unwrap().tunnels.is_empty());
    let e: vdi_wire::console::ConsoleError = c
        .disconnect(
            id,
            &Disconnect {
                tunnel_id: Some("nope".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err()
        .into();
    assert_eq!(e.code, "not_found");
    g.stop.cancel();
}

/// The console drains a gateway and undrains it, through its API key; the
/// fleet shows it, and both actions are audited.
#[tokio::test]
async fn drain_and_undrain_from_the_console() {
    use vdi_console::audit::AuditFilter;
    let g = gateway().await;
    let dir = TempDir::new();
    let c = console(&dir);
    let id = c.add(&draft("gw", &g.url, Some(&g))).unwrap().id;
    let d = c.set_draining(id, true).await.unwrap();
    assert!(d.draining && d.since.is_some(), "{d:?}");
    let (rows, summary) = c.overview().await.unwrap();
    assert!(rows[0].health.as_ref().unwrap().draining, "{rows:?}");
    assert_eq!(summary.draining, 1);
    let e: vdi_wire::console::ConsoleError = c
        .client(id)
        .unwrap()
        .open_connection(
            &serde_json::from_value(json!({"target_host": "127.0.0.1", "target_port": 5900}))
                .unwrap(),
        )
        .await
        .unwrap_err()
        .into();
    assert_eq!(e.code, "draining");
    let d = c.set_draining(id, false).await.unwrap();
    assert!(!d.draining && d.since.is_none(), "{d:?}");
    assert_eq!(c.overview().await.unwrap().1.draining, 0);
    let log = c.audit_log(&AuditFilter::default()).unwrap();
    let seen: Vec<(&str, &str)> = log
        .iter()
        .rev()
        .map(|r| (r.action.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(
        seen,
        [("inventory_add", "ok"), ("drain", "ok"), ("undrain", "ok")]
    );
    g.stop.cancel();
}

/// The embedded gateway has fixed loopback addresses: one test at a time.
static EMBEDDED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn empty_console_starts_the_embedded_gateway_and_a_demo_tunnel() {
    let _one = EMBEDDED.lock().await;
    let dir = TempDir::new();
    let c = console(&dir);
    let entry = c
        .ensure_embedded()
        .await
        .unwrap()
        .expect("an empty fleet gets the embedded gateway");
    assert!(entry.embedded && entry.has_api_key && entry.has_cli_key);
    assert!(
        entry.api_url.starts_with("http://127.0.77.1:"),
        "{}",
        entry.api_url
    );
    let (rows, _) = c.overview().await.unwrap();
    assert!(rows[0].reachable, "{rows:?}");
    let opened = c.demo_tunnel().await.unwrap();
    let mut s = tokio::net::TcpStream::connect((opened.address.as_str(), opened.port))
        .await
        .unwrap();
    let mut greeting = [0u8; 26];
    s.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"Space Gateway demo desktop");
    let conns = c.connections(entry.id).await.unwrap();
    assert_eq!(conns.tunnels[0].vm_id.as_deref(), Some("demo-desktop"));
    // A second call reuses it; a fleet with other gateways does not get one added.
    assert_eq!(c.ensure_embedded().await.unwrap().unwrap().id, entry.id);
    // Keys rotated through the console stay in force for the console: a
    // later demo tunnel (which re-ensures the entry) uses the new ones.
    c.change_settings(
        entry.id,
        patch(json!({"cli_key": vdi_gateway::random_key(), "api_key": vdi_gateway::random_key()})),
    )
    .await
    .unwrap();
    c.demo_tunnel().await.expect("the rotated keys are kept");
    assert!(c.overview().await.unwrap().0[0].error.is_none());
    c.shutdown().await;
    let other = TempDir::new();
    let c2 = console(&other);
    c2.add(&draft("gw", "http://10.0.0.1:8000", None)).unwrap();
    assert!(c2.ensure_embedded().await.unwrap().is_none());
}

/// The demo traffic: its streams move bytes both ways through the embedded
/// gateway; the connections watch reports their rates and a live series;
/// the overviews build the history the sparklines draw; stopping it closes
/// its tunnel.
#[tokio::test]
async fn demo_traffic_moves_and_the_console_shows_rates_and_history() {
    use std::time::{Duration, Instant};
    let _one = EMBEDDED.lock().await;
    let dir = TempDir::new();
    let c = std::sync::Arc::new(console(&dir));
    let entry = c.ensure_embedded().await.unwrap().unwrap();
    assert_eq!(c.demo_state(), Default::default());
    let opened = c.demo_tunnel().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = c.watch_connections(entry.id, 250, move |u| tx.send(u).is_ok());
    let deadline = Instant::now() + Duration::from_secs(20);
    let moving = loop {
        let u = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an update")
            .unwrap();
        let conns = u.result.unwrap();
        let t = conns.tunnels.iter().find(|t| t.id == opened.id).unwrap();
        let all = t.streams.len() == vdi_console::demo::STREAMS;
        let rate = u.rates.tunnels.get(&t.id).copied().unwrap_or_default();
        if all && rate[0] > 0 && rate[1] > 0 && u.live.last().is_some_and(|v| *v > 0) {
            break (t.clone(), u.rates);
        }
        assert!(
            Instant::now() < deadline,
            "no demo traffic: {t:?} {:?}",
            u.rates
        );
    };
    // A tunnel's rate is its streams' sum.
    let (t, rates) = moving;
    let sum: u64 = t.streams.iter().map(|s| rates.streams[&s.id][0]).sum();
    assert_eq!(rates.tunnels[&t.id][0], sum);
    assert!(rates.tunnels[&t.id][0] < vdi_console::demo::PEAK_BYTES_PER_SEC * 2);
    assert!(c.unwatch(w));
    assert_eq!(c.demo_state().streams, vdi_console::demo::STREAMS);

    // Overviews (a poll every 2 s, as the fleet view does) fill the history:
    // streams now, then a throughput and a rate once two polls are kept.
    let deadline = Instant::now() + Duration::from_secs(20);
    let trend = loop {
        let (rows, _) = c.overview().await.unwrap();
        let trend = rows[0].trend.clone().expect("a trend after a poll");
        assert_eq!(
            trend.streams.last().copied().flatten(),
            Some(vdi_console::demo::STREAMS as u64)
        );
        if trend.rate.is_some() {
            break trend;
        }
        assert!(Instant::now() < deadline, "no rate: {trend:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(trend.rate.unwrap().iter().all(|r| *r > 0), "{trend:?}");
    assert!(trend.throughput.last().copied().flatten().unwrap() > 0);
    let fleet = c.fleet_throughput();
    assert!(
        fleet.last().copied().flatten().is_some_and(|v| v > 0),
        "{fleet:?}"
    );

    // Stopping closes the tunnel and its streams.
    assert_eq!(c.stop_demo().await.unwrap(), Default::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .connections(entry.id)
        .await
        .unwrap()
        .tunnels
        .iter()
        .any(|t| t.id == opened.id)
    {
        assert!(Instant::now() < deadline, "the demo tunnel is still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}

/// The page's view and choice survive a restart of the console; a bad one
/// is refused and the saved one stays; a damaged file counts as none.
#[test]
fn ui_state_survives_a_restart() {
    use vdi_wire::console::UiState;
    let dir = TempDir::new();
    let saved = UiState {
        view: Some("nav-connections".into()),
        selected: Some(3),
    };
    {
        let c = console(&dir);
        assert_eq!(c.ui_state(), UiState::default());
        c.save_ui_state(&saved).unwrap();
        let bad = UiState {
            view: Some("x".repeat(65)),
            selected: None,
        };
        assert!(matches!(c.save_ui_state(&bad), Err(Error::Invalid(..))));
    }
    assert_eq!(console(&dir).ui_state(), saved);
    std::fs::write(dir.path().join("ui.json"), b"{not json").unwrap();
    assert_eq!(console(&dir).ui_state(), UiState::default());
}

#[tokio::test]
async fn bulk_change_previews_per_host_rolls_and_stops_at_the_first_failure() {
    use vdi_console::audit::AuditFilter;
    use vdi_wire::console::{BulkChange, HostPlan, Planned, RollingOp};
    let gws = [gateway().await, gateway().await, gateway().await];
    let dir = TempDir::new();
    let c = console(&dir);
    let mut ids = Vec::new();
    for (name, g) in ["a", "b", "c"].iter().zip(&gws) {
        let mut d = draft(name, &g.url, Some(g));
        d.tags = if *name == "c" {
            vec![]
        } else {
            vec!["edge".into()]
        };
        ids.push(c.add(&d).unwrap().id);
    }
    assert_eq!(c.tagged("edge").unwrap(), ids[..2]);
    let before: Vec<_> = {
        let mut v = Vec::new();
        for &id in &ids {
            v.push(c.settings(id).await.unwrap());
        }
        v
    };
    let change = BulkChange {
        set: patch(json!({"tunnel_idle_secs": 120})),
        rotate: vec!["api_key".into(), "cli_key".into()],
    };
    // The preview: the same diff on every host, keys masked, nothing changed.
    let plan = c.plan_bulk_change(&ids, &change).await.unwrap();
    assert_eq!(plan.len(), 3);
    for (p, id) in plan.iter().zip(&ids) {
        assert_eq!(p.gateway, *id);
        assert!(p.error.is_none(), "{p:?}");
        let fields: Vec<_> = p.diff.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["api_key", "cli_key", "tunnel_idle_secs"]);
        assert_eq!(p.diff[1].after, vdi_console::bulk::NEW_RANDOM_KEY);
        assert_eq!(p.diff[2].after, "120");
    }
    let shown = serde_json::to_string(&plan).unwrap();
    for s in &before {
        assert!(!shown.contains(s.api_key.expose()) && !shown.contains(s.cli_key.expose()));
    }
    for (id, s) in ids.iter().zip(&before) {
        assert_eq!(
            &c.settings(*id).await.unwrap(),
            s,
            "a preview changes nothing"
        );
    }
    // A value every host refuses shows as that host's error, per field.
    let bad = BulkChange {
        set: patch(json!({"port_range_stop": 1})),
        rotate: vec![],
    };
    for p in c.plan_bulk_change(&ids, &bad).await.unwrap() {
        let e = p.error.expect("refused");
        assert_eq!(e.code, "invalid_input");
        assert!(e.fields[0].message.contains("port_range_stop 1"), "{e:?}");
    }
    // Refused before any host is asked: unknown field, a key rotated twice.
    let wrong = BulkChange {
        set: patch(json!({"no_such": 1})),
        rotate: vec!["public_addr".into()],
    };
    assert!(matches!(
        c.plan_bulk_change(&ids, &wrong).await,
        Err(Error::Invalid(..))
    ));

    // b's settings change after the preview: the run stops there, c is
    // never asked.
    c.change_settings(ids[1], patch(json!({"tunnel_ttl_secs": 3600})))
        .await
        .unwrap();
    let planned: Vec<Planned> = plan.iter().map(HostPlan::planned).collect();
    let mut streamed = Vec::new();
    let out = c
        .apply_bulk_change(&change, &planned, |o| streamed.push(o.clone()))
        .await
        .unwrap();
    assert_eq!(out, streamed);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].ok, "{out:?}");
    assert_eq!(out[0].changed, ["api_key", "cli_key", "tunnel_idle_secs"]);
    assert!(
        !out[1].ok && out[1].summary.contains("preview again"),
        "{out:?}"
    );
    // a: changed, new keys of its own; the console still talks to it.
    let a = c.settings(ids[0]).await.unwrap();
    assert_eq!(a.tunnel_idle_secs, Some(120));
    assert_ne!(a.api_key, before[0].api_key);
    assert_ne!(a.cli_key, before[0].cli_key);
    // b and c: as they were (b with its own later change only).
    let b = c.settings(ids[1]).await.unwrap();
    assert_eq!(
        (b.api_key.expose(), b.tunnel_idle_secs),
        (before[1].api_key.expose(), before[1].tunnel_idle_secs)
    );
    assert_eq!(c.settings(ids[2]).await.unwrap(), before[2]);

    // Preview again and apply on b and c: each gets keys no other host has.
    let plan = c.plan_bulk_change(&ids[1..], &change).await.unwrap();
    let planned: Vec<Planned> = plan.iter().map(HostPlan::planned).collect();
    let out = c
        .apply_bulk_change(&change, &planned, |_| {})
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.ok), "{out:?}");
    let mut keys = std::collections::HashSet::new();
    for &id in &ids {
        let s = c.settings(id).await.unwrap();
        assert_eq!(s.tunnel_idle_secs, Some(120));
        assert!(keys.insert(s.api_key.expose().to_string()));
        assert!(keys.insert(s.cli_key.expose().to_string()));
    }

    // Drain and undrain the tagged group, one host at a time.
    let edge = c.tagged("edge").unwrap();
    let out = c
        .rolling_maintenance(&edge, RollingOp::Drain, None, |_| {})
        .await
        .unwrap();
    assert!(
        out.iter().all(|o| o.ok && o.summary.starts_with("drained")),
        "{out:?}"
    );
    let (rows, summary) = c.overview().await.unwrap();
    assert_eq!(summary.draining, 2, "{rows:?}");
    let out = c
        .rolling_maintenance(&edge, RollingOp::Undrain, None, |_| {})
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.ok), "{out:?}");
    assert_eq!(c.overview().await.unwrap().1.draining, 0);

    // Audited: each host's change, and each run with where it stopped; no key.
    let log = c.audit_log(&AuditFilter::default()).unwrap();
    let runs: Vec<(&str, &str, &str)> = log
        .iter()
        .rev()
        .filter(|r| r.action.starts_with("bulk_") || r.action.starts_with("rolling_"))
        .map(|r| (r.action.as_str(), r.result.as_str(), r.detail.as_str()))
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(runs[0].0, "bulk_change");
    assert_eq!(runs[0].1, "failed");
    assert!(
        runs[0].2.starts_with("1 of 3 host(s); stopped at b:"),
        "{runs:?}"
    );
    assert_eq!(runs[1], ("bulk_change", "ok", "2 of 2 host(s)"));
    assert_eq!(runs[2], ("rolling_drain", "ok", "2 of 2 host(s)"));
    assert_eq!(runs[3], ("rolling_undrain", "ok", "2 of 2 host(s)"));
    let changes = log.iter().filter(|r| r.action == "change_settings").count();
    assert_eq!(changes, 4, "b's own change, then a, b, c");
    let all = serde_json::to_string(&log).unwrap();
    for &id in &ids {
        let s = c.settings(id).await.unwrap();
        assert!(!all.contains(s.api_key.expose()) && !all.contains(s.cli_key.expose()));
    }
    for g in gws {
        g.stop.cancel();
    }
}
