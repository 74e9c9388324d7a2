//! The real window, driven through WebDriver: tauri-driver + WebKitWebDriver
//! under Xvfb. The console starts with an empty data directory, so it runs its
//! embedded gateway; the test sees it online, opens a demo tunnel, sees it in
//! the connections view, disconnects it and sees it go. A screenshot of every
//! view is saved in target/screenshots/ (copied to docs/screenshots/ by hand).

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_vdi-console-app");

struct Killed(Child, &'static str);
impl Drop for Killed {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: tauri-driver then stops WebKitWebDriver too.
        unsafe { libc_kill(self.0.id() as i32, 15) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_port(port: u16, what: &str) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces an input's value the way typing would (WebDriver's clear() fires no
/// `input` event in WebKit, so the page would not see the change).
async fn set_value(c: &fantoccini::Client, e: &fantoccini::elements::Element, text: &str) {
    let el = serde_json::to_value(e).unwrap();
    c.execute(
        "arguments[0].value = ''; arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
        vec![el],
    )
    .await
    .unwrap();
    e.send_keys(text).await.unwrap();
}

/// Clicks element `id` after scrolling it to the middle of the window: under
/// Xvfb without a window manager, WebKitGTK delivers mousedown/mouseup but no
/// `click` in the bottom ~30 px of the window (checked with a real X click
/// through xdotool too), so a button there would never be pressed.
async fn click(c: &fantoccini::Client, id: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    c.execute(
        "arguments[0].scrollIntoView({block: 'center'});",
        vec![serde_json::to_value(&e).unwrap()],
    )
    .await
    .unwrap();
    e.click().await.unwrap();
}

/// Polls the text of element `id` until `done` holds (bounded: 10 s).
async fn wait_text(c: &fantoccini::Client, id: &str, done: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let text = c.find(Locator::Id(id)).await.unwrap().text().await.unwrap();
        if done(&text) {
            return text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "#{id} still says: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn console_window_end_to_end() {
    let missing: Vec<&str> = ["Xvfb", "WebKitWebDriver", "tauri-driver"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "missing under CI: {missing:?}"
        );
        eprintln!("SKIPPED: missing {missing:?} (scripts/test installs them)");
        return;
    }
    let display = format!(":{}", 90 + std::process::id() % 100);
    let _xvfb = Killed(
        Command::new("Xvfb")
            .args([
                display.as_str(),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        "Xvfb",
    );
    let data = std::env::temp_dir().join(format!("vdi-window-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let port = 4444 + (std::process::id() % 1000) as u16 * 2;
    let _driver = Killed(
        Command::new("tauri-driver")
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &(port + 1).to_string(),
            ])
            .env("DISPLAY", &display)
            .env("VDI_CONSOLE_DATA", &data)
            .spawn()
            .unwrap(),
        "tauri-driver",
    );
    wait_port(port, "tauri-driver");
    let caps = json!({"browserName": "wry", "tauri:options": {"application": APP}});
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with the app");

    // The embedded gateway shows up online in the fleet view.
    let row = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(
            r#".fleet-row[data-name="local (embedded)"] .dot.up"#,
        ))
        .await
        .expect("the embedded gateway online");
    drop(row);
    let summary = c
        .find(Locator::Id("fleet-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.starts_with("1 gateways, 1 reachable"), "{summary}");
    std::fs::write(shots().join("fleet.png"), c.screenshot().await.unwrap()).unwrap();

    // A demo tunnel, seen live in the connections view.
    click(&c, "demo-tunnel").await;
    let notice = c
        .wait()
        .for_element(Locator::Id("notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(notice.starts_with("Demo tunnel"), "{notice}");
    // A cell, not the row: WebKitWebDriver does not click <tr> elements.
    c.find(Locator::Css(".fleet-row td"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".tunnel-row"))
        .await
        .expect("the tunnel listed");
    let text = c
        .find(Locator::Id("connections-table"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("demo-desktop"), "{text}");
    std::fs::write(
        shots().join("connections.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    // The filter hides what does not match and shows it again.
    let filter = c.find(Locator::Id("connections-filter")).await.unwrap();
    filter.send_keys("no-such-vm").await.unwrap();
    let t = Instant::now();
    while c.find(Locator::Css(".tunnel-row")).await.is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the filter did not hide the tunnel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set_value(&c, &filter, "demo").await;
    c.wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(".tunnel-row"))
        .await
        .expect("shown again");

    // Disconnect it (with confirmation) and see it go.
    c.find(Locator::Css(".disconnect-tunnel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.expect("a confirmation dialog");
    let t = Instant::now();
    while c.find(Locator::Css(".tunnel-row")).await.is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the tunnel is still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = c
        .find(Locator::Id("connections-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(s, "0 tunnels, 0 streams");

    // Settings: a bad value is refused inline by the gateway's own rules; a good
    // one is applied and found changed on the gateway.
    click(&c, "nav-settings").await;
    let port = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("set-api_port"))
        .await
        .unwrap();
    set_value(&c, &port, "0").await;
    let errors = c
        .find(Locator::Css("#settings-table"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(errors.contains("0 is out of range 1..=65535"), "{errors}");
    let apply = c.find(Locator::Id("settings-apply")).await.unwrap();
    assert!(
        apply.attr("disabled").await.unwrap().is_some(),
        "Apply is disabled while a field is invalid"
    );
    click(&c, "settings-reset").await;
    let ttl = c
        .wait()
        .for_element(Locator::Id("set-tunnel_ttl_secs"))
        .await
        .unwrap();
    set_value(&c, &ttl, "300").await;
    let pending = c
        .find(Locator::Id("settings-pending"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        pending.contains("tunnel_ttl_secs: default → 300"),
        "{pending}"
    );
    std::fs::write(shots().join("settings.png"), c.screenshot().await.unwrap()).unwrap();
    click(&c, "settings-apply").await;
    wait_text(&c, "notice", |n| n == "Changed: tunnel_ttl_secs").await;
    let stored = vdi_gateway::Store::open(data.join("embedded/settings.db"))
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(stored.tunnel_ttl_secs, Some(300));

    // Fleet inventory from the UI: a bad URL is refused per field, a good one
    // adds a row (unreachable: nothing listens there), Remove takes it away.
    click(&c, "nav-fleet").await;
    click(&c, "add-gateway").await;
    c.wait()
        .for_element(Locator::Id("gw-name"))
        .await
        .unwrap()
        .send_keys("lab-1")
        .await
        .unwrap();
    let url = c.find(Locator::Id("gw-api_url")).await.unwrap();
    url.send_keys("ftp://10.0.0.1").await.unwrap();
    click(&c, "gateway-save").await;
    wait_text(&c, "gateway-form", |f| f.contains("must start with http")).await;
    set_value(&c, &url, "http://127.0.0.1:9").await;
    let typed = c
        .execute(
            "return document.getElementById('gw-api_url').value;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(typed, "http://127.0.0.1:9");
    click(&c, "gateway-save").await;
    if let Err(e) = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(r#".fleet-row[data-name="lab-1"] .dot.down"#))
        .await
    {
        std::fs::write(shots().join("failure.png"), c.screenshot().await.unwrap()).unwrap();
        panic!(
            "the new gateway is not listed as unreachable ({e}); see target/screenshots/failure.png"
        );
    }
    std::fs::write(shots().join("fleet-two.png"), c.screenshot().await.unwrap()).unwrap();
    c.find(Locator::Css(
        r#".fleet-row[data-name="lab-1"] .remove-gateway"#,
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.accept_alert().await.expect("a confirmation dialog");
    let t = Instant::now();
    while c
        .find(Locator::Css(r#".fleet-row[data-name="lab-1"]"#))
        .await
        .is_ok()
    {
        assert!(t.elapsed() < Duration::from_secs(10), "lab-1 still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
