//! Host key checks: the user's `~/.ssh/known_hosts` and the console's own
//! file. The console's file wins when it has an entry for the host (that is
//! where an admin's explicit "trust" or "replace" goes); the user's file is
//! only read, never written.

use russh::keys::{HashAlg, PublicKey};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// Never seen: ask the admin (trust on first use).
    Unknown,
    /// A different key of the same type is recorded: refuse.
    Changed {
        file: PathBuf,
        line: usize,
        expected: String,
    },
}

pub struct HostKeys {
    user_file: Option<PathBuf>,
    app_file: PathBuf,
}

/// `SHA256:...` as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The known_hosts name of a host: `host` on port 22, `[host]:port` otherwise.
fn host_port(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

impl HostKeys {
    pub fn new(user_file: Option<PathBuf>, app_file: PathBuf) -> Self {
        Self {
            user_file,
            app_file,
        }
    }

    /// `~/.ssh/known_hosts` and `known_hosts` in the console's data directory.
    pub fn standard(data_dir: &Path) -> Self {
        Self::new(
            dirs::home_dir().map(|h| h.join(".ssh/known_hosts")),
            data_dir.join("known_hosts"),
        )
    }

    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let in_app = check_file(&self.app_file, host, port, key);
        if in_app != Verdict::Unknown {
            return in_app;
        }
        match &self.user_file {
            Some(f) => check_file(f, host, port, key),
            None => Verdict::Unknown,
        }
    }

    /// Records `key` for the host in the console's file, replacing any key
    /// recorded there before (the admin checked the fingerprint).
    pub fn trust(&self, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
        let name = host_port(host, port);
        let old = std::fs::read_to_string(&self.app_file).unwrap_or_default();
        let mut out: String = old
            .lines()
            .filter(|l| !line_hosts(l).iter().any(|h| *h == name))
            .map(|l| format!("{l}\n"))
            .collect();
        let openssh = key
            .to_openssh()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // Without the comment: `type base64`.
        let typed: Vec<&str> = openssh.split_whitespace().take(2).collect();
        out.push_str(&format!("{name} {}\n", typed.join(" ")));
        if let Some(dir) = self.app_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.app_file.with_extension("new");
        std::fs::write(&tmp, out)?;
        std::fs::rename(&tmp, &self.app_file)
    }
}

fn line_hosts(line: &str) -> Vec<&str> {
    let line = line.trim();
    if line.starts_with('#') || line.starts_with('@') {
        return vec![];
    }
    line.split_whitespace()
        .next()
        .map(|h| h.split(',').collect())
        .unwrap_or_default()
}

fn check_file(file: &Path, host: &str, port: u16, key: &PublicKey) -> Verdict {
    match russh::keys::known_hosts::known_host_keys_path(host, port, file) {
        Ok(recorded) => {
            // russh numbers the lines without counting comment lines: map
            // its number back to the file's, for the message to the admin.
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let real: Vec<usize> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.starts_with('#'))
                .map(|(i, _)| i + 1)
                .collect();
            let mut verdict = Verdict::Unknown;
            for (n, k) in recorded {
                let line = real.get(n - 1).copied().unwrap_or(n);
                if k == *key {
                    return Verdict::Known;
                }
                if k.algorithm() == key.algorithm() {
                    verdict = Verdict::Changed {
                        file: file.to_path_buf(),
                        line,
                        expected: fingerprint(&k),
                    };
                }
            }
            verdict
        }
        // An unreadable line is not a reason to trust: say unknown, and the
        // admin is asked.
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "known_hosts not readable");
            Verdict::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let k = russh::keys::PrivateKey::from(
            russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]),
        );
        k.public_key().clone()
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vdi-hostkeys-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn line(name: &str, k: &PublicKey) -> String {
        let s = k.to_openssh().unwrap();
        format!(
            "{name} {}\n",
            s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        )
    }

    #[test]
    fn unknown_known_changed_and_replace() {
        let d = dir();
        let user = d.join("user_known_hosts");
        std::fs::write(
            &user,
            format!("# comment\n{}", line("gw1,10.0.0.11", &key(1))),
        )
        .unwrap();
        let hk = HostKeys::new(Some(user.clone()), d.join("app_known_hosts"));
        assert_eq!(hk.check("gw1", 22, &key(1)), Verdict::Known);
        assert_eq!(hk.check("10.0.0.11", 22, &key(1)), Verdict::Known);
        assert_eq!(hk.check("gw2", 22, &key(1)), Verdict::Unknown);
        assert_eq!(
            hk.check("gw1", 2222, &key(1)),
            Verdict::Unknown,
            "another port is another host"
        );
        match hk.check("gw1", 22, &key(2)) {
            Verdict::Changed {
                file,
                line,
                expected,
            } => {
                assert_eq!((file, line), (user.clone(), 2));
                assert_eq!(expected, fingerprint(&key(1)));
            }
            v => panic!("{v:?}"),
        }
        // The admin checked the new key: the console's file now wins.
        hk.trust("gw1", 22, &key(2)).unwrap();
        assert_eq!(hk.check("gw1", 22, &key(2)), Verdict::Known);
        assert!(matches!(
            hk.check("gw1", 22, &key(1)),
            Verdict::Changed { .. }
        ));
        // Trust on another port, and a second replace keeps one line per host.
        hk.trust("gw1", 2222, &key(3)).unwrap();
        hk.trust("gw1", 22, &key(4)).unwrap();
        let app = std::fs::read_to_string(d.join("app_known_hosts")).unwrap();
        assert_eq!(app.lines().count(), 2, "{app}");
        assert!(app.contains("[gw1]:2222 ssh-ed25519 "));
        assert_eq!(hk.check("gw1", 22, &key(4)), Verdict::Known);
        assert_eq!(
            std::fs::read_to_string(&user).unwrap().lines().count(),
            2,
            "the user's file is never written"
        );
        std::fs::remove_dir_all(d).unwrap();
    }
}
