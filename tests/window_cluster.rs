//! The demo cluster in the real window, as `scripts/run` gives it to a
//! newcomer as root: the console brings up two test-bed gateway hosts by
//! itself (its fleet view shows the steps), reclaims a stale entry a dead
//! console left, and then every view shows live data from real hosts: both
//! gateways up with one holding the VIP, services (no host-key prompt: the
//! keys are the bed's), a journal line arriving, a config preview, demo
//! streams whose rates move. "Stop" takes it all down: the bed, its fleet
//! entries and its host keys. Screenshots go to target/screenshots/.

mod desktop;

use desktop::{
    Desktop, choose, click, click_css, fresh_journal_line, save_screenshot, set_value, texts,
    wait_css, wait_css_text,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vdi_console::Console;
use vdi_console::secrets::Secrets;
use vdi_e2e::{Bed, bed_is_up, build_deb, can_run, repo_root};
use vdi_wire::console::GatewayDraft;

const BED: &str = "cdemo";

#[test]
fn console_runs_the_demo_cluster() {
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let data = std::env::temp_dir().join(format!("vdi-window-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    // What a console that died with its cluster up leaves in the fleet.
    {
        let console = Console::with_secrets(&data, Secrets::detect(&data)).unwrap();
        console
            .add(&GatewayDraft {
                name: "demo-h9".into(),
                api_url: "http://127.0.78.19:9".into(),
                tags: vec![vdi_console::cluster::TAG.into()],
                ..Default::default()
            })
            .unwrap();
    }
    // The console's bed, for commands on its hosts; whatever happens below,
    // it goes down when this is dropped.
    let bed = Arc::new(Bed {
        name: BED.to_string(),
    });
    let script = repo_root().join("tests/testbed/testbed.sh");
    let env = [
        ("VDI_DEMO_CLUSTER", "on"),
        ("VDI_DEMO_BED", BED),
        ("VDI_GATEWAY_DEB", deb.to_str().unwrap()),
        ("VDI_TESTBED_SCRIPT", script.to_str().unwrap()),
        // The embedded gateway's fixed address belongs to the other window tests.
        ("VDI_EMBEDDED", "off"),
    ];
    let Some(desktop) = Desktop::start_with(None, &data, &env) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = desktop.connect().await;
        // The steps show while it comes up (a first run also builds the
        // bed's base system: minutes).
        let t = Instant::now();
        let step = wait_css_text(&c, "#cluster-detail", Duration::from_secs(30), |t| {
            t.starts_with("starting: ") || t.starts_with("up: ")
        })
        .await;
        eprintln!("first step shown: {step}");
        wait_css(&c, r#"#cluster[data-phase="up"]"#, Duration::from_secs(400)).await;
        eprintln!("demo cluster up in {:.1} s", t.elapsed().as_secs_f64());
        assert!(bed_is_up(BED), "the console's bed is up");
        let line = wait_css_text(&c, "#cluster-detail", Duration::from_secs(10), |t| {
            t.contains("8 demo streams")
        })
        .await;
        assert!(line.starts_with("up: demo-h1, demo-h2"), "{line}");
        for h in ["demo-h1", "demo-h2"] {
            wait_css(
                &c,
                &format!(r#".fleet-row[data-name="{h}"] .dot.up"#),
                Duration::from_secs(30),
            )
            .await;
        }
        assert!(
            c.find_all(fantoccini::Locator::Css(
                r#".fleet-row[data-name="demo-h9"]"#
            ))
            .await
            .unwrap()
            .is_empty(),
            "the stale entry was reclaimed"
        );
        // VDI_SHOTS_AFTER_SECS (at most 1800): let the history fill before
        // the screenshots (the README's are taken 900 s in).
        let after: u64 = std::env::var("VDI_SHOTS_AFTER_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            .min(1800);
        tokio::time::sleep(Duration::from_secs(after)).await;
        // Exactly one holds the VIP.
        let vips = texts(&c, ".fleet-row td.vip").await;
        assert_eq!(
            vips.iter().filter(|v| v.as_str() == "VIP").count(),
            1,
            "{vips:?}"
        );
        save_screenshot(&c, "demo-cluster.png").await;

        // Services over SSH: the host keys are the bed's, no prompt.
        click_css(&c, r#".fleet-row[data-name="demo-h1"] td"#).await;
        click(&c, "nav-services").await;
        wait_css(
            &c,
            r#".unit-row[data-unit="haproxy"][data-state="active"]"#,
            Duration::from_secs(30),
        )
        .await;
        assert!(
            c.find_all(fantoccini::Locator::Id("host-key-prompt"))
                .await
                .unwrap()
                .is_empty(),
            "no trust-on-first-use prompt"
        );
        save_screenshot(&c, "demo-cluster-services.png").await;

        // The journal: a fresh line arrives.
        let marker = format!("vdi-demo-cluster-line-{}", std::process::id());
        fresh_journal_line(&c, &bed, "h1", "haproxy", &marker).await;
        save_screenshot(&c, "demo-cluster-journal.png").await;

        // The configuration preview of a managed host.
        click(&c, "nav-config").await;
        wait_css_text(&c, "#config-check", Duration::from_secs(20), |t| {
            t == "check passed"
        })
        .await;

        // A bulk change over the cluster's tag: previewed per host, rolled,
        // and in force on both bed hosts.
        click(&c, "nav-fleet").await;
        choose(&c, "bulk-tag", vdi_console::cluster::TAG).await;
        wait_css_text(&c, "#bulk-hosts", Duration::from_secs(5), |t| {
            t == "demo-h1, demo-h2"
        })
        .await;
        choose(&c, "bulk-field", "tunnel_idle_secs").await;
        let value = c.find(fantoccini::Locator::Id("bulk-value")).await.unwrap();
        set_value(&c, &value, "1200").await;
        click(&c, "bulk-preview").await;
        wait_css_text(&c, "#bulk-plan", Duration::from_secs(20), |t| {
            t.contains("demo-h2")
        })
        .await;
        let rows = texts(&c, "#bulk-plan tr.plan-host").await;
        let cells: Vec<Vec<&str>> = rows.iter().map(|r| r.split('\t').collect()).collect();
        assert_eq!(
            cells,
            [
                ["demo-h1", "tunnel_idle_secs", "default", "1200"],
                ["demo-h2", "tunnel_idle_secs", "default", "1200"],
            ]
        );
        click(&c, "bulk-apply").await;
        wait_css_text(&c, "#notice", Duration::from_secs(30), |t| {
            t == "Settings change: 2 host(s) done"
        })
        .await;
        for h in ["h1", "h2"] {
            let b = bed.clone();
            let shown: serde_json::Value = serde_json::from_str(
                &tokio::task::spawn_blocking(move || b.sh(h, "vdi-gateway settings show"))
                    .await
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(shown["tunnel_idle_secs"], 1200, "{h}: {shown}");
        }

        // The demo streams' rates move.
        click(&c, "nav-connections").await;
        wait_css(&c, ".tunnel-row", Duration::from_secs(20)).await;
        let t = Instant::now();
        let first = loop {
            let r = texts(&c, ".stream-rate").await;
            if r.len() == 4 && r.iter().all(|x| x.starts_with('↑')) {
                break r;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "stream rates: {r:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        while texts(&c, ".stream-rate").await == first {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the rates do not move: {first:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        save_screenshot(&c, "demo-cluster-connections.png").await;

        // Stop: the bed, its entries and its host keys go.
        click(&c, "nav-fleet").await;
        click(&c, "cluster-stop").await;
        c.accept_alert().await.expect("a confirmation");
        wait_css(&c, r#"#cluster[data-phase="off"]"#, Duration::from_secs(60)).await;
        assert!(!bed_is_up(BED), "the bed is down");
        let t = Instant::now();
        while !c
            .find_all(fantoccini::Locator::Css(".fleet-row"))
            .await
            .unwrap()
            .is_empty()
        {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the demo entries stay in the fleet"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let known = std::fs::read_to_string(data.join("known_hosts")).unwrap_or_default();
        assert!(!known.contains("127.0.78."), "{known}");
        c.close().await.unwrap();
    });
    drop(desktop);
    let _ = std::fs::remove_dir_all(&data);
}
