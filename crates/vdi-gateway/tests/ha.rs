//! Writing and reloading HAProxy and Keepalived, with the real `haproxy -c` and
//! `keepalived -t` validating every file, and a real master-worker HAProxy
//! reloaded with SIGUSR2 (no systemd here; the test bed covers `systemctl`).
//! Keepalived is validated but not run (VRRP needs the bed's namespaces).

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

struct Paths {
    dir: TempDir,
}

/// Starts HAProxy (master-worker, daemon) on first use, reloads it after.
const RELOAD_SCRIPT: &str = r#"cfg="$1"; pid="$2"
if [ -s "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; then
    kill -USR2 "$(cat "$pid")"
else
    exec haproxy -W -D -f "$cfg" -p "$pid"
fi
"#;

impl Drop for Paths {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.0.join("haproxy.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

impl Paths {
    fn new() -> Self {
        let dir = TempDir::new();
        std::fs::write(dir.0.join("reload-haproxy.sh"), RELOAD_SCRIPT).unwrap();
        Self { dir }
    }
    fn haproxy_reload(&self) -> String {
        format!(
            "/bin/sh {} {} {}",
            self.dir.0.join("reload-haproxy.sh").display(),
            self.haproxy().display(),
            self.dir.0.join("haproxy.pid").display()
        )
    }
    fn haproxy(&self) -> PathBuf {
        self.dir.0.join("haproxy/haproxy.cfg")
    }
    fn keepalived(&self) -> PathBuf {
        self.dir.0.join("keepalived/keepalived.conf")
    }
    /// HA settings with a VIP of its own (HAProxy binds it; the gateway binds
    /// its internal address), the real HAProxy reload, and `keepalived_reload`.
    fn settings(&self, keepalived_reload: &str) -> Value {
        json!({
            "ha_managed": true,
            "virtual_addr": unique_loopback().to_string(),
            "haproxy_cfg_path": self.haproxy().to_str().unwrap(),
            "keepalived_conf_path": self.keepalived().to_str().unwrap(),
            "haproxy_admin_socket": self.dir.0.join("haproxy.sock").to_str().unwrap(),
            "haproxy_reload_cmd": self.haproxy_reload(),
            "keepalived_reload_cmd": keepalived_reload,
        })
    }
}

fn read(p: &PathBuf) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test]
async fn start_writes_both_files_and_changes_rewrite_them() {
    let paths = Paths::new();
    let g = start(paths.settings("true")).await;
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(h["ha"]["status"], "ok", "{h}");
    assert_eq!(h["ha"]["node"], g.ip.to_string());
    let vip = g.stored().virtual_addr;
    let cfg = read(&paths.haproxy());
    assert!(cfg.contains(&format!("bind {vip}:21000-21009")), "{cfg}");
    assert!(
        cfg.contains(&format!(
            "server gateway_0 {}:8000 check send-proxy-v2",
            g.ip
        )),
        "{cfg}"
    );
    // The real HAProxy took the file: its workers dropped root for Debian's
    // haproxy user, inside the chroot.
    if unsafe { libc::geteuid() } == 0 {
        let master = read(&paths.dir.0.join("haproxy.pid"));
        let children = read(&PathBuf::from(format!(
            "/proc/{0}/task/{0}/children",
            master.trim()
        )));
        let worker = children.split_whitespace().next().expect("a worker");
        let status = read(&PathBuf::from(format!("/proc/{worker}/status")));
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let haproxy_uid = Command::new("id").args(["-u", "haproxy"]).output().unwrap();
        let haproxy_uid = String::from_utf8(haproxy_uid.stdout).unwrap();
        assert_eq!(
            uid.split_whitespace().nth(1),
            Some(haproxy_uid.trim()),
            "{status}"
        );
        let root = std::fs::read_link(format!("/proc/{worker}/root")).unwrap();
        assert_eq!(root, PathBuf::from("/var/lib/haproxy"));
    }
    let kc = read(&paths.keepalived());
    assert!(
        kc.contains(&format!(
            "interface {}",
            h["ha"]["interface"].as_str().unwrap()
        )),
        "{kc}"
    );
    assert!(
        !paths.haproxy().with_file_name("haproxy.cfg.prev").exists(),
        "no previous file yet"
    );

    let (s, body) = g.change(json!({"port_range_stop": 21005})).await;
    assert_eq!(s, 200, "{body}");
    assert!(read(&paths.haproxy()).contains(&format!("bind {vip}:21000-21005")));
    // The real HAProxy serves the new range: VIP -> HAProxy -> gateway -> desktop.
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (s, opened) = g.open(desk.addr, None).await;
    assert_eq!(s, 200, "{opened}");
    let port = opened["port"].as_u64().unwrap() as u16;
    let via_haproxy = tokio::net::TcpStream::connect((vip, port)).await.unwrap();
    assert_eq!(
        echo_round_trip(via_haproxy, b"through haproxy").await,
        b"through haproxy"
    );
    let prev = read(&paths.haproxy().with_file_name("haproxy.cfg.prev"));
    assert_eq!(prev, cfg, "the replaced file is kept");
    // A change that does not touch the rendering leaves the files alone.
    let before = std::fs::metadata(paths.haproxy())
        .unwrap()
        .modified()
        .unwrap();
    let (s, _) = g.change(json!({"tunnel_ttl_secs": 30})).await;
    assert_eq!(s, 200);
    assert_eq!(
        std::fs::metadata(paths.haproxy())
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    g.stop().await;
}

#[tokio::test]
async fn a_failed_reload_restores_files_and_settings() {
    let paths = Paths::new();
    let g = start(paths.settings("true")).await;
    let cfg = read(&paths.haproxy());
    let db_before = g.stored_text();
    let err = g
        .host_change(json!({"port_range_stop": 21003, "haproxy_reload_cmd": "false"}))
        .await
        .unwrap_err();
    assert!(err.contains("`false` failed"), "{err}");
    assert_eq!(
        read(&paths.haproxy()),
        cfg,
        "the previous haproxy.cfg is back"
    );
    assert_eq!(g.stored_text(), db_before);
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(h["ha"]["status"], "error");
    assert_eq!(h["ports_free"], 10, "the old range is still in force");
    // Fixed: the next good change applies and health recovers.
    let (s, _) = g.change(json!({"port_range_stop": 21003})).await;
    assert_eq!(s, 200);
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(h["ha"]["status"], "ok");
    g.stop().await;
}

#[tokio::test]
async fn a_reload_haproxy_does_not_take_is_detected_and_rolled_back() {
    let paths = Paths::new();
    let g = start(paths.settings("true")).await;
    let vip = g.stored().virtual_addr;
    let cfg = read(&paths.haproxy());
    let db_before = g.stored_text();
    // Another program holds a port of the new range on the VIP: `haproxy -c`
    // accepts the file, the reload fails at run time (and still "succeeds").
    let _squatter = std::net::TcpListener::bind((vip, 21015)).unwrap();
    let (s, body) = g.change(json!({"port_range_stop": 21019})).await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("did not load the new configuration"),
        "{body}"
    );
    assert_eq!(
        read(&paths.haproxy()),
        cfg,
        "the previous haproxy.cfg is back"
    );
    assert_eq!(g.stored_text(), db_before);
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(h["ha"]["status"], "error");
    // HAProxy still serves the configuration in force.
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let port = opened["port"].as_u64().unwrap() as u16;
    let via_haproxy = tokio::net::TcpStream::connect((vip, port)).await.unwrap();
    assert_eq!(
        echo_round_trip(via_haproxy, b"old config").await,
        b"old config"
    );
    g.stop().await;
}

#[tokio::test]
async fn a_configuration_the_real_tool_rejects_is_never_written() {
    let paths = Paths::new();
    let g = start(paths.settings("true")).await;
    let (cfg, kc) = (read(&paths.haproxy()), read(&paths.keepalived()));
    let db_before = g.stored_text();
    let (s, body) = g.change(json!({"vrrp_interface": "nosuchif0"})).await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("keepalived rejected"),
        "{body}"
    );
    assert_eq!(
        (read(&paths.haproxy()), read(&paths.keepalived())),
        (cfg, kc)
    );
    assert_eq!(g.stored_text(), db_before);
    g.stop().await;
}

#[tokio::test]
async fn unmanaged_gateways_touch_nothing() {
    let paths = Paths::new();
    let mut settings = paths.settings("false");
    settings["ha_managed"] = json!(false);
    let g = start(settings).await;
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(h["ha"]["status"], "unmanaged");
    assert!(!paths.haproxy().exists() && !paths.keepalived().exists());
    g.stop().await;
}

#[test]
fn render_and_apply_from_the_command_line() {
    let paths = Paths::new();
    let ip = unique_loopback();
    let db = paths.dir.0.join("settings.db");
    let (store, _) =
        vdi_gateway::Store::open_or_create(&db, vdi_gateway::first_start_settings).unwrap();
    let mut patch = paths.settings("true");
    patch["internal_addrs"] = json!([ip.to_string()]);
    store.update(patch.as_object().unwrap()).unwrap();
    let bin = env!("CARGO_BIN_EXE_vdi-gateway");
    let out = Command::new(bin)
        .arg("--db")
        .arg(&db)
        .args(["render", "haproxy"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg = String::from_utf8(out.stdout).unwrap();
    assert!(cfg.contains("frontend tunnels"));
    let file = paths.dir.0.join("check.cfg");
    std::fs::write(&file, &cfg).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&file)
        .output()
        .expect("haproxy is installed");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = Command::new(bin)
        .arg("--db")
        .arg(&db)
        .args(["render", "keepalived"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("vrrp_instance gateway")
    );

    let out = Command::new(bin)
        .arg("--db")
        .arg(&db)
        .arg("apply")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "written and reloaded: haproxy, keepalived"
    );
    assert_eq!(read(&paths.haproxy()), cfg);
    let out = Command::new(bin)
        .arg("--db")
        .arg(&db)
        .arg("apply")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "already in force; nothing written"
    );
}

/// The snapshot-tested renderings (one node as in the original, three nodes)
/// pass the real tools.
#[test]
fn rendered_configurations_pass_haproxy_and_keepalived() {
    let seed = include_str!("../../vdi-core/src/settings/seed.json");
    let mut s = vdi_core::settings::parse_document_text(seed).unwrap();
    let dir = TempDir::new();
    let iface = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| {
            n != "lo"
                && std::fs::read_to_string(format!("/sys/class/net/{n}/operstate"))
                    .is_ok_and(|s| s.trim() == "up")
        })
        .expect("a non-loopback interface that is up");
    for nodes in [1, 3] {
        s.internal_addrs = (0..nodes)
            .map(|i| format!("10.254.150.{}", 132 + i).parse().unwrap())
            .collect();
        for node in s.internal_addrs.clone() {
            let cfg = dir.0.join("haproxy.cfg");
            std::fs::write(&cfg, vdi_core::ha::render_haproxy(&s, node)).unwrap();
            let out = Command::new("haproxy")
                .arg("-c")
                .arg("-f")
                .arg(&cfg)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{nodes} nodes: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let conf = dir.0.join("keepalived.conf");
            std::fs::write(
                &conf,
                vdi_core::ha::render_keepalived(&s, node, &iface, vdi_core::ha::DEFAULT_STATE_DIR),
            )
            .unwrap();
            let out = Command::new("keepalived")
                .arg("-t")
                .arg("-f")
                .arg(&conf)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{nodes} nodes: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The broker's key is not root on the host: every host-local field is
/// refused through the API, naming it, and the stored row stays byte for byte.
#[tokio::test]
async fn host_local_fields_are_refused_through_the_api() {
    let paths = Paths::new();
    let g = start(json!({})).await;
    let marker = paths.dir.0.join("pwned");
    let db = g.db.to_str().unwrap().to_string();
    let attempts = [
        json!({"haproxy_reload_cmd": format!("/usr/bin/touch {}", marker.display())}),
        json!({"keepalived_reload_cmd": "/bin/true"}),
        json!({"haproxy_cfg_path": db}),
        json!({"keepalived_conf_path": "/etc/keepalived/other.conf"}),
        json!({"haproxy_admin_socket": "/run/haproxy/admin.sock\n  stats socket /tmp/x"}),
        json!({"tls_cert_path": "/etc/ssl/x.pem", "tls_key_path": "/etc/ssl/x.key"}),
        json!({"port_range_stop": 21005, "haproxy_reload_cmd": "/bin/true"}),
    ];
    let before = g.stored_text();
    for patch in attempts {
        let (s, body) = g.change(patch.clone()).await;
        assert_eq!(s, 403, "{patch}: {body}");
        assert_eq!(body["code"], "host_local_field", "{body}");
        let named: Vec<&str> = body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        let host_local: Vec<&str> = patch
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| vdi_wire::HOST_LOCAL_FIELDS.contains(k))
            .collect();
        assert_eq!(named, host_local, "{body}");
        assert_eq!(g.stored_text(), before, "{patch} changed the row");
    }
    assert!(!marker.exists(), "a command ran");
    // Sending back what get_settings said is no change and is accepted.
    let (_, now) = g.get("/v3/get_settings/", &g.api_key).await;
    let (s, body) = g.change(now).await;
    assert_eq!(s, 200, "{body}");
    g.stop().await;
}

/// A rejected or failed change loses nothing: every path setting pointed at
/// the database is refused with the database intact, and a managed file that
/// is not UTF-8 comes back byte for byte (mode too) after a failed reload.
#[tokio::test]
async fn path_settings_never_touch_the_database_or_lose_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let paths = Paths::new();
    let g = start(paths.settings("true")).await;
    let db_bytes = std::fs::read(&g.db).unwrap();
    let db = g.db.to_str().unwrap().to_string();
    for field in vdi_wire::HOST_LOCAL_FIELDS
        .iter()
        .filter(|f| f.ends_with("_path") || f.ends_with("_socket"))
    {
        for target in [
            db.clone(),
            format!("{db}-journal"),
            paths.dir.0.display().to_string(),
        ] {
            let err = g.host_change(json!({ *field: target })).await.unwrap_err();
            assert!(err.contains(field), "{field}={target}: {err}");
        }
    }
    assert!(
        std::fs::read(&g.db).unwrap() == db_bytes,
        "the database was touched"
    );
    let row = g.stored_text();

    // A binary haproxy.cfg with its own mode, then a change whose reload fails.
    let binary = vec![0xffu8, 0xfe, 0x00, b'x', 0x80];
    std::fs::write(paths.haproxy(), &binary).unwrap();
    std::fs::set_permissions(paths.haproxy(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = g
        .host_change(json!({"port_range_stop": 21004, "haproxy_reload_cmd": "false"}))
        .await
        .unwrap_err();
    assert!(err.contains("`false` failed"), "{err}");
    assert_eq!(std::fs::read(paths.haproxy()).unwrap(), binary);
    let mode = std::fs::metadata(paths.haproxy())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    // The row went in and came back out: the same settings, byte for byte.
    assert_eq!(g.stored_text(), row);
    g.stop().await;
}
