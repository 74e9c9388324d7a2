use super::*;
use serde_json::json;

const SEED: &str = include_str!("../../../vdi-core/src/settings/seed.json");

fn seed() -> Settings {
    settings::parse_document_text(SEED).unwrap()
}

fn patch(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn temp_db() -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("app/settings.db");
    (dir, path)
}

/// A throwaway directory, removed on drop (no extra crate for this).
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p =
                std::env::temp_dir().join(format!("vdi-store-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn seed_round_trips_byte_for_byte_through_the_store() {
    let (_d, path) = temp_db();
    let (store, created) = Store::open_or_create(&path, seed).unwrap();
    assert!(created);
    assert_eq!(store.load_text().unwrap(), SEED);
    assert_eq!(store.load().unwrap(), seed());
    // What an admin sees with the sqlite3 shell, as in the original guide.
    let out = std::process::Command::new("sqlite3")
        .arg(&path)
        .arg("select * from settings")
        .output()
        .expect("the sqlite3 shell is installed (Debian package sqlite3)");
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{SEED}\n"));
}

#[test]
fn created_file_is_owner_only_and_reopened_not_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, path) = temp_db();
    Store::open_or_create(&path, seed).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (store, created) = Store::open_or_create(&path, first_start_settings).unwrap();
    assert!(!created);
    assert_eq!(store.load_text().unwrap(), SEED);
}

#[test]
fn open_requires_an_existing_file() {
    let (_d, path) = temp_db();
    assert!(matches!(Store::open(&path), Err(StoreError::Missing(_))));
}

#[test]
fn rejected_change_leaves_the_row_byte_identical() {
    let (_d, path) = temp_db();
    let (store, _) = Store::open_or_create(&path, seed).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = store
        .update(&patch(
            json!({"port_range_start": 7000, "port_range_stop": 6000, "api_port": 1}),
        ))
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err}");
    assert_eq!(store.load_text().unwrap(), SEED);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn accepted_change_is_persisted() {
    let (_d, path) = temp_db();
    let (store, _) = Store::open_or_create(&path, seed).unwrap();
    let change = store
        .update(&patch(json!({"port_range_stop": 5949})))
        .unwrap();
    assert_eq!(change.changed, ["port_range_stop"]);
    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.load().unwrap().port_range_stop, 5949);
    assert!(
        reopened
            .load_text()
            .unwrap()
            .contains("\"port_range_stop\": 5949,")
    );
}

#[test]
fn concurrent_writers_lose_no_update() {
    let (_d, path) = temp_db();
    let (store, _) = Store::open_or_create(&path, seed).unwrap();
    store
        .update(&patch(json!({"tunnel_ttl_secs": 1000})))
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = Store::open(&path).unwrap();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    store
                        .update_with(|s| {
                            let next = s.tunnel_ttl_secs.unwrap() + 1;
                            patch(json!({ "tunnel_ttl_secs": next }))
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.load().unwrap().tunnel_ttl_secs, Some(1080));
}

#[test]
fn compare_and_swap_refuses_a_stale_writer() {
    let (_d, path) = temp_db();
    let (store, _) = Store::open_or_create(&path, seed).unwrap();
    let stale = store.load_text().unwrap();
    store.update(&patch(json!({"disp_port": 4201}))).unwrap();
    let mut mine = seed();
    mine.api_port = 8100;
    assert!(matches!(
        store.compare_and_swap(&stale, &mine),
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.load().unwrap().disp_port, 4201);
    assert_eq!(store.load().unwrap().api_port, 8000);
}

#[test]
fn a_broken_file_is_reported_with_its_field() {
    let (_d, path) = temp_db();
    let (store, _) = Store::open_or_create(&path, seed).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE settings SET data = replace(data, '8000', '80000')",
        [],
    )
    .unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(
        err.contains("api_port") && err.contains("out of range"),
        "{err}"
    );
    conn.execute("INSERT INTO settings (data) VALUES ('{}')", [])
        .unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(err.contains("holds 2 rows"), "{err}");
}

#[test]
fn random_keys_are_base64_and_valid() {
    let s = first_start_settings();
    assert!(settings::validate(&s).is_empty());
    assert_eq!(s.api_key.expose().len(), 24);
    assert_ne!(s.api_key, s.cli_key);
}

/// The disk refusing a write is told apart from a broken database: the API
/// answers 507 or 503 for it (the fault harness drives a real full and a
/// real read-only tmpfs, `vdi-bench --steps faults`).
#[test]
fn storage_failures_are_classified() {
    let path = std::path::PathBuf::from("/x/settings.db");
    let io = |errno| StoreError::Io {
        path: path.clone(),
        source: std::io::Error::from_raw_os_error(errno),
    };
    let sql = |code| StoreError::Sqlite {
        path: path.clone(),
        source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
    };
    assert_eq!(io(libc::ENOSPC).storage(), Some(Storage::Full));
    assert_eq!(io(libc::EROFS).storage(), Some(Storage::ReadOnly));
    assert_eq!(io(libc::ENOENT).storage(), None);
    assert_eq!(
        sql(rusqlite::ffi::SQLITE_FULL).storage(),
        Some(Storage::Full)
    );
    assert_eq!(
        sql(rusqlite::ffi::SQLITE_READONLY).storage(),
        Some(Storage::ReadOnly)
    );
    assert_eq!(sql(rusqlite::ffi::SQLITE_CORRUPT).storage(), None);
    assert_eq!(StoreError::Conflict.storage(), None);
}
