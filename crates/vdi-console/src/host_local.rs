//! Host-local settings (`vdi_wire::HOST_LOCAL_FIELDS`): the gateway's API
//! refuses them (they name files and commands the daemon uses as root), so
//! the console sets them on the host over SSH through the host's own CLI,
//! `vdi-gateway settings set K=V …` and then `systemctl reload vdi-gateway`.
//! The CLI checks what only the host can (where a path may point) and
//! refuses with one `  field: message` line per problem.

use crate::ssh::{Output, Session, SshError, shell_quote};
use serde_json::{Map, Value};
use std::time::Duration;
use vdi_core::settings as rules;
use vdi_wire::{FieldError, HOST_LOCAL_FIELDS, SETTINGS_FIELDS, Settings};

/// One remote command (the CLI writes a small SQLite file; reload signals).
const LIMIT: Duration = Duration::from_secs(20);
/// How long the running gateway may take to apply what the CLI wrote.
pub(crate) const IN_FORCE_LIMIT: Duration = Duration::from_secs(10);

/// What went wrong setting host-local fields on the host.
#[derive(Debug, thiserror::Error)]
pub enum HostSetError {
    /// The host's CLI refused (its own checks); nothing was written.
    #[error("the host refused the change, nothing was written: {}", list(.0))]
    Refused(Vec<FieldError>),
    /// The CLI failed otherwise (no database, not allowed to write it, …).
    #[error("`vdi-gateway settings set` failed on the host: {0}")]
    Failed(String),
    /// Written, but the running gateway did not take it up (SIGHUP reload
    /// refused, see its journal); the previous values were written back.
    #[error(
        "the host took {fields:?} but the running gateway did not apply them within {secs} s ({why}); {}",
        if *.restored { "the previous values were put back on the host" } else { "PUTTING BACK THE PREVIOUS VALUES FAILED: check `vdi-gateway settings show` on the host" }
    )]
    NotApplied {
        fields: Vec<String>,
        why: String,
        secs: u64,
        restored: bool,
    },
    #[error("{0}")]
    Ssh(#[from] SshError),
}

impl HostSetError {
    pub fn code(&self) -> &'static str {
        match self {
            HostSetError::Refused(_) => "host_refused",
            HostSetError::Failed(_) => "host_failed",
            HostSetError::NotApplied { .. } => "host_not_applied",
            HostSetError::Ssh(e) => e.code(),
        }
    }

    pub fn fields(&self) -> Vec<FieldError> {
        match self {
            HostSetError::Refused(f) => f.clone(),
            _ => Vec::new(),
        }
    }
}

fn list(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Splits `patch` into the fields the API takes and the host-local ones.
pub fn split(patch: Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    patch
        .into_iter()
        .partition(|(k, _)| !HOST_LOCAL_FIELDS.contains(&k.as_str()))
}

/// `KEY=VALUE` arguments for the host's CLI, the value as JSON; each must
/// read back (`vdi_core::settings::parse_assignment`, as the CLI reads it)
/// as exactly the entry given.
pub fn assignments(host: &Map<String, Value>) -> Result<Vec<String>, Vec<FieldError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in host {
        let a = format!("{k}={v}");
        match rules::parse_assignment(&a) {
            Ok((k2, v2)) if k2 == *k && v2 == *v => out.push(a),
            Ok(_) => errors.push(FieldError::new(
                k,
                "cannot be written as KEY=VALUE for the host's CLI",
            )),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The assignments putting `fields` back to their values in `s` (`null`
/// for an unset one).
pub fn previous(s: &Settings, fields: &[String]) -> Map<String, Value> {
    let doc = serde_json::to_value(s).expect("settings serialize");
    fields
        .iter()
        .map(|f| (f.clone(), doc.get(f).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// Whether the settings in force hold `expected`'s values of `fields`.
pub fn in_force(now: &Settings, expected: &Settings, fields: &[String]) -> bool {
    let (a, b) = (
        serde_json::to_value(now).expect("settings serialize"),
        serde_json::to_value(expected).expect("settings serialize"),
    );
    fields.iter().all(|f| a.get(f) == b.get(f))
}

/// The remote command; every assignment is shell-quoted (they come from
/// the form, checked above).
pub fn set_command(assignments: &[String]) -> String {
    let args: Vec<String> = assignments.iter().map(|a| shell_quote(a)).collect();
    format!("vdi-gateway settings set {}", args.join(" "))
}

/// The fields `settings set` changed, or its refusal per field.
pub fn outcome(out: &Output) -> Result<Vec<String>, HostSetError> {
    let stderr = out.stderr_text();
    if out.success() {
        let stdout = out.stdout_text();
        return Ok(stdout
            .lines()
            .find_map(|l| l.strip_prefix("changed: "))
            .map(|l| l.split(", ").map(str::to_string).collect())
            .unwrap_or_default());
    }
    let mut lines = stderr.lines();
    if lines.any(|l| l.trim() == "rejected, nothing was written:") {
        let fields: Vec<FieldError> = lines
            .filter_map(|l| l.strip_prefix("  ")?.split_once(": "))
            .map(|(f, m)| FieldError::new(f, m))
            .collect();
        if !fields.is_empty() {
            return Err(HostSetError::Refused(fields));
        }
    }
    // A KEY=VALUE the CLI could not read: `vdi-gateway: field: message`.
    if let Some((f, m)) = stderr
        .trim()
        .strip_prefix("vdi-gateway: ")
        .and_then(|rest| rest.split_once(": "))
        .filter(|(f, _)| SETTINGS_FIELDS.contains(f))
    {
        return Err(HostSetError::Refused(vec![FieldError::new(f, m)]));
    }
    let status = out
        .status
        .map_or("no exit status".to_string(), |s| format!("exit status {s}"));
    let text: String = stderr.trim().chars().take(500).collect();
    Err(HostSetError::Failed(format!("{status}: {text}")))
}

/// Writes the assignments with the host's CLI; returns the fields it changed.
pub async fn write(s: &Session, assignments: &[String]) -> Result<Vec<String>, HostSetError> {
    outcome(&s.exec(&set_command(assignments), LIMIT).await?)
}

/// Asks the running gateway to re-read its database (SIGHUP).
pub async fn reload(s: &Session) -> Result<(), HostSetError> {
    let out = s
        .exec("LC_ALL=C systemctl reload vdi-gateway.service", LIMIT)
        .await?;
    if out.success() {
        Ok(())
    } else {
        Err(HostSetError::Failed(format!(
            "systemctl reload vdi-gateway: {}",
            out.stderr_text().trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(status: u32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: Some(status),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_patch_splits_into_the_api_part_and_the_host_part() {
        let patch = json!({"api_port": 8001, "haproxy_admin_socket": "/run/haproxy/x.sock",
            "tls_key_path": null, "tunnel_ttl_secs": 30});
        let (api, host) = split(patch.as_object().unwrap().clone());
        assert_eq!(
            api.keys().collect::<Vec<_>>(),
            ["api_port", "tunnel_ttl_secs"]
        );
        assert_eq!(
            host.keys().collect::<Vec<_>>(),
            ["haproxy_admin_socket", "tls_key_path"]
        );
    }

    #[test]
    fn assignments_read_back_as_given_and_are_quoted() {
        let host = json!({"haproxy_admin_socket": "/run/haproxy/it's.sock",
            "keepalived_reload_cmd": "systemctl reload keepalived", "tls_key_path": null});
        let a = assignments(host.as_object().unwrap()).unwrap();
        assert_eq!(
            a,
            [
                r#"haproxy_admin_socket="/run/haproxy/it's.sock""#,
                r#"keepalived_reload_cmd="systemctl reload keepalived""#,
                "tls_key_path=null",
            ]
        );
        assert_eq!(
            set_command(&a[..2]),
            r#"vdi-gateway settings set 'haproxy_admin_socket="/run/haproxy/it'\''s.sock"' 'keepalived_reload_cmd="systemctl reload keepalived"'"#
        );
        // A value the CLI would read as something else is refused here.
        let odd = json!({"haproxy_cfg_path": ["/etc/haproxy/a.cfg"]});
        let e = assignments(odd.as_object().unwrap()).unwrap_err();
        assert_eq!(e[0].field, "haproxy_cfg_path");
    }

    #[test]
    fn the_clis_answers() {
        // As `vdi-gateway settings set` prints them (crates/vdi-gateway/src/cli.rs).
        assert_eq!(
            outcome(&out(
                0,
                "changed: haproxy_admin_socket, keepalived_reload_cmd\na running gateway applies this on `systemctl reload vdi-gateway` (SIGHUP)\n",
                ""
            ))
            .unwrap(),
            ["haproxy_admin_socket", "keepalived_reload_cmd"]
        );
        assert!(
            outcome(&out(0, "nothing changed\n", ""))
                .unwrap()
                .is_empty()
        );
        let refused = outcome(&out(
            1,
            "",
            "rejected, nothing was written:\n  haproxy_cfg_path: \"/opt/vdi-gateway/app/settings.db\" must end in .cfg\n  tls_key_path: must be inside /etc/ssl\n",
        ))
        .unwrap_err();
        assert_eq!(refused.code(), "host_refused");
        let f = refused.fields();
        assert_eq!(
            f.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(),
            ["haproxy_cfg_path", "tls_key_path"]
        );
        assert_eq!(f[1].message, "must be inside /etc/ssl");
        let e = outcome(&out(
            1,
            "",
            "vdi-gateway: haproxy_reload_cmd: is run without a shell\n",
        ))
        .unwrap_err();
        assert_eq!(e.fields()[0].field, "haproxy_reload_cmd");
        let e = outcome(&out(
            1,
            "",
            "vdi-gateway: /opt/vdi-gateway/app/settings.db: unable to open database file\n",
        ))
        .unwrap_err();
        assert_eq!(e.code(), "host_failed");
        assert!(e.to_string().contains("unable to open"), "{e}");
    }

    #[test]
    fn previous_values_and_the_check_of_what_is_in_force() {
        let s: Settings = serde_json::from_value(json!({
            "is_enabled": true, "internal_addrs": ["10.0.0.1"], "ssl": false,
            "disp_addrs": ["10.0.0.2"], "disp_port": 4200, "public_addr": "10.0.0.1",
            "virtual_addr": "10.0.0.9", "api_port": 8000, "balancer_api_port": 8002,
            "port_range_start": 5900, "port_range_stop": 5999,
            "api_key": "QUJDREVGR0hJSktMTU5PUA==", "cli_key": "UVJTVFVWV1hZWmFiY2RlZg==",
            "haproxy_admin_socket": "/run/haproxy/admin.sock"
        }))
        .unwrap();
        let fields = ["haproxy_admin_socket".to_string(), "tls_key_path".into()];
        let back = previous(&s, &fields);
        assert_eq!(back["haproxy_admin_socket"], "/run/haproxy/admin.sock");
        assert_eq!(back["tls_key_path"], Value::Null);
        let patch = json!({"haproxy_admin_socket": "/run/haproxy/other.sock"});
        let next = rules::apply_patch(&s, patch.as_object().unwrap())
            .unwrap()
            .settings;
        assert!(!in_force(&s, &next, &fields));
        assert!(in_force(&next, &next, &fields));
        assert!(in_force(&s, &next, &["api_port".into()]));
    }
}
