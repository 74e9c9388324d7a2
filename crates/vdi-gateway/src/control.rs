//! The daemon's control socket: root on the host (the CLI, and the console
//! over SSH through the CLI) asks the running daemon to drain, to undrain, or
//! for its drain state, without a key. Like HAProxy's admin socket: a Unix
//! socket in the runtime directory, mode 0600, and every peer's credentials
//! checked (root or the daemon's own user) in case the mode is ever wider.
//! One JSON line in, one JSON line out, then the connection closes.

use crate::gateway::Shared;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use vdi_wire::DrainState;

/// Where the daemon listens unless `VDI_GATEWAY_CONTROL` says otherwise
/// (systemd's `RuntimeDirectory=vdi-gateway`).
pub const DEFAULT_PATH: &str = "/run/vdi-gateway/control.sock";
/// A request is a word or two; nothing makes the daemon buffer more.
const MAX_LINE: u64 = 4096;
/// An answer is a `DrainState` or an error sentence.
const MAX_ANSWER: u64 = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Drain,
    Undrain,
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    op: Op,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(DrainState),
    Error(String),
}

/// The socket's path: `VDI_GATEWAY_CONTROL`, else [`DEFAULT_PATH`].
pub fn path_from_env() -> std::path::PathBuf {
    std::env::var_os("VDI_GATEWAY_CONTROL")
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

/// Binds the socket (replacing a stale one left by a killed daemon, never a
/// live one nor anything that is not a socket), mode 0600; makes its
/// directory (0700) when absent.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is served by another running gateway", path.display()),
                ));
            }
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket; not replaced",
                path.display()
            )));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Answers requests until `stop`; removes the socket then.
pub async fn serve(listener: UnixListener, gw: Shared, stop: CancellationToken) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    loop {
        let sock = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let uid = sock.peer_cred().map(|c| c.uid()).ok();
        if !matches!(uid, Some(u) if u == 0 || u == me) {
            tracing::warn!(?uid, "control socket: refused a peer that is not root");
            continue;
        }
        let gw = gw.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(TIMEOUT, answer(sock, &gw))
                .await
                .is_err()
            {
                tracing::debug!("control socket: request timed out");
            }
        });
    }
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
}

async fn answer(sock: UnixStream, gw: &Shared) {
    let (r, mut w) = sock.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(r.take(MAX_LINE));
    let answer = match r.read_line(&mut line).await {
        Err(e) => Answer::Error(format!("unreadable request: {e}")),
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Answer::Error(format!(
                "bad request (want {{\"op\": \"drain\"|\"undrain\"|\"status\"}}): {e}"
            )),
            Ok(Request { op: Op::Status }) => Answer::Ok(gw.drain_state()),
            Ok(Request { op }) => match gw.set_draining(op == Op::Drain) {
                Ok(state) => {
                    tracing::info!(?op, "through the control socket");
                    Answer::Ok(state)
                }
                Err(e) => Answer::Error(e.to_string()),
            },
        },
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    let _ = w.write_all(&out).await;
    let _ = w.shutdown().await;
}

/// The client side (the CLI): one request to the daemon at `path`.
pub fn request(path: &Path, op: Op) -> Result<DrainState, String> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the running gateway at {}: {e} (is `vdi-gateway serve` running? VDI_GATEWAY_CONTROL names another socket)",
            path.display()
        )
    })?;
    let io = |e: std::io::Error| format!("control socket {}: {e}", path.display());
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut req = serde_json::to_vec(&Request { op }).map_err(|e| e.to_string())?;
    req.push(b'\n');
    s.write_all(&req).map_err(io)?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&s, MAX_ANSWER))
        .read_line(&mut line)
        .map_err(io)?;
    match serde_json::from_str::<Answer>(line.trim()) {
        Ok(Answer::Ok(state)) => Ok(state),
        Ok(Answer::Error(e)) => Err(e),
        Err(e) => Err(format!("unreadable answer from the gateway: {e}")),
    }
}
