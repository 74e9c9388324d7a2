//! The gateway host's units over SSH: state from `systemctl show` (parsed
//! key=value blocks, never the human `status` text) and actions tracked until
//! the unit is active again or has failed.

use crate::ssh::{Session, SshError};
use std::time::{Duration, Instant};
use vdi_wire::console::{ActionOutcome, ServiceAction, UNITS, UnitStatus};

const PROPERTIES: &str = "Id,LoadState,ActiveState,SubState,Result,StateChangeTimestamp,MainPID,MemoryCurrent,NRestarts,InvocationID,ConditionResult";

/// The command that reads the state of `units` (names from [`UNITS`] only).
pub fn show_command(units: &[&str]) -> String {
    let names: Vec<String> = units.iter().map(|u| format!("{u}.service")).collect();
    format!(
        "LC_ALL=C systemctl show --timestamp=unix -p {PROPERTIES} {}",
        names.join(" ")
    )
}

/// Parses `systemctl show` output: one block per unit, blocks separated by an
/// empty line. Unknown properties are ignored; a block without `Id=` is an
/// error (the output is not what we asked for).
pub fn parse_show(text: &str) -> Result<Vec<UnitStatus>, String> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut u = UnitStatus::default();
        let mut id = None;
        for line in block.lines() {
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("not a property line: {line:?}"));
            };
            match k {
                "Id" => id = Some(v.trim_end_matches(".service").to_string()),
                "LoadState" => u.load_state = v.into(),
                "ActiveState" => u.active_state = v.into(),
                "SubState" => u.sub_state = v.into(),
                "Result" => u.result = v.into(),
                "StateChangeTimestamp" => {
                    u.since = v.strip_prefix('@').and_then(|s| s.parse().ok())
                }
                "MainPID" => u.main_pid = v.parse().ok().filter(|p| *p != 0),
                // "[not set]" or u64::MAX when there is no figure.
                "MemoryCurrent" => u.memory_bytes = v.parse().ok().filter(|m| *m != u64::MAX),
                "NRestarts" => u.restarts = v.parse().ok(),
                "InvocationID" => u.invocation_id = v.into(),
                "ConditionResult" => u.condition_met = Some(v == "yes"),
                _ => {}
            }
        }
        u.unit = id.ok_or_else(|| format!("a block without Id=: {block:?}"))?;
        out.push(u);
    }
    Ok(out)
}

pub async fn status(s: &Session, units: &[&str]) -> Result<Vec<UnitStatus>, SshError> {
    let out = s
        .exec(&show_command(units), Duration::from_secs(15))
        .await?;
    if !out.success() {
        return Err(SshError::Protocol(format!(
            "systemctl show failed: {}",
            out.stderr_text().trim()
        )));
    }
    parse_show(&out.stdout_text()).map_err(|e| SshError::Protocol(format!("systemctl show: {e}")))
}

/// Checks that `unit` is one of ours (nothing else is ever put in a command).
pub fn known_unit(unit: &str) -> Option<&'static str> {
    UNITS.iter().copied().find(|u| *u == unit)
}

/// The unit's last `n` log lines.
pub async fn last_lines(s: &Session, unit: &'static str, n: u32) -> Vec<String> {
    let cmd = format!("journalctl -u {unit}.service -n {n} --no-pager -o short-iso");
    match s.exec(&cmd, Duration::from_secs(15)).await {
        Ok(o) => o.stdout_text().lines().map(str::to_string).collect(),
        Err(e) => vec![format!("(the log could not be read: {e})")],
    }
}

/// Runs `action` on `unit` and follows it until the unit is where the action
/// should leave it (active; inactive for stop) or has failed. `limit` bounds
/// the whole action.
pub async fn act(
    s: &Session,
    gateway: i64,
    unit: &'static str,
    action: ServiceAction,
    limit: Duration,
) -> Result<ActionOutcome, SshError> {
    let t = Instant::now();
    let before = status(s, &[unit]).await?.pop();
    // systemctl waits for the job; its exit status says whether it failed.
    // An admin's explicit start clears systemd's start rate limit (a unit
    // that failed a few times in a row would otherwise refuse to start).
    let reset = match action {
        ServiceAction::Start | ServiceAction::Restart => {
            format!("systemctl reset-failed {unit}.service 2>/dev/null; ")
        }
        _ => String::new(),
    };
    let cmd = format!("{reset}LC_ALL=C systemctl {} {unit}.service", action.verb());
    let run = s.exec(&cmd, limit).await?;
    let mut outcome = ActionOutcome {
        gateway,
        host: s.target().host.clone(),
        unit: unit.to_string(),
        action,
        ok: false,
        summary: String::new(),
        status: None,
        log: vec![],
        took_ms: 0,
    };
    let mut now = status(s, &[unit]).await?.pop();
    if run.success() {
        // systemctl returns when the job is done; a unit may still be
        // between states (a notify unit reloading): follow it until it settles.
        loop {
            let st = now.as_ref();
            let state = st.map(|u| u.active_state.as_str()).unwrap_or("");
            let settling = matches!(state, "activating" | "deactivating" | "reloading")
                && st.is_some_and(|u| u.sub_state != "auto-restart");
            if settling && t.elapsed() < limit {
                tokio::time::sleep(Duration::from_millis(200)).await;
                now = status(s, &[unit]).await?.pop();
                continue;
            }
            let fresh = match action {
                ServiceAction::Restart => {
                    st.map(|u| &u.invocation_id) != before.as_ref().map(|b| &b.invocation_id)
                }
                _ => true,
            };
            outcome.ok = match action {
                ServiceAction::Stop => state == "inactive",
                _ => state == "active" && fresh,
            };
            break;
        }
    }
    let took = t.elapsed();
    let st = now.clone().unwrap_or_default();
    outcome.summary = if outcome.ok {
        format!(
            "{} ({}) after {:.1} s",
            st.active_state,
            st.sub_state,
            took.as_secs_f64()
        )
    } else {
        let mut why = run.stderr_text().trim().to_string();
        if st.condition_met == Some(false) {
            why = "its start condition is not met (for Keepalived: no configuration yet; let the gateway manage HA)".into();
        }
        format!(
            "{} failed: the unit is {} ({}, result {}){}",
            action.verb(),
            st.active_state,
            st.sub_state,
            st.result,
            if why.is_empty() {
                String::new()
            } else {
                format!(". systemctl: {why}")
            }
        )
    };
    if !outcome.ok {
        outcome.log = last_lines(s, unit, 20).await;
    }
    outcome.status = now;
    outcome.took_ms = took.as_millis() as u64;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks() {
        let text = "Id=vdi-gateway.service\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\nStateChangeTimestamp=@1764300000\nMainPID=412\nMemoryCurrent=7340032\nNRestarts=2\nInvocationID=abc\nConditionResult=yes\n\nId=keepalived.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nResult=success\nStateChangeTimestamp=\nMainPID=0\nMemoryCurrent=[not set]\nNRestarts=0\nInvocationID=\n";
        let all = parse_show(text).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            UnitStatus {
                unit: "vdi-gateway".into(),
                load_state: "loaded".into(),
                active_state: "active".into(),
                sub_state: "running".into(),
                result: "success".into(),
                since: Some(1764300000),
                main_pid: Some(412),
                memory_bytes: Some(7340032),
                restarts: Some(2),
                invocation_id: "abc".into(),
                condition_met: Some(true),
            }
        );
        assert_eq!(
            (all[1].main_pid, all[1].memory_bytes, all[1].since),
            (None, None, None)
        );
    }

    #[test]
    fn rejects_what_is_not_systemctl_show() {
        assert!(parse_show("Welcome to host\nLoadState=loaded\n").is_err());
        assert!(parse_show("LoadState=loaded\n").is_err(), "no Id");
        assert_eq!(parse_show("").unwrap(), vec![]);
    }

    #[test]
    fn only_our_units_reach_a_command() {
        assert_eq!(known_unit("haproxy"), Some("haproxy"));
        assert_eq!(known_unit("sshd; rm -rf /"), None);
        assert_eq!(
            show_command(&["vdi-gateway", "haproxy"]),
            format!(
                "LC_ALL=C systemctl show --timestamp=unix -p {PROPERTIES} vdi-gateway.service haproxy.service"
            )
        );
    }
}
