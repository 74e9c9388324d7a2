//! Where the host-local files may be (the syntax is vdi-core's): each path
//! setting inside the directories its tool uses (or one the host adds with
//! `VDI_GATEWAY_CONFIG_ROOTS`), never the settings database, never a
//! directory or a link. Checked against the file system as it is, with
//! links in the directories resolved.

use std::path::{Component, Path, PathBuf};
use vdi_wire::{FieldError, Settings};

/// The directories each path setting may point into by default.
fn default_roots(field: &str) -> &'static [&'static str] {
    match field {
        "haproxy_cfg_path" => &["/etc/haproxy"],
        "keepalived_conf_path" => &["/etc/keepalived"],
        "haproxy_admin_socket" => &["/run/haproxy", "/var/run/haproxy", "/var/lib/haproxy"],
        "tls_cert_path" | "tls_key_path" => &["/etc/vdi-gateway", "/etc/ssl", "/etc/letsencrypt"],
        _ => &[],
    }
}

/// Where the host lists extra directories: the daemon's unit reads it as its
/// `EnvironmentFile`, and the CLI reads it too, so both accept the same paths.
pub const ENVIRONMENT_FILE: &str = "/etc/default/vdi-gateway";

/// The directories the host adds for every path setting:
/// `VDI_GATEWAY_CONFIG_ROOTS` (colon-separated absolute paths) from the
/// environment, else from [`ENVIRONMENT_FILE`].
pub fn roots_from_env() -> Vec<PathBuf> {
    let value = std::env::var("VDI_GATEWAY_CONFIG_ROOTS").ok().or_else(|| {
        let text = std::fs::read_to_string(ENVIRONMENT_FILE).ok()?;
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("VDI_GATEWAY_CONFIG_ROOTS=")
                .map(|v| v.trim_matches('"').to_string())
        })
    });
    value
        .unwrap_or_default()
        .split(':')
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// `path` with every link in its existing ancestors resolved (the file itself
/// is not followed: a link there is refused on its own).
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path.parent();
    let mut rest = vec![path.file_name().unwrap_or_default().to_os_string()];
    while let Some(dir) = existing {
        if let Ok(real) = dir.canonicalize() {
            let mut p = real;
            p.extend(rest.iter().rev());
            return p;
        }
        rest.push(dir.file_name().unwrap_or_default().to_os_string());
        existing = dir.parent();
    }
    path.to_path_buf()
}

fn inside(path: &Path, dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    path.starts_with(&dir) && path.components().count() > dir.components().count()
}

/// Every problem with where the path settings of `s` point, for a gateway
/// whose database is `db`.
pub fn check(s: &Settings, db: &Path, extra_roots: &[PathBuf]) -> Vec<FieldError> {
    let db = db.canonicalize().unwrap_or_else(|_| db.to_path_buf());
    let db_dir = db.parent().map(Path::to_path_buf).unwrap_or_default();
    let fields = [
        ("tls_cert_path", &s.tls_cert_path),
        ("tls_key_path", &s.tls_key_path),
        ("haproxy_cfg_path", &s.haproxy_cfg_path),
        ("keepalived_conf_path", &s.keepalived_conf_path),
        ("haproxy_admin_socket", &s.haproxy_admin_socket),
    ];
    let mut errors = Vec::new();
    for (field, value) in fields {
        let Some(value) = value else { continue };
        if let Err(message) = check_one(field, Path::new(value), &db, &db_dir, extra_roots) {
            errors.push(FieldError::new(field, message));
        }
    }
    errors
}

fn check_one(
    field: &str,
    path: &Path,
    db: &Path,
    db_dir: &Path,
    extra_roots: &[PathBuf],
) -> Result<(), String> {
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("{} must be a plain path", path.display()));
    }
    let real = resolved(path);
    let db_name = db
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let near_db = real.parent() == Some(db_dir)
        && real
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&db_name));
    if real == db || near_db {
        return Err(format!("{} is the settings database", path.display()));
    }
    let tls = field.starts_with("tls_");
    // The database's own directory is the gateway's: only its tls/ holds
    // files another setting may name.
    let in_db_dir = inside(&real, db_dir);
    let allowed = if in_db_dir {
        tls && inside(&real, &db_dir.join("tls"))
    } else {
        default_roots(field)
            .iter()
            .map(PathBuf::from)
            .chain(extra_roots.iter().cloned())
            .any(|root| inside(&real, &root))
    };
    if !allowed && in_db_dir && !tls {
        return Err(format!(
            "{} is in the settings database's directory {}, which holds only the gateway's own files",
            path.display(),
            db_dir.display()
        ));
    }
    if !allowed {
        let mut dirs: Vec<String> = default_roots(field).iter().map(|d| d.to_string()).collect();
        if tls {
            dirs.push(db_dir.join("tls").display().to_string());
        }
        return Err(format!(
            "{} must be inside {} (or a directory listed in VDI_GATEWAY_CONFIG_ROOTS)",
            path.display(),
            dirs.join(", ")
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{} is a link; name the file itself",
            path.display()
        )),
        Ok(m) if m.is_dir() => Err(format!("{} is a directory", path.display())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_their_directories_and_never_name_the_database() {
        let dir = crate::testing::TempDir::new();
        let gw = dir.0.join("gw");
        let elsewhere = dir.0.join("etc");
        std::fs::create_dir_all(gw.join("tls")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let db = gw.join("settings.db");
        std::fs::write(&db, b"SQLite").unwrap();
        let mut s = crate::first_start_settings();
        let roots = [elsewhere.clone()];
        let p = |p: &Path| Some(p.display().to_string());

        s.haproxy_cfg_path = p(&elsewhere.join("haproxy.cfg"));
        s.tls_cert_path = p(&gw.join("tls/cert.pem"));
        assert_eq!(check(&s, &db, &roots), vec![]);
        assert_eq!(
            check(&s, &db, &[]).len(),
            1,
            "outside the defaults without a root"
        );

        for bad in [
            db.clone(),
            gw.join("settings.db-wal"),
            gw.join("haproxy.cfg"),
            gw.join("tls/haproxy.cfg"),
            elsewhere.clone(),
            PathBuf::from("/etc/passwd"),
        ] {
            s.haproxy_cfg_path = p(&bad);
            let errors = check(&s, &db, &roots);
            assert_eq!(errors.len(), 1, "{}", bad.display());
            assert_eq!(errors[0].field, "haproxy_cfg_path");
        }
        // A link to the database is refused too, however it is named.
        let link = elsewhere.join("link.cfg");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        s.haproxy_cfg_path = p(&link);
        assert_eq!(check(&s, &db, &roots).len(), 1);
        // And a directory that links into the gateway's directory.
        let sneaky = elsewhere.join("sneaky");
        std::os::unix::fs::symlink(&gw, &sneaky).unwrap();
        s.haproxy_cfg_path = p(&sneaky.join("settings.db"));
        assert_eq!(check(&s, &db, &roots).len(), 1);
    }
}
