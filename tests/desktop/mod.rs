//! The real window's test harness: Xvfb, tauri-driver (WebKitWebDriver) and
//! a WebDriver session with the app, optionally inside a network namespace
//! (to reach the test bed's hosts), plus the helpers the window tests share.
#![allow(dead_code)]

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const APP: &str = env!("CARGO_BIN_EXE_vdi-console-app");

/// A child started in its own process group (`spawn_group`); dropping it
/// stops the whole group: tauri-driver, the WebKitWebDriver it starts, the
/// app and WebKit's helpers, none left holding the test's output.
pub struct Killed(pub Child, pub &'static str);
impl Drop for Killed {
    fn drop(&mut self) {
        let group = -(self.0.id() as i32);
        // SIGTERM first: tauri-driver stops WebKitWebDriver, which closes the app.
        unsafe { libc_kill(group, 15) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if t.elapsed() >= Duration::from_secs(5) {
            eprintln!("{} did not stop; killing it", self.1);
        }
        // Whatever of the group is left, then until it is gone (bounded).
        unsafe { libc_kill(group, 9) };
        let _ = self.0.wait();
        let t = Instant::now();
        while group_alive(-group) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether a process of group `pgid` still runs (zombies hold no files and
/// are not ours to reap, so they do not count).
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp …: fields after the last ')'.
        let mut f = stat.rsplit_once(')').map_or("", |r| r.1).split_whitespace();
        let state = f.next().unwrap_or("Z");
        let pgrp = f.nth(1).and_then(|p| p.parse::<i32>().ok());
        state != "Z" && pgrp == Some(pgid)
    })
}

/// Spawns `cmd` as the leader of a new process group, for [`Killed`].
pub fn spawn_group(cmd: &mut Command, what: &'static str) -> Killed {
    use std::os::unix::process::CommandExt;
    Killed(cmd.process_group(0).spawn().unwrap(), what)
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn wait_port(port: u16, what: &str) {
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
pub async fn set_value(c: &fantoccini::Client, e: &fantoccini::elements::Element, text: &str) {
    let el = serde_json::to_value(e).unwrap();
    c.execute(
        "arguments[0].value = ''; arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
        vec![el],
    )
    .await
    .unwrap();
    // WebDriver refuses to send no keys: "" leaves the field cleared.
    if !text.is_empty() {
        e.send_keys(text).await.unwrap();
    }
}

/// Clicks element `id` after scrolling it to the middle of the window: under
/// Xvfb without a window manager, WebKitGTK delivers mousedown/mouseup but no
/// `click` in the bottom ~30 px of the window (checked with a real X click
/// through xdotool too), so a button there would never be pressed.
/// It waits (bounded: 10 s) for the element: a view just switched to may
/// not have rendered it yet.
pub async fn click(c: &fantoccini::Client, id: &str) {
    let e = wait_css(c, &format!("#{id}"), Duration::from_secs(10)).await;
    click_centred(c, e).await;
}

async fn click_centred(c: &fantoccini::Client, e: fantoccini::elements::Element) {
    c.execute(
        "arguments[0].scrollIntoView({block: 'center'});",
        vec![serde_json::to_value(&e).unwrap()],
    )
    .await
    .unwrap();
    e.click().await.unwrap();
}

/// Polls the text of element `id` until `done` holds (bounded: 10 s).
pub async fn wait_text(c: &fantoccini::Client, id: &str, done: impl Fn(&str) -> bool) -> String {
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

pub fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The X display of this process's [`Desktop`] (for [`screenshot`]).
static SCREEN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The app's window as PNG, read from the X server (`import`) rather than
/// through WebDriver: without GPU compositing (the app's default) WebKit's
/// snapshot for WebDriver can wait forever on a page with nothing to repaint.
/// With no window manager the window sits at the screen's corner; its rect
/// comes from WebDriver.
pub async fn screenshot(c: &fantoccini::Client) -> Vec<u8> {
    let display = SCREEN.lock().unwrap().clone().expect("a Desktop started");
    let (x, y, w, h) = c.get_window_rect().await.unwrap_or((0, 0, 1280, 800));
    let out = Command::new("import")
        .args(["-display", &display, "-window", "root", "-crop"])
        .arg(format!("{w}x{h}+{x}+{y}"))
        .arg("png:-")
        .output()
        .expect("import (imagemagick, scripts/setup installs it)");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`screenshot`] into `target/screenshots/NAME`.
pub async fn save_screenshot(c: &fantoccini::Client, name: &str) {
    std::fs::write(shots().join(name), screenshot(c).await).unwrap();
}

/// Xvfb and tauri-driver for one test; stopped on drop.
pub struct Desktop {
    pub port: u16,
    _driver: Killed,
    _xvfb: Killed,
}

impl Desktop {
    /// Starts them (tauri-driver inside network namespace `netns` if given,
    /// with `VDI_CONSOLE_DATA=data`). `None` (skip) only outside CI when a
    /// tool is missing.
    pub fn start(netns: Option<&str>, data: &Path) -> Option<Desktop> {
        Self::start_with(netns, data, &[])
    }

    /// Like [`Desktop::start`], with more environment for the app.
    pub fn start_with(netns: Option<&str>, data: &Path, env: &[(&str, &str)]) -> Option<Desktop> {
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
            return None;
        }
        let display = format!(":{}", 90 + std::process::id() % 100);
        *SCREEN.lock().unwrap() = Some(display.clone());
        let xvfb = spawn_group(
            Command::new("Xvfb")
                .args([
                    display.as_str(),
                    "-screen",
                    "0",
                    "1280x800x24",
                    "-nolisten",
                    "tcp",
                ])
                .stderr(Stdio::null()),
            "Xvfb",
        );
        // Ready when its socket exists (the app would fail to open a window).
        let x_socket = format!("/tmp/.X11-unix/X{}", &display[1..]);
        let t = Instant::now();
        while !std::path::Path::new(&x_socket).exists() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "Xvfb did not start ({x_socket})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let port = 4444 + (std::process::id() % 1000) as u16 * 2;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "tauri-driver"]);
                c
            }
            None => Command::new("tauri-driver"),
        };
        let driver = spawn_group(
            cmd.args([
                "--port",
                &port.to_string(),
                "--native-port",
                &(port + 1).to_string(),
            ])
            .env("DISPLAY", &display)
            .env("VDI_CONSOLE_DATA", data)
            .envs(env.iter().copied()),
            "tauri-driver",
        );
        Some(Desktop {
            port,
            _driver: driver,
            _xvfb: xvfb,
        })
    }

    /// The process group of tauri-driver and all it starts (WebKitWebDriver,
    /// the app, WebKit's processes).
    pub fn group(&self) -> i32 {
        self._driver.0.id() as i32
    }

    /// A WebDriver session with the app (call it from inside the namespace
    /// tauri-driver runs in).
    pub async fn connect(&self) -> fantoccini::Client {
        wait_port(self.port, "tauri-driver");
        // tauri-driver starts WebKitWebDriver and serves at once, without
        // waiting for it: a session asked for too early fails to connect.
        wait_port(self.port + 1, "WebKitWebDriver (started by tauri-driver)");
        let caps = json!({"browserName": "wry", "tauri:options": {"application": APP}});
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session with the app")
    }
}

/// Waits (bounded: `limit`) for an element matching `css`.
pub async fn wait_css(
    c: &fantoccini::Client,
    css: &str,
    limit: Duration,
) -> fantoccini::elements::Element {
    match c.wait().at_most(limit).for_element(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => {
            let name = format!("failure-{}.png", std::process::id());
            save_screenshot(c, &name).await;
            panic!("no {css} within {limit:?} ({e}); see target/screenshots/{name}");
        }
    }
}

/// Clicks the first element matching `css`, scrolled to the middle first (see [`click`]).
pub async fn click_css(c: &fantoccini::Client, css: &str) {
    let e = wait_css(c, css, Duration::from_secs(10)).await;
    click_centred(c, e).await;
}

/// Polls the text of the element matching `css` until `done` holds (bounded by `limit`).
pub async fn wait_css_text(
    c: &fantoccini::Client,
    css: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let t = Instant::now();
    loop {
        let text = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if done(&text) {
            return text;
        }
        if t.elapsed() > limit {
            let name = format!("failure-{}.png", std::process::id());
            save_screenshot(c, &name).await;
            panic!("{css} still says {text:?} after {limit:?}; see target/screenshots/{name}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The texts of every element matching `css`, read in one script: a view that
/// re-renders between a find and a read (a live push) cannot leave a stale
/// element behind.
pub async fn texts(c: &fantoccini::Client, css: &str) -> Vec<String> {
    let v = c
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);",
            vec![json!(css)],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Sets a `<select>` (by id) to `value` and fires its change event.
pub async fn choose(c: &fantoccini::Client, id: &str, value: &str) {
    c.execute(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![json!(id), json!(value)],
    )
    .await
    .unwrap();
}

/// Follows `unit`'s journal of `host` in the journal view, writes `marker`
/// there (a bed host) and waits (bounded) until the line is in the list.
pub async fn fresh_journal_line(
    c: &fantoccini::Client,
    bed: &std::sync::Arc<vdi_e2e::Bed>,
    host: &'static str,
    unit: &str,
    marker: &str,
) {
    click(c, "nav-journal").await;
    choose(c, "journal-unit", unit).await;
    wait_css_text(c, "#journal-status", Duration::from_secs(20), |t| {
        t.starts_with("following")
    })
    .await;
    let cmd = vdi_e2e::Bed::journal_line_cmd(unit, marker, 4);
    let writer = bed.clone();
    tokio::task::spawn_blocking(move || writer.sh(host, &cmd))
        .await
        .unwrap();
    wait_css_text(c, "#journal-list", Duration::from_secs(10), |t| {
        t.contains(marker)
    })
    .await;
}
