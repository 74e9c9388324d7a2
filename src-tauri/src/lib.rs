//! The desktop app: a Tauri v2 shell around [`vdi_console::Console`]. Every
//! command is one library call (see `commands`); the logic lives in the
//! library that the `vdi-console` CLI uses too.

mod app_commands;
mod bulk;
mod commands;
mod hosts;

pub use app_commands::COMMANDS;

use std::path::PathBuf;
use std::sync::Arc;
use tauri::Manager;
use vdi_console::Console;

/// The app's data directory: `$VDI_CONSOLE_DATA` (tests, several profiles),
/// else the platform's app data directory (where Tauri's `app_data_dir`
/// points: the data directory and the app's identifier).
fn data_dir(identifier: &str) -> PathBuf {
    std::env::var_os("VDI_CONSOLE_DATA")
        .map(PathBuf::from)
        .or_else(|| dirs::data_dir().map(|d| d.join(identifier)))
        .unwrap_or_else(vdi_console::default_data_dir)
}

/// The app's state and commands on a builder: what `run` builds, and the
/// tests on Tauri's mock runtime.
pub fn configure<R: tauri::Runtime>(
    builder: tauri::Builder<R>,
    console: Arc<Console>,
) -> tauri::Builder<R> {
    builder.manage(console).invoke_handler(commands::handler())
}

/// WebKitGTK renders the page without GPU compositing unless the user asks
/// for it (`VDI_CONSOLE_GPU=on`, or WebKit's own `WEBKIT_*_COMPOSITING_MODE`
/// set). Tables and small SVG charts gain nothing from a GL compositor, and
/// it costs ~85 MB in the web process (Mesa, its LLVM, the layers' buffers;
/// measured in docs/benchmarks.md) and shows a blank window on some drivers.
fn choose_rendering() {
    let user_chose = [
        "WEBKIT_DISABLE_COMPOSITING_MODE",
        "WEBKIT_FORCE_COMPOSITING_MODE",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if cfg!(target_os = "linux")
        && !user_chose
        && std::env::var("VDI_CONSOLE_GPU").as_deref() != Ok("on")
    {
        // SAFETY: the first thing `run` does, before any thread is started
        // (WebKit reads it when GTK starts, in this thread).
        unsafe { std::env::set_var("WEBKIT_DISABLE_COMPOSITING_MODE", "1") };
    }
}

pub fn run() {
    choose_rendering();
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("VDI_CONSOLE_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let context = tauri::generate_context!();
    let console = Arc::new(
        Console::open(&data_dir(&context.config().identifier))
            .expect("the console's data directory opens"),
    );
    // With no gateway configured, start the bundled one so a newcomer sees
    // a live gateway at once.
    let first = console.clone();
    tauri::async_runtime::spawn(async move {
        // VDI_EMBEDDED=off: no bundled gateway (a console for real hosts only).
        let embedded = std::env::var("VDI_EMBEDDED").as_deref() != Ok("off");
        match if embedded {
            first.ensure_embedded().await
        } else {
            Ok(None)
        } {
            Ok(Some(g)) => tracing::info!(url = %g.api_url, "embedded gateway running"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "embedded gateway did not start"),
        }
        // `scripts/run` as root asks for the demo cluster (the fleet view
        // shows its steps; it comes down when the console exits).
        if std::env::var("VDI_DEMO_CLUSTER").as_deref() == Ok("on") {
            let s = first.start_cluster();
            tracing::info!(phase = ?s.phase, unavailable = ?s.unavailable, "demo cluster");
        }
    });
    // The fleet's history (sparklines) keeps filling while no view polls.
    let stop = tokio_util::sync::CancellationToken::new();
    tauri::async_runtime::spawn(
        console
            .clone()
            .sample(std::time::Duration::from_secs(5), stop.clone()),
    );
    configure(tauri::Builder::default(), console)
        .build(context)
        .expect("the app builds")
        .run(move |app, event| {
            if let tauri::RunEvent::Exit = event {
                stop.cancel();
                let console = app.state::<Arc<Console>>();
                tauri::async_runtime::block_on(console.shutdown());
            }
        });
}
