//! Secrets of the admin workstation (API keys, SSH passwords): in the OS
//! keyring (Secret Service on Linux). Where no keyring service runs (a
//! headless CI machine), a clearly warned fallback file (mode 0600) is used.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

const SERVICE: &str = "vdi-console";

/// Which secret of a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ApiKey,
    CliKey,
    SshPassword,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ApiKey => "api_key",
            Kind::CliKey => "cli_key",
            Kind::SshPassword => "ssh_password",
        }
    }
}

pub enum Secrets {
    Keyring,
    /// Plain file, owner-only: only where no keyring exists.
    File {
        path: PathBuf,
        lock: Mutex<()>,
    },
}

impl Secrets {
    /// The OS keyring if it answers, else the fallback file in `data_dir` (with
    /// a warning, also shown in the UI via [`Secrets::warning`]).
    pub fn detect(data_dir: &std::path::Path) -> Self {
        let probe = keyring::Entry::new(SERVICE, "probe").and_then(|e| match e.get_password() {
            Ok(_) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(e),
        });
        match probe {
            Ok(()) => Secrets::Keyring,
            Err(e) => {
                tracing::warn!(error = %e, "no OS keyring available; secrets are kept in an owner-only file instead");
                Secrets::file(data_dir.join("secrets.json"))
            }
        }
    }

    pub fn file(path: PathBuf) -> Self {
        Secrets::File {
            path,
            lock: Mutex::new(()),
        }
    }

    /// A sentence for the UI when secrets are not in the OS keyring.
    pub fn warning(&self) -> Option<String> {
        match self {
            Secrets::Keyring => None,
            Secrets::File { path, .. } => Some(format!(
                "No OS keyring is available: keys are stored in {} (readable by your user only).",
                path.display()
            )),
        }
    }

    fn account(gateway: i64, kind: Kind) -> String {
        format!("gateway-{gateway}/{}", kind.name())
    }

    pub fn get(&self, gateway: i64, kind: Kind) -> Result<Option<String>> {
        let account = Self::account(gateway, kind);
        match self {
            Secrets::Keyring => {
                match keyring::Entry::new(SERVICE, &account).and_then(|e| e.get_password()) {
                    Ok(v) => Ok(Some(v)),
                    Err(keyring::Error::NoEntry) => Ok(None),
                    Err(e) => Err(Error::Secrets(e.to_string())),
                }
            }
            Secrets::File { path, lock } => {
                let _l = lock.lock().unwrap();
                Ok(read_file(path)?.remove(&account))
            }
        }
    }

    /// Stores `value`, or deletes the secret when it is empty.
    pub fn set(&self, gateway: i64, kind: Kind, value: &str) -> Result<()> {
        let account = Self::account(gateway, kind);
        match self {
            Secrets::Keyring => {
                let entry = keyring::Entry::new(SERVICE, &account)
                    .map_err(|e| Error::Secrets(e.to_string()))?;
                let r = if value.is_empty() {
                    entry.delete_credential()
                } else {
                    entry.set_password(value)
                };
                match r {
                    Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
                    Err(e) => Err(Error::Secrets(e.to_string())),
                }
            }
            Secrets::File { path, lock } => {
                let _l = lock.lock().unwrap();
                let mut all = read_file(path)?;
                if value.is_empty() {
                    all.remove(&account);
                } else {
                    all.insert(account, value.to_string());
                }
                write_file(path, &all)
            }
        }
    }

    pub fn forget(&self, gateway: i64) -> Result<()> {
        for kind in [Kind::ApiKey, Kind::CliKey, Kind::SshPassword] {
            self.set(gateway, kind, "")?;
        }
        Ok(())
    }
}

fn read_file(path: &std::path::Path) -> Result<BTreeMap<String, String>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Secrets(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::Secrets(format!("{}: {e}", path.display()))),
    }
}

fn write_file(path: &std::path::Path, all: &BTreeMap<String, String>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| Error::Secrets(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("json.new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(&serde_json::to_vec_pretty(all).expect("a map of strings serializes"))
        .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
