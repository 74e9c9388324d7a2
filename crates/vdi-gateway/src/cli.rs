//! Command line of `vdi-gateway`. `main` is a thin shell over this.

use crate::handover;
use crate::store::{self, DEFAULT_DB_PATH, Store, StoreError};
use clap::{Parser, Subcommand};
use serde_json::Map;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use vdi_core::settings as rules;

#[derive(Debug, Parser)]
#[command(
    name = "vdi-gateway",
    version,
    about = "Space Gateway: remote access to virtual desktops"
)]
pub struct Cli {
    /// The settings database (SQLite).
    #[arg(long, env = "VDI_GATEWAY_DB", default_value = DEFAULT_DB_PATH, global = true)]
    pub db: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (creates the database with fresh keys on first start).
    Serve,
    /// Show or change the settings document.
    Settings {
        #[command(subcommand)]
        command: SettingsCommand,
    },
    /// Validate the database (`serve` does the same at start); exit 1 listing each bad field.
    Check,
    /// Create the database for this host if it is absent (package installation).
    Init,
    /// Print the configuration the gateway would write for this node.
    Render {
        #[arg(value_enum)]
        what: Rendered,
    },
    /// Validate, write and reload the HAProxy and Keepalived configurations now.
    Apply,
    /// Drain the running gateway for maintenance: no new tunnels here,
    /// running streams go on, the VIP moves away. Kept until `undrain`.
    Drain {
        /// Then wait until no stream is left, at most this many seconds
        /// (exit 0 when empty, 3 when streams are still open then).
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// End a drain: the running gateway takes new tunnels again.
    Undrain {
        #[arg(long)]
        json: bool,
    },
    /// The running gateway's drain state and what still runs on it.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print this binary's version and the handover formats it reads (JSON);
    /// the running daemon asks the binary on disk before re-executing it.
    #[command(hide = true)]
    HandoverCheck,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Rendered {
    Haproxy,
    Keepalived,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the document as stored; keys are masked unless --reveal.
    Show {
        #[arg(long)]
        reveal: bool,
    },
    /// Change fields: KEY=VALUE ... (lists as a,b or JSON; `null` resets an optional field).
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => serve(cli.db),
        Command::Check => check(&cli.db),
        Command::Init => init(&cli.db),
        Command::Render { what } => render(&cli.db, what),
        Command::Apply => apply(&cli.db),
        Command::Drain { wait, json } => drain(crate::control::Op::Drain, wait, json),
        Command::Undrain { json } => drain(crate::control::Op::Undrain, None, json),
        Command::Status { json } => drain(crate::control::Op::Status, None, json),
        Command::HandoverCheck => {
            println!(
                "{}",
                serde_json::to_string(&handover::Capability::ours()).expect("serialises")
            );
            ExitCode::SUCCESS
        }
        Command::Settings {
            command: SettingsCommand::Show { reveal },
        } => show(&cli.db, reveal),
        Command::Settings {
            command: SettingsCommand::Set { assignments },
        } => set(&cli.db, &assignments),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("vdi-gateway: {msg}");
    ExitCode::FAILURE
}

fn drain(op: crate::control::Op, wait: Option<u64>, json: bool) -> ExitCode {
    use crate::control::{Op, path_from_env, request};
    let path = path_from_env();
    let show = |st: &vdi_wire::DrainState| {
        if json {
            println!("{}", serde_json::to_string(st).unwrap_or_default());
        } else if let Some(since) = st.since {
            println!(
                "drained since {}: {} tunnel(s), {} stream(s) still open",
                since.format("%Y-%m-%d %H:%M:%S UTC"),
                st.tunnels,
                st.streams
            );
        } else {
            println!(
                "serving (not drained): {} tunnel(s), {} stream(s)",
                st.tunnels, st.streams
            );
        }
    };
    let mut state = match request(&path, op) {
        Ok(st) => st,
        Err(e) => return fail(e),
    };
    show(&state);
    let Some(secs) = wait else {
        return ExitCode::SUCCESS;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut last = state.streams;
    while state.streams > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_secs(1));
        state = match request(&path, Op::Status) {
            Ok(st) => st,
            Err(e) => return fail(e),
        };
        if state.streams != last {
            show(&state);
            last = state.streams;
        }
    }
    if state.streams == 0 {
        if !json {
            println!("no stream left");
        }
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "vdi-gateway: {} stream(s) still open after {secs} s",
            state.streams
        );
        ExitCode::from(3)
    }
}

fn init(db: &PathBuf) -> ExitCode {
    match Store::open_or_create(db, store::host_settings) {
        Ok((_, false)) => {
            println!("{} exists; left as it is", db.display());
            ExitCode::SUCCESS
        }
        Ok((store, true)) => {
            let s = store
                .load()
                .map(|s| s.internal_addrs[0].to_string())
                .unwrap_or_default();
            println!(
                "created {} with fresh random keys (this host: {s})",
                db.display()
            );
            println!("  show the keys:   vdi-gateway settings show --reveal");
            println!(
                "  set the cluster: vdi-gateway settings set internal_addrs=A,B virtual_addr=VIP public_addr=IP disp_addrs=D ha_managed=true"
            );
            println!("  then:            systemctl reload vdi-gateway");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn check(db: &PathBuf) -> ExitCode {
    match Store::open(db) {
        Ok(_) => {
            println!("{}: settings are valid", db.display());
            ExitCode::SUCCESS
        }
        Err(StoreError::Invalid { path, source }) => {
            eprintln!("{}: invalid settings:", path.display());
            for e in source.field_errors() {
                eprintln!("  {e}");
            }
            ExitCode::FAILURE
        }
        Err(e) => fail(e),
    }
}

fn rendered(db: &PathBuf) -> Result<(vdi_wire::Settings, crate::ha::Rendered), String> {
    let settings = Store::open(db)
        .and_then(|s| s.load())
        .map_err(|e| e.to_string())?;
    let local = crate::gateway::local_addrs(&settings.internal_addrs)?;
    let drain = crate::drain::file_for(db);
    let dir = drain.parent().unwrap_or(std::path::Path::new("/"));
    let r = crate::ha::render(&settings, &local, dir).map_err(|e| e.to_string())?;
    Ok((settings, r))
}

fn render(db: &PathBuf, what: Rendered) -> ExitCode {
    match rendered(db) {
        Ok((_, r)) => {
            print!(
                "{}",
                match what {
                    Rendered::Haproxy => r.haproxy,
                    Rendered::Keepalived => r.keepalived,
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn apply(db: &PathBuf) -> ExitCode {
    let (settings, r) = match rendered(db) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if !rules::ha_managed(&settings) {
        return fail("ha_managed is false: this gateway does not manage HAProxy and Keepalived");
    }
    // A one-shot command: its counts go nowhere.
    let metrics = crate::metrics::Metrics::default();
    match crate::ha::apply(&settings, &r, &metrics) {
        Ok(a) if a.reloaded.is_empty() => {
            println!("already in force; nothing written");
            ExitCode::SUCCESS
        }
        Ok(a) => {
            println!("written and reloaded: {}", a.reloaded.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{e}; the previous configuration stays in force")),
    }
}

fn show(db: &PathBuf, reveal: bool) -> ExitCode {
    match Store::open(db).and_then(|s| s.load()) {
        Ok(settings) => {
            let shown = if reveal {
                settings
            } else {
                rules::masked(&settings)
            };
            println!("{}", rules::render_document(&shown));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn set(db: &PathBuf, assignments: &[String]) -> ExitCode {
    let mut patch = Map::new();
    for a in assignments {
        match rules::parse_assignment(a) {
            Ok((k, v)) => {
                patch.insert(k, v);
            }
            Err(e) => return fail(e),
        }
    }
    let store = match Store::open(db) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Where the path settings point is checked against this host, as the
    // daemon does before applying.
    if let Ok(change) = store
        .load()
        .and_then(|current| rules::apply_patch(&current, &patch).map_err(StoreError::Rejected))
    {
        let misplaced = crate::paths::check(&change.settings, db, &crate::paths::roots_from_env());
        if !misplaced.is_empty() {
            eprintln!("rejected, nothing was written:");
            for f in misplaced {
                eprintln!("  {f}");
            }
            return ExitCode::FAILURE;
        }
    }
    match store.update(&patch) {
        Ok(change) if change.changed.is_empty() => {
            println!("nothing changed");
            ExitCode::SUCCESS
        }
        Ok(change) => {
            println!("changed: {}", change.changed.join(", "));
            println!("a running gateway applies this on `systemctl reload vdi-gateway` (SIGHUP)");
            ExitCode::SUCCESS
        }
        Err(StoreError::Rejected(e)) => {
            eprintln!("rejected, nothing was written:");
            for f in e.field_errors() {
                eprintln!("  {f}");
            }
            ExitCode::FAILURE
        }
        Err(e) => fail(e),
    }
}

fn serve(db: PathBuf) -> ExitCode {
    let started = std::time::Instant::now();
    // Safety: no other thread runs yet, and nothing has opened a descriptor
    // since the exec (or the start by systemd) that handed these over.
    let mut stored = Vec::new();
    let from_exec = unsafe { handover::take_from_env() };
    if from_exec.is_some() && fdstore_max().is_some() {
        // The previous process's copy for `SIGUSR2` (see `reexec`).
        stored.extend([handover::STORE_BUNDLE, handover::STORE_SNAPSHOT].map(String::from));
    }
    let inherited = from_exec.or_else(|| unsafe { take_from_store(&mut stored) });
    // The running binary itself, to execute again should the one on disk
    // fail to execute at a handover (a package upgrade replaces the file).
    let this_binary = std::fs::File::open("/proc/self/exe").ok();
    crate::logging::init();
    let inherited = match inherited {
        None => None,
        Some(Ok(inh)) => Some(inh),
        Some(Err(e)) => {
            tracing::error!(error = %e, "handover refused: the previous process's streams are closed; starting afresh");
            None
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Like HAProxy's nbthread: one worker per CPU the daemon may run on
    // unless told otherwise.
    if let Some(n) = std::env::var("VDI_GATEWAY_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(serve_async(db, inherited, this_binary, stored, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve_async(
    db: PathBuf,
    inherited: Option<handover::Inherited>,
    this_binary: Option<std::fs::File>,
    stored: Vec<String>,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    // The whole validation `check` does, in this process: a separate
    // ExecStartPre process (sandboxed by systemd, opening SQLite) was a third
    // of a `systemctl restart`'s stall. Each bad field gets a journal line.
    let (store, created) = match Store::open_or_create(&db, store::first_start_settings) {
        Ok(opened) => opened,
        Err(StoreError::Invalid { path, source }) => {
            for e in source.field_errors() {
                tracing::error!(db = %path.display(), "invalid setting: {e}");
            }
            anyhow::bail!(
                "{}: invalid settings, nothing changed; fix them with `vdi-gateway settings set` (`vdi-gateway check` lists them)",
                path.display()
            );
        }
        Err(e) => return Err(e.into()),
    };
    if created {
        tracing::info!(
            db = %db.display(),
            "created the settings database with fresh random keys; see them with `vdi-gateway --db {} settings show --reveal`",
            db.display()
        );
    }
    let gw = crate::start_inherited(store, crate::Options::daemon(), inherited).await?;
    // The control socket (drain, undrain, status for root on the host).
    let control = crate::control::path_from_env();
    match crate::control::bind(&control) {
        Ok(l) => {
            tracing::info!(socket = %control.display(), "control socket");
            tokio::spawn(crate::control::serve(
                l,
                gw.gateway().clone(),
                gw.shutdown_token(),
            ));
        }
        // The gateway serves on: drain through the API instead.
        Err(e) => tracing::error!(socket = %control.display(), error = %e,
            "no control socket: `vdi-gateway drain` will not reach this daemon (the API's /v3/drain/ does)"),
    }
    let scheme = if gw.gateway().current().ssl {
        "https"
    } else {
        "http"
    };
    for addr in gw.gateway().api_addrs() {
        tracing::info!("ready: API {scheme}://{addr}/v3/  docs {scheme}://{addr}/docs");
    }
    // From exec to serving: the part of a restart's stall this process owns.
    tracing::info!(startup_ms = started.elapsed().as_millis() as u64, "serving");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    // Only now: should this process die before it serves, the store still
    // holds every stream for the next start (`Restart=on-failure`).
    forget_stored(&stored);
    tokio::spawn(handle_signals(
        gw.gateway().clone(),
        gw.shutdown_token(),
        this_binary,
    ));

    gw.stopped().await;
    tracing::info!("stopped");
    Ok(())
}

async fn handle_signals(
    gw: crate::Shared,
    shutdown: CancellationToken,
    this_binary: Option<std::fs::File>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                if let Some(max) = fdstore_max()
                    && park_in_store(&gw, max).await
                {
                    std::process::exit(0);
                }
                break;
            }
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                match gw.reload().await {
                    Ok(()) => tracing::info!("settings reloaded from the database"),
                    Err(e) => tracing::error!(error = %e, "reload refused; the previous settings stay in force"),
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = usr2.recv() => reexec(&gw, this_binary.as_ref()).await,
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
}

/// How long the binary on disk may take to say what it reads.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long streams may take to park (each stops at its next await point).
const QUIESCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `SIGUSR2`: hands every listener, tunnel and spliced stream to the binary
/// now on disk, executed in place (same PID). Returns only when it refused
/// beforehand, and then nothing has changed.
async fn reexec(gw: &crate::Shared, this_binary: Option<&std::fs::File>) {
    use std::os::fd::AsRawFd;
    let started = std::time::Instant::now();
    let path = match handover::binary_on_disk() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "re-execution refused: cannot tell which binary runs; every stream keeps running here");
            return;
        }
    };
    if let Err(why) = check_binary(&path).await {
        tracing::error!(binary = %path.display(), reason = %why,
            "re-execution refused: every stream keeps running here");
        return;
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
    if !gw.quiesce(QUIESCE_LIMIT).await {
        tracing::warn!("some streams did not stop within {QUIESCE_LIMIT:?}; they are cut");
    }
    let (snapshot, blob, fds) = gw.handover_snapshot();
    let (tunnels, streams, in_flight) =
        (snapshot.tunnels.len(), snapshot.streams.len(), blob.0.len());
    let memfd = match handover::write_memfd(&handover::encode(&snapshot, &blob)) {
        Ok(m) => m,
        Err(e) => {
            // Quiesced already: nothing can take the streams back here.
            tracing::error!(error = %e, "cannot write the handover snapshot; exiting (every stream is cut)");
            std::process::exit(1);
        }
    };
    // Under systemd, a copy in the descriptor store until the new process
    // serves (it removes it then): should the new binary die before that,
    // `Restart=` or a rollback takes the streams back from the store.
    let store_copy = match fdstore_max() {
        None => false,
        Some(max) => match to_store(&fds, &memfd, max, false) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "no copy in systemd's descriptor store: a new binary that dies before it serves loses the streams");
                false
            }
        },
    };
    tracing::info!(binary = %path.display(), tunnels, streams, bytes_in_flight = in_flight,
        store_copy, quiesced_ms = started.elapsed().as_millis() as u64, "handover: executing the binary on disk");
    let e = handover::exec(&path, &memfd, &fds);
    tracing::error!(binary = %path.display(), error = %e, "cannot execute the binary on disk; executing the running one again");
    if let Some(f) = this_binary {
        let again = std::path::PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        let e = handover::exec(&again, &memfd, &fds);
        tracing::error!(error = %e, "cannot execute the running binary either");
    }
    if store_copy {
        tracing::error!(
            "exiting; every stream waits in systemd's descriptor store for the next start"
        );
    } else {
        tracing::error!("exiting; every stream is cut");
    }
    std::process::exit(1);
}

/// The binary at `path` runs and reads this process's snapshot format.
async fn check_binary(path: &std::path::Path) -> Result<(), String> {
    let out = tokio::time::timeout(
        CHECK_TIMEOUT,
        tokio::process::Command::new(path)
            .arg("handover-check")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("it did not answer `handover-check` within {CHECK_TIMEOUT:?}"))?
    .map_err(|e| format!("it does not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`handover-check` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let cap: handover::Capability = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`handover-check` answered something else: {e}"))?;
    if !cap.formats.contains(&handover::FORMAT) {
        return Err(format!(
            "version {} reads snapshot formats {:?}, not {} (this process's)",
            cap.version,
            cap.formats,
            handover::FORMAT
        ));
    }
    Ok(())
}

/// `VDI_GATEWAY_FDSTORE_MAX` (the unit's `FileDescriptorStoreMax=`), under
/// systemd only: `SIGTERM` parks every stream in systemd's descriptor store,
/// and the next start takes them back (`systemctl restart`). A stop closes
/// them (systemd releases the store of a stopped unit).
fn fdstore_max() -> Option<usize> {
    std::env::var_os("NOTIFY_SOCKET")?;
    std::env::var("VDI_GATEWAY_FDSTORE_MAX")
        .ok()?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// Hands every listener, tunnel and spliced stream to systemd's descriptor
/// store ([`to_store`]), the snapshot last. False when nothing could be
/// stored: then the ordinary shutdown closes everything.
async fn park_in_store(gw: &crate::Shared, max: usize) -> bool {
    use sd_notify::NotifyState;
    let started = std::time::Instant::now();
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    if !gw.quiesce(QUIESCE_LIMIT).await {
        tracing::warn!("some streams did not stop within {QUIESCE_LIMIT:?}; they are cut");
    }
    let (snapshot, blob, fds) = gw.handover_snapshot();
    let memfd = match handover::write_memfd(&handover::encode(&snapshot, &blob)) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "cannot write the handover snapshot; closing every stream");
            return false;
        }
    };
    if let Err(e) = to_store(&fds, &memfd, max, true) {
        tracing::error!("{e}; closing every stream");
        return false;
    }
    tracing::info!(
        tunnels = snapshot.tunnels.len(),
        streams = snapshot.streams.len(),
        bytes_in_flight = blob.0.len(),
        quiesced_ms = started.elapsed().as_millis() as u64,
        "handover: parked in systemd's descriptor store; the next start takes them (a stop closes them)"
    );
    true
}

/// Hands `fds` and the snapshot `memfd` to systemd's descriptor store. One
/// socket carries every descriptor (systemd's store slows down
/// quadratically with its entries); with `one_by_one`, one entry each if it
/// cannot (a copy for `SIGUSR2` is only ever the bundle: the next process
/// removes it by name).
fn to_store(
    fds: &[std::os::fd::OwnedFd],
    memfd: &std::os::fd::OwnedFd,
    max: usize,
    one_by_one: bool,
) -> Result<(), String> {
    use sd_notify::NotifyState;
    use std::os::fd::{AsFd, AsRawFd};
    match handover::bundle(fds) {
        Ok(b) => {
            let states = [
                NotifyState::FdStore,
                NotifyState::FdName(handover::STORE_BUNDLE),
            ];
            sd_notify::notify_with_fds(&states, &[b.as_fd()])
                .map_err(|e| format!("systemd's descriptor store refused the bundle: {e}"))?;
        }
        Err(e) if !one_by_one => return Err(format!("cannot bundle the descriptors: {e}")),
        Err(e) => {
            tracing::warn!(error = %e, descriptors = fds.len(),
                "cannot bundle the descriptors; storing them one by one (slower)");
            if fds.len() + 1 > max {
                return Err(format!(
                    "{} descriptors, more than the store takes (FileDescriptorStoreMax={max})",
                    fds.len() + 1
                ));
            }
            for fd in fds {
                let name = handover::store_name(fd.as_raw_fd());
                let states = [NotifyState::FdStore, NotifyState::FdName(&name)];
                sd_notify::notify_with_fds(&states, &[fd.as_fd()])
                    .map_err(|e| format!("systemd's descriptor store refused a descriptor: {e}"))?;
            }
        }
    }
    let states = [
        NotifyState::FdStore,
        NotifyState::FdName(handover::STORE_SNAPSHOT),
    ];
    sd_notify::notify_with_fds(&states, &[memfd.as_fd()])
        .map_err(|e| format!("systemd's descriptor store refused the snapshot: {e}"))
}

/// A handover from systemd's descriptor store (`LISTEN_FDS`, names from
/// [`park_in_store`]). `stored` receives every name, to remove from the
/// store once this process serves. Descriptors not named by us are closed.
///
/// # Safety
/// As [`handover::take_from_env`]: before any other thread, before any
/// other descriptor is opened.
unsafe fn take_from_store(
    stored: &mut Vec<String>,
) -> Option<Result<handover::Inherited, handover::HandoverError>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // Safety: the caller's.
    let listed = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }.ok()?;
    let mut memfd = None;
    let mut fds = std::collections::HashMap::new();
    let mut bad = None;
    for (fd, name) in listed {
        // Safety: systemd passed these to this process alone.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        if name == handover::STORE_SNAPSHOT {
            memfd = Some(owned);
        } else if name == handover::STORE_BUNDLE {
            match handover::unbundle(owned) {
                Ok(all) => fds.extend(all),
                // Every listed descriptor is still owned (and so closed).
                Err(e) => bad = Some(e),
            }
        } else if let Some(n) = handover::store_number(&name) {
            fds.insert(n, owned);
        }
        stored.push(name);
    }
    if stored.is_empty() {
        return None;
    }
    if let Some(e) = bad {
        return Some(Err(e.into()));
    }
    let Some(memfd) = memfd else {
        return Some(Err(handover::HandoverError::NotSnapshot));
    };
    Some(handover::read_snapshot(memfd, fds))
}

/// Removes what a handover left in systemd's descriptor store (the store
/// holds its own copy of each: a stream that ends here must close).
fn forget_stored(names: &[String]) {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    for name in &names {
        let states = [
            sd_notify::NotifyState::FdStoreRemove,
            sd_notify::NotifyState::FdName(name),
        ];
        if let Err(e) = sd_notify::notify(&states) {
            tracing::warn!(name, error = %e, "cannot remove a descriptor from systemd's store");
        }
    }
}
