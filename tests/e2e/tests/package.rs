//! The `.deb` on a real systemd host: install, what postinst says and creates,
//! the unit as shipped, an upgrade that keeps a running stream, removal
//! keeping the settings, purge deleting them.

use vdi_e2e::{Bed, Held, build_deb, can_run, deb_variant, deb_variant_dies_serving};

#[test]
fn install_remove_purge() {
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let bed = Bed::up("pkg", 1, &deb);
    let db = "/opt/vdi-gateway/app/settings.db";

    // Installed by `up` with dpkg -i: the service runs under systemd, notify type.
    assert_eq!(
        bed.sh("h1", "systemctl is-active vdi-gateway").trim(),
        "active"
    );
    assert_eq!(
        bed.sh("h1", "systemctl is-enabled vdi-gateway").trim(),
        "enabled"
    );
    let show = bed.sh(
        "h1",
        "systemctl show vdi-gateway -p Type -p ExecStartPre -p Restart -p ProtectSystem",
    );
    for want in ["Type=notify", "Restart=on-failure", "ProtectSystem=strict"] {
        assert!(show.contains(want), "{want} in {show}");
    }
    // `serve` validates the database itself: no ExecStartPre process in a
    // restart's stall.
    assert!(!show.contains("ExecStartPre={"), "{show}");
    // postinst created the database for this host and said where the keys are.
    let dpkg_log = std::fs::read_to_string("/run/vdi-testbed/pkg/h1/dpkg.log").unwrap();
    assert!(
        dpkg_log.contains("fresh random keys") && dpkg_log.contains("settings show --reveal"),
        "{dpkg_log}"
    );
    // Its address, fresh keys, HA not yet managed.
    assert_eq!(bed.sh("h1", &format!("stat -c %a {db}")).trim(), "600");
    let doc: serde_json::Value =
        serde_json::from_str(&bed.sh("h1", "vdi-gateway settings show --reveal")).unwrap();
    assert_eq!(doc["internal_addrs"][0], bed.ip("h1").to_string());
    assert_eq!(doc["ha_managed"], false);
    assert_eq!(doc["api_key"].as_str().unwrap().len(), 24);
    // It answers on the host's address, and the journal has its log with priorities.
    let key = doc["api_key"].as_str().unwrap();
    let ip = bed.ip("h1");
    let health = bed.sh("h1", &format!("exec 3<>/dev/tcp/{ip}/8000 && printf 'GET /v3/health/ HTTP/1.0\\r\\napi_key: {key}\\r\\n\\r\\n' >&3 && cat <&3"));
    assert!(
        health.contains("200 OK") && health.contains("\"ha\":{\"status\":\"unmanaged\"}"),
        "{health}"
    );
    let log = bed.sh("h1", "journalctl -u vdi-gateway -p info --no-pager -o cat");
    assert!(log.contains("ready: API http://"), "{log}");
    // The start's own share of a restart's stall, for the journal timeline.
    assert!(log.contains("serving startup_ms="), "{log}");
    assert!(!log.contains(key), "the key leaked into the journal");

    // An upgrade over a running desktop stream: postinst re-executes the
    // daemon with SIGUSR2 (docs/upgrades.md); same PID, the stream goes on.
    let desk = vdi_e2e::serve_desk(&bed, "h1");
    let pid = bed.sh("h1", "systemctl show -p MainPID --value vdi-gateway");
    let cli_key = doc["cli_key"].as_str().unwrap().to_string();
    let held = Held::open(&bed, ip, desk, &cli_key, "vm-up");
    bed.copy_to("h1", &deb, "/root/vdi-gateway.deb");
    let out = bed.sh("h1", "dpkg -i /root/vdi-gateway.deb 2>&1");
    assert!(out.contains("took the new version"), "{out}");
    assert!(held.echoes_after(), "the stream echoes after the upgrade");
    assert_eq!(
        bed.sh("h1", "systemctl show -p MainPID --value vdi-gateway"),
        pid,
        "same process"
    );
    let taken = || {
        bed.sh(
            "h1",
            "journalctl -u vdi-gateway -o cat -g 'taken over' --no-pager",
        )
        .lines()
        .filter(|l| l.contains("streams=1 "))
        .count()
    };
    assert_eq!(taken(), 1);
    // The copy `SIGUSR2` put in the store went once the new process served
    // (a stale one would keep ended streams' sockets open): systemd, PID 1,
    // holds no snapshot.
    let snapshots_in_store = || {
        bed.sh(
            "h1",
            "ls -l /proc/1/fd | grep -c 'memfd:vdi-gateway-handover' || true",
        )
        .trim()
        .parse::<u32>()
        .unwrap()
    };
    assert_eq!(snapshots_in_store(), 0);

    // `systemctl restart`: the stream waits in systemd's descriptor store,
    // the new process takes it back (a new PID).
    let held = Held::open(&bed, ip, desk, &cli_key, "vm-up");
    bed.sh("h1", "systemctl restart vdi-gateway");
    assert!(held.echoes_after(), "the stream echoes after the restart");
    assert_ne!(
        bed.sh("h1", "systemctl show -p MainPID --value vdi-gateway"),
        pid,
        "a new process"
    );
    assert_eq!(taken(), 2);
    let log = bed.sh(
        "h1",
        "journalctl -u vdi-gateway -o cat -g handover --no-pager",
    );
    assert!(
        log.contains("parked in systemd's descriptor store"),
        "{log}"
    );

    // A new version that cannot serve, then the rollback: the streams wait in
    // the store while systemd retries the unit (`Restart=on-failure`), and
    // the previous version takes them back.
    let dir = std::env::temp_dir().join(format!("vdi-pkg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = deb_variant(&deb, &dir, "0.1.0+broken", true);
    bed.copy_to("h1", &bad, "/root/broken.deb");
    bed.copy_to("h1", &deb, "/root/vdi-gateway.deb");
    let held = Held::open(&bed, ip, desk, &cli_key, "vm-up");
    let out = bed.sh("h1", "dpkg -i /root/broken.deb 2>&1");
    assert!(out.contains("did not take the new version"), "{out}");
    let log = bed.sh("h1", "journalctl -u vdi-gateway -o cat --no-pager -n 50");
    assert!(log.contains("broken build"), "{log}");
    // The rollback (the console's Deploy does it after its health check).
    bed.sh("h1", "dpkg -i /root/vdi-gateway.deb");
    assert!(
        held.echoes_after(),
        "the stream echoes after a failed upgrade and its rollback"
    );
    assert_eq!(taken(), 3);

    // A new version that passes the re-execution's check, is executed in
    // place, and dies before it serves: `SIGUSR2` left a copy of every
    // descriptor in the store, so the streams wait there through systemd's
    // retries and the rollback takes them back.
    let dies = deb_variant_dies_serving(&deb, &dir, "0.1.0+dies");
    bed.copy_to("h1", &dies, "/root/dies.deb");
    let held = Held::open(&bed, ip, desk, &cli_key, "vm-up");
    bed.sh("h1", "dpkg -i /root/dies.deb 2>&1");
    let log = bed.sh("h1", "journalctl -u vdi-gateway -o cat --no-pager -n 80");
    assert!(
        log.contains("store_copy=true") && log.contains("dies before it serves"),
        "{log}"
    );
    assert_eq!(snapshots_in_store(), 1, "the copy waits in the store");
    bed.sh("h1", "dpkg -i /root/vdi-gateway.deb");
    assert!(
        held.echoes_after(),
        "the stream echoes after an executed build died and the rollback"
    );
    assert_eq!(taken(), 4);
    assert_eq!(snapshots_in_store(), 0, "the rollback emptied the store");
    let _ = std::fs::remove_dir_all(&dir);

    // `systemctl stop` still closes every stream: the store goes with the unit.
    let held = Held::open(&bed, ip, desk, &cli_key, "vm-up");
    bed.sh("h1", "systemctl stop vdi-gateway");
    assert!(held.ends(), "the client sees its stream end after a stop");
    bed.sh("h1", "systemctl start vdi-gateway");

    // Removal keeps the settings and keys; reinstalling finds them.
    bed.sh("h1", "dpkg -r vdi-gateway");
    assert_eq!(
        bed.ssh("h1", "systemctl is-active vdi-gateway").1.trim(),
        "inactive"
    );
    assert_eq!(
        bed.ssh("h1", &format!("test -f {db}")).0,
        0,
        "remove keeps the database"
    );
    bed.copy_to("h1", &deb, "/root/vdi-gateway.deb");
    let out = bed.sh("h1", "dpkg -i /root/vdi-gateway.deb 2>&1");
    assert!(out.contains("exists; left as it is"), "{out}");
    let again: serde_json::Value =
        serde_json::from_str(&bed.sh("h1", "vdi-gateway settings show --reveal")).unwrap();
    assert_eq!(again["api_key"], doc["api_key"]);

    // Purge deletes them.
    bed.sh("h1", "dpkg -P vdi-gateway");
    assert_ne!(
        bed.ssh("h1", "test -e /opt/vdi-gateway").0,
        0,
        "purge deletes /opt/vdi-gateway"
    );
}
