//! The settings database: SQLite table `settings` holding one row, the JSON
//! document in the original's layout. Every writer runs in an IMMEDIATE
//! transaction, so concurrent writers (the daemon, `vdi-gateway settings set`)
//! never lose an update, and a rejected change writes nothing.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vdi_core::settings::{self, Change, SettingsError};
use vdi_wire::Settings;

pub const DEFAULT_DB_PATH: &str = "/opt/vdi-gateway/app/settings.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("settings database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("settings database {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("settings database {0} does not exist (start `vdi-gateway serve` once to create it)")]
    Missing(PathBuf),
    #[error(
        "settings database {path}: table `settings` holds {rows} rows; it must hold exactly one"
    )]
    Rows { path: PathBuf, rows: usize },
    #[error("settings database {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: SettingsError,
    },
    #[error("the settings were changed by another writer meanwhile; try again")]
    Conflict,
    /// The requested change itself is invalid; nothing was written.
    #[error(transparent)]
    Rejected(SettingsError),
}

/// Why the disk refused a write, where it did (the API says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// No space left (`SQLITE_FULL`, ENOSPC, EDQUOT).
    Full,
    /// The file system is read-only or the file cannot be written.
    ReadOnly,
}

impl StoreError {
    /// Whether this is the disk refusing, not the database's content.
    pub fn storage(&self) -> Option<Storage> {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => match e.code {
                C::DiskFull => Some(Storage::Full),
                C::ReadOnly | C::CannotOpen | C::PermissionDenied => Some(Storage::ReadOnly),
                C::SystemIoFailure => Some(Storage::ReadOnly),
                _ => None,
            },
            StoreError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => Some(Storage::Full),
                Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
                    Some(Storage::ReadOnly)
                }
                _ => None,
            },
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// Opens an existing database; it must hold one valid document.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = Self { path: path.into() };
        if !store.path.exists() {
            return Err(StoreError::Missing(store.path));
        }
        store.load()?;
        Ok(store)
    }

    /// Opens the database, creating it with `initial()` when the file is absent.
    /// Returns whether it was created.
    pub fn open_or_create(
        path: impl Into<PathBuf>,
        initial: impl FnOnce() -> Settings,
    ) -> Result<(Self, bool), StoreError> {
        let store = Self { path: path.into() };
        if store.path.exists() {
            store.load()?;
            return Ok((store, false));
        }
        if let Some(dir) = store.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| store.io(source))?;
        }
        let doc = settings::render_document(&initial());
        let mut conn = store.connect()?;
        restrict_permissions(&store.path).map_err(|source| store.io(source))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| store.sql(e))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS settings (data TEXT NOT NULL)")
            .map_err(|e| store.sql(e))?;
        let rows: i64 = tx
            .query_row("SELECT count(*) FROM settings", [], |r| r.get(0))
            .map_err(|e| store.sql(e))?;
        // Another process may have created it between our check and the lock.
        if rows == 0 {
            tx.execute("INSERT INTO settings (data) VALUES (?1)", [&doc])
                .map_err(|e| store.sql(e))?;
        }
        tx.commit().map_err(|e| store.sql(e))?;
        store.load()?;
        Ok((store, rows == 0))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored text, exactly as `select * from settings` prints it.
    pub fn load_text(&self) -> Result<String, StoreError> {
        let conn = self.connect()?;
        self.read_text(&conn)
    }

    pub fn load(&self) -> Result<Settings, StoreError> {
        let text = self.load_text()?;
        self.parse(&text)
    }

    /// Applies a partial update atomically.
    pub fn update(&self, patch: &Map<String, Value>) -> Result<Change, StoreError> {
        self.update_with(|_| patch.clone())
    }

    /// Reads, builds a patch from the current settings, validates and writes,
    /// all inside one IMMEDIATE transaction.
    pub fn update_with(
        &self,
        make_patch: impl FnOnce(&Settings) -> Map<String, Value>,
    ) -> Result<Change, StoreError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql(e))?;
        let current = self.parse(&self.read_text(&tx)?)?;
        let change =
            settings::apply_patch(&current, &make_patch(&current)).map_err(StoreError::Rejected)?;
        if !change.changed.is_empty() {
            self.write(&tx, &change.settings)?;
        }
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(change)
    }

    /// Writes `new` only if the stored text is still `expected` (what the caller
    /// read before preparing the change). The daemon uses this so it can bind
    /// sockets and load certificates between reading and writing.
    pub fn compare_and_swap(&self, expected: &str, new: &Settings) -> Result<(), StoreError> {
        let mut conn = self.connect()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql(e))?;
        if self.read_text(&tx)? != expected {
            return Err(StoreError::Conflict);
        }
        self.write(&tx, new)?;
        tx.commit().map_err(|e| self.sql(e))
    }

    fn write(&self, conn: &Connection, s: &Settings) -> Result<(), StoreError> {
        let doc = settings::render_document(s);
        conn.execute("UPDATE settings SET data = ?1", [&doc])
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    fn read_text(&self, conn: &Connection) -> Result<String, StoreError> {
        let mut stmt = conn
            .prepare("SELECT data FROM settings LIMIT 2")
            .map_err(|e| self.sql(e))?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sql(e))?;
        match <[String; 1]>::try_from(rows) {
            Ok([text]) => Ok(text),
            Err(rows) => {
                let count: Option<i64> = conn
                    .query_row("SELECT count(*) FROM settings", [], |r| r.get(0))
                    .optional()
                    .map_err(|e| self.sql(e))?;
                Err(StoreError::Rows {
                    path: self.path.clone(),
                    rows: count.map_or(rows.len(), |c| c as usize),
                })
            }
        }
    }

    fn parse(&self, text: &str) -> Result<Settings, StoreError> {
        settings::parse_document_text(text).map_err(|source| StoreError::Invalid {
            path: self.path.clone(),
            source,
        })
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path).map_err(|e| self.sql(e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| self.sql(e))?;
        Ok(conn)
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// The database holds both keys: owner-only.
fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Fresh random keys: 16 random bytes as base64 text (24 characters), like the seed's.
pub fn random_key() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Settings for a gateway host's first installation (the package's postinst):
/// the address of the first network interface as internal, public and
/// virtual address, fresh keys, and `ha_managed: false` until an admin has set
/// the real virtual IP (so installing never rewrites HAProxy behind their back).
pub fn host_settings() -> Settings {
    let mut s = first_start_settings();
    let first = vdi_core::ha::first_interface(&crate::ha::interfaces()).map(str::to_string);
    let addr = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .find(|i| Some(&i.name) == first.as_ref() && i.ip().is_ipv4())
        .map(|i| i.ip());
    if let Some(ip) = addr {
        s.internal_addrs = vec![ip];
        s.public_addr = ip;
        s.virtual_addr = ip;
        s.disp_addrs = vec![ip];
    }
    s
}

/// Settings for a first start: local defaults with fresh keys.
pub fn first_start_settings() -> Settings {
    settings::local_defaults(random_key(), random_key())
}

#[cfg(test)]
mod tests;
