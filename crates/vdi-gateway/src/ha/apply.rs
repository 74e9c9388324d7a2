//! The HA apply path (feature `daemon`): check with the real tools, write,
//! reload, verify, roll back. Only the host's daemon has it.

use super::{HaError, Rendered, files};
use crate::metrics::Metrics;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vdi_core::ha;
use vdi_core::settings as rules;
use vdi_wire::Settings;

/// How long a reloaded HAProxy may take to report the new configuration.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// One managed file: where it goes, how to check it, how to reload its service.
struct Target<'a> {
    what: &'static str,
    path: PathBuf,
    text: &'a str,
    check: fn(&Path) -> Command,
    reload: Vec<String>,
    /// HAProxy's admin socket and the digest it must report after a reload.
    verify: Option<(PathBuf, String)>,
}

fn haproxy_check(path: &Path) -> Command {
    let mut c = Command::new("haproxy");
    c.arg("-c").arg("-q").arg("-f").arg(path);
    c
}

fn keepalived_check(path: &Path) -> Command {
    let mut c = Command::new("keepalived");
    c.arg("-t").arg("-f").arg(path);
    c
}

fn targets<'a>(s: &Settings, r: &'a Rendered) -> [Target<'a>; 2] {
    [
        Target {
            what: "haproxy",
            path: PathBuf::from(rules::haproxy_cfg_path(s)),
            text: &r.haproxy,
            check: haproxy_check,
            reload: rules::haproxy_reload_cmd(s),
            verify: ha::haproxy_digest(&r.haproxy)
                .map(|d| (PathBuf::from(rules::haproxy_admin_socket(s)), d.to_string())),
        },
        Target {
            what: "keepalived",
            path: PathBuf::from(rules::keepalived_conf_path(s)),
            text: &r.keepalived,
            check: keepalived_check,
            reload: rules::keepalived_reload_cmd(s),
            verify: None,
        },
    ]
}

/// Checks both files with `haproxy -c` and `keepalived -t` (on temporary
/// copies next to them). A refusal counts as a failure of that tool in
/// `vdi_gateway_ha_apply_total`.
pub fn validate(s: &Settings, r: &Rendered, metrics: &Metrics) -> Result<(), HaError> {
    for t in targets(s, r) {
        let checked = files::temp_copy(&t.path, t.text.as_bytes()).and_then(|tmp| {
            let result = run((t.check)(&tmp));
            let _ = std::fs::remove_file(&tmp);
            result.map_err(|output| HaError::Invalid {
                what: t.what,
                output,
            })
        });
        if checked.is_err() {
            metrics.ha_apply(t.what, false);
        }
        checked?;
    }
    Ok(())
}

/// What `apply` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The services whose file changed and that were reloaded.
    pub reloaded: Vec<&'static str>,
}

/// Validates, writes and reloads what changed; on any failure puts every
/// file back as it was (bytes, mode, owner) and reloads again. A file that
/// cannot be read, or is not a plain file, stops the change before anything
/// is written. Each tool whose file changed counts one success (written,
/// reloaded, loaded) or failure in `vdi_gateway_ha_apply_total`.
pub fn apply(s: &Settings, r: &Rendered, metrics: &Metrics) -> Result<Applied, HaError> {
    validate(s, r, metrics)?;
    let mut before = Vec::new();
    for t in targets(s, r) {
        let original = files::read(&t.path).inspect_err(|_| metrics.ha_apply(t.what, false))?;
        before.push((t, original));
    }
    let mut done: Vec<(Target, Option<files::Original>)> = Vec::new();
    let mut applied = Applied::default();
    for (t, original) in before {
        if original
            .as_ref()
            .is_some_and(|o| o.bytes == t.text.as_bytes())
        {
            continue;
        }
        let step = original
            .as_ref()
            .map_or(Ok(()), |o| files::keep_previous(&t.path, o))
            .and_then(|()| files::replace(&t.path, t.text.as_bytes(), original.as_ref()))
            .and_then(|()| reload(&t.reload))
            .and_then(|()| match &t.verify {
                Some((socket, digest)) => verify_loaded(socket, digest),
                None => Ok(()),
            });
        let what = t.what;
        done.push((t, original));
        metrics.ha_apply(what, step.is_ok());
        if let Err(e) = step {
            roll_back(&done);
            return Err(e);
        }
        applied.reloaded.push(what);
    }
    Ok(applied)
}

fn roll_back(done: &[(Target, Option<files::Original>)]) {
    for (t, original) in done.iter().rev() {
        match files::restore(&t.path, original.as_ref()).and_then(|()| reload(&t.reload)) {
            Ok(()) => {
                tracing::warn!(file = %t.path.display(), "restored the previous configuration")
            }
            Err(e) => {
                tracing::error!(file = %t.path.display(), error = %e, "could not restore the previous configuration")
            }
        }
    }
}

/// Asks HAProxy (admin socket, `show env`) which configuration its workers
/// run, until it is the one just written.
fn verify_loaded(socket: &Path, digest: &str) -> Result<(), HaError> {
    let want = format!("{}={digest}", ha::CONFIG_DIGEST_VAR);
    let started = Instant::now();
    loop {
        let last = match admin_query(socket, &format!("show env {}\n", ha::CONFIG_DIGEST_VAR)) {
            Ok(answer) if answer.trim() == want => return Ok(()),
            Ok(answer) => format!("it still reports {}", answer.trim()),
            Err(e) => format!("admin socket {}: {e}", socket.display()),
        };
        if started.elapsed() >= LOAD_TIMEOUT {
            return Err(HaError::NotLoaded {
                secs: LOAD_TIMEOUT.as_secs(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn admin_query(socket: &Path, command: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(command.as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

fn reload(cmd: &[String]) -> Result<(), HaError> {
    let (program, args) = cmd
        .split_first()
        .expect("validated: a command is never empty");
    let mut c = Command::new(program);
    c.args(args);
    run(c).map_err(|output| HaError::Reload {
        command: cmd.join(" "),
        output,
    })
}

/// Runs a command; on failure returns its last output lines, shortened:
/// they reach the API caller, and a command's output may quote files.
fn run(mut c: Command) -> Result<(), String> {
    match c.stdin(std::process::Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let mut text = String::from_utf8_lossy(&o.stderr).to_string();
            text.push_str(&String::from_utf8_lossy(&o.stdout));
            Err(format!("{} ({})", shortened(&text), o.status))
        }
        Err(e) => Err(format!("cannot run {:?}: {e}", c.get_program())),
    }
}

/// The last three non-empty lines, each at most 160 characters.
fn shortened(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..]
        .iter()
        .map(|l| match l.char_indices().nth(160) {
            Some((at, _)) => format!("{}…", &l[..at]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_output_is_shortened() {
        let long = "x".repeat(1000);
        let text = format!("one\ntwo\n\nthree\n{long}\n");
        let s = super::shortened(&text);
        assert!(s.starts_with("two | three | xxx"), "{s}");
        assert!(s.chars().count() < 200, "{}", s.len());
    }
}
