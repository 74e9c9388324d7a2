//! The bed itself: a bed left behind by a killed run is reclaimed by the next
//! `up` of the same name, and a bed whose owner still runs is never taken.

use std::process::{Command, Stdio};
use vdi_e2e::{Bed, bed_is_up, can_run, testbed};

#[test]
fn stale_bed_is_reclaimed_live_one_is_not() {
    if !can_run() {
        return;
    }
    let name = "stale";
    // The "run" that owns the bed: a process we can kill like a CI timeout would.
    let mut owner = Command::new("sleep")
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let up = testbed(&["up", name, "1"], Some(owner.id()));
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(bed_is_up(name));

    // While its owner runs, another `up` refuses and leaves the bed alone.
    let again = testbed(&["up", name, "1"], Some(std::process::id()));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("exists"), "{err}");
    assert!(bed_is_up(name), "a refused up must not take the bed down");

    // The owner dies without `down`: the next `up` takes the stale bed down
    // and brings a fresh one up (owned by this test, taken down on drop).
    owner.kill().unwrap();
    owner.wait().unwrap();
    let bed = Bed::up_with(name, 1, &[]);
    assert!(bed_is_up(name));
    assert_eq!(bed.sh("h1", "echo ok").trim(), "ok");
    drop(bed);
    assert!(!bed_is_up(name), "down after the reclaim");
}
