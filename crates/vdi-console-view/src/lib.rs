//! What the console's UI computes without a browser: text for numbers and
//! ages, the filters and orders of its tables, the settings form's patch,
//! the journal view's store, the classes of highlighted lines. The UI crate
//! (WebAssembly only) renders these; here they have native unit tests.

pub mod charts;
pub mod journal;
pub mod settings;
pub mod tables;

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// How a unit's state is shown (a CSS class): running, stopped on purpose,
/// failed, or not known (no systemd, or not asked).
pub fn unit_class(state: &str) -> &'static str {
    match state {
        "active" | "reloading" => "u-up",
        "failed" => "u-failed",
        "activating" | "deactivating" => "u-busy",
        "inactive" => "u-off",
        _ => "u-unknown",
    }
}

/// The one-letter mark of each unit the console looks after.
pub fn unit_letter(unit: &str) -> &'static str {
    match unit {
        "vdi-gateway" => "G",
        "haproxy" => "H",
        "keepalived" => "K",
        _ => "?",
    }
}

/// A duration in seconds, coarsely: `42 s`, `5 min`, `2 h 3 min`, `4 d`.
pub fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d", s / 86400),
    }
}

/// How a line of a unified diff is shown (a CSS class).
pub fn diff_class(line: &str) -> &'static str {
    match line.chars().next() {
        Some('+') if !line.starts_with("+++") => "d-add",
        Some('-') if !line.starts_with("---") => "d-del",
        Some('@') => "d-hunk",
        _ => "",
    }
}

/// A line of HAProxy or Keepalived configuration, for light highlighting.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigLine<'a> {
    Comment,
    Section,
    /// Indentation, the first word, the rest.
    Setting(&'a str, &'a str, &'a str),
}

const SECTIONS: [&str; 10] = [
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "global_defs",
    "vrrp_instance",
    "vrrp_script",
];

pub fn config_line(l: &str) -> ConfigLine<'_> {
    let t = l.trim_start();
    let indent = &l[..l.len() - t.len()];
    let (word, rest) = t.split_at(t.find(char::is_whitespace).unwrap_or(t.len()));
    if t.starts_with('#') || t.starts_with('!') {
        ConfigLine::Comment
    } else if SECTIONS.contains(&word) {
        ConfigLine::Section
    } else {
        ConfigLine::Setting(indent, word, rest)
    }
}

/// `message` cut around every match of `needle` (lowercase): `(text,
/// matched)` parts. Lowercasing may change byte lengths outside ASCII: then
/// the message is one unmatched part.
pub fn split_matches<'a>(message: &'a str, needle: &str) -> Vec<(&'a str, bool)> {
    let lower = message.to_lowercase();
    let mut parts = Vec::new();
    let mut at = 0;
    if !needle.is_empty() && lower.len() == message.len() {
        while let Some(i) = lower[at..].find(needle) {
            let start = at + i;
            parts.push((&message[at..start], false));
            let end = start + needle.len();
            parts.push((&message[start..end], true));
            at = end;
        }
    }
    parts.push((&message[at..], false));
    parts
}

/// A host's reboot plan in one line, `now` in Unix seconds.
pub fn reboot_plan_line(p: &vdi_wire::console::RebootPlan, now: i64) -> String {
    let last = p
        .last_line
        .as_deref()
        .map(|l| format!(" · {l}"))
        .unwrap_or_default();
    if p.scheduled {
        let when = match p.deadline {
            Some(d) if d > now => format!(", at the latest in {}", age(d - now)),
            Some(_) => ", now".to_string(),
            None => String::new(),
        };
        format!("Reboot planned: when no stream is left{when}{last}")
    } else if let Some(why) = &p.failed {
        format!("The last reboot plan {why}{last}")
    } else {
        "No reboot planned".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ages_in_words() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
        assert_eq!(age(-5), "0 s");
        assert_eq!(age(59), "59 s");
        assert_eq!(age(60 * 5 + 7), "5 min");
        assert_eq!(age(2 * 3600 + 3 * 60), "2 h 3 min");
        assert_eq!(age(4 * 86400 + 1), "4 d");
    }

    #[test]
    fn unit_states_at_a_glance() {
        let classes: Vec<_> = ["active", "failed", "inactive", "activating", "unknown", ""]
            .map(unit_class)
            .into();
        assert_eq!(
            classes,
            [
                "u-up",
                "u-failed",
                "u-off",
                "u-busy",
                "u-unknown",
                "u-unknown"
            ]
        );
        assert_eq!(vdi_wire::console::UNITS.map(unit_letter), ["G", "H", "K"]);
    }

    #[test]
    fn reboot_plans_in_words() {
        use vdi_wire::console::RebootPlan;
        assert_eq!(
            reboot_plan_line(&RebootPlan::default(), 0),
            "No reboot planned"
        );
        let p = RebootPlan {
            scheduled: true,
            since: Some(1000),
            after_secs: Some(3600),
            deadline: Some(4600),
            failed: None,
            last_line: Some("drained since ...: 1 tunnel(s), 2 stream(s) still open".into()),
        };
        assert_eq!(
            reboot_plan_line(&p, 1060),
            "Reboot planned: when no stream is left, at the latest in 59 min · drained since ...: 1 tunnel(s), 2 stream(s) still open"
        );
        assert!(reboot_plan_line(&p, 5000).contains("left, now ·"));
        let failed = RebootPlan {
            scheduled: false,
            failed: Some("ended without a reboot: exit-code, exit status 1".into()),
            last_line: None,
            ..p
        };
        assert_eq!(
            reboot_plan_line(&failed, 0),
            "The last reboot plan ended without a reboot: exit-code, exit status 1"
        );
    }

    #[test]
    fn lines_are_classified() {
        assert_eq!(diff_class("+    timeout 1m"), "d-add");
        assert_eq!(diff_class("+++ b"), "");
        assert_eq!(diff_class("-x"), "d-del");
        assert_eq!(diff_class("--- a"), "");
        assert_eq!(diff_class("@@ -1 +1 @@"), "d-hunk");
        assert_eq!(diff_class(" same"), "");
        assert_eq!(config_line("  # note"), ConfigLine::Comment);
        assert_eq!(config_line("! keepalived"), ConfigLine::Comment);
        assert_eq!(config_line("frontend vip"), ConfigLine::Section);
        assert_eq!(
            config_line("    bind 10.0.0.1:443"),
            ConfigLine::Setting("    ", "bind", " 10.0.0.1:443")
        );
        assert_eq!(config_line(""), ConfigLine::Setting("", "", ""));
    }

    #[test]
    fn matches_are_cut_out() {
        assert_eq!(
            split_matches("Proxy started, proxy up", "proxy"),
            [
                ("", false),
                ("Proxy", true),
                (" started, ", false),
                ("proxy", true),
                (" up", false)
            ]
        );
        assert_eq!(split_matches("abc", ""), [("abc", false)]);
        // "İ" lowercases to more bytes: no highlight rather than a wrong one.
        assert_eq!(split_matches("İx x", "x"), [("İx x", false)]);
    }
}

/// What the demo cluster's bar offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterAction {
    Start,
    Stop,
}

/// The demo cluster's bar: its line of text and the button it offers.
pub fn cluster_line(s: &vdi_wire::console::ClusterState) -> (String, Option<ClusterAction>) {
    use vdi_wire::console::ClusterPhase as P;
    match (s.phase, &s.unavailable) {
        (P::Off, Some(why)) => (format!("not available here: {why}"), None),
        (P::Off, None) => (
            "two test-bed gateway hosts with HA, a desktop stand-in and demo traffic, on this machine"
                .into(),
            Some(ClusterAction::Start),
        ),
        (P::Starting, _) => (format!("starting: {}", s.detail), Some(ClusterAction::Stop)),
        (P::Up, _) => (
            format!(
                "up: {} · {} demo streams ({})",
                s.hosts.join(", "),
                s.streams,
                s.detail
            ),
            Some(ClusterAction::Stop),
        ),
        (P::Stopping, _) => (format!("stopping: {}", s.detail), None),
        (P::Failed, _) => (
            format!("did not come up: {}", s.detail),
            s.unavailable.is_none().then_some(ClusterAction::Start),
        ),
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;
    use vdi_wire::console::{ClusterPhase, ClusterState};

    #[test]
    fn the_cluster_bar_says_where_it_is_and_offers_what_fits() {
        let mut s = ClusterState {
            unavailable: Some("the demo cluster needs root".into()),
            ..Default::default()
        };
        assert_eq!(
            cluster_line(&s),
            (
                "not available here: the demo cluster needs root".into(),
                None
            )
        );
        s.unavailable = None;
        assert_eq!(cluster_line(&s).1, Some(ClusterAction::Start));
        s.phase = ClusterPhase::Starting;
        s.detail = "test bed: h1 ready".into();
        assert_eq!(
            cluster_line(&s),
            (
                "starting: test bed: h1 ready".into(),
                Some(ClusterAction::Stop)
            )
        );
        s.phase = ClusterPhase::Up;
        s.detail = "up in 21 s".into();
        s.hosts = vec!["demo-h1".into(), "demo-h2".into()];
        s.streams = 8;
        assert_eq!(
            cluster_line(&s).0,
            "up: demo-h1, demo-h2 · 8 demo streams (up in 21 s)"
        );
        s.phase = ClusterPhase::Stopping;
        assert_eq!(cluster_line(&s).1, None);
        s.phase = ClusterPhase::Failed;
        s.detail = "testbed.sh up: no space".into();
        assert_eq!(
            cluster_line(&s),
            (
                "did not come up: testbed.sh up: no space".into(),
                Some(ClusterAction::Start)
            )
        );
    }
}
