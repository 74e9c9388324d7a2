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

/// A timed interaction: milliseconds from just before the event to the
/// page holding what it should (its work: the event, the signals, the DOM
/// changes) and to the end of the first frame rendered after that (style,
/// layout and paint of the new rows included).
#[derive(Clone, Copy)]
struct Timing {
    work: f64,
    painted: f64,
}

/// Runs `action` (JS) in the page and times it until `done` (a JS
/// expression) holds and the next frame is rendered (bounded at 10 s: -1).
async fn timed(c: &fantoccini::Client, action: &str, done: &str) -> Timing {
    // A task queued from a rAF callback runs after that frame's rendering.
    let script = format!(
        r#"const finish = arguments[arguments.length - 1];
        const t0 = performance.now();
        {action}
        const check = () => {{
            if ({done}) {{
                const work = performance.now() - t0;
                requestAnimationFrame(() => setTimeout(() => finish([work, performance.now() - t0]), 0));
            }} else if (performance.now() - t0 > 10000) {{
                finish([-1, -1]);
            }} else {{
                setTimeout(check, 1);
            }}
        }};
        check();"#
    );
    let v = c.execute_async(&script, vec![]).await.unwrap();
    let at = |i: usize| v[i].as_f64().unwrap();
    Timing {
        work: at(0),
        painted: at(1),
    }
}

/// JS: the fleet table says it shows `n` rows and its first row in the page
/// has a name containing `part`.
fn table_shows(n: usize, part: &str) -> String {
    table_first(n, &format!("name.includes({part:?})"))
}

/// JS: the fleet table says it shows `n` rows and `first_ok` (JS, on `name`)
/// holds for its first row's name.
fn table_first(n: usize, first_ok: &str) -> String {
    format!(
        "(document.getElementById('fleet-table') || {{dataset: {{}}}}).dataset.shown === '{n}' && ({n} === 0 || (name => {first_ok})((document.querySelector('#fleet-table .fleet-row') || {{dataset: {{}}}}).dataset.name || ''))"
    )
}

struct Case {
    gateways: usize,
    first_row_ms: u128,
    all_rows_ms: u128,
    memory: Vec<(String, u64)>,
    filter: Vec<Timing>,
    sort: Vec<Timing>,
    switch: Vec<Timing>,
}

/// One cold start of the app on `data` (a fleet of `n`), then `rounds` of
/// each interaction.
/// `busy`: the gateways with a tunnel open (first when sorted by tunnels).
async fn run_case(data: &Path, names: &[String], busy: &[String], rounds: usize) -> Case {
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
    // Sorted by tunnels, a busy gateway comes first; by name, the first name.
    let busy_first = table_first(
        n,
        &format!("{}.includes(name)", serde_json::to_string(busy).unwrap()),
    );
    let name_first = table_first(n, &format!("name === {:?}", names.iter().min().unwrap()));
    for _ in 0..rounds {
        filter.push(timed(&c, &set_filter("1"), &table_shows(matching, "1")).await);
        filter.push(timed(&c, &set_filter(""), &table_shows(n, "")).await);
        // Tunnels, then Gateway (name): th 0 is the bulk checkbox. Each
        // sort changes every row in view.
        sort.push(timed(&c, &header(5), &busy_first).await);
        sort.push(timed(&c, &header(1), &name_first).await);
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

/// "painted p50 / max (page's work p50)".
fn line(v: &[Timing]) -> String {
    let painted: Vec<f64> = v.iter().map(|t| t.painted).collect();
    let work: Vec<f64> = v.iter().map(|t| t.work).collect();
    let failed = painted.iter().any(|x| *x < 0.0);
    format!(
        "p50 {:.0} / max {:.0} ms (work p50 {:.0} ms){}",
        p(&painted, 0.5),
        p(&painted, 1.0),
        p(&work, 0.5),
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
    let local = ["local (embedded)".to_string()];
    cases.push(run_case(&one, &local, &local, rounds).await);

    // N: real gateways on loopback, in the console's inventory beforehand.
    let many = std::env::temp_dir().join(format!("vdi-console-bench-n-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&many);
    std::fs::create_dir_all(&many).unwrap();
    let mut gws = Vec::new();
    let mut names = Vec::new();
    // Every gateway whose name ends in 7 holds a tunnel: sorting by tunnels
    // moves them first.
    let mut busy = Vec::new();
    {
        let c = Console::with_secrets(&many, Secrets::file(many.join("secrets.json"))).unwrap();
        for i in 0..fleet {
            let ip = IpAddr::from([127, 0, 64, (i + 1) as u8]);
            assert!(i < 254, "at most 254 gateways");
            // Tunnels stay reserved for the whole run.
            let g = LocalGateway::start_on(ip, json!({"tunnel_ttl_secs": 3600}), options())
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
            let name = format!("gw-{:03}", i + 1);
            if name.ends_with('7') {
                let req =
                    serde_json::from_value(json!({"target_host": "127.0.0.1", "target_port": 9}))
                        .unwrap();
                g.handle
                    .gateway()
                    .open_tunnel(req, "127.0.0.1:40000".parse().unwrap())
                    .await
                    .unwrap();
                busy.push(name.clone());
            }
            gws.push(g);
            names.push(name);
        }
    }
    cases.push(run_case(&many, &names, &busy, rounds).await);

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
    out.push_str("\nFrom the WebDriver session's start (tauri-driver launching the app) to the first fleet row in the page, and to the table counting every gateway with the summary saying all answered (the table renders only the rows in view); memory after 10 s, PSS of the app and its WebKit processes (the WebDriver tools not counted); each interaction from just before the event to the end of the first frame rendered once the table shows the rows it should (style, layout and paint included), and in brackets to the page holding those rows (the event, the signals and the DOM changes).\n");
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
