//! Secrets of the admin workstation (API keys, SSH passwords): in the OS
//! keyring (Secret Service on Linux). Where no keyring service runs (a
//! headless CI machine), a clearly warned fallback file (mode 0600) is used.
//!
//! The keyring is read once per secret and process: values are cached (as
//! [`Secret`], masked in `Debug`) and the cache is updated by every write
//! through this handle, so views polling every few seconds never touch the
//! keyring. Another process changing the keyring is seen at the next start.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use vdi_wire::Secret;

const SERVICE: &str = "vdi-console";

/// Which secret of a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ApiKey,
    CliKey,
    SshPassword,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::ApiKey, Kind::CliKey, Kind::SshPassword];

    fn name(self) -> &'static str {
        match self {
            Kind::ApiKey => "api_key",
            Kind::CliKey => "cli_key",
            Kind::SshPassword => "ssh_password",
        }
    }
}

enum Store {
    Keyring,
    /// Plain file, owner-only: only where no keyring exists. `why`: the
    /// keyring probe's failure when the file is a fallback (`None`: chosen
    /// explicitly, as the tests do).
    File {
        path: PathBuf,
        why: Option<String>,
    },
}

pub struct Secrets {
    store: Store,
    /// What the store holds (`None`: known to be absent). The lock is held
    /// across a store access so a read never caches a value older than a
    /// concurrent write.
    cache: Mutex<HashMap<(i64, Kind), Option<Secret>>>,
}

/// Runs a keyring call on a thread of its own: the Secret Service client
/// (zbus) blocks on its own Tokio runtime, which panics when called from a
/// thread that already runs one (the CLI's `main`, the app's async commands).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("a keyring call does not panic"))
}

impl Secrets {
    /// The OS keyring if it answers, else the fallback file in `data_dir` (with
    /// a warning, also shown in the UI via [`Secrets::warning`]).
    pub fn detect(data_dir: &std::path::Path) -> Self {
        let probe = off_runtime(|| {
            keyring::Entry::new(SERVICE, "probe").and_then(|e| match e.get_password() {
                Ok(_) | Err(keyring::Error::NoEntry) => Ok(()),
                Err(e) => Err(e),
            })
        });
        match probe {
            Ok(()) => Self::new(Store::Keyring),
            Err(e) => {
                let path = data_dir.join("secrets.json");
                // Said once here (the log) and by `warning` (the CLI's
                // stderr, the UI's banner), with the reason.
                tracing::warn!(error = %e, file = %path.display(), "the OS keyring did not answer; secrets are kept in an owner-only file instead");
                Self::new(Store::File {
                    path,
                    why: Some(e.to_string()),
                })
            }
        }
    }

    /// The owner-only file, chosen explicitly (no keyring is tried).
    pub fn file(path: PathBuf) -> Self {
        Self::new(Store::File { path, why: None })
    }

    fn new(store: Store) -> Self {
        Self {
            store,
            cache: Mutex::default(),
        }
    }

    /// Whether secrets go to the OS keyring (not the fallback file).
    pub fn is_keyring(&self) -> bool {
        matches!(self.store, Store::Keyring)
    }

    /// A sentence for the UI when secrets are not in the OS keyring.
    pub fn warning(&self) -> Option<String> {
        match &self.store {
            Store::Keyring => None,
            Store::File { path, why: None } => Some(format!(
                "No OS keyring is used: keys are stored in {} (readable by your user only).",
                path.display()
            )),
            Store::File {
                path,
                why: Some(why),
            } => Some(format!(
                "No OS keyring is available (the keyring probe failed: {}): keys are stored in {} (readable by your user only) instead.",
                why.trim(),
                path.display()
            )),
        }
    }

    fn account(gateway: i64, kind: Kind) -> String {
        format!("gateway-{gateway}/{}", kind.name())
    }

    pub fn get(&self, gateway: i64, kind: Kind) -> Result<Option<Secret>> {
        let mut cache = self.cache.lock().unwrap();
        if let Some(v) = cache.get(&(gateway, kind)) {
            return Ok(v.clone());
        }
        let v = self.read(&Self::account(gateway, kind))?.map(Secret::new);
        cache.insert((gateway, kind), v.clone());
        Ok(v)
    }

    fn read(&self, account: &str) -> Result<Option<String>> {
        match &self.store {
            Store::Keyring => off_runtime(|| {
                match keyring::Entry::new(SERVICE, account).and_then(|e| e.get_password()) {
                    Ok(v) => Ok(Some(v)),
                    Err(keyring::Error::NoEntry) => Ok(None),
                    Err(e) => Err(Error::Secrets(e.to_string())),
                }
            }),
            Store::File { path, .. } => Ok(read_file(path)?.remove(account)),
        }
    }

    /// Stores `value`, or deletes the secret when it is empty.
    pub fn set(&self, gateway: i64, kind: Kind, value: &str) -> Result<()> {
        let mut cache = self.cache.lock().unwrap();
        // Forgotten first: after a failed write the store is asked again.
        cache.remove(&(gateway, kind));
        self.write(&Self::account(gateway, kind), value)?;
        let v = (!value.is_empty()).then(|| Secret::new(value));
        cache.insert((gateway, kind), v);
        Ok(())
    }

    fn write(&self, account: &str, value: &str) -> Result<()> {
        match &self.store {
            Store::Keyring => off_runtime(|| {
                let entry = keyring::Entry::new(SERVICE, account)
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
            }),
            Store::File { path, .. } => {
                let mut all = read_file(path)?;
                if value.is_empty() {
                    all.remove(account);
                } else {
                    all.insert(account.to_string(), value.to_string());
                }
                write_file(path, &all)
            }
        }
    }

    pub fn forget(&self, gateway: i64) -> Result<()> {
        for kind in Kind::ALL {
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
