//! "Reboot when empty or after T" on a gateway host, over SSH.
//!
//! The plan is a transient systemd unit on the host, not a task in the
//! console: it drains the gateway, waits until no stream is left (at most T
//! seconds) and reboots. It keeps running when the admin closes the console
//! or the workstation goes to sleep, it is one unit to look at
//! (`systemctl status vdi-gateway-maintenance`), and a reboot ends it. The
//! drain state is kept across the reboot (docs/upgrades.md), so the host
//! comes back drained until an admin undrains it.

use crate::error::{Error, Result};
use crate::ssh::{Session, SshError};
use std::time::Duration;
use vdi_wire::console::{REBOOT_AFTER_MAX_SECS, RebootPlan};

pub const UNIT: &str = "vdi-gateway-maintenance";

/// The variable that carries the plan's bound into the unit, where
/// [`parse_show`] reads it back.
const AFTER_VAR: &str = "VDI_REBOOT_AFTER";

const LIMIT: Duration = Duration::from_secs(20);

/// The bound, checked: 0 (reboot now, whatever still runs) to 24 h.
pub fn check_after(after_secs: u64) -> Result<u64, String> {
    if after_secs > REBOOT_AFTER_MAX_SECS {
        return Err(format!(
            "at most {REBOOT_AFTER_MAX_SECS} s (24 h); {after_secs} s was asked"
        ));
    }
    Ok(after_secs)
}

/// The command that starts the plan. `vdi-gateway drain --wait` exits 0
/// when no stream is left and 3 when some still are at the bound: both
/// reboot. Any other status (the gateway not running, its control socket
/// refused) does not: the unit fails and the console shows why. systemd
/// expands `$NAME` in a unit's command line itself (systemd-run's units
/// too, before 254's `--expand-environment=no`): `$$` is its literal `$`.
pub fn start_command(after_secs: u64) -> String {
    format!(
        "systemctl reset-failed {UNIT}.service 2>/dev/null; \
         LC_ALL=C systemd-run --quiet --unit={UNIT} \
         --description='vdi-gateway: reboot when no stream is left, after {after_secs} s at the latest' \
         --setenv={AFTER_VAR}={after_secs} \
         /bin/sh -c 'vdi-gateway drain --wait {after_secs}; rc=$$?; \
         if [ $$rc -eq 0 ] || [ $$rc -eq 3 ]; then echo \"rebooting (drain exit status $$rc)\"; exec systemctl reboot; fi; \
         echo \"no reboot: the drain failed (exit status $$rc)\"; exit $$rc'"
    )
}

/// Stops a waiting plan (its drain stays: undrain is its own action) and
/// forgets a failed one.
pub fn cancel_command() -> String {
    format!(
        "systemctl stop {UNIT}.service 2>/dev/null; systemctl reset-failed {UNIT}.service 2>/dev/null; true"
    )
}

pub fn show_command() -> String {
    format!(
        "LC_ALL=C systemctl show --timestamp=unix \
         -p LoadState,ActiveState,Result,ActiveEnterTimestamp,Environment,ExecMainStatus {UNIT}.service"
    )
}

/// The plan's last log line since it started (`since`, Unix seconds): its
/// own output only (`_TRANSPORT=stdout`, stderr included), not systemd's
/// "Started ..." that may come after the drain's first count.
pub fn last_line_command(since: i64) -> String {
    format!(
        "journalctl -q -u {UNIT}.service _TRANSPORT=stdout --since @{since} -n 1 -o cat --no-pager"
    )
}

/// Parses [`show_command`]'s output. A unit that is not loaded is no plan;
/// an active (or starting) one is waiting; a failed one ended without a
/// reboot.
pub fn parse_show(text: &str) -> Result<RebootPlan, String> {
    let mut p = RebootPlan::default();
    let (mut load, mut active, mut result, mut status) = ("", "", "", "");
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("not a property line: {line:?}"));
        };
        match k {
            "LoadState" => load = v,
            "ActiveState" => active = v,
            "Result" => result = v,
            "ExecMainStatus" => status = v,
            "ActiveEnterTimestamp" => p.since = v.strip_prefix('@').and_then(|s| s.parse().ok()),
            "Environment" => {
                p.after_secs = v
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(AFTER_VAR)?.strip_prefix('='))
                    .and_then(|n| n.parse().ok())
            }
            _ => {}
        }
    }
    if load.is_empty() || active.is_empty() {
        return Err(format!("no LoadState/ActiveState in {text:?}"));
    }
    if load != "loaded" {
        return Ok(RebootPlan::default());
    }
    p.scheduled = matches!(active, "active" | "activating" | "reloading");
    if active == "failed" {
        p.failed = Some(format!(
            "ended without a reboot: {result}, exit status {status}"
        ));
    }
    if !p.scheduled && p.failed.is_none() {
        // Ended as planned (the reboot is under way) or stopped.
        return Ok(RebootPlan::default());
    }
    p.deadline = p
        .since
        .zip(p.after_secs)
        .map(|(s, a)| s.saturating_add(a as i64));
    Ok(p)
}

/// The plan on the host now, with its last log line.
pub async fn state(s: &Session) -> std::result::Result<RebootPlan, SshError> {
    let out = s.exec(&show_command(), LIMIT).await?;
    if !out.success() {
        return Err(SshError::Protocol(format!(
            "systemctl show failed: {}",
            out.stderr_text().trim()
        )));
    }
    let mut p = parse_show(&out.stdout_text())
        .map_err(|e| SshError::Protocol(format!("systemctl show: {e}")))?;
    if let Some(since) = p.since.filter(|_| p.scheduled || p.failed.is_some()) {
        let log = s.exec(&last_line_command(since), LIMIT).await?;
        p.last_line = Some(log.stdout_text().trim().to_string()).filter(|l| !l.is_empty());
    }
    Ok(p)
}

/// Starts the plan; refused while one is waiting (cancel it first: a
/// second would race the first to the reboot).
pub async fn start(s: &Session, after_secs: u64) -> Result<RebootPlan> {
    let now = state(s).await?;
    if now.scheduled {
        return Err(Error::ActionFailed(format!(
            "a reboot is already planned on this host{}; cancel it first",
            now.deadline
                .map(|d| format!(" (at the latest at Unix time {d})"))
                .unwrap_or_default()
        )));
    }
    let out = s.exec(&start_command(after_secs), LIMIT).await?;
    if !out.success() {
        return Err(Error::ActionFailed(format!(
            "systemd-run failed: {}",
            out.stderr_text().trim()
        )));
    }
    Ok(state(s).await?)
}

pub async fn cancel(s: &Session) -> Result<RebootPlan> {
    s.exec(&cancel_command(), LIMIT).await?;
    let p = state(s).await?;
    if p.scheduled {
        return Err(Error::ActionFailed(
            "the plan is still running after systemctl stop".into(),
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_checked() {
        assert_eq!(check_after(0), Ok(0));
        assert_eq!(check_after(86_400), Ok(86_400));
        assert!(check_after(86_401).unwrap_err().contains("24 h"));
    }

    #[test]
    fn the_command_reboots_only_on_empty_or_at_the_bound() {
        insta::assert_snapshot!(start_command(3600));
    }

    #[test]
    fn a_waiting_plan() {
        let p = parse_show(
            "LoadState=loaded\nActiveState=active\nResult=success\nActiveEnterTimestamp=@1765000000\n\
             Environment=LANG=C VDI_REBOOT_AFTER=3600\nExecMainStatus=0\n",
        )
        .unwrap();
        assert_eq!(
            p,
            RebootPlan {
                scheduled: true,
                since: Some(1_765_000_000),
                after_secs: Some(3600),
                deadline: Some(1_765_003_600),
                failed: None,
                last_line: None,
            }
        );
    }

    #[test]
    fn no_plan_and_a_failed_one() {
        let none = "LoadState=not-found\nActiveState=inactive\nResult=success\nActiveEnterTimestamp=\nEnvironment=\nExecMainStatus=0\n";
        assert_eq!(parse_show(none).unwrap(), RebootPlan::default());
        let done = "LoadState=loaded\nActiveState=inactive\nResult=success\nActiveEnterTimestamp=@1\nEnvironment=VDI_REBOOT_AFTER=5\nExecMainStatus=0\n";
        assert_eq!(parse_show(done).unwrap(), RebootPlan::default());
        let failed = "LoadState=loaded\nActiveState=failed\nResult=exit-code\nActiveEnterTimestamp=@1765000000\nEnvironment=VDI_REBOOT_AFTER=60\nExecMainStatus=1\n";
        let p = parse_show(failed).unwrap();
        assert!(!p.scheduled);
        assert_eq!(
            p.failed.as_deref(),
            Some("ended without a reboot: exit-code, exit status 1")
        );
        assert_eq!(p.deadline, Some(1_765_000_060));
        assert!(parse_show("garbage").is_err());
        assert!(parse_show("").is_err());
    }
}
