//! The `vdi-gateway` binary: first start, readiness, signals, the settings CLI, logs.

mod common;

use common::daemon::*;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn first_start_creates_the_database_with_fresh_keys() {
    let dir = TempDir::new();
    let db = dir.0.join("app/settings.db");
    // `check` on a missing file is an error that says what to do.
    let (code, _, err) = cli(&db, &["check"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
    // The default settings listen on 127.0.0.1:8000, which may be in use here;
    // creation happens before binding, and a failed bind is a clear error.
    let mut child = Command::new(BIN)
        .arg("--db")
        .arg(&db)
        .arg("serve")
        .env("VDI_GATEWAY_CONTROL", dir.0.join("control.sock"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("ready:") || line.contains("gateway stopped") {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    assert!(log.contains("settings show --reveal"), "{log}");
    let (code, shown, _) = cli(&db, &["settings", "show", "--reveal"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&shown).unwrap();
    let (api, cli_key) = (
        doc["api_key"].as_str().unwrap(),
        doc["cli_key"].as_str().unwrap(),
    );
    assert_eq!(api.len(), 24);
    assert_ne!(api, cli_key);
    assert!(
        !log.contains(api) && !log.contains(cli_key),
        "keys leaked into the log"
    );
    assert_eq!(doc["internal_addrs"], json!(["127.0.0.1"]));
}

#[test]
fn settings_cli_show_set_check() {
    let dir = TempDir::new();
    let db = prepared_db(&dir, unique_loopback());
    let (code, shown, _) = cli(&db, &["settings", "show"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(doc["api_key"], "***");
    assert_eq!(doc["cli_key"], "***");

    let (code, out, err) = cli(
        &db,
        &[
            "settings",
            "set",
            "port_range_stop=21005",
            "disp_addrs=10.0.0.5,10.0.0.6",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("changed: disp_addrs, port_range_stop"),
        "{out}"
    );
    let s = vdi_gateway::Store::open(&db).unwrap().load().unwrap();
    assert_eq!(s.port_range_stop, 21005);
    assert_eq!(s.disp_addrs.len(), 2);

    let before = std::fs::read(&db).unwrap();
    let (code, _, err) = cli(&db, &["settings", "set", "api_port=0", "cli_key=short"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("nothing was written") && err.contains("api_port") && err.contains("cli_key"),
        "{err}"
    );
    assert!(!err.contains("short\""), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let (code, _, err) = cli(&db, &["settings", "set", "bogus=1"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown field"), "{err}");

    let (code, out, _) = cli(&db, &["check"]);
    assert_eq!((code, out.contains("valid")), (0, true));
    rusqlite_free_corrupt(&db);
    let (code, _, err) = cli(&db, &["check"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("api_port") && err.contains("out of range"),
        "{err}"
    );
    // `serve` validates the same way (the unit has no ExecStartPre): it
    // exits 1 before it listens, logging each bad field, and leaves the
    // database as it was.
    let corrupt = std::fs::read(&db).unwrap();
    let (code, _, err) = run(Command::new("timeout")
        .arg("20")
        .arg(BIN)
        .arg("--db")
        .arg(&db)
        .arg("serve")
        .env("VDI_GATEWAY_CONTROL", db.with_file_name("control.sock")));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("invalid setting: ")
            && err.contains("api_port")
            && err.contains("out of range")
            && !err.contains("ready:"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), corrupt);
}

/// Corrupts the stored document with the sqlite3 shell, as an admin might.
fn rusqlite_free_corrupt(db: &Path) {
    let st = Command::new("sqlite3")
        .arg(db)
        .arg(
            "update settings set data = replace(data, '\"api_port\": 8000', '\"api_port\": 99999')",
        )
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test]
async fn sigterm_closes_everything_and_exits_within_5_seconds() {
    let dir = TempDir::new();
    let ip = unique_loopback();
    let db = prepared_db(&dir, ip);
    let daemon = Daemon::start(&db);
    let s = vdi_gateway::Store::open(&db).unwrap().load().unwrap();
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let http = reqwest::Client::new();
    let opened: Value = http
        .post(format!("http://{ip}:8000/v3/open_connection/"))
        .header("cli_key", s.cli_key.expose())
        .json(&json!({"target_host": "127.0.0.1", "target_port": desk.addr.port()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut live = tokio::net::TcpStream::connect((ip, opened["port"].as_u64().unwrap() as u16))
        .await
        .unwrap();
    live.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    live.read_exact(&mut one).await.unwrap();
    // An auth failure, to see how it is logged.
    let r = http
        .get(format!("http://{ip}:8000/v3/health/"))
        .header("api_key", s.cli_key.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    let (code, took, log) = tokio::task::spawn_blocking(move || daemon.terminate())
        .await
        .unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(
        live.read(&mut one).await.unwrap_or(0),
        0,
        "the stream was closed"
    );
    assert!(tokio::net::TcpStream::connect((ip, 8000)).await.is_err());
    assert!(
        !log.contains('\x1b'),
        "no colour codes in the journal: {log}"
    );
    // Logs: journald priorities, the auth failure with its source, never a key.
    assert!(
        log.lines().any(|l| l.starts_with("<4>")
            && l.contains("authentication failed")
            && l.contains("client=127.0.0.1:")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains("tunnel open")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains("stream end") && l.contains("to_target=1")),
        "{log}"
    );
    assert!(
        !log.contains(s.api_key.expose()) && !log.contains(s.cli_key.expose()),
        "a key leaked into the log"
    );
}

#[tokio::test]
async fn sighup_reloads_settings_changed_by_the_cli() {
    let dir = TempDir::new();
    let ip = unique_loopback();
    let db = prepared_db(&dir, ip);
    let daemon = Daemon::start(&db);
    let key = vdi_gateway::Store::open(&db)
        .unwrap()
        .load()
        .unwrap()
        .api_key
        .expose()
        .to_string();
    let (code, _, err) = cli(&db, &["settings", "set", "is_enabled=false"]);
    assert_eq!(code, 0, "{err}");
    daemon.signal(libc::SIGHUP);
    daemon.expect_notify("RELOADING=1");
    daemon.expect_notify("READY=1");
    let h: Value = reqwest::Client::new()
        .get(format!("http://{ip}:8000/v3/health/"))
        .header("api_key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["is_enabled"], false);
    let (code, _, _) = tokio::task::spawn_blocking(move || daemon.terminate())
        .await
        .unwrap();
    assert_eq!(code, 0);
}

/// Drain and undrain through the CLI (the control socket): new tunnels are
/// refused with `draining` while a running stream goes on, health, readiness
/// and metrics say so, the state survives a restart, undrain reopens.
#[tokio::test]
async fn drain_refuses_new_tunnels_keeps_streams_and_survives_a_restart() {
    let dir = TempDir::new();
    let ip = unique_loopback();
    let db = prepared_db(&dir, ip);
    let drain_file = dir.0.join("draining");
    let daemon = Daemon::start(&db);
    let s = vdi_gateway::Store::open(&db).unwrap().load().unwrap();
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    // No pooled connections: the daemon restarts midway.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let body =
        json!({"target_host": "127.0.0.1", "target_port": desk.addr.port(), "vm_id": "vm-1"});
    let open = || {
        http.post(format!("http://{ip}:8000/v3/open_connection/"))
            .header("cli_key", s.cli_key.expose())
            .json(&body)
            .send()
    };
    let r = open().await.unwrap();
    assert_eq!(r.status(), 200);
    let opened: Value = r.json().await.unwrap();
    let port = opened["port"].as_u64().unwrap() as u16;
    let mut live = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    assert!(echoes(&mut live, b"before").await);

    let (code, out, err) = daemon.ctl(&["drain"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("drained since") && out.contains("1 stream(s)"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&drain_file).unwrap(), "1\n");
    // New tunnels and reuse of the open one: refused, with the code.
    let r = open().await.unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "draining", "{e}");
    // The running stream goes on, and so does a new stream of its tunnel.
    assert!(echoes(&mut live, b"during").await);
    let mut second = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    assert!(echoes(&mut second, b"second").await);
    let health: Value = http
        .get(format!("http://{ip}:8000/v3/health/"))
        .header("api_key", s.api_key.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (health["status"].as_str(), health["draining"].as_bool()),
        (Some("draining"), Some(true)),
        "{health}"
    );
    let ready = http
        .get(format!("http://{ip}:8000/v3/ready/"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "HAProxy's check, no key");
    let metrics = http
        .get(format!("http://{ip}:8000/metrics"))
        .header("api_key", s.api_key.expose())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vdi_gateway_draining 1"), "{metrics}");
    // Waiting for the node to empty, with streams that do not end: exit 3.
    let (code, out, err) = daemon.ctl(&["drain", "--wait", "1"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("2 stream(s) still open"), "{err}");
    drop((live, second));

    // A restart (an upgrade, a reboot) keeps the node drained.
    let (code, _, _) = daemon.terminate();
    assert_eq!(code, 0);
    let daemon = Daemon::start(&db);
    let (code, out, err) = daemon.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let st: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (st["draining"].as_bool(), st["streams"].as_u64()),
        (Some(true), Some(0)),
        "{st}"
    );
    assert!(st["since"].is_string(), "{st}");
    assert_eq!(open().await.unwrap().status(), 503);
    // An empty node: --wait returns at once.
    let (code, out, _) = daemon.ctl(&["drain", "--wait", "30"]);
    assert_eq!(code, 0);
    assert!(out.contains("no stream left"), "{out}");

    let (code, out, err) = daemon.ctl(&["undrain"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("serving"), "{out}");
    assert_eq!(std::fs::read_to_string(&drain_file).unwrap(), "0\n");
    let ready = http
        .get(format!("http://{ip}:8000/v3/ready/"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(open().await.unwrap().status(), 200);
    // No daemon at the socket: a clear error, not a hang.
    let (code, _, err) = run(Command::new(BIN)
        .env("VDI_GATEWAY_CONTROL", dir.0.join("nothing.sock"))
        .arg("status"));
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the running gateway"), "{err}");
}
