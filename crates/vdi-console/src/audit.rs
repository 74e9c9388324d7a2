//! The local audit log of admin actions (settings change, disconnect, service
//! actions, deploy, host key decisions): time, host, action, parameters with
//! secrets removed, result, OS user. SQLite beside the inventory.

use crate::error::Result;
use rusqlite::{Connection, params};
use serde_json::Value;
use std::path::Path;

pub use vdi_wire::console::{AuditFilter, AuditRecord};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    os_user TEXT NOT NULL,
    gateway INTEGER,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    params TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL
);";

/// Replaces the values of secret-looking keys (at any depth) by `***`.
pub fn scrub(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let k_l = k.to_ascii_lowercase();
                    let secret = ["key", "password", "passphrase", "secret", "token"]
                        .iter()
                        .any(|s| k_l.contains(s));
                    let v = if secret && !v.is_null() {
                        Value::String("***".into())
                    } else {
                        scrub(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(scrub).collect()),
        v => v.clone(),
    }
}

pub fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}

pub struct Audit {
    conn: std::sync::Mutex<Connection>,
}

impl Audit {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: std::sync::Mutex::new(conn),
        })
    }

    pub fn record(
        &self,
        gateway: Option<i64>,
        host: &str,
        action: &str,
        params: &Value,
        ok: bool,
        detail: &str,
    ) -> Result<()> {
        self.conn.lock().unwrap().execute(
            "INSERT INTO audit (at, os_user, gateway, host, action, params, result, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                os_user(),
                gateway,
                host,
                action,
                scrub(params).to_string(),
                if ok { "ok" } else { "failed" },
                detail
            ],
        )?;
        Ok(())
    }

    /// Newest first.
    pub fn list(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn.prepare(
            "SELECT id, at, os_user, gateway, host, action, params, result, detail FROM audit
             WHERE (?1 IS NULL OR host = ?1) AND (?2 IS NULL OR action = ?2)
               AND (?3 IS NULL OR instr(params, ?3) > 0 OR instr(detail, ?3) > 0)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![f.host, f.action, f.text, f.limit.unwrap_or(1000)],
            |r| {
                Ok(AuditRecord {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    os_user: r.get(2)?,
                    gateway: r.get(3)?,
                    host: r.get(4)?,
                    action: r.get(5)?,
                    params: r.get(6)?,
                    result: r.get(7)?,
                    detail: r.get(8)?,
                })
            },
        )?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a
/// tab or carriage return in front of one) gets a leading `'`, which makes
/// it text: a host name or a remote error message is data, never a formula
/// (CSV injection, OWASP).
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// CSV (RFC 4180 quoting, formula cells [`neutralise`]d) with a header line.
pub fn to_csv(records: &[AuditRecord]) -> String {
    fn q(s: &str) -> String {
        let s = neutralise(s);
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.into_owned()
        }
    }
    let mut out = String::from("id,at,os_user,gateway,host,action,params,result,detail\n");
    for r in records {
        let gw = r.gateway.map(|g| g.to_string()).unwrap_or_default();
        let cells = [
            r.id.to_string(),
            r.at.clone(),
            r.os_user.clone(),
            gw,
            r.host.clone(),
            r.action.clone(),
            r.params.clone(),
            r.result.clone(),
            r.detail.clone(),
        ];
        out.push_str(&cells.iter().map(|c| q(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_never_recorded() {
        let v = json!({"api_key": "abc", "patch": {"cli_key": "x", "ssh_password": "p", "api_port": 8000}, "list": [{"token": "t"}], "key_file": null});
        assert_eq!(
            scrub(&v),
            json!({"api_key": "***", "patch": {"cli_key": "***", "ssh_password": "***", "api_port": 8000}, "list": [{"token": "***"}], "key_file": null})
        );
    }

    #[test]
    fn record_filter_export() {
        let path = std::env::temp_dir().join(format!("vdi-audit-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = Audit::open(&path).unwrap();
        a.record(
            Some(1),
            "gw1",
            "restart",
            &json!({"unit": "haproxy"}),
            true,
            "active (running) after 0.4 s",
        )
        .unwrap();
        a.record(
            Some(2),
            "gw2",
            "change_settings",
            &json!({"patch": {"api_key": "secret-1"}}),
            false,
            "409: \"bad\", value",
        )
        .unwrap();
        let all = a.list(&AuditFilter::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].host, "gw2", "newest first");
        assert!(!all[0].params.contains("secret-1"));
        assert_eq!(all[0].result, "failed");
        assert_eq!(all[1].os_user, os_user());
        let only = a
            .list(&AuditFilter {
                host: Some("gw1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(only.len(), 1);
        let text = a
            .list(&AuditFilter {
                text: Some("haproxy".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(text[0].action, "restart");
        let csv = to_csv(&all);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.contains(r#""409: ""bad"", value""#), "{csv}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn csv_cells_are_never_formulas() {
        let path = std::env::temp_dir().join(format!("vdi-audit-csv-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = Audit::open(&path).unwrap();
        let hostile = [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ];
        for h in hostile {
            a.record(None, h, "inventory_add", &json!({"name": h}), false, h)
                .unwrap();
        }
        a.record(None, "gw-1", "service", &json!({}), true, "a-b = c")
            .unwrap();
        let csv = to_csv(&a.list(&AuditFilter::default()).unwrap());
        // Parsed back as a spreadsheet would: no cell starts a formula.
        let mut cells = vec![];
        for line in csv.lines().skip(1) {
            let mut cell = String::new();
            let mut quoted = false;
            let mut chars = line.chars().peekable();
            while let Some(ch) = chars.next() {
                match ch {
                    '"' if quoted && chars.peek() == Some(&'"') => {
                        chars.next();
                        cell.push('"');
                    }
                    '"' => quoted = !quoted,
                    ',' if !quoted => cells.push(std::mem::take(&mut cell)),
                    c => cell.push(c),
                }
            }
            cells.push(cell);
        }
        for c in &cells {
            assert!(
                !c.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a formula cell: {c:?} in\n{csv}"
            );
        }
        for h in hostile {
            assert!(
                cells.contains(&format!("'{h}")),
                "{h:?} kept as text:\n{csv}"
            );
        }
        assert!(cells.contains(&"gw-1".to_string()), "others untouched");
        assert!(cells.contains(&"a-b = c".to_string()));
        assert_eq!(neutralise("10.0.0.1"), "10.0.0.1");
        let _ = std::fs::remove_file(&path);
    }
}
