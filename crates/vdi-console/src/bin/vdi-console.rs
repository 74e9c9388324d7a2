//! `vdi-console`: the console's library on the command line (scripting, tests).

use clap::{Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use vdi_console::Console;
use vdi_wire::console::{ConsoleError, GatewayDraft};

#[derive(Parser)]
#[command(
    name = "vdi-console",
    version,
    about = "Space Gateway console (command line)"
)]
struct Cli {
    /// The console's data directory (inventory, embedded gateway).
    #[arg(long, env = "VDI_CONSOLE_DATA")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The gateways of the fleet.
    List,
    /// Add a gateway (keys go to the OS keyring).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        api_url: String,
        #[arg(long, env = "VDI_API_KEY")]
        api_key: Option<String>,
        #[arg(long, env = "VDI_CLI_KEY")]
        cli_key: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Remove a gateway and its secrets.
    Remove { id: i64 },
    /// Health of every gateway and the fleet's summary.
    Overview,
    /// The settings of a gateway.
    Settings { id: i64 },
    /// Tunnels and streams of a gateway.
    Connections { id: i64 },
    /// Run the embedded gateway (and add it to the fleet) until Ctrl-C.
    Embedded,
}

fn print<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn")
        .init();
    let cli = Cli::parse();
    let data = cli.data.unwrap_or_else(vdi_console::default_data_dir);
    let rt = tokio::runtime::Runtime::new().expect("a runtime starts");
    let result = rt.block_on(async {
        let console = Console::open(&data)?;
        if let Some(w) = console.secrets_warning() {
            eprintln!("warning: {w}");
        }
        match cli.command {
            Command::List => print(&console.list()?),
            Command::Add {
                name,
                api_url,
                api_key,
                cli_key,
                tags,
            } => print(&console.add(&GatewayDraft {
                name,
                api_url,
                api_key,
                cli_key,
                tags,
                ..Default::default()
            })?),
            Command::Remove { id } => console.remove(id)?,
            Command::Overview => print(&console.overview().await?),
            Command::Settings { id } => {
                print(&vdi_core::settings::masked(&console.settings(id).await?))
            }
            Command::Connections { id } => print(&console.connections(id).await?),
            Command::Embedded => {
                let entry = console.ensure_embedded().await?;
                print(&entry);
                let _ = tokio::signal::ctrl_c().await;
                console.shutdown().await;
            }
        }
        Ok::<_, vdi_console::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e: ConsoleError = e.into();
            eprintln!("vdi-console: {} ({})", e.message, e.code);
            ExitCode::FAILURE
        }
    }
}
