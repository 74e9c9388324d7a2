// The app's commands (one list, shared with the library): with an app
// manifest, Tauri checks every command against the capabilities, so the
// page reaches only the commands `capabilities/default.json` grants.
include!("src/app_commands.rs");

fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("the Tauri build step (tauri.conf.json, capabilities)");
}
