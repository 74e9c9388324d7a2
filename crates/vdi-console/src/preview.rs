//! HAProxy and Keepalived configurations as they are on a host, beside what
//! the host's gateway would render from its current settings, with the diff
//! (hand edits and drift) and the tools' own verdict on the file.

use crate::ssh::{Session, SshError, shell_quote};
use std::time::Duration;
use vdi_wire::Settings;
use vdi_wire::console::ConfigPreview;

const LIMIT: Duration = Duration::from_secs(20);

/// The most a configuration file (and the rendering, and the tool's check
/// output) may hold: HAProxy's and Keepalived's files are kilobytes; this
/// also bounds the diff's work.
pub const MAX_FILE: usize = 4 * 1024 * 1024;

/// How long the diff may search for the shortest edit script before it
/// settles for a longer one (a pathological file costs no more).
const DIFF_DEADLINE: Duration = Duration::from_secs(2);

/// The two files the console previews.
pub const FILES: [&str; 2] = ["haproxy", "keepalived"];

/// Where the gateway keeps file `which` under `settings` (its default when
/// unset or not absolute).
fn path_in(which: &str, settings: Option<&Settings>) -> String {
    let (set, default) = match which {
        "haproxy" => (
            settings.and_then(|s| s.haproxy_cfg_path.as_deref()),
            "/etc/haproxy/haproxy.cfg",
        ),
        _ => (
            settings.and_then(|s| s.keepalived_conf_path.as_deref()),
            "/etc/keepalived/keepalived.conf",
        ),
    };
    set.filter(|p| p.starts_with('/'))
        .unwrap_or(default)
        .to_string()
}

/// `which` if it is one of [`FILES`] (nothing else reaches a command).
pub fn known_file(which: &str) -> Option<&'static str> {
    FILES.into_iter().find(|f| *f == which)
}

/// Unified diff from `rendered` to `on_host`; empty when they are equal.
pub fn diff(path: &str, rendered: &str, on_host: &str) -> String {
    if rendered == on_host {
        return String::new();
    }
    similar::TextDiff::configure()
        .timeout(DIFF_DEADLINE)
        .diff_lines(rendered, on_host)
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
/// (`ha_managed`), from `vdi-gateway settings show` (the settings document).
async fn path_of(s: &Session, which: &str) -> (String, bool) {
    let doc = match s
        .exec_bounded("vdi-gateway settings show", LIMIT, MAX_FILE)
        .await
    {
        Ok(out) if out.success() => serde_json::from_slice::<Settings>(&out.stdout).ok(),
        _ => None,
    };
    let managed = doc.as_ref().and_then(|d| d.ha_managed).unwrap_or(false);
    (path_in(which, doc.as_ref()), managed)
}

/// The preview of `which` ([`known_file`]: checked by the caller).
pub async fn preview(s: &Session, which: &'static str) -> Result<ConfigPreview, SshError> {
    let (path, managed) = path_of(s, which).await;
    let file = s
        .exec_bounded(&format!("cat {}", shell_quote(&path)), LIMIT, MAX_FILE)
        .await?;
    let (on_host, read_error) = if file.success() {
        (Some(file.stdout_text()), None)
    } else {
        (None, Some(file.stderr_text().trim().to_string()))
    };
    let render = s
        .exec_bounded(&format!("vdi-gateway render {which}"), LIMIT, MAX_FILE)
        .await?;
    let (rendered, render_error) = if render.success() {
        (Some(render.stdout_text()), None)
    } else {
        (None, Some(render.stderr_text().trim().to_string()))
    };
    let check = s
        .exec_bounded(&check_command(which, &path), LIMIT, MAX_FILE)
        .await?;
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

    #[test]
    fn paths_from_the_settings_document() {
        let mut s: Settings = serde_json::from_str(&original_document()).unwrap();
        assert_eq!(path_in("haproxy", Some(&s)), "/etc/haproxy/haproxy.cfg");
        assert_eq!(
            path_in("keepalived", None),
            "/etc/keepalived/keepalived.conf"
        );
        s.haproxy_cfg_path = Some("/srv/ha.cfg".into());
        s.keepalived_conf_path = Some("relative.conf".into());
        assert_eq!(path_in("haproxy", Some(&s)), "/srv/ha.cfg");
        assert_eq!(
            path_in("keepalived", Some(&s)),
            "/etc/keepalived/keepalived.conf"
        );
        assert_eq!(known_file("keepalived"), Some("keepalived"));
        assert_eq!(known_file("/etc/passwd"), None);
    }

    /// The original's 13-field document, as `settings show` prints it.
    fn original_document() -> String {
        r#"{"is_enabled": true, "internal_addrs": ["10.0.0.1"], "ssl": false, "disp_addrs": [],
            "disp_port": 8002, "public_addr": "10.0.0.1", "virtual_addr": "10.0.0.9", "api_port": 8000,
            "balancer_api_port": 8002, "port_range_start": 5900, "port_range_stop": 5999,
            "api_key": "***", "cli_key": "***"}"#
            .into()
    }
}
