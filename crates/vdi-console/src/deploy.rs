//! Installs or upgrades the gateway core (`vdi-gateway` .deb) on a host over
//! SSH: upload with progress, version check before and after, health check,
//! and rollback to the previous package if the new one does not come up.
//!
//! Every package the console uploads is kept on the host in [`STASH`], named
//! by version: that is what a rollback installs. A host whose installed
//! version has no package there (installed by hand) is upgraded only with
//! `force`, because it could not be rolled back.
//!
//! What is installed is what the admin chose: the caller checks the
//! package's SHA-256 locally ([`crate::Console::deploy`]: the bundled
//! package, or one confirmed by its hash), and the copy on the host is
//! hashed there (`sha256sum`) right after the upload, before anything reads
//! it; a different hash removes it and installs nothing.

use crate::error::Error;
use crate::services;
use crate::ssh::{Session, SshError, shell_quote};
use std::time::{Duration, Instant};
use vdi_wire::console::{DeployOutcome, DeployProgress, DeployReport};

pub const STASH: &str = "/var/lib/vdi-console/packages";
const PACKAGE: &str = "vdi-gateway";

/// How long the new unit must stay up (same run, active) to count as healthy.
const SETTLE: Duration = Duration::from_secs(3);

fn fail(what: &str, out: &crate::ssh::Output) -> SshError {
    SshError::Protocol(format!(
        "{what}: {}{}",
        out.stdout_text().trim(),
        out.stderr_text().trim()
    ))
}

/// The SHA-256 of `bytes`, in lowercase hex (as `sha256sum` prints it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 that `sha256sum` on the host reports for `file`.
async fn remote_sha256(s: &Session, file: &str) -> Result<String, SshError> {
    let out = s
        .exec(
            &format!("LC_ALL=C sha256sum -b -- {}", shell_quote(file)),
            Duration::from_secs(120),
        )
        .await?;
    let text = out.stdout_text();
    match text.split_whitespace().next() {
        Some(h) if out.success() && h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        _ => Err(fail("sha256sum on the host failed", &out)),
    }
}

/// The installed version, if any.
pub async fn installed(s: &Session) -> Result<Option<String>, SshError> {
    let out = s
        .exec(
            &format!("dpkg-query -W -f='${{Status}}|${{Version}}' {PACKAGE} 2>/dev/null"),
            Duration::from_secs(20),
        )
        .await?;
    let text = out.stdout_text();
    Ok(match text.split_once('|') {
        Some((status, v)) if out.success() && status.ends_with(" installed") => Some(v.to_string()),
        _ => None,
    })
}

/// A Debian version may be used in a file name as is, once checked.
fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-:".contains(c))
}

fn stash_file(version: &str) -> String {
    format!("{STASH}/{PACKAGE}_{}.deb", version.replace(':', "%3a"))
}

/// Installs `file` (on the host) and waits until the unit is healthy.
/// Returns the unit's last lines when it is not.
async fn install_and_check(
    s: &Session,
    file: &str,
    version: &str,
) -> Result<Result<(), Vec<String>>, SshError> {
    let out = s
        .exec(
            &format!(
                "DEBIAN_FRONTEND=noninteractive dpkg -i {} 2>&1",
                shell_quote(file)
            ),
            Duration::from_secs(300),
        )
        .await?;
    if !out.success() {
        let mut log: Vec<String> = out.stdout_text().lines().map(str::to_string).collect();
        log.extend(services::last_lines(s, "vdi-gateway", 20).await);
        return Ok(Err(log));
    }
    if installed(s).await?.as_deref() != Some(version) {
        return Ok(Err(vec![format!("dpkg did not leave {version} installed")]));
    }
    // Healthy: active, and still the same run after SETTLE (no crash loop).
    let t = Instant::now();
    let first = loop {
        let st = services::status(s, &["vdi-gateway"])
            .await?
            .pop()
            .unwrap_or_default();
        if st.active_state == "active" {
            break st;
        }
        let down = st.active_state == "failed" || st.sub_state == "auto-restart";
        if down || t.elapsed() > Duration::from_secs(30) {
            return Ok(Err(services::last_lines(s, "vdi-gateway", 20).await));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(SETTLE).await;
    let again = services::status(s, &["vdi-gateway"])
        .await?
        .pop()
        .unwrap_or_default();
    if again.active_state != "active" || again.invocation_id != first.invocation_id {
        return Ok(Err(services::last_lines(s, "vdi-gateway", 20).await));
    }
    Ok(Ok(()))
}

/// Deploys the package `deb` (its bytes, whose SHA-256 the caller checked)
/// to the host of session `s`.
pub async fn deploy(
    s: &Session,
    gateway: i64,
    deb: &[u8],
    force: bool,
    mut progress: impl FnMut(DeployProgress),
) -> Result<DeployReport, Error> {
    let mut step = |step: &str, detail: String, fraction: Option<f32>| {
        progress(DeployProgress {
            step: step.into(),
            detail,
            fraction,
        })
    };
    let before = installed(s).await?;
    step(
        "check",
        format!("installed now: {}", before.as_deref().unwrap_or("none")),
        None,
    );

    let upload = format!("{STASH}/.upload-{}", std::process::id());
    let out = s
        .exec(
            &format!("mkdir -p {STASH} && chmod 700 {STASH}"),
            Duration::from_secs(20),
        )
        .await?;
    if !out.success() {
        return Err(fail("cannot create the package store", &out).into());
    }
    let out = s
        .upload(
            &format!("cat > {}", shell_quote(&upload)),
            deb,
            Duration::from_secs(600),
            |sent, total| {
                step(
                    "upload",
                    format!("{sent} of {total} bytes"),
                    Some(sent as f32 / total.max(1) as f32),
                )
            },
        )
        .await?;
    if !out.success() {
        return Err(fail("upload failed", &out).into());
    }
    // The host's copy is what was sent, or nothing goes further.
    let sha256 = sha256_hex(deb);
    step(
        "verify",
        format!("sha256sum on the host: expecting {sha256}"),
        None,
    );
    let found = remote_sha256(s, &upload).await?;
    if found != sha256 {
        let _ = s
            .exec(
                &format!("rm -f {}", shell_quote(&upload)),
                Duration::from_secs(20),
            )
            .await;
        return Err(Error::PackageMismatch {
            host: s.target().host.clone(),
            expected: sha256,
            found,
        });
    }
    let fields = s
        .exec(
            &format!("dpkg-deb -f {} Package Version", shell_quote(&upload)),
            Duration::from_secs(20),
        )
        .await?;
    let text = fields.stdout_text();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .map(str::trim)
    };
    let (Some(PACKAGE), Some(wanted)) = (get("Package"), get("Version")) else {
        let _ = s
            .exec(
                &format!("rm -f {}", shell_quote(&upload)),
                Duration::from_secs(20),
            )
            .await;
        // The admin's file, not the connection, is at fault.
        return Err(Error::invalid(
            "package",
            format!(
                "not a {PACKAGE} package: {}{}",
                text.trim(),
                fields.stderr_text().trim()
            ),
        ));
    };
    let wanted = wanted.to_string();
    if !valid_version(&wanted) {
        return Err(Error::invalid(
            "package",
            format!("unexpected package version {wanted:?}"),
        ));
    }
    let file = stash_file(&wanted);
    let out = s
        .exec(
            &format!("mv {} {}", shell_quote(&upload), shell_quote(&file)),
            Duration::from_secs(20),
        )
        .await?;
    if !out.success() {
        return Err(fail("cannot keep the package", &out).into());
    }
    let mut report = DeployReport {
        gateway,
        host: s.target().host.clone(),
        before: before.clone(),
        wanted: wanted.clone(),
        after: before.clone(),
        outcome: DeployOutcome::Failed,
        message: String::new(),
        log: vec![],
        sha256,
    };
    if before.as_deref() == Some(wanted.as_str()) {
        report.outcome = DeployOutcome::Unchanged;
        report.message = format!("{wanted} is already installed");
        return Ok(report);
    }
    // Rollback material for the version installed now.
    let previous = match &before {
        Some(v) if valid_version(v) => {
            let f = stash_file(v);
            let there = s
                .exec(
                    &format!("test -f {}", shell_quote(&f)),
                    Duration::from_secs(20),
                )
                .await?;
            there.success().then_some((v.clone(), f))
        }
        _ => None,
    };
    if let (Some(v), None, false) = (&before, &previous, force) {
        report.message = format!(
            "{v} is installed but its package is not in {STASH}, so a failed upgrade could not be rolled back; deploy with force to upgrade anyway"
        );
        return Ok(report);
    }

    step("install", format!("dpkg -i {PACKAGE} {wanted}"), None);
    match install_and_check(s, &file, &wanted).await? {
        Ok(()) => {
            report.after = Some(wanted.clone());
            report.outcome = if before.is_some() {
                DeployOutcome::Upgraded
            } else {
                DeployOutcome::Installed
            };
            report.message = format!("{wanted} is installed and healthy");
            step("done", report.message.clone(), None);
            return Ok(report);
        }
        Err(log) => report.log = log,
    }
    match previous {
        Some((v, f)) => {
            step(
                "rollback",
                format!("{wanted} is not healthy; reinstalling {v}"),
                None,
            );
            match install_and_check(s, &f, &v).await? {
                Ok(()) => {
                    report.outcome = DeployOutcome::RolledBack;
                    report.message =
                        format!("{wanted} did not come up healthy; {v} is back and healthy");
                }
                Err(more) => {
                    report.log.extend(more);
                    report.message = format!(
                        "{wanted} did not come up healthy, and the rollback to {v} failed too"
                    );
                }
            }
        }
        None => {
            report.message = format!("{wanted} did not come up healthy (nothing to roll back to)");
        }
    }
    report.after = installed(s).await?;
    step("done", report.message.clone(), None);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_as_sha256sum_prints_them() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn versions_in_file_names() {
        assert!(valid_version("0.1.0"));
        assert!(valid_version("1:0.2.0+b1~rc1"));
        assert!(!valid_version("0.1.0; rm -rf /"));
        assert!(!valid_version("../x"));
        assert_eq!(
            stash_file("1:0.2"),
            format!("{STASH}/vdi-gateway_1%3a0.2.deb")
        );
    }
}
