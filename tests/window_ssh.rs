//! The real window over SSH, against a host of the test bed: the console (in
//! the bed's client namespace) meets an unknown host key and the admin trusts
//! it, restarts a service and sees it come back, follows the journal and sees
//! a fresh line appear, previews the configuration and finds it all in the
//! audit log, and plans a reboot when empty, then cancels it. Screenshots of
//! these views go to target/screenshots/.

mod desktop;

use desktop::{
    Desktop, click, click_css, fresh_journal_line, save_screenshot, set_value, wait_css,
    wait_css_text,
};
use std::sync::Arc;
use std::time::Duration;
use vdi_console::Console;
use vdi_console::secrets::Secrets;
use vdi_e2e::{Bed, Held, build_deb, can_run};
use vdi_wire::console::{GatewayDraft, SshAuth};

#[test]
fn console_window_over_ssh() {
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let bed = Arc::new(Bed::up("cwin", 1, &deb));
    let h1 = bed.ip("h1");
    let data = std::env::temp_dir().join(format!("vdi-window-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    // The fleet: h1, reached over SSH with the bed's key (the app finds its
    // secrets where this test put them: the same detection).
    let keys: serde_json::Value =
        serde_json::from_str(&bed.sh("h1", "vdi-gateway settings show --reveal")).unwrap();
    {
        let console = Console::with_secrets(&data, Secrets::detect(&data)).unwrap();
        console
            .add(&GatewayDraft {
                name: "h1".into(),
                api_url: format!("http://{h1}:8000"),
                api_key: keys["api_key"].as_str().map(Into::into),
                ssh_host: Some(h1.to_string()),
                ssh_auth: Some(SshAuth::KeyFile {
                    path: bed.key().display().to_string(),
                }),
                ..Default::default()
            })
            .unwrap();
    }
    // The gateway manages HA there, and someone hand-edited HAProxy's file.
    let net = h1.to_string().rsplit_once('.').unwrap().0.to_string();
    bed.sh(
        "h1",
        &format!("vdi-gateway settings set virtual_addr={net}.100 ha_managed=true && systemctl reload vdi-gateway"),
    );
    bed.wait("the gateway's haproxy.cfg", Duration::from_secs(20), || {
        bed.ssh(
            "h1",
            "grep -q 'Written by vdi-gateway' /etc/haproxy/haproxy.cfg",
        )
        .0 == 0
    });
    bed.sh(
        "h1",
        "sed -i 's/timeout client .*/timeout client 1m/' /etc/haproxy/haproxy.cfg",
    );
    let fingerprint = bed.host_fingerprint("h1");
    let Some(desktop) = Desktop::start(Some("cwin-client"), &data) else {
        return;
    };
    let desktop = Arc::new(desktop);
    let b = bed.clone();
    bed.in_ns("client", move || async move {
        let bed = b;
        let c = desktop.connect().await;
        wait_css(
            &c,
            r#".fleet-row[data-name="h1"] .dot.up"#,
            Duration::from_secs(30),
        )
        .await;
        click_css(&c, r#".fleet-row[data-name="h1"] td"#).await;

        // First SSH contact: the key is shown and trusted by the admin.
        click(&c, "nav-services").await;
        let fp = wait_css_text(&c, "#host-key-fingerprint", Duration::from_secs(20), |t| {
            !t.is_empty()
        })
        .await;
        assert_eq!(fp, fingerprint);
        save_screenshot(&c, "host-key.png").await;
        click(&c, "trust-host-key").await;
        c.accept_alert().await.expect("a confirmation");
        wait_css(
            &c,
            r#".unit-row[data-unit="haproxy"][data-state="active"]"#,
            Duration::from_secs(20),
        )
        .await;
        save_screenshot(&c, "services.png").await;

        // Restart HAProxy and see it come back.
        let pid_before = bed.sh("h1", "systemctl show -p MainPID --value haproxy");
        click_css(&c, r#"button[data-unit="haproxy"][data-action="restart"]"#).await;
        c.accept_alert().await.expect("a confirmation");
        wait_css_text(&c, "#notice", Duration::from_secs(60), |t| {
            t.starts_with("haproxy: active (running) after")
        })
        .await;
        wait_css(
            &c,
            r#".unit-row[data-unit="haproxy"][data-state="active"]"#,
            Duration::from_secs(10),
        )
        .await;
        let pid_after = bed.sh("h1", "systemctl show -p MainPID --value haproxy");
        assert_ne!(pid_before, pid_after, "a new HAProxy process");

        // Follow HAProxy's journal and see a fresh line appear.
        let marker = format!("vdi-window-fresh-line-{}", std::process::id());
        fresh_journal_line(&c, &bed, "h1", "haproxy", &marker).await;
        save_screenshot(&c, "journal.png").await;
        // The search highlights it.
        let search = c
            .find(fantoccini::Locator::Id("journal-search"))
            .await
            .unwrap();
        search.send_keys("window-fresh").await.unwrap();
        wait_css_text(&c, "#journal-list mark", Duration::from_secs(5), |t| {
            t == "window-fresh"
        })
        .await;
        save_screenshot(&c, "journal-search.png").await;

        // The configuration preview and the audit log.
        click(&c, "nav-config").await;
        wait_css_text(&c, "#config-check", Duration::from_secs(20), |t| {
            t == "check passed"
        })
        .await;
        let drift = wait_css_text(&c, "#config-drift", Duration::from_secs(5), |t| {
            !t.is_empty()
        })
        .await;
        assert!(
            drift.starts_with("differs from what the gateway would write"),
            "{drift}"
        );
        let diff = wait_css_text(&c, "#config-diff", Duration::from_secs(5), |t| {
            !t.is_empty()
        })
        .await;
        assert!(diff.contains("+    timeout client 1m"), "{diff}");
        save_screenshot(&c, "config.png").await;
        click(&c, "nav-audit").await;
        wait_css(
            &c,
            r#".audit-row[data-action="service"]"#,
            Duration::from_secs(10),
        )
        .await;
        wait_css(
            &c,
            r#".audit-row[data-action="trust_host_key"]"#,
            Duration::from_secs(10),
        )
        .await;
        save_screenshot(&c, "audit.png").await;

        // A host-local field through the settings form: over SSH, read back on the host.
        click(&c, "nav-settings").await;
        let cmd = "systemctl reload-or-restart keepalived.service";
        let field = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(fantoccini::Locator::Id("set-keepalived_reload_cmd"))
            .await
            .unwrap();
        assert!(
            field.attr("disabled").await.unwrap().is_none(),
            "h1 has an SSH host"
        );
        set_value(&c, &field, cmd).await;
        click(&c, "settings-apply").await;
        wait_css_text(&c, "#notice", Duration::from_secs(30), |t| {
            t == "Changed: keepalived_reload_cmd"
        })
        .await;
        let shown: serde_json::Value =
            serde_json::from_str(&bed.sh("h1", "vdi-gateway settings show")).unwrap();
        assert_eq!(shown["keepalived_reload_cmd"], cmd, "{shown}");

        // "Reboot when empty" from the connections view while a desktop
        // stream runs: planned with a bound in minutes, its waiting line,
        // then cancelled; the stream never noticed.
        let desk = vdi_e2e::serve_desk(&bed, "h1");
        let (b2, cli_key) = (bed.clone(), keys["cli_key"].as_str().unwrap().to_string());
        let held =
            tokio::task::spawn_blocking(move || Held::open(&b2, h1, desk, &cli_key, "vm-window"))
                .await
                .unwrap();
        click(&c, "nav-connections").await;
        wait_css_text(&c, "#reboot-plan", Duration::from_secs(20), |t| {
            t == "No reboot planned"
        })
        .await;
        click(&c, "plan-reboot").await;
        c.send_alert_text("10")
            .await
            .expect("the prompt for the bound");
        c.accept_alert().await.unwrap();
        let line = wait_css_text(&c, "#reboot-plan", Duration::from_secs(30), |t| {
            t.contains("1 stream(s) still open")
        })
        .await;
        assert!(
            line.starts_with("Reboot planned: when no stream is left, at the latest in "),
            "{line}"
        );
        let unit = "systemctl is-active vdi-gateway-maintenance";
        assert_eq!(bed.ssh("h1", unit).1.trim(), "active");
        save_screenshot(&c, "reboot-plan.png").await;
        click(&c, "cancel-reboot").await;
        wait_css_text(&c, "#notice", Duration::from_secs(20), |t| {
            t.starts_with("Reboot cancelled")
        })
        .await;
        wait_css_text(&c, "#reboot-plan", Duration::from_secs(10), |t| {
            t == "No reboot planned"
        })
        .await;
        assert_ne!(bed.ssh("h1", unit).1.trim(), "active");
        let st: serde_json::Value =
            serde_json::from_str(&bed.sh("h1", "vdi-gateway status --json")).unwrap();
        assert_eq!(st["draining"], true, "the drain stays after a cancel: {st}");
        assert!(
            tokio::task::spawn_blocking(move || held.echoes_after())
                .await
                .unwrap(),
            "the stream runs on: no reboot"
        );
        c.close().await.unwrap();
    })
    .join()
    .unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
