//! The `vdi-console` binary itself, every subcommand, with the OS keyring
//! (a private Secret Service, see `common`) and without one (a session bus
//! address that leads nowhere: the warned fallback file). A gateway to talk
//! to is the CLI's own `embedded` subcommand, run as a second process.

mod common;

use common::{TempDir, lookup, session};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The embedded gateway has a fixed address (127.0.77.1): one at a time in
/// this process (nextest runs each test in its own process, in the
/// `desktop` group with the app's window tests, which run it too).
static EMBEDDED: Mutex<()> = Mutex::new(());

struct Cli<'a> {
    data: &'a Path,
    home: &'a Path,
    bus: String,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// A failure with `code`, said in one line, without a panic.
    fn failed_with(&self, code: &str) -> &Self {
        assert!(!self.ok, "expected {code}: {}", self.stdout);
        assert!(
            self.stderr.contains(&format!("({code})\n")),
            "expected {code}: {}",
            self.stderr
        );
        self
    }
}

impl Cli<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vdi-console"));
        c.arg("--data")
            .arg(self.data)
            .args(args)
            .env_remove("VDI_CONSOLE_DATA")
            .env_remove("VDI_API_KEY")
            .env_remove("VDI_CLI_KEY")
            // Never the machine's ~/.ssh/config or bundled package.
            .env("HOME", self.home)
            .env("VDI_GATEWAY_DEB", self.home.join("no-such.deb"))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus);
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("the binary runs");
        let run = Run {
            ok: out.status.success(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        };
        assert!(
            !run.stderr.contains("panicked"),
            "vdi-console {args:?} panicked: {}",
            run.stderr
        );
        run
    }

    /// Like `run`, with `input` on stdin.
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert!(r.ok, "vdi-console {args:?}: {}{}", r.stdout, r.stderr);
        r
    }

    /// `vdi-console embedded` until [`Embedded::stop`], and its fleet entry.
    fn embedded(&self) -> (Embedded, Value) {
        let mut child = self
            .command(&["embedded"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The entry is printed once the gateway listens.
        let mut text = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        while !text.ends_with("}\n") {
            let mut line = String::new();
            assert_ne!(out.read_line(&mut line).unwrap(), 0, "ended early: {text}");
            text.push_str(&line);
        }
        let entry: Value = serde_json::from_str(&text).unwrap();
        (Embedded(child), entry)
    }
}

struct Embedded(Child);

impl Embedded {
    /// Ctrl-C: the gateway stops and the command ends well.
    fn stop(mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let status = self.0.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.0.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "embedded: {status}: {err}");
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every subcommand once; returns the API key `add` stored for `gw-cli`
/// and its id, still in the fleet.
fn every_subcommand(cli: &Cli) -> (i64, String) {
    assert_eq!(cli.ok(&["list"]).json(), Value::Array(vec![]));
    // An empty fleet: `embedded` starts the console's own gateway and adds it.
    let _one = EMBEDDED.lock().unwrap_or_else(|e| e.into_inner());
    let (embedded, entry) = cli.embedded();
    let e = entry["id"].to_string();
    assert_eq!(
        entry["api_url"],
        "http://127.0.0.1:8000".replace("127.0.0.1", "127.0.77.1")
    );
    assert_eq!(
        (&entry["has_api_key"], &entry["has_cli_key"]),
        (&Value::Bool(true), &Value::Bool(true))
    );

    let key = format!("api-{}", uuid::Uuid::new_v4().simple());
    // Keys never on the command line (nor in the variables that carried
    // them): refused with what to use instead, nothing added.
    for flag in ["--api-key", "--cli-key"] {
        let r = cli.run(&[
            "add",
            "--name",
            "gw-argv",
            "--api-url",
            "http://127.0.0.1:9",
            flag,
            &key,
        ]);
        r.failed_with("invalid_input");
        assert!(
            r.stderr.contains("visible to every user")
                && r.stderr.contains(&format!("{flag}-file")),
            "{}",
            r.stderr
        );
        assert!(
            !r.stderr.contains(&key),
            "the refused key is not echoed: {}",
            r.stderr
        );
    }
    let r = {
        let out = cli
            .command(&["add", "--name", "gw-env", "--api-url", "http://127.0.0.1:9"])
            .env("VDI_API_KEY", &key)
            .output()
            .unwrap();
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(r.contains("VDI_API_KEY is no longer read"), "{r}");
    // From a file (its line end dropped) and from stdin.
    let key_file = cli.home.join("api.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let added = cli
        .ok(&[
            "add",
            "--name",
            "gw-cli",
            "--api-url",
            "http://127.0.0.1:9",
            "--api-key-file",
            key_file.to_str().unwrap(),
            "--tag",
            "lab",
        ])
        .json();
    assert_eq!(added["has_api_key"], true, "{added}");
    assert_eq!(added["has_cli_key"], false, "{added}");
    let id = added["id"].as_i64().unwrap();
    let piped = cli.run_with_stdin(
        &[
            "add",
            "--name",
            "gw-stdin",
            "--api-url",
            "http://127.0.0.1:9",
            "--cli-key-file",
            "-",
        ],
        "cli-from-stdin\n",
    );
    assert!(piped.ok, "{}", piped.stderr);
    let piped = piped.json();
    assert_eq!(
        (&piped["has_api_key"], &piped["has_cli_key"]),
        (&Value::Bool(false), &Value::Bool(true))
    );
    cli.ok(&["remove", &piped["id"].to_string()]);
    cli.run(&[
        "add",
        "--name",
        "gw-empty",
        "--api-url",
        "http://127.0.0.1:9",
        "--api-key-file",
        "/dev/null",
    ])
    .failed_with("invalid_input");
    let other = cli
        .ok(&[
            "add",
            "--name",
            "gw-gone",
            "--api-url",
            "http://127.0.0.1:9",
        ])
        .json();
    cli.ok(&["remove", &other["id"].to_string()]);
    cli.run(&["remove", &other["id"].to_string()])
        .failed_with("not_found");
    let names: Vec<Value> = cli
        .ok(&["list"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].clone())
        .collect();
    assert_eq!(names, ["gw-cli", "local (embedded)"]);
    cli.run(&["add", "--name", "bad", "--api-url", "ftp://x"])
        .failed_with("invalid_input");

    // The API side, through a second process reading the same inventory and secrets.
    let settings = cli.ok(&["settings", &e]).json();
    assert_eq!(settings["api_key"], "***", "keys are masked");
    assert_eq!(
        settings["internal_addrs"],
        serde_json::json!(["127.0.77.1"])
    );
    let conns = cli.ok(&["connections", &e]).json();
    assert!(conns["tunnels"].is_array(), "{conns}");
    let (rows, summary) = match cli.ok(&["overview"]).json() {
        Value::Array(mut v) if v.len() == 2 => {
            let s = v.pop().unwrap();
            (v.pop().unwrap(), s)
        }
        other => panic!("{other}"),
    };
    assert_eq!(summary["gateways"], 2, "{summary}");
    assert_eq!(summary["reachable"], 1, "{summary}");
    let up: Vec<bool> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reachable"].as_bool().unwrap())
        .collect();
    assert_eq!(up.iter().filter(|u| **u).count(), 1, "{rows}");
    cli.run(&["settings", &id.to_string()])
        .failed_with("unreachable");
    embedded.stop();

    // The SSH side: the entry has no SSH host, which each command says plainly.
    for args in [
        vec!["services", &e],
        vec!["service", &e, "haproxy", "restart"],
        vec!["journal", &e, "vdi-gateway", "-n", "5"],
        vec!["config", &e, "keepalived"],
        vec!["trust", &e, "10.0.0.1", "SHA256:abc"],
    ] {
        let r = cli.run(&args);
        r.failed_with("invalid_input");
        assert!(
            r.stderr.contains("no SSH host is set"),
            "{args:?}: {}",
            r.stderr
        );
    }
    // Following ends at once with the reason (nothing to retry).
    let followed = cli.ok(&["journal", &e, "haproxy", "--follow"]);
    let ended: Value = serde_json::from_str(followed.stdout.trim()).unwrap();
    assert_eq!(ended["kind"], "ended", "{ended}");
    assert!(
        ended["reason"].as_str().unwrap().contains("no SSH host"),
        "{ended}"
    );
    cli.run(&["service", &e, "sshd", "restart"]);
    cli.run(&["deploy", &e]).failed_with("no_package");
    let missing = cli.home.join("missing.deb");
    cli.run(&["deploy", &e, "--package", missing.to_str().unwrap()])
        .failed_with("invalid_input");

    // What was tried is in the audit log, as JSON and as CSV.
    let log = cli.ok(&["audit"]).json();
    let actions: Vec<(&str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["result"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("service", "failed")), "{actions:?}");
    let csv = cli.ok(&["audit", "--csv"]).stdout;
    assert!(
        csv.starts_with("id,at,os_user,gateway,host,action,params,result,detail\n"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        log.as_array().unwrap().len() + 1,
        "{csv}"
    );
    // With other gateways and no embedded one, `embedded` refuses.
    let other = TempDir::new();
    let other = Cli {
        data: &other.0,
        home: cli.home,
        bus: cli.bus.clone(),
    };
    other.ok(&["add", "--name", "gw", "--api-url", "http://127.0.0.1:9"]);
    other.run(&["embedded"]).failed_with("embedded");
    (id, key)
}

#[test]
fn every_subcommand_without_a_keyring() {
    let home = TempDir::new();
    let data = home.0.join("data");
    let cli = Cli {
        data: &data,
        home: &home.0,
        bus: format!("unix:path={}", home.0.join("no-bus").display()),
    };
    let r = cli.ok(&["list"]);
    // Said plainly, with the probe's reason (here: no session bus at that address).
    assert!(
        r.stderr
            .contains("warning: No OS keyring is available (the keyring probe failed: "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("secrets.json"), "{}", r.stderr);
    let (_, key) = every_subcommand(&cli);
    // The warned fallback: an owner-only file.
    let file = std::fs::read_to_string(data.join("secrets.json")).unwrap();
    assert!(file.contains(&key), "{file}");
}

#[test]
fn every_subcommand_with_a_keyring() {
    let Some(s) = session() else { return };
    let data = s.home.join("data");
    let cli = Cli {
        data: &data,
        home: &s.home,
        bus: s.address.clone(),
    };
    let r = cli.ok(&["list"]);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let (id, key) = every_subcommand(&cli);
    assert_eq!(
        lookup(&s, &format!("gateway-{id}/api_key")).as_deref(),
        Some(key.as_str())
    );
    assert!(
        !data.join("secrets.json").exists(),
        "no fallback file with a keyring"
    );
}
