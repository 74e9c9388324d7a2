//! Host key checks: the user's `~/.ssh/known_hosts` and the console's own
//! file. The console's file wins when it has an entry for the host (that is
//! where an admin's explicit "trust" or "replace" goes); the user's file is
//! only read, never written.
//!
//! A host with a recorded key is known by that key alone: a key that is not
//! recorded is CHANGED, whatever its type (OpenSSH would ask, "keys of a
//! different type are already known"; a man in the middle presents a key
//! of another type precisely to get that question). Only a host with no
//! recorded key at all is unknown (trust on first use).

use russh::keys::{Algorithm, HashAlg, PublicKey};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// Never seen: ask the admin (trust on first use).
    Unknown,
    /// Another key is recorded (of the same type or not): refuse.
    Changed {
        file: PathBuf,
        line: usize,
        /// The recorded key's fingerprint and type.
        expected: String,
        expected_algorithm: String,
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

    /// The keys recorded for the host, with the file and line of each: the
    /// console's file when it has any, else the user's.
    fn recorded(&self, host: &str, port: u16) -> Vec<(PathBuf, usize, PublicKey)> {
        let in_app = recorded_in(&self.app_file, host, port);
        if !in_app.is_empty() {
            return in_app;
        }
        match &self.user_file {
            Some(f) => recorded_in(f, host, port),
            None => vec![],
        }
    }

    /// The types of the keys recorded for the host (to prefer them when
    /// negotiating, see [`super::host_key_order`]).
    pub fn recorded_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let mut out: Vec<Algorithm> = Vec::new();
        for (_, _, k) in self.recorded(host, port) {
            if !out.contains(&k.algorithm()) {
                out.push(k.algorithm());
            }
        }
        out
    }

    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let recorded = self.recorded(host, port);
        if recorded.iter().any(|(_, _, k)| k == key) {
            return Verdict::Known;
        }
        // Name the recorded key of the same type if there is one, else the first.
        let shown = recorded
            .iter()
            .find(|(_, _, k)| k.algorithm() == key.algorithm())
            .or(recorded.first());
        match shown {
            None => Verdict::Unknown,
            Some((file, line, k)) => Verdict::Changed {
                file: file.clone(),
                line: *line,
                expected: fingerprint(k),
                expected_algorithm: k.algorithm().to_string(),
            },
        }
    }

    /// Records `key` for the host in the console's file, replacing any key
    /// recorded there before (the admin checked the fingerprint).
    pub fn trust(&self, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
        self.trust_all(host, port, std::slice::from_ref(key))
    }

    /// Records every key of `keys` for the host (one per type, as a host
    /// offers them), replacing what the console's file had for it.
    pub fn trust_all(&self, host: &str, port: u16, keys: &[PublicKey]) -> std::io::Result<()> {
        let name = host_port(host, port);
        let old = std::fs::read_to_string(&self.app_file).unwrap_or_default();
        let mut out: String = old
            .lines()
            .filter(|l| !line_hosts(l).iter().any(|h| *h == name))
            .map(|l| format!("{l}\n"))
            .collect();
        for key in keys {
            let openssh = key
                .to_openssh()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            // Without the comment: `type base64`.
            let typed: Vec<&str> = openssh.split_whitespace().take(2).collect();
            out.push_str(&format!("{name} {}\n", typed.join(" ")));
        }
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

fn recorded_in(file: &Path, host: &str, port: u16) -> Vec<(PathBuf, usize, PublicKey)> {
    if !file.exists() {
        return vec![];
    }
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
            recorded
                .into_iter()
                .map(|(n, k)| (file.to_path_buf(), real.get(n - 1).copied().unwrap_or(n), k))
                .collect()
        }
        // An unreadable line is not a reason to trust: say unknown, and the
        // admin is asked.
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "known_hosts not readable");
            vec![]
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
                expected_algorithm,
            } => {
                assert_eq!((file, line), (user.clone(), 2));
                assert_eq!(expected, fingerprint(&key(1)));
                assert_eq!(expected_algorithm, "ssh-ed25519");
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

    /// ECDSA P-256 public keys made with `ssh-keygen -t ecdsa`.
    fn ecdsa(n: u8) -> PublicKey {
        let b64 = match n {
            7 => {
                "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNG20p32YUmFnd3T5Mj+21QhEuhZB6hn25w5cKu/Za8nzedwjq+ETKl0XoJWLdhjTwZJTFC/V6BDu1EseTWWMYY="
            }
            8 => {
                "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNbg/agB0BPrJznnG+kteZc2LorbMjxIkomZ4wxV+mILomO8Sy9fkEiij5tRYbt/kcAZ4HtouF1Sp97aZuFbPT4="
            }
            _ => {
                "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJ193uzjvmQE+AYmBtcniJS7eocCGqIvcOBQBqgB4V/pVmHnN/ILLgRfL8ugK8crIoFyMMvqZH/x35Yqq+wSzys="
            }
        };
        PublicKey::from_openssh(&format!("ecdsa-sha2-nistp256 {b64}")).unwrap()
    }

    #[test]
    fn a_key_of_another_type_is_a_changed_key() {
        let d = dir();
        let user = d.join("user_known_hosts");
        std::fs::write(&user, line("gw1", &key(1))).unwrap();
        let hk = HostKeys::new(Some(user.clone()), d.join("app_known_hosts"));
        // A man in the middle offering ECDSA to a host recorded with Ed25519.
        match hk.check("gw1", 22, &ecdsa(9)) {
            Verdict::Changed {
                file,
                line,
                expected,
                expected_algorithm,
            } => {
                assert_eq!((file, line), (user.clone(), 1));
                assert_eq!(
                    (expected, expected_algorithm.as_str()),
                    (fingerprint(&key(1)), "ssh-ed25519")
                );
            }
            v => panic!("another type must be refused as changed, not asked about: {v:?}"),
        }
        // Several types recorded: each of them is known, the others are not.
        std::fs::write(
            &user,
            format!("{}{}", line("gw1", &key(1)), line("gw1", &ecdsa(9))),
        )
        .unwrap();
        assert_eq!(hk.check("gw1", 22, &ecdsa(9)), Verdict::Known);
        assert_eq!(hk.check("gw1", 22, &key(1)), Verdict::Known);
        assert!(matches!(
            hk.check("gw1", 22, &ecdsa(8)),
            Verdict::Changed { line: 2, .. }
        ));
        assert_eq!(
            hk.recorded_algorithms("gw1", 22),
            [
                Algorithm::Ed25519,
                Algorithm::Ecdsa {
                    curve: russh::keys::EcdsaCurve::NistP256
                }
            ]
        );
        assert_eq!(hk.recorded_algorithms("gw2", 22), []);
        // A host nobody recorded is still asked about (trust on first use).
        assert_eq!(hk.check("gw2", 22, &ecdsa(9)), Verdict::Unknown);
        // The console's own record wins: only its key type counts.
        hk.trust("gw1", 22, &ecdsa(7)).unwrap();
        assert!(matches!(
            hk.check("gw1", 22, &key(1)),
            Verdict::Changed { .. }
        ));
        assert_eq!(
            hk.recorded_algorithms("gw1", 22),
            [Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256
            }]
        );
        std::fs::remove_dir_all(d).unwrap();
    }
}
