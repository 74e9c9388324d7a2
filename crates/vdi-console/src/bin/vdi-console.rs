//! `vdi-console`: the console's library on the command line (scripting, tests).

use clap::{Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use vdi_console::{Console, Error};
use vdi_wire::console::{AuditFormat, ConsoleError, GatewayDraft, JournalRequest, ServiceAction};

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
    /// The units of a gateway host (over SSH).
    Services { id: i64 },
    /// Start, stop, restart or reload a unit (over SSH), tracked until it settles.
    Service {
        id: i64,
        #[arg(value_parser = ["vdi-gateway", "haproxy", "keepalived"])]
        unit: String,
        #[arg(value_parser = ["start", "stop", "restart", "reload"])]
        action: String,
    },
    /// A unit's journal (over SSH): recent entries, or --follow.
    Journal {
        id: i64,
        #[arg(value_parser = ["vdi-gateway", "haproxy", "keepalived"])]
        unit: String,
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
        #[arg(long)]
        follow: bool,
    },
    /// A configuration file of a host with its drift and check.
    Config {
        id: i64,
        #[arg(value_parser = ["haproxy", "keepalived"])]
        which: String,
    },
    /// Trust a host key shown by an earlier command (by its fingerprint).
    Trust {
        id: i64,
        host: String,
        fingerprint: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
    },
    /// Install or upgrade a gateway package on a host (default: the bundled one).
    Deploy {
        id: i64,
        #[arg(long)]
        package: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// The audit log (newest first), as JSON or --csv.
    Audit {
        #[arg(long)]
        csv: bool,
    },
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
                api_key: api_key.map(Into::into),
                cli_key: cli_key.map(Into::into),
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
                let entry = console.ensure_embedded().await?.ok_or_else(|| {
                    Error::Embedded(
                        "the fleet has gateways and none is embedded: the console runs its own only for an empty fleet".into(),
                    )
                })?;
                // Listening before the entry is printed: a Ctrl-C right
                // after it still stops the gateway cleanly.
                let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| {
                    Error::Embedded(format!("cannot wait for Ctrl-C: {e}"))
                })?;
                print(&entry);
                interrupt.recv().await;
                console.shutdown().await;
            }
            Command::Services { id } => print(&console.services(id).await?),
            Command::Service { id, unit, action } => {
                let action = ServiceAction::from_verb(&action).expect("clap checked the action");
                let o = console.service_action(id, &unit, action).await?;
                print(&o);
                if !o.ok {
                    return Err(Error::ActionFailed(o.summary));
                }
            }
            Command::Journal {
                id,
                unit,
                lines,
                follow,
            } => {
                let q = vdi_console::journal::Query::of(&JournalRequest {
                    unit,
                    lines,
                    ..Default::default()
                })?;
                if follow {
                    let stop = tokio_util::sync::CancellationToken::new();
                    let s2 = stop.clone();
                    tokio::spawn(async move {
                        let _ = tokio::signal::ctrl_c().await;
                        s2.cancel();
                    });
                    console
                        .follow_journal(id, q, stop, |e| {
                            println!("{}", serde_json::to_string(&e).expect("serializes"));
                            true
                        })
                        .await?;
                } else {
                    print(&console.journal(id, &q, None).await?);
                }
            }
            Command::Config { id, which } => print(&console.config_preview(id, &which).await?),
            Command::Trust {
                id,
                host,
                fingerprint,
                port,
            } => {
                console
                    .trust_host_key(id, &host, port, &fingerprint)
                    .await?
            }
            Command::Deploy { id, package, force } => {
                let r = console
                    .deploy(id, package.as_deref(), force, |p| {
                        eprintln!("{}: {}", p.step, p.detail)
                    })
                    .await?;
                print(&r);
            }
            Command::Audit { csv } => {
                let format = if csv {
                    AuditFormat::Csv
                } else {
                    AuditFormat::Json
                };
                let text = console.audit_export(&Default::default(), format)?;
                println!("{}", text.trim_end());
            }
        }
        Ok::<_, Error>(())
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
