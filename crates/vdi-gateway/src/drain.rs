//! Drain for maintenance: the node takes no new tunnels while its running
//! streams go on (docs/upgrades.md). The state lives in one small file next
//! to the settings database, `draining`, holding `1` or `0`: it survives a
//! restart and a reboot (a drained node stays drained until undrained, like a
//! cordoned Kubernetes node), and it is Keepalived's `track_file` as it is
//! (weight 0: non-zero puts the node's VRRP instance in FAULT, so the VIP
//! leaves it; `vdi_core::ha::render_keepalived`).

use chrono::{DateTime, Utc};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file's name, in the directory of the settings database.
pub const FILE: &str = "draining";

/// The drain file of the gateway whose database is `db`, as an absolute
/// path (Keepalived's configuration names it).
pub fn file_for(db: &Path) -> PathBuf {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file = dir.join(FILE);
    std::path::absolute(&file).unwrap_or(file)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}; the drain state is unchanged")]
pub struct DrainError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Whether the file's text says draining: a non-zero integer, as Keepalived
/// reads it. Anything else (empty, `0`, not a number) is not draining.
pub fn parse(text: &str) -> bool {
    text.trim().parse::<i64>().is_ok_and(|v| v != 0)
}

pub struct Drain {
    path: PathBuf,
    /// When the drain began; `None` when serving. Held while the file is
    /// written, so the file and this never disagree.
    since: Mutex<Option<DateTime<Utc>>>,
}

impl Drain {
    /// The state the file holds (absent: serving). Since when: the file's
    /// modification time. A file that is there but cannot be read counts as
    /// drained: a node the admin took out must not come back by accident.
    pub fn load(path: PathBuf) -> Self {
        let since = match std::fs::read_to_string(&path) {
            Ok(text) if parse(&text) => {
                let at = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(DateTime::<Utc>::from)
                    .unwrap_or_else(|_| Utc::now());
                tracing::warn!(file = %path.display(), since = %at,
                    "this node is drained: no new tunnels until `vdi-gateway undrain`");
                Some(at)
            }
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e,
                    "cannot read the drain state; staying drained until `vdi-gateway undrain`");
                Some(Utc::now())
            }
        };
        Self {
            path,
            since: Mutex::new(since),
        }
    }

    /// The directory of the file (and of the database).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    pub fn since(&self) -> Option<DateTime<Utc>> {
        *self.since.lock().unwrap()
    }

    /// Drains (`true`) or undrains. The file is replaced first (written,
    /// synced, renamed over): if that fails nothing changed. Draining an
    /// already drained node keeps its first `since`.
    pub fn set(&self, on: bool) -> Result<Option<DateTime<Utc>>, DrainError> {
        let mut since = self.since.lock().unwrap();
        if since.is_some() == on {
            return Ok(*since);
        }
        write_atomically(&self.path, if on { b"1\n" } else { b"0\n" }).map_err(|source| {
            DrainError {
                path: self.path.clone(),
                source,
            }
        })?;
        *since = on.then(Utc::now);
        Ok(*since)
    }
}

/// Temp file in the same directory, synced, renamed over `path`, directory
/// synced: a reader (Keepalived) sees the old content or the new, never a
/// torn one. Keepalived watches the directory, so a rename is noticed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_file_as_keepalived_does() {
        assert!(parse("1\n"));
        assert!(parse(" 7 "));
        assert!(parse("-1"));
        assert!(!parse("0\n"));
        assert!(!parse(""));
        assert!(!parse("yes"));
    }

    #[test]
    fn survives_a_reload_and_keeps_its_first_since() {
        let dir = tempdir();
        let path = dir.join(FILE);
        let d = Drain::load(path.clone());
        assert_eq!(d.since(), None, "no file: serving");
        let first = d.set(true).unwrap().expect("drained");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        assert_eq!(d.set(true).unwrap(), Some(first), "drain again: same since");
        assert!(
            Drain::load(path.clone()).since().is_some(),
            "a restart keeps it"
        );
        assert_eq!(d.set(false).unwrap(), None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
        assert_eq!(Drain::load(path).since(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unreadable_file_counts_as_drained() {
        let dir = tempdir();
        let path = dir.join(FILE);
        // A directory where the file should be: it exists, it cannot be read.
        std::fs::create_dir(&path).unwrap();
        assert!(Drain::load(path).since().is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempdir();
        // The directory is gone: the temp file cannot be made.
        let path = dir.join("gone").join(FILE);
        let d = Drain::load(path.clone());
        let e = d.set(true).unwrap_err();
        assert!(e.to_string().contains("unchanged"), "{e}");
        assert_eq!(d.since(), None);
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vdi-drain-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
