//! HAProxy and Keepalived configurations as they are on a host, beside what
//! the host's gateway would render from its current settings, with the diff
//! (hand edits and drift) and the tools' own verdict on the file.

use crate::ssh::{Session, SshError, shell_quote};
use std::time::Duration;
use vdi_wire::console::ConfigPreview;

const LIMIT: Duration = Duration::from_secs(20);

/// The two files, with their default paths (the gateway's settings may move them).
pub const FILES: [(&str, &str, &str); 2] = [
    ("haproxy", "haproxy_cfg_path", "/etc/haproxy/haproxy.cfg"),
    (
        "keepalived",
        "keepalived_conf_path",
        "/etc/keepalived/keepalived.conf",
    ),
];

/// Unified diff from `rendered` to `on_host`; empty when they are equal.
pub fn diff(path: &str, rendered: &str, on_host: &str) -> String {
    if rendered == on_host {
        return String::new();
    }
    similar::TextDiff::from_lines(rendered, on_host)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{path} (rendered by vdi-gateway)"),
            &format!("{path} (on the host)"),
        )
        .to_string()
}

/// The command that checks a file with its own tool.
fn check_command(which: &str, path: &str) -> String {
    match which {
        "haproxy" => format!("haproxy -c -f {} 2>&1", shell_quote(path)),
        _ => format!("keepalived -t -f {} 2>&1", shell_quote(path)),
    }
}

/// Where the gateway on the host keeps the file, and whether it manages it
/// (`ha_managed`), from `vdi-gateway settings show`.
async fn path_of(s: &Session, setting: &str, default: &str) -> (String, bool) {
    let doc = match s.exec("vdi-gateway settings show", LIMIT).await {
        Ok(out) if out.success() => serde_json::from_slice::<serde_json::Value>(&out.stdout).ok(),
        _ => None,
    };
    let path = doc
        .as_ref()
        .and_then(|v| v.get(setting).and_then(|p| p.as_str()).map(str::to_string))
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| default.to_string());
    let managed = doc
        .as_ref()
        .and_then(|v| v.get("ha_managed").and_then(|m| m.as_bool()))
        .unwrap_or(false);
    (path, managed)
}

pub async fn preview(s: &Session, which: &str) -> Result<ConfigPreview, SshError> {
    let (which, setting, default) = FILES
        .iter()
        .copied()
        .find(|(w, _, _)| *w == which)
        .ok_or_else(|| SshError::Protocol(format!("no such configuration: {which}")))?;
    let (path, managed) = path_of(s, setting, default).await;
    let file = s
        .exec(&format!("cat {}", shell_quote(&path)), LIMIT)
        .await?;
    let (on_host, read_error) = if file.success() {
        (Some(file.stdout_text()), None)
    } else {
        (None, Some(file.stderr_text().trim().to_string()))
    };
    let render = s
        .exec(&format!("vdi-gateway render {which}"), LIMIT)
        .await?;
    let (rendered, render_error) = if render.success() {
        (Some(render.stdout_text()), None)
    } else {
        (None, Some(render.stderr_text().trim().to_string()))
    };
    let check = s.exec(&check_command(which, &path), LIMIT).await?;
    let d = match (&rendered, &on_host) {
        (Some(r), Some(h)) => diff(&path, r, h),
        _ => String::new(),
    };
    Ok(ConfigPreview {
        which: which.to_string(),
        path,
        managed,
        drift: managed && !d.is_empty(),
        diff: d,
        on_host,
        read_error,
        rendered,
        render_error,
        check_ok: check.success(),
        check_output: check.stdout_text(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_hand_edits() {
        let rendered = "global\n    daemon\ndefaults\n    timeout client 8h\n";
        let edited = "global\n    daemon\ndefaults\n    timeout client 1m\n";
        let d = diff("/etc/haproxy/haproxy.cfg", rendered, edited);
        assert!(d.contains("-    timeout client 8h\n"), "{d}");
        assert!(d.contains("+    timeout client 1m\n"), "{d}");
        assert!(
            d.starts_with("--- /etc/haproxy/haproxy.cfg (rendered by vdi-gateway)"),
            "{d}"
        );
        assert_eq!(diff("p", rendered, rendered), "");
    }
}
