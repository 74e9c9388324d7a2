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
    /// Add a gateway (keys go to the OS keyring). Keys are read from a file
    /// or from stdin (`-`), never from the command line.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        api_url: String,
        /// A file holding the gateway's api_key (`-`: read it from stdin).
        #[arg(long, value_name = "PATH")]
        api_key_file: Option<PathBuf>,
        /// A file holding the gateway's cli_key (`-`: read it from stdin).
        #[arg(long, value_name = "PATH")]
        cli_key_file: Option<PathBuf>,
        /// Refused: a key on the command line is seen by every user (ps,
        /// /proc) and kept in shell history.
        #[arg(long, hide = true, value_name = "KEY")]
        api_key: Option<String>,
        /// Refused, as --api-key.
        #[arg(long, hide = true, value_name = "KEY")]
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
        /// Another package than the bundled one: needs --sha256.
        #[arg(long)]
        package: Option<PathBuf>,
        /// The SHA-256 of --package, as the admin checked it (refused if the
        /// file does not hash to it).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// The audit log (newest first), as JSON or --csv.
    Audit {
        #[arg(long)]
        csv: bool,
    },
}

/// The most a key file may hold (keys are a few dozen bytes).
const KEY_FILE_LIMIT: u64 = 64 * 1024;

/// Refuses a key given on the command line, or in the variables that used
/// to carry one, saying what to use instead.
fn refuse_argv_key(flag: &str, given: bool, var: &str) -> Result<(), Error> {
    let file = flag.replace("key", "key-file");
    if given {
        return Err(Error::invalid(
            flag.trim_start_matches('-'),
            format!(
                "a key on the command line is visible to every user of this machine (ps, /proc) and stays in the shell's history; use {file} PATH, or {file} - to read it from stdin"
            ),
        ));
    }
    if std::env::var_os(var).is_some() {
        return Err(Error::invalid(
            flag.trim_start_matches('-'),
            format!(
                "{var} is no longer read (keys come from a file or stdin); unset it and use {file} PATH, or {file} -"
            ),
        ));
    }
    Ok(())
}

/// A key from `path` (`-`: stdin), without its line end; bounded.
fn read_key(path: &std::path::Path, what: &str) -> Result<String, Error> {
    use std::io::Read;
    let mut text = String::new();
    let r = if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(KEY_FILE_LIMIT + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(KEY_FILE_LIMIT + 1).read_to_string(&mut text))
    };
    let name = if path.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        path.display().to_string()
    };
    r.map_err(|e| Error::invalid(what, format!("{name}: {e}")))?;
    if text.len() as u64 > KEY_FILE_LIMIT {
        return Err(Error::invalid(
            what,
            format!("{name}: more than {KEY_FILE_LIMIT} bytes: not a key"),
        ));
    }
    let key = text.trim_end_matches(['\n', '\r']).to_string();
    if key.is_empty() || key.contains(['\n', '\r']) {
        return Err(Error::invalid(
            what,
            format!("{name}: expected one line holding the key"),
        ));
    }
    Ok(key)
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
                api_key_file,
                cli_key_file,
                api_key,
                cli_key,
                tags,
            } => {
                refuse_argv_key("--api-key", api_key.is_some(), "VDI_API_KEY")?;
                refuse_argv_key("--cli-key", cli_key.is_some(), "VDI_CLI_KEY")?;
                let stdin = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str() == "-");
                if stdin(&api_key_file) && stdin(&cli_key_file) {
                    return Err(Error::invalid(
                        "cli_key_file",
                        "only one key can come from stdin; give the other in a file",
                    ));
                }
                let api_key = api_key_file.map(|p| read_key(&p, "api_key_file")).transpose()?;
                let cli_key = cli_key_file.map(|p| read_key(&p, "cli_key_file")).transpose()?;
                print(&console.add(&GatewayDraft {
                    name,
                    api_url,
                    api_key: api_key.map(Into::into),
                    cli_key: cli_key.map(Into::into),
                    tags,
                    ..Default::default()
                })?)
            }
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
            Command::Deploy {
                id,
                package,
                sha256,
                force,
            } => {
                let r = console
                    .deploy(id, package.as_deref(), force, sha256.as_deref(), |p| {
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
