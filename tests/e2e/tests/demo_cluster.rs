//! The demo cluster from the console library: a bed that a console which
//! died left behind is reclaimed, the cluster comes up, its hosts answer
//! over SSH through the console's relays (host keys as the bed recorded
//! them), demo streams run, and the console's exit (`shutdown`) takes the
//! bed, its fleet entries and its host keys down.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vdi_console::Console;
use vdi_console::secrets::Secrets;
use vdi_e2e::{Bed, bed_is_up, build_deb, can_run, repo_root, testbed};
use vdi_wire::console::ClusterPhase;

const BED: &str = "cdlib";

#[test]
fn demo_cluster_reclaims_a_dead_consoles_bed_and_goes_with_the_console() {
    if !can_run() {
        return;
    }
    let deb = build_deb();
    let _guard = Bed {
        name: BED.to_string(),
    };
    // A bed whose owner (a console) died after bringing it up.
    let mut owner = Command::new("sleep").arg("600").spawn().unwrap();
    let up = testbed(&["up", BED, "1"], Some(owner.id()));
    owner.kill().unwrap();
    owner.wait().unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(bed_is_up(BED));

    // SAFETY: this test binary has one test and sets these before any
    // thread that reads the environment starts.
    unsafe {
        std::env::set_var("VDI_DEMO_BED", BED);
        std::env::set_var("VDI_GATEWAY_DEB", &deb);
        std::env::set_var(
            "VDI_TESTBED_SCRIPT",
            repo_root().join("tests/testbed/testbed.sh"),
        );
    }
    let data = std::env::temp_dir().join(format!("vdi-demo-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let console = Arc::new(Console::with_secrets(&data, Secrets::detect(&data)).unwrap());
        assert_eq!(console.cluster_state().unavailable, None);
        assert_eq!(console.start_cluster().phase, ClusterPhase::Starting);
        let t = Instant::now();
        let up = loop {
            let s = console.cluster_state();
            match s.phase {
                ClusterPhase::Up => break s,
                ClusterPhase::Failed => panic!("the cluster failed: {}", s.detail),
                _ => {}
            }
            assert!(
                t.elapsed() < Duration::from_secs(400),
                "stuck at: {}",
                s.detail
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(up.hosts, ["demo-h1", "demo-h2"]);
        // The stale one-host bed was taken down and a two-host one made.
        let env = std::fs::read_to_string(format!("/run/vdi-testbed/{BED}/env")).unwrap();
        assert!(env.lines().any(|l| l == "HOSTS=2"), "{env}");

        // Each host over SSH through the relays, its units live.
        let entries = console.list().unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        for g in &entries {
            assert_eq!(
                g.ssh_host.as_deref().map(|h| h.starts_with("127.0.78.")),
                Some(true)
            );
            let units = console.services(g.id).await.unwrap();
            let haproxy = units
                .iter()
                .find(|u| u.unit.starts_with("haproxy"))
                .unwrap();
            assert_eq!(haproxy.active_state, "active", "{}: {units:?}", g.name);
        }
        // Four demo streams per host, moving.
        let t = Instant::now();
        while console.cluster_state().streams != 8 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{:?}",
                console.cluster_state()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (rows, _) = console.overview().await.unwrap();
        let streams: u64 = rows
            .iter()
            .filter_map(|r| r.health.as_ref())
            .map(|h| h.streams)
            .sum();
        assert_eq!(streams, 8, "the gateways carry them");

        // The console's exit takes it all down.
        console.shutdown().await;
        assert!(!bed_is_up(BED), "the bed is down");
        assert!(console.list().unwrap().is_empty());
        assert_eq!(console.cluster_state().phase, ClusterPhase::Off);
        let known = std::fs::read_to_string(data.join("known_hosts")).unwrap_or_default();
        assert!(!known.contains("127.0.78."), "{known}");
    });
    let _ = std::fs::remove_dir_all(&data);
}
