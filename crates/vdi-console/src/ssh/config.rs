//! The basics of the user's `~/.ssh/config`: `Host` blocks (with `*`/`?`
//! patterns and `!` negation) and the keywords HostName, User, Port,
//! IdentityFile and ProxyJump. As in OpenSSH, the first value found for a
//! keyword wins. Other keywords are ignored (not an error: the file belongs
//! to the user and also serves OpenSSH).

use std::path::{Path, PathBuf};

/// What the config file says about one host alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    /// `none` is reported as `None`.
    pub proxy_jump: Option<String>,
}

/// Parses `text` and resolves `alias` (`home` expands a leading `~/`).
pub fn resolve(text: &str, alias: &str, home: &Path) -> HostConfig {
    let mut out = HostConfig::default();
    let mut jump_seen = false;
    // Lines before the first Host apply to every host.
    let mut active = true;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, v)) => (
                k,
                v.trim_start_matches(|c: char| c.is_whitespace() || c == '='),
            ),
            None => continue,
        };
        let value = value.trim().trim_matches('"');
        match key.to_ascii_lowercase().as_str() {
            "host" => active = host_matches(value, alias),
            // Match blocks need more than the basics; never apply them.
            "match" => active = false,
            _ if !active => {}
            "hostname" if out.host_name.is_none() => {
                out.host_name = Some(value.replace("%h", alias));
            }
            "user" if out.user.is_none() => out.user = Some(value.to_string()),
            "port" if out.port.is_none() => out.port = value.parse().ok(),
            "identityfile" if out.identity_file.is_none() => {
                out.identity_file = Some(match value.strip_prefix("~/") {
                    Some(rest) => home.join(rest),
                    None => PathBuf::from(value),
                });
            }
            "proxyjump" if !jump_seen => {
                jump_seen = true;
                if !value.eq_ignore_ascii_case("none") {
                    out.proxy_jump = Some(value.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// `Host a b !c`: matches when some pattern matches and no negated one does.
fn host_matches(patterns: &str, alias: &str) -> bool {
    let mut hit = false;
    for p in patterns.split_whitespace() {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg, alias) {
                return false;
            }
        } else if glob(p, alias) {
            hit = true;
        }
    }
    hit
}

/// `*` and `?` wildcards, case-insensitive, in O(pattern × text): on a
/// mismatch only the last `*` is retried (the recursive form was exponential
/// in the number of stars; fuzzing found a 400-star pattern that hung).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                ti += 1;
            }
            Some(a) if a.eq_ignore_ascii_case(&t[ti]) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod glob_tests {
    use super::glob;

    #[test]
    fn wildcards_and_the_fuzz_finding() {
        for (p, t, m) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("?b", "ab", true),
            ("?b", "b", false),
            ("*.EXAMPLE", "gw.example", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob(p, t), m, "{p} {t}");
        }
        let many = format!("{}o", "*".repeat(400));
        let t0 = std::time::Instant::now();
        assert!(!glob(&many, &"x".repeat(400)));
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
    }
}

/// `[user@]host[:port]` as ProxyJump writes it (the first hop of a list).
pub fn parse_jump(spec: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let first = spec.split(',').next()?.trim();
    let first = first.strip_prefix("ssh://").unwrap_or(first);
    let (user, rest) = match first.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, first),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner.split_once(']')?;
        (
            h,
            after
                .strip_prefix(':')
                .map(|p| p.parse().ok())
                .unwrap_or(None),
        )
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p.parse().ok()?)),
            _ => (rest, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((user, host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "
# global
IdentitiesOnly yes

Host bastion
    HostName 10.0.0.5
    User jump
    Port 2222

Host gw-* !gw-test
    User admin
    IdentityFile ~/.ssh/gw_ed25519
    ProxyJump bastion

Host gw-1
    HostName 10.0.1.11
    User ignored-because-first-wins

Host *
    User fallback
    Port 22
    ProxyJump none
";

    fn home() -> PathBuf {
        PathBuf::from("/home/u")
    }

    #[test]
    fn first_value_wins_across_blocks() {
        let c = resolve(CONFIG, "gw-1", &home());
        assert_eq!(
            c,
            HostConfig {
                host_name: Some("10.0.1.11".into()),
                user: Some("admin".into()),
                port: Some(22),
                identity_file: Some(PathBuf::from("/home/u/.ssh/gw_ed25519")),
                proxy_jump: Some("bastion".into()),
            }
        );
    }

    #[test]
    fn negation_and_none() {
        let c = resolve(CONFIG, "gw-test", &home());
        assert_eq!(c.user.as_deref(), Some("fallback"));
        assert_eq!(c.proxy_jump, None, "ProxyJump none");
        assert_eq!(c.host_name, None);
        let b = resolve(CONFIG, "bastion", &home());
        assert_eq!((b.user.as_deref(), b.port), (Some("jump"), Some(2222)));
    }

    #[test]
    fn equals_sign_quotes_and_case() {
        let c = resolve(
            "HOST x\n  hostname=\"10.1.1.1\"\n  PORT = 2200\n",
            "X",
            &home(),
        );
        assert_eq!(c.host_name.as_deref(), Some("10.1.1.1"));
        assert_eq!(c.port, Some(2200));
    }

    #[test]
    fn jump_specs() {
        assert_eq!(parse_jump("bastion"), Some((None, "bastion".into(), None)));
        assert_eq!(
            parse_jump("ops@10.0.0.5:2222,other"),
            Some((Some("ops".into()), "10.0.0.5".into(), Some(2222)))
        );
        assert_eq!(
            parse_jump("[fd00::1]:22"),
            Some((None, "fd00::1".into(), Some(22)))
        );
        assert_eq!(parse_jump("h:notaport"), None);
        assert_eq!(parse_jump(""), None);
    }
}
