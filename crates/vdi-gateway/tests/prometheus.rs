//! The monitoring we ship, against the real tools (Debian's `prometheus`
//! package: `prometheus` and `promtool`, installed by scripts/setup):
//! `promtool check metrics` on a gateway's /metrics, `promtool check rules` and
//! `promtool test rules` on packaging/monitoring/alerts.yml, and a real
//! Prometheus server on loopback scraping a gateway that carries traffic,
//! where every query of the Grafana dashboard returns data and every alert
//! rule evaluates. Under CI=true a missing tool is a failure, not a skip.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long Prometheus may take to start, scrape, or show data.
const WAIT: Duration = Duration::from_secs(60);

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/monitoring")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `promtool` and `prometheus`, or None (a skip) outside CI.
fn tools() -> Option<(PathBuf, PathBuf)> {
    match (on_path("promtool"), on_path("prometheus")) {
        (Some(t), Some(p)) => Some((t, p)),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool and prometheus are needed under CI (bash scripts/setup installs them)"
            );
            eprintln!("SKIPPED: promtool/prometheus not installed (bash scripts/setup)");
            None
        }
    }
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn alert_rules_are_valid_and_fire_when_they_should() {
    let Some((promtool, _)) = tools() else { return };
    let dir = monitoring();
    let checked = run_ok(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(dir.join("alerts.yml")),
    );
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
    // Relative paths in the test file are the test file's directory's.
    let tested = run_ok(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "alerts.test.yml",
    ]));
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert of the rules has a test.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "{name} has no test in alerts.test.yml"
            );
        }
    }
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(binary: &Path, target: &str, api_key: &str) -> Self {
        let dir = TempDir::new();
        // A free port: bound by us, released, then Prometheus' (a race with
        // another program is possible but unlikely on loopback).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rules = monitoring().join("alerts.yml");
        let config = format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "{rules}"
scrape_configs:
  - job_name: vdi-gateway
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: "{api_key}"
    static_configs:
      - targets: ["{target}"]
"#,
            rules = rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("prometheus starts");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/-/ready` (bounded).
    async fn ready(&mut self, http: &reqwest::Client) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            let r = http.get(format!("{}/-/ready", self.url)).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query's result vector.
    async fn query(&self, http: &reqwest::Client, q: &str) -> Vec<Value> {
        let r: Value = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", q)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "{q}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    async fn api(&self, http: &reqwest::Client, path: &str) -> Value {
        let r: Value = http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "{path}: {r}");
        r["data"].clone()
    }
}

/// Whether a query's result holds a number (not only NaN: a quantile of no
/// observations).
fn has_data(result: &[Value]) -> bool {
    result
        .iter()
        .any(|s| s["value"][1].as_str().is_some_and(|v| v != "NaN"))
}

/// Every query of the dashboard with Grafana's variables as a viewer would
/// have them: the job, all nodes, a rate window of a minute.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            if p["type"] == "row" {
                walk(p["panels"].as_array().unwrap(), out);
                continue;
            }
            let title = p["title"].as_str().unwrap().to_string();
            let targets = p["targets"].as_array().expect("a panel has targets");
            assert!(!targets.is_empty(), "{title} has no query");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "5m")
                    .replace("$instance", ".*")
                    .replace("$job", "vdi-gateway");
                assert!(!expr.contains('$'), "a variable left in {expr}");
                out.push((title.clone(), expr));
            }
        }
    }
    walk(dash["panels"].as_array().unwrap(), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_gateway_and_every_panel_has_data() {
    let Some((promtool, prometheus)) = tools() else {
        return;
    };
    let g = start(json!({})).await;
    let http = reqwest::Client::new();

    // The exposition passes the reference parser and its linter.
    let text = g.metrics().await;
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics ({}): {}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let target = g.base.trim_start_matches("http://").trim_end_matches('/');
    let mut prom = Prometheus::start(&prometheus, target, &g.api_key);
    prom.ready(&http).await;
    poll(&prom, &http, r#"up{job="vdi-gateway"} == 1"#).await;

    // Traffic after the first scrape, so every rate has something to show.
    let mut desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (s, opened) = g.open(desk.addr, Some("vm-1")).await;
    assert_eq!(s, 200, "{opened}");
    let (s, again) = g.open(desk.addr, Some("vm-1")).await;
    assert_eq!((s, &again["id"]), (200, &opened["id"]), "reused");
    let tunnel = SocketAddr::new(g.ip, opened["port"].as_u64().unwrap() as u16);
    let data = random_bytes(1 << 20);
    let back = echo_round_trip(TcpStream::connect(tunnel).await.unwrap(), &data).await;
    assert_eq!(sha(&back), sha(&data));
    // A second stream, ended from outside.
    let mut live = TcpStream::connect(tunnel).await.unwrap();
    live.write_all(b"hello").await.unwrap();
    let mut hello = [0u8; 5];
    live.read_exact(&mut hello).await.unwrap();
    let (s, _) = g
        .post(
            "/v3/disconnect/",
            "api_key",
            &g.api_key,
            json!({"tunnel_id": opened["id"]}),
        )
        .await;
    assert_eq!(s, 200);
    desk.wait_ended(2).await;
    // Refused: a target outside the allow-list, and a wrong key.
    let (s, _) = g
        .open("10.255.0.1:5900".parse().unwrap(), Some("vm-2"))
        .await;
    assert_eq!(s, 403);
    let (s, _) = g.get("/v3/get_connections/", "not-the-key").await;
    assert_eq!(s, 401);

    // What the traffic left, seen through Prometheus.
    poll(
        &prom,
        &http,
        r#"vdi_gateway_connections_refused_total{reason="allow_list"} == 1"#,
    )
    .await;
    poll(
        &prom,
        &http,
        r#"vdi_gateway_stream_duration_seconds_count{kind="tunnel",end="stopped"} == 1"#,
    )
    .await;
    poll(
        &prom,
        &http,
        r#"vdi_gateway_stream_size_bytes_sum{direction="to_client"} == 1048581"#,
    )
    .await;
    poll(
        &prom,
        &http,
        r#"vdi_gateway_tunnel_setup_duration_seconds_count{result="reused"} == 1"#,
    )
    .await;

    // Every query of every dashboard panel returns data.
    let queries = dashboard_queries();
    assert!(queries.len() >= 24, "{} queries", queries.len());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut missing: Vec<(String, String)> = queries;
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for (title, q) in missing {
            if !has_data(&prom.query(&http, &q).await) {
                still.push((title, q));
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(missing.is_empty(), "panels without data: {missing:#?}");

    // The alert rules load and evaluate on real data, and none fires for a
    // healthy gateway.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let groups = prom.api(&http, "/api/v1/rules").await;
        let rules: Vec<Value> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        assert_eq!(rules.len(), 9, "{groups}");
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rules not evaluated: {groups}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alerts = prom.api(&http, "/api/v1/alerts").await;
    let firing: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(firing.is_empty(), "{firing:#?}");

    drop(prom);
    g.stop().await;
}

/// Polls a query until it returns data (bounded).
async fn poll(prom: &Prometheus, http: &reqwest::Client, q: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = prom.query(http, q).await;
        if has_data(&r) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no data for {q}:\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
