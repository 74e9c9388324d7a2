//! The console's journal stream end to end: a host of the test bed writes N
//! numbered lines into a unit's journal as fast as it can; the console's
//! library follows that journal over SSH (the code behind the Journal view's
//! Channel). Lines per second, and a check that every line arrived once, in
//! order. Needs root (the test bed).

use anyhow::{Context, Result, bail};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vdi_console::journal::{self, Query};
use vdi_console::ssh::{Credentials, Options, PendingKeys, Session, Target, hostkeys::HostKeys};
use vdi_e2e::Bed;
use vdi_wire::console::JournalEvent;

pub struct Figures {
    pub lines: u64,
    pub console_lines_per_s: f64,
    pub journald_lines_per_s: f64,
    pub gaps: usize,
}

const UNIT: &str = "vdi-bench-gen";

pub fn run(lines: u64) -> Result<Figures> {
    if !vdi_e2e::can_run() {
        bail!("the journal benchmark needs root (it boots a test bed host)");
    }
    let deb = vdi_e2e::build_deb();
    let bed = Arc::new(Bed::up("jbench", 1, &deb));
    // journald's default rate limit would drop lines on purpose: lift it.
    bed.sh(
        "h1",
        "mkdir -p /etc/systemd/journald.conf.d && printf '[Journal]\\nRateLimitIntervalSec=0\\nRateLimitBurst=0\\n' > /etc/systemd/journald.conf.d/bench.conf && systemctl restart systemd-journald && rm -f /run/vdi-bench-go && mkfifo /run/vdi-bench-go",
    );
    let h1 = bed.ip("h1").to_string();
    let key = bed.key();
    let known = std::path::PathBuf::from(format!("/run/vdi-testbed/{}/known_hosts", bed.name));
    let b = bed.clone();
    bed.in_ns("client", move || async move {
        let target = Target { host: h1, port: 22, user: "root".into(), jump: None };
        let creds = Credentials::KeyFile { path: key, passphrase: None };
        let keys = Arc::new(HostKeys::new(None, known));
        let session = Arc::new(
            Session::connect(&target, &creds, keys, Arc::new(PendingKeys::default()), &Options::default())
                .await
                .context("ssh to the bed host")?,
        );
        // Received lines: (numbered lines in order, arrival of the last).
        struct Seen {
            next: u64,
            ready: bool,
            out_of_order: u64,
            gaps: usize,
            done_at: Option<Instant>,
        }
        let seen = Arc::new(Mutex::new(Seen { next: 1, ready: false, out_of_order: 0, gaps: 0, done_at: None }));
        let stop = CancellationToken::new();
        let follower = {
            let (seen, stop, s) = (seen.clone(), stop.clone(), session.clone());
            tokio::spawn(async move {
                let q = Query { unit: UNIT, lines: 0, ..Default::default() };
                journal::follow(move || { let s = s.clone(); async move { Ok(s) } }, q, stop, move |e| {
                    let mut st = seen.lock().unwrap();
                    match e {
                        JournalEvent::Entries { entries } => {
                            for e in entries {
                                if e.message == "ready" {
                                    st.ready = true;
                                } else if let Ok(n) = e.message.parse::<u64>() {
                                    if n == st.next {
                                        st.next += 1;
                                        if n == lines {
                                            st.done_at = Some(Instant::now());
                                        }
                                    } else {
                                        st.out_of_order += 1;
                                    }
                                }
                            }
                        }
                        JournalEvent::Gap { .. } => st.gaps += 1,
                        _ => {}
                    }
                    true
                })
                .await
            })
        };
        // The generator says "ready" every 200 ms until the console has seen
        // it (the follower may start after the first one) and sent "go".
        let generator = format!(
            "systemd-run --unit={UNIT} --collect -p StandardOutput=journal bash -c 'exec 3<>/run/vdi-bench-go; until read -t 0.2 go <&3; do echo ready; done; seq 1 {lines}'"
        );
        let b2 = b.clone();
        tokio::task::spawn_blocking(move || b2.sh("h1", &generator)).await?;
        let t = Instant::now();
        while !seen.lock().unwrap().ready {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("the follower never saw the generator start");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let b3 = b.clone();
        let go = Instant::now();
        tokio::task::spawn_blocking(move || b3.sh("h1", "echo go > /run/vdi-bench-go")).await?;
        // Bounded: at most 120 s for the whole run.
        let done = loop {
            if let Some(at) = seen.lock().unwrap().done_at {
                break at;
            }
            if go.elapsed() > Duration::from_secs(120) {
                let st = seen.lock().unwrap();
                bail!("only {} of {lines} lines arrived in 120 s", st.next - 1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        stop.cancel();
        let _ = follower.await;
        // journald's own pace: the first and last line's timestamps.
        let stamps = session
            .exec(
                &format!("journalctl -u {UNIT}.service -o json --no-pager | grep -E '\"MESSAGE\":\"(1|{lines})\"' | sed -E 's/.*\"__REALTIME_TIMESTAMP\":\"([0-9]+)\".*/\\1/'"),
                Duration::from_secs(60),
            )
            .await?
            .stdout_text();
        let ts: Vec<i64> = stamps.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let journald = match ts.as_slice() {
            [a, .., b] if b > a => lines as f64 / ((b - a) as f64 / 1e6),
            _ => f64::NAN,
        };
        let st = seen.lock().unwrap();
        if st.out_of_order > 0 || st.next != lines + 1 {
            bail!("{} lines out of order or missing (next expected {})", st.out_of_order, st.next);
        }
        Ok(Figures {
            lines,
            console_lines_per_s: lines as f64 / (done - go).as_secs_f64(),
            journald_lines_per_s: journald,
            gaps: st.gaps,
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the journal benchmark panicked"))?
}
