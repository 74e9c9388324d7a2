//! Secrets in a real OS keyring: a private D-Bus session bus with
//! gnome-keyring-daemon serving the Secret Service API, read back with
//! libsecret's own `secret-tool` (not through our code).

mod common;

use common::{lookup, session};
use std::path::{Path, PathBuf};
use vdi_console::Console;
use vdi_console::secrets::{Kind, Secrets};
use vdi_wire::console::{GatewayDraft, SshAuth};

fn files_contain(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file()
            && std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        {
            hits.push(p);
        }
    }
    hits
}

#[test]
fn secrets_live_in_the_secret_service_not_in_files() {
    let Some(s) = session() else { return };
    // Safety: set before any other thread of this test process exists
    // (nextest runs each test in its own process).
    unsafe { std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &s.address) };
    let data = s.home.join("console");
    std::fs::create_dir_all(&data).unwrap();

    let secrets = Secrets::detect(&data);
    assert!(secrets.is_keyring(), "the keyring answers");
    assert_eq!(
        secrets.warning(),
        None,
        "no fallback warning with a keyring"
    );

    let console = Console::with_secrets(&data, secrets).unwrap();
    let api_key = "api-0123456789abcdef-secret";
    let g = console
        .add(&GatewayDraft {
            name: "gw1".into(),
            api_url: "http://127.0.0.1:8000".into(),
            ssh_host: Some("gw1".into()),
            ssh_user: Some("admin".into()),
            ssh_auth: Some(SshAuth::Password),
            api_key: Some(api_key.into()),
            ssh_password: Some("hunter2-ssh".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(g.has_api_key && !g.has_cli_key);

    // Read back through libsecret itself: the key really is in the Secret Service.
    let account = format!("gateway-{}/api_key", g.id);
    assert_eq!(lookup(&s, &account).as_deref(), Some(api_key));
    assert_eq!(
        lookup(&s, &format!("gateway-{}/ssh_password", g.id)).as_deref(),
        Some("hunter2-ssh")
    );
    // ...and nowhere in the console's data directory (inventory.db, no secrets.json).
    assert!(!data.join("secrets.json").exists());
    assert_eq!(files_contain(&data, api_key), Vec::<PathBuf>::new());
    assert_eq!(files_contain(&data, "hunter2-ssh"), Vec::<PathBuf>::new());

    // Rotation replaces, removal forgets.
    let draft = GatewayDraft {
        name: g.name.clone(),
        api_url: g.api_url.clone(),
        api_key: Some("api-rotated".into()),
        ..Default::default()
    };
    console.update(g.id, &draft).unwrap();
    assert_eq!(
        lookup(&s, &format!("gateway-{}/ssh_password", g.id)).as_deref(),
        Some("hunter2-ssh"),
        "a key not in the form is kept"
    );
    assert_eq!(lookup(&s, &account).as_deref(), Some("api-rotated"));
    console.remove(g.id).unwrap();
    assert_eq!(lookup(&s, &account), None);
    assert_eq!(lookup(&s, &format!("gateway-{}/ssh_password", g.id)), None);

    // A Secrets handle opened later (the next app start) sees what is stored.
    let again = Secrets::detect(&data);
    again.set(7, Kind::CliKey, "cli-later").unwrap();
    assert_eq!(
        Secrets::detect(&data)
            .get(7, Kind::CliKey)
            .unwrap()
            .as_ref()
            .map(vdi_wire::Secret::expose),
        Some("cli-later")
    );
}
