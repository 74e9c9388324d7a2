//! The HA apply path (feature `daemon`): check with the real tools, write,
//! reload, verify, roll back. Only the host's daemon has it.

use super::{HaError, Rendered};
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

/// Checks both files with `haproxy -c` and `keepalived -t` (on temp copies).
pub fn validate(s: &Settings, r: &Rendered) -> Result<(), HaError> {
    for t in targets(s, r) {
        let tmp = sibling(&t.path, ".vdi-check");
        write_file(&tmp, t.text)?;
        let result = run((t.check)(&tmp));
        let _ = std::fs::remove_file(&tmp);
        result.map_err(|output| HaError::Invalid {
            what: t.what,
            output,
        })?;
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
/// file back as it was and reloads again.
pub fn apply(s: &Settings, r: &Rendered) -> Result<Applied, HaError> {
    validate(s, r)?;
    let mut done: Vec<(Target, Option<String>)> = Vec::new();
    let mut applied = Applied::default();
    for t in targets(s, r) {
        let previous = std::fs::read_to_string(&t.path).ok();
        if previous.as_deref() == Some(t.text) {
            continue;
        }
        let step = write_atomically(&t.path, t.text, previous.as_deref())
            .and_then(|()| reload(&t.reload))
            .and_then(|()| match &t.verify {
                Some((socket, digest)) => verify_loaded(socket, digest),
                None => Ok(()),
            });
        let what = t.what;
        done.push((t, previous));
        if let Err(e) = step {
            roll_back(&done);
            return Err(e);
        }
        applied.reloaded.push(what);
    }
    Ok(applied)
}

fn roll_back(done: &[(Target, Option<String>)]) {
    for (t, previous) in done.iter().rev() {
        let restored = match previous {
            Some(text) => write_atomically(&t.path, text, None),
            None => std::fs::remove_file(&t.path).map_err(|source| HaError::Io {
                path: t.path.clone(),
                source,
            }),
        };
        match restored.and_then(|()| reload(&t.reload)) {
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

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn write_file(path: &Path, text: &str) -> Result<(), HaError> {
    let io = |source| HaError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}

/// Temp file + rename; the replaced text is kept as `NAME.prev`.
fn write_atomically(path: &Path, text: &str, previous: Option<&str>) -> Result<(), HaError> {
    if let Some(prev) = previous {
        write_file(&sibling(path, ".prev"), prev)?;
    }
    let tmp = sibling(path, ".vdi-new");
    write_file(&tmp, text)?;
    std::fs::rename(&tmp, path).map_err(|source| HaError::Io {
        path: path.to_path_buf(),
        source,
    })
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

/// Runs a command; on failure returns its last output lines.
fn run(mut c: Command) -> Result<(), String> {
    match c.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let mut text = String::from_utf8_lossy(&o.stderr).to_string();
            text.push_str(&String::from_utf8_lossy(&o.stdout));
            let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(5)..].join(" | ");
            Err(format!("{} ({})", tail, o.status))
        }
        Err(e) => Err(format!("cannot run {:?}: {e}", c.get_program())),
    }
}
