//! The desktop app: a Tauri v2 shell around [`vdi_console::Console`]. Every
//! command is a thin wrapper (see `commands`); the logic lives in the library
//! that the `vdi-console` CLI uses too.

mod commands;
mod hosts;

use std::path::PathBuf;
use std::sync::Arc;
use tauri::Manager;

pub use commands::AppState;

/// The app's data directory: `$VDI_CONSOLE_DATA` (tests, several profiles),
/// else the platform's app data directory.
fn data_dir(app: &tauri::App) -> PathBuf {
    std::env::var_os("VDI_CONSOLE_DATA")
        .map(PathBuf::from)
        .or_else(|| app.path().app_data_dir().ok())
        .unwrap_or_else(vdi_console::default_data_dir)
}

/// Adds the state and the commands to a builder (the tests' mock runtime uses it).
pub fn configure<R: tauri::Runtime>(
    builder: tauri::Builder<R>,
    state: AppState,
) -> tauri::Builder<R> {
    builder
        .manage(state)
        .manage(hosts::JournalWatch::default())
        .invoke_handler(commands::handler())
}

pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("VDI_CONSOLE_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    tauri::Builder::default()
        .setup(|app| {
            let dir = data_dir(app);
            let console = Arc::new(vdi_console::Console::open(&dir)?);
            app.manage(AppState::new(console.clone(), dir));
            app.manage(hosts::JournalWatch::default());
            // With no gateway configured, start the bundled one so a newcomer
            // sees a live gateway at once.
            tauri::async_runtime::spawn(async move {
                match console.ensure_embedded().await {
                    Ok(Some(g)) => tracing::info!(url = %g.api_url, "embedded gateway running"),
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "embedded gateway did not start"),
                }
            });
            Ok(())
        })
        .invoke_handler(commands::handler())
        .build(tauri::generate_context!())
        .expect("the app builds")
        .run(|app, event| {
            if let tauri::RunEvent::Exit = event {
                let state = app.state::<AppState>();
                tauri::async_runtime::block_on(state.console.shutdown());
            }
        });
}
