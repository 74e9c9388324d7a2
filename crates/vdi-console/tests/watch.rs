//! Watches of the console (what the app's `watch_*` and `unwatch` commands
//! call): pushed at their interval until unwatched, replaced, or refused.

mod common;

use common::TempDir;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use vdi_console::Console;
use vdi_console::secrets::Secrets;
use vdi_wire::console::GatewayDraft;

fn counter() -> (Arc<AtomicUsize>, impl Fn() -> usize) {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    (n, move || m.load(Ordering::SeqCst))
}

#[tokio::test]
async fn watches_stop_when_unwatched_replaced_or_refused() {
    let dir = TempDir::new();
    let c =
        Arc::new(Console::with_secrets(&dir.0, Secrets::file(dir.0.join("secrets.json"))).unwrap());
    // Nothing listens there: every update is an error, quickly.
    let g = c
        .add(&GatewayDraft {
            name: "gw".into(),
            api_url: "http://127.0.0.1:9".into(),
            api_key: Some("k".into()),
            ..Default::default()
        })
        .unwrap();

    let (n, seen) = counter();
    let w = c.watch_connections(g.id, 250, move |u| {
        assert_eq!(u.id, g.id);
        assert_eq!(u.result.unwrap_err().code, "unreachable");
        n.fetch_add(1, Ordering::SeqCst);
        true
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(seen() >= 2, "pushed now and at the interval: {}", seen());
    assert!(c.watching(w));
    assert!(c.unwatch(w));
    let after = seen();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(seen() <= after + 1, "no more updates once unwatched");
    assert!(!c.watching(w) && !c.unwatch(w));

    // A newer watch of the kind replaces the older; a stale id ends nothing.
    let (n1, seen1) = counter();
    let old = c.watch_connections(g.id, 250, move |_| {
        n1.fetch_add(1, Ordering::SeqCst) < usize::MAX
    });
    let (n2, seen2) = counter();
    let new = c.watch_connections(g.id, 250, move |_| {
        n2.fetch_add(1, Ordering::SeqCst) < usize::MAX
    });
    assert!(!c.unwatch(old));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(seen1() <= 1 && seen2() >= 2, "{} {}", seen1(), seen2());
    assert!(c.watching(new));

    // A sink that refuses (its page went away) ends the watch.
    let f = c.watch_fleet(250, |u| {
        assert_eq!(u.summary.gateways, 1);
        false
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!c.watching(f), "a refused watch has ended");
    assert!(c.watching(new), "another kind is untouched");
    assert!(c.unwatch(new));
}
