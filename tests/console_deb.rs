//! The console's .deb (packaging/build-console-deb) from the debug binary
//! (the release build is the documented command; same script).

use std::process::Command;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn console_deb_has_the_app_its_launcher_and_its_libraries() {
    // scripts/test builds it before the tests (a build inside a test would
    // recompile the app without the test-only features: minutes).
    let deb = match std::env::var("VDI_CONSOLE_DEB") {
        Ok(path) => path,
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "scripts/test sets VDI_CONSOLE_DEB"
            );
            let root = env!("CARGO_MANIFEST_DIR");
            let out = Command::new("bash")
                .arg(format!("{root}/packaging/build-console-deb"))
                .env("PROFILE", "dev")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout).trim().to_string()
        }
    };
    let info = text(
        &Command::new("dpkg-deb")
            .args(["-f", &deb])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(info.contains("Package: vdi-console\n"), "{info}");
    let depends = info
        .lines()
        .find(|l| l.starts_with("Depends:"))
        .unwrap_or_default()
        .to_string();
    for lib in ["libwebkit2gtk-4.1-0", "libgtk-3-0", "libc6"] {
        assert!(depends.contains(lib), "{lib} missing from {depends}");
    }
    let files = text(
        &Command::new("dpkg-deb")
            .args(["-c", &deb])
            .output()
            .unwrap()
            .stdout,
    );
    for f in [
        "./usr/bin/vdi-console-app",
        "./usr/share/applications/vdi-console.desktop",
        "./usr/share/icons/hicolor/128x128/apps/vdi-console.png",
        "./usr/share/vdi-console/vdi-gateway.deb",
    ] {
        assert!(files.contains(f), "{f} missing:\n{files}");
    }
    // The launcher runs the installed binary.
    let dir = std::env::temp_dir().join(format!("vdi-console-deb-{}", std::process::id()));
    assert!(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&dir)
            .status()
            .unwrap()
            .success()
    );
    let desktop =
        std::fs::read_to_string(dir.join("usr/share/applications/vdi-console.desktop")).unwrap();
    assert!(
        desktop.contains("\nExec=vdi-console-app\n") && desktop.contains("\nIcon=vdi-console\n"),
        "{desktop}"
    );
    assert!(
        dir.join("usr/bin/vdi-console-app")
            .metadata()
            .unwrap()
            .len()
            > 1_000_000
    );
    let _ = std::fs::remove_dir_all(&dir);
}
