//! The console in its real window with 1 and with N gateways (`bash
//! scripts/console-bench`, release): cold start to the first painted fleet
//! row and to every row, the memory of the app and its WebKit processes, and
//! the page's time to filter, sort and switch views, from the event to the
//! next painted frame. The window is driven through WebDriver (tauri-driver
//! and WebKitWebDriver under Xvfb, as the window tests do); the gateways are
//! real ones on loopback addresses 127.0.64.1 … of this process. Writes
//! `target/bench/console.md`.
//!
//! `-- --fleet N` (default 200), `--rounds K` (interactions, default 10).

#[path = "../tests/desktop/mod.rs"]
mod desktop;

use desktop::Desktop;
use serde_json::json;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use vdi_console::Console;
use vdi_console::secrets::Secrets;
use vdi_gateway::testing::{LocalGateway, options};
use vdi_wire::console::GatewayDraft;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// Proportional set size (kB) of every process of `group` but the WebDriver
/// tools: the app and WebKit's web and network processes, by name.
fn memory(group: i32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |h| h.1).to_string();
        let pgrp = rest
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse::<i32>().ok());
        if pgrp != Some(group) || comm == "tauri-driver" || comm.starts_with("WebKitWebDriver") {
            continue;
        }
        let rollup = std::fs::read_to_string(e.path().join("smaps_rollup")).unwrap_or_default();
        let pss = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        out.push((comm, pss));
    }
    out.sort();
    out
}

/// Runs `action` (JS) in the page and returns the milliseconds from just
/// before it to the first frame painted once `done` (a JS expression) holds
/// (bounded at 10 s: -1).
async fn timed(c: &fantoccini::Client, action: &str, done: &str) -> f64 {
    let script = format!(
        r#"const finish = arguments[arguments.length - 1];
        const t0 = performance.now();
        {action}
        const check = () => {{
            if ({done}) {{
                requestAnimationFrame(() => finish(performance.now() - t0));
            }} else if (performance.now() - t0 > 10000) {{
                finish(-1);
            }} else {{
                setTimeout(check, 1);
            }}
        }};
        check();"#
    );
    c.execute_async(&script, vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap()
}

/// JS: the fleet table says it shows `n` rows and its first row in the page
/// has a name containing `part`.
fn table_shows(n: usize, part: &str) -> String {
    format!(
        "(document.getElementById('fleet-table') || {{dataset: {{}}}}).dataset.shown === '{n}' && ({n} === 0 || ((document.querySelector('#fleet-table .fleet-row') || {{dataset: {{}}}}).dataset.name || '').includes({part:?}))"
    )
}

struct Case {
    gateways: usize,
    first_row_ms: u128,
    all_rows_ms: u128,
    memory: Vec<(String, u64)>,
    filter: Vec<f64>,
    sort: Vec<f64>,
    switch: Vec<f64>,
}

/// One cold start of the app on `data` (a fleet of `n`), then `rounds` of
/// each interaction.
async fn run_case(data: &Path, names: &[String], rounds: usize) -> Case {
    let n = names.len();
    let desktop = Desktop::start(None, data).expect("Xvfb, tauri-driver and WebKitWebDriver");
    let t = Instant::now();
    let c = desktop.connect().await;
    // The first row in the page, then the table's count and the summary
    // saying every gateway answered.
    let first = "(() => { const r = document.querySelector('#fleet-table .fleet-row'); return !!r && r.offsetParent !== null; })()";
    let every = format!(
        "{} && (document.getElementById('fleet-summary') || {{}}).textContent?.startsWith('{n} gateways, {n} reachable')",
        table_shows(n, "")
    );
    let mut first_row_ms = None;
    let all_rows_ms = loop {
        let (f, e) = (
            c.execute(&format!("return {first};"), vec![])
                .await
                .unwrap(),
            c.execute(&format!("return !!({every});"), vec![])
                .await
                .unwrap(),
        );
        if f == json!(true) && first_row_ms.is_none() {
            first_row_ms = Some(t.elapsed().as_millis());
        }
        if e == json!(true) {
            break t.elapsed().as_millis();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not every row after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Let a few pushes and the history sampler run before memory is read.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let memory = memory(desktop.group());
    let (mut filter, mut sort, mut switch) = (vec![], vec![], vec![]);
    let set_filter = |v: &str| {
        format!(
            "const f = document.getElementById('fleet-filter'); f.value = {v:?}; f.dispatchEvent(new Event('input', {{bubbles: true}}));"
        )
    };
    // The filter matches names (and tags: none here has a "1").
    let matching = names.iter().filter(|n| n.contains('1')).count();
    let header =
        |i: usize| format!("document.querySelectorAll('#fleet-table thead th')[{i}].click();");
    for _ in 0..rounds {
        filter.push(timed(&c, &set_filter("1"), &table_shows(matching, "1")).await);
        filter.push(timed(&c, &set_filter(""), &table_shows(n, "")).await);
        // Status, then Gateway (name): th 0 is the bulk checkbox.
        sort.push(timed(&c, &header(2), &table_shows(n, "")).await);
        sort.push(timed(&c, &header(1), &table_shows(n, "")).await);
        timed(
            &c,
            "document.getElementById('nav-connections').click();",
            "document.getElementById('fleet-view').style.display === 'none'",
        )
        .await;
        switch.push(
            timed(
                &c,
                "document.getElementById('nav-fleet').click();",
                &format!("document.getElementById('fleet-view').style.display === '' && {first}"),
            )
            .await,
        );
    }
    c.close().await.unwrap();
    drop(desktop);
    Case {
        gateways: n,
        first_row_ms: first_row_ms.unwrap_or(all_rows_ms),
        all_rows_ms,
        memory,
        filter,
        sort,
        switch,
    }
}

fn p(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn line(v: &[f64]) -> String {
    let failed = v.iter().any(|x| *x < 0.0);
    format!(
        "p50 {:.0} / max {:.0} ms{}",
        p(v, 0.5),
        p(v, 1.0),
        if failed { " (some never matched)" } else { "" }
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let fleet = arg("--fleet", 200);
    let rounds = arg("--rounds", 10);
    let mut cases = Vec::new();

    // 1: a newcomer's first start, an empty data directory (the embedded
    // gateway is started and added).
    let one = std::env::temp_dir().join(format!("vdi-console-bench-1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&one);
    std::fs::create_dir_all(&one).unwrap();
    cases.push(run_case(&one, &["local (embedded)".to_string()], rounds).await);

    // N: real gateways on loopback, in the console's inventory beforehand.
    let many = std::env::temp_dir().join(format!("vdi-console-bench-n-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&many);
    std::fs::create_dir_all(&many).unwrap();
    let mut gws = Vec::new();
    let mut names = Vec::new();
    {
        let c = Console::with_secrets(&many, Secrets::file(many.join("secrets.json"))).unwrap();
        for i in 0..fleet {
            let ip = IpAddr::from([127, 0, 64, (i + 1) as u8]);
            assert!(i < 254, "at most 254 gateways");
            let g = LocalGateway::start_on(ip, json!({}), options())
                .await
                .unwrap();
            c.add(&GatewayDraft {
                name: format!("gw-{:03}", i + 1),
                api_url: g.handle.api_url(),
                api_key: Some(g.handle.api_key().into()),
                cli_key: Some(g.handle.cli_key().into()),
                tags: vec![if i % 2 == 0 { "even" } else { "odd" }.into()],
                ..Default::default()
            })
            .unwrap();
            gws.push(g);
            names.push(format!("gw-{:03}", i + 1));
        }
    }
    cases.push(run_case(&many, &names, rounds).await);

    let mut out = format!(
        "## Console window: cold start, memory, interactions ({} app, {} rounds)\n\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        rounds
    );
    out.push_str("| gateways | first fleet row | every gateway answered | memory (PSS): total, by process | filter | sort | switch to the fleet view |\n|---|---|---|---|---|---|---|\n");
    for c in &cases {
        let total: u64 = c.memory.iter().map(|m| m.1).sum();
        let by: Vec<String> = c
            .memory
            .iter()
            .map(|(n, kb)| format!("{n} {:.0}", *kb as f64 / 1024.0))
            .collect();
        out.push_str(&format!(
            "| {} | {} ms | {} ms | **{:.0} MiB**: {} | {} | {} | {} |\n",
            c.gateways,
            c.first_row_ms,
            c.all_rows_ms,
            total as f64 / 1024.0,
            by.join(", "),
            line(&c.filter),
            line(&c.sort),
            line(&c.switch),
        ));
    }
    out.push_str("\nFrom the WebDriver session's start (tauri-driver launching the app) to the first fleet row in the page, and to the table counting every gateway with the summary saying all answered (the table renders only the rows in view); memory after 10 s, PSS of the app and its WebKit processes (the WebDriver tools not counted); each interaction from just before the event to the first frame painted once the table shows the rows it should.\n");
    println!("{out}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("console.md"), &out).unwrap();
    for g in gws {
        g.handle.stop().await;
    }
    let _ = std::fs::remove_dir_all(&one);
    let _ = std::fs::remove_dir_all(&many);
}
