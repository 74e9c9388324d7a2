//! The fleet inventory: gateways the console looks after, in SQLite in the
//! app's data directory. No secrets here (they are in [`crate::secrets`]).

use crate::error::{Error, Result};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use vdi_wire::console::{GatewayDraft, GatewayEntry, SshAuth};

pub struct Inventory {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gateways (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    api_url TEXT NOT NULL,
    ssh_host TEXT,
    ssh_port INTEGER NOT NULL DEFAULT 22,
    ssh_user TEXT NOT NULL DEFAULT 'root',
    ssh_auth TEXT NOT NULL DEFAULT '{\"method\":\"agent\"}',
    tags TEXT NOT NULL DEFAULT '[]',
    embedded INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);";

impl Inventory {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::DataDir(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        // Added after the first release: older inventories get the column.
        let has_jump: bool = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('gateways') WHERE name = 'ssh_jump'",
            [],
            |r| r.get(0),
        )?;
        if !has_jump {
            conn.execute_batch("ALTER TABLE gateways ADD COLUMN ssh_jump TEXT")?;
        }
        Ok(Self { conn })
    }

    pub fn list(&self) -> Result<Vec<GatewayEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, api_url, ssh_host, ssh_port, ssh_user, ssh_auth, tags, embedded, ssh_jump FROM gateways ORDER BY name",
        )?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn get(&self, id: i64) -> Result<GatewayEntry> {
        self.conn
            .query_row(
                "SELECT id, name, api_url, ssh_host, ssh_port, ssh_user, ssh_auth, tags, embedded, ssh_jump FROM gateways WHERE id = ?1",
                [id],
                row,
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    pub fn embedded(&self) -> Result<Option<GatewayEntry>> {
        Ok(self.list()?.into_iter().find(|g| g.embedded))
    }

    /// Adds a gateway after validating the draft; returns its id.
    pub fn add(&self, d: &GatewayDraft, embedded: bool) -> Result<i64> {
        let v = validate(d)?;
        self.conn
            .execute(
                "INSERT INTO gateways (name, api_url, ssh_host, ssh_port, ssh_user, ssh_auth, tags, embedded, created_at, ssh_jump)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![v.name, v.api_url, v.ssh_host, v.ssh_port, v.ssh_user, v.ssh_auth, v.tags, embedded, chrono::Utc::now().to_rfc3339(), v.ssh_jump],
            )
            .map_err(|e| unique_name(e, &v.name))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn update(&self, id: i64, d: &GatewayDraft) -> Result<()> {
        self.get(id)?;
        let v = validate(d)?;
        self.conn
            .execute(
                "UPDATE gateways SET name = ?2, api_url = ?3, ssh_host = ?4, ssh_port = ?5, ssh_user = ?6, ssh_auth = ?7, tags = ?8, ssh_jump = ?9 WHERE id = ?1",
                params![id, v.name, v.api_url, v.ssh_host, v.ssh_port, v.ssh_user, v.ssh_auth, v.tags, v.ssh_jump],
            )
            .map_err(|e| unique_name(e, &v.name))?;
        Ok(())
    }

    pub fn remove(&self, id: i64) -> Result<()> {
        match self
            .conn
            .execute("DELETE FROM gateways WHERE id = ?1", [id])?
        {
            0 => Err(Error::NotFound(id.to_string())),
            _ => Ok(()),
        }
    }
}

fn unique_name(e: rusqlite::Error, name: &str) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::invalid("name", format!("a gateway named {name:?} exists already"))
        }
        other => Error::Inventory(other),
    }
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<GatewayEntry> {
    let auth: String = r.get(6)?;
    let tags: String = r.get(7)?;
    Ok(GatewayEntry {
        id: r.get(0)?,
        name: r.get(1)?,
        api_url: r.get(2)?,
        ssh_host: r.get(3)?,
        ssh_port: r.get(4)?,
        ssh_user: r.get(5)?,
        ssh_auth: serde_json::from_str(&auth).unwrap_or(SshAuth::Agent),
        ssh_jump: r.get(9)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        embedded: r.get(8)?,
        has_api_key: false,
        has_cli_key: false,
    })
}

struct Valid {
    name: String,
    api_url: String,
    ssh_host: Option<String>,
    ssh_port: u16,
    ssh_user: String,
    ssh_auth: String,
    ssh_jump: Option<String>,
    tags: String,
}

/// Form validation (the same rules the UI shows inline).
fn validate(d: &GatewayDraft) -> Result<Valid> {
    let mut fields = Vec::new();
    let name = d.name.trim();
    if name.is_empty() || name.len() > 64 {
        fields.push(vdi_wire::FieldError::new(
            "name",
            "give a name of 1-64 characters",
        ));
    }
    let api_url = d.api_url.trim().trim_end_matches('/');
    let bad_url = match url::Url::parse(api_url) {
        Err(e) => Some(format!("not a URL: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some("must start with http:// or https://".into())
        }
        Ok(u) if u.host().is_none() => Some("needs a host".into()),
        Ok(u) if u.path() != "/" || u.query().is_some() => {
            Some("give the gateway's base URL only, e.g. http://10.0.0.11:8000".into())
        }
        Ok(_) => None,
    };
    if let Some(m) = bad_url {
        fields.push(vdi_wire::FieldError::new("api_url", m));
    }
    let ssh_host = d
        .ssh_host
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    if ssh_host
        .as_deref()
        .is_some_and(|h| h.contains(char::is_whitespace))
    {
        fields.push(vdi_wire::FieldError::new(
            "ssh_host",
            "a host name or address has no spaces",
        ));
    }
    let ssh_port = d.ssh_port.unwrap_or(22);
    if ssh_port == 0 {
        fields.push(vdi_wire::FieldError::new("ssh_port", "must be 1-65535"));
    }
    let ssh_user = d
        .ssh_user
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .unwrap_or("root")
        .to_string();
    if let Some(SshAuth::KeyFile { path }) = &d.ssh_auth
        && path.trim().is_empty()
    {
        fields.push(vdi_wire::FieldError::new(
            "ssh_auth",
            "give the key file's path",
        ));
    }
    let ssh_jump = d
        .ssh_jump
        .as_deref()
        .map(str::trim)
        .filter(|j| !j.is_empty())
        .map(str::to_string);
    if ssh_jump
        .as_deref()
        .is_some_and(|j| crate::ssh::config::parse_jump(j).is_none())
    {
        fields.push(vdi_wire::FieldError::new(
            "ssh_jump",
            "give the jump host as [user@]host[:port]",
        ));
    }
    let mut tags: Vec<String> = d
        .tags
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    if !fields.is_empty() {
        let message = fields
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Invalid(message, fields));
    }
    Ok(Valid {
        name: name.to_string(),
        api_url: api_url.to_string(),
        ssh_host,
        ssh_port,
        ssh_user,
        ssh_auth: serde_json::to_string(d.ssh_auth.as_ref().unwrap_or(&SshAuth::Agent))
            .expect("serializes"),
        ssh_jump,
        tags: serde_json::to_string(&tags).expect("serializes"),
    })
}
