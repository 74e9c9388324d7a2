//! The handover from one gateway process to the next (`SIGUSR2`: the daemon
//! re-executes the binary now on disk in place): what crosses `execve`, how it
//! is written and read, and the checks on both sides. See docs/upgrades.md.
//!
//! Descriptors cross as they are (no `FD_CLOEXEC`, same numbers); everything
//! else is one sealed memfd: a fixed header (magic, format), a JSON document
//! that names the descriptors, and a blob with the bytes that were in flight.
//! `VDI_GATEWAY_HANDOVER` lists the memfd first and then every handed
//! descriptor, so a process that cannot read the document (a format it does
//! not know) still closes each of them: never half-restored.
//!
//! Pure parts (`encode`, `decode`, `parse_env`) are unit-tested; the rest is
//! tested through the real binary (`tests/handover.rs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use vdi_wire::{OpenConnection, StreamVia};

/// The environment variable that carries the handover to the next process.
pub const ENV: &str = "VDI_GATEWAY_HANDOVER";

/// The snapshot format this build writes and reads. A reader refuses any
/// other: a newer process may add fields an older one would drop silently.
pub const FORMAT: u32 = 1;

const MAGIC: &[u8; 8] = b"VDIGWHO\0";
/// magic, format (u32 LE), document length (u64 LE).
const HEADER: usize = 8 + 4 + 8;
/// A snapshot larger than this is refused (a million streams' records and
/// two full pipes for each of ten thousand parked streams fit well below).
const MAX_SNAPSHOT: u64 = 2 << 30;

/// Everything the next process needs to carry on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Unix milliseconds when written; the relative times below count from it.
    pub written_at_ms: i64,
    /// The next stream id to hand out (ids never repeat across the handover).
    pub next_stream: u64,
    /// The API and service tunnel listeners.
    pub listeners: Vec<ListenerRec>,
    pub tunnels: Vec<TunnelRec>,
    pub streams: Vec<StreamRec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerRec {
    /// `api` or `service`.
    pub kind: String,
    pub addr: SocketAddr,
    pub fd: RawFd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelRec {
    pub id: String,
    pub port: u16,
    pub open: OpenConnection,
    pub target_addr: SocketAddr,
    pub opened_by: SocketAddr,
    pub created_at: DateTime<Utc>,
    /// Reserved until this many ms after `written_at_ms` (negative: before).
    pub reserved_ms: i64,
    /// The last stream ended this many ms after `written_at_ms` (negative).
    pub last_stream_end_ms: Option<i64>,
    /// Its listening sockets (one per local address).
    pub listeners: Vec<RawFd>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRec {
    pub id: u64,
    pub tunnel: String,
    pub via: StreamVia,
    pub started_at: DateTime<Utc>,
    /// The TCP peer (HAProxy or the client) and the client a PROXY header named.
    pub peer: SocketAddr,
    pub proxied: Option<SocketAddr>,
    pub to_target: u64,
    pub to_client: u64,
    pub last_activity_ms: i64,
    pub client_fd: RawFd,
    pub target_fd: RawFd,
    /// Bytes read from the client and not yet written to the target; `None`:
    /// that direction had ended (its EOF passed on).
    pub pending_to_target: Option<Span>,
    pub pending_to_client: Option<Span>,
}

/// A range of the snapshot's blob.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub off: u64,
    pub len: u64,
}

/// The bytes in flight, appended as the snapshot is built.
#[derive(Debug, Default)]
pub struct Blob(pub Vec<u8>);

impl Blob {
    pub fn push(&mut self, bytes: &[u8]) -> Span {
        let off = self.0.len() as u64;
        self.0.extend_from_slice(bytes);
        Span {
            off,
            len: bytes.len() as u64,
        }
    }

    pub fn get(&self, s: Span) -> Option<&[u8]> {
        let end = s.off.checked_add(s.len)?;
        self.0.get(s.off as usize..usize::try_from(end).ok()?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("{ENV} is malformed: {0}")]
    Env(String),
    #[error("not a handover snapshot (bad magic or truncated header)")]
    NotSnapshot,
    #[error(
        "the snapshot is of format {0}; this build reads format {FORMAT} only: its streams are closed"
    )]
    Format(u32),
    #[error("the snapshot is damaged: {0}")]
    Damaged(String),
    #[error("descriptor {0} named by the snapshot was not handed over")]
    MissingFd(RawFd),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The header, the document, the blob.
pub fn encode(s: &Snapshot, blob: &Blob) -> Vec<u8> {
    let doc = serde_json::to_vec(s).expect("a snapshot serialises");
    let mut out = Vec::with_capacity(HEADER + doc.len() + blob.0.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(doc.len() as u64).to_le_bytes());
    out.extend_from_slice(&doc);
    out.extend_from_slice(&blob.0);
    out
}

/// Reads what [`encode`] wrote; every pending span must lie inside the blob.
pub fn decode(bytes: &[u8]) -> Result<(Snapshot, Blob), HandoverError> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(HandoverError::NotSnapshot);
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(HandoverError::Format(format));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let rest = &bytes[HEADER..];
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= rest.len())
        .ok_or_else(|| HandoverError::Damaged("document length past the end".into()))?;
    let s: Snapshot = serde_json::from_slice(&rest[..len])
        .map_err(|e| HandoverError::Damaged(format!("document: {e}")))?;
    let blob = Blob(rest[len..].to_vec());
    for st in &s.streams {
        for span in [st.pending_to_target, st.pending_to_client]
            .into_iter()
            .flatten()
        {
            if blob.get(span).is_none() {
                return Err(HandoverError::Damaged(format!(
                    "stream s{}: pending bytes outside the blob",
                    st.id
                )));
            }
        }
        if !s.tunnels.iter().any(|t| t.id == st.tunnel) {
            return Err(HandoverError::Damaged(format!(
                "stream s{} names an unknown tunnel",
                st.id
            )));
        }
    }
    Ok((s, blob))
}

/// `VDI_GATEWAY_HANDOVER`: the memfd, then every handed descriptor
/// (comma-separated numbers above 2, no repeats).
pub fn parse_env(v: &str) -> Result<(RawFd, Vec<RawFd>), HandoverError> {
    let mut fds = Vec::new();
    for part in v.split(',') {
        let fd: RawFd = part
            .trim()
            .parse()
            .map_err(|_| HandoverError::Env(format!("{part:?} is not a descriptor number")))?;
        if fd <= 2 || fds.contains(&fd) {
            return Err(HandoverError::Env(format!(
                "descriptor {fd} is standard or repeated"
            )));
        }
        fds.push(fd);
    }
    let memfd = *fds
        .first()
        .ok_or_else(|| HandoverError::Env("empty".into()))?;
    Ok((memfd, fds[1..].to_vec()))
}

/// What the previous process handed over, taken at start.
pub struct Inherited {
    pub snapshot: Snapshot,
    pub blob: Blob,
    fds: std::collections::HashMap<RawFd, OwnedFd>,
}

impl Inherited {
    /// Takes the descriptor `fd` (each once).
    pub fn take(&mut self, fd: RawFd) -> Result<OwnedFd, HandoverError> {
        self.fds.remove(&fd).ok_or(HandoverError::MissingFd(fd))
    }

    /// Descriptors handed over but named by nothing that was restored.
    pub fn leftover(&self) -> usize {
        self.fds.len()
    }
}

/// Reads the handover named by the environment, if any, and removes the
/// variable (children of the gateway must not see it). Every handed
/// descriptor is owned from here on: whatever is not restored closes.
/// `Err` means the handover was refused and its descriptors are closed.
///
/// # Safety
/// Call before any other thread runs (it changes the environment) and
/// before anything else opens descriptors (it takes the numbers listed).
pub unsafe fn take_from_env() -> Option<Result<Inherited, HandoverError>> {
    let v = std::env::var(ENV).ok()?;
    // Safety: the caller guarantees no other thread runs.
    unsafe { std::env::remove_var(ENV) };
    Some(take(&v))
}

fn take(v: &str) -> Result<Inherited, HandoverError> {
    let (memfd, listed) = parse_env(v)?;
    // Every open descriptor listed is owned (and so closed on any refusal
    // below), whatever else is wrong.
    let mut fds = std::collections::HashMap::new();
    let mut missing = None;
    let mut own = |fd: RawFd| -> Option<OwnedFd> {
        // Safety: F_GETFD only asks whether the number is an open descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            missing.get_or_insert(fd);
            return None;
        }
        // Safety: the previous process handed these numbers to us alone;
        // each is listed once (parse_env) and is open.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = set_cloexec(&owned, true);
        Some(owned)
    };
    let memfd = own(memfd);
    for fd in &listed {
        if let Some(owned) = own(*fd) {
            fds.insert(*fd, owned);
        }
    }
    if let Some(fd) = missing {
        return Err(HandoverError::MissingFd(fd));
    }
    let memfd = memfd.expect("checked above");
    read_snapshot(memfd, fds)
}

/// Reads the snapshot in `memfd`; `fds` are the handed descriptors by their
/// number in the previous process (closed on a refusal, as they drop).
pub fn read_snapshot(
    memfd: OwnedFd,
    fds: std::collections::HashMap<RawFd, OwnedFd>,
) -> Result<Inherited, HandoverError> {
    let mut file = std::fs::File::from(memfd);
    let len = file.seek(io::SeekFrom::End(0))?;
    if len > MAX_SNAPSHOT {
        return Err(HandoverError::Damaged(format!("{len} bytes")));
    }
    file.seek(io::SeekFrom::Start(0))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    let (snapshot, blob) = decode(&bytes)?;
    Ok(Inherited {
        snapshot,
        blob,
        fds,
    })
}

/// systemd's descriptor store: the snapshot's name there.
pub const STORE_SNAPSHOT: &str = "vdi-snapshot";
const STORE_PREFIX: &str = "vdi-fd-";

/// The store name of a handed descriptor: its number in the process that
/// stored it (the snapshot names descriptors by those numbers).
pub fn store_name(fd: RawFd) -> String {
    format!("{STORE_PREFIX}{fd}")
}

/// The number a store name stands for; `None` for a name that is not ours.
pub fn store_number(name: &str) -> Option<RawFd> {
    name.strip_prefix(STORE_PREFIX)?
        .parse()
        .ok()
        .filter(|n| *n > 2)
}

/// systemd's descriptor store: the name of the socket that carries every
/// handed descriptor ([`bundle`]).
pub const STORE_BUNDLE: &str = "vdi-bundle";
/// Descriptors per message (the kernel takes at most 253, `SCM_MAX_FD`).
const BUNDLE_CHUNK: usize = 250;

/// Puts `fds` in flight on a Unix socket pair and returns the receiving end:
/// as long as it is open, its unread `SCM_RIGHTS` messages keep every one of
/// them alive, each message naming the numbers the descriptors had here (the
/// snapshot's names). One descriptor in systemd's store instead of one each:
/// systemd compares every new stored descriptor with all it holds, which is
/// quadratic (2 100 descriptors took it 2.5 s). Fails, never blocks, when the
/// socket's buffer cannot take them all; the caller stores them one by one.
pub fn bundle(fds: &[OwnedFd]) -> io::Result<OwnedFd> {
    let (keep, send) = std::os::unix::net::UnixDatagram::pair()?;
    send.set_nonblocking(true)?;
    // Unread messages count against the sender's buffer: as large as the
    // system lets it be (32 768 descriptors need about 250 KiB).
    let _ = socket2::SockRef::from(&send).set_send_buffer_size(8 << 20);
    for chunk in fds.chunks(BUNDLE_CHUNK) {
        let numbers: Vec<u8> = chunk
            .iter()
            .flat_map(|f| f.as_raw_fd().to_le_bytes())
            .collect();
        let raw: Vec<RawFd> = chunk.iter().map(AsRawFd::as_raw_fd).collect();
        let fd_bytes = std::mem::size_of_val(raw.as_slice());
        // Safety: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: numbers.as_ptr() as *mut libc::c_void,
            iov_len: numbers.len(),
        };
        // Safety: a zeroed msghdr is valid; every pointer set below outlives
        // the sendmsg call and the lengths are those of the buffers.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr() as *const u8, libc::CMSG_DATA(c), fd_bytes);
            libc::sendmsg(send.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != numbers.len() {
            return Err(io::Error::other("a bundle message went out short"));
        }
    }
    Ok(keep.into())
}

/// Reads back what [`bundle`] put in flight on `holder`: every descriptor by
/// the number it had in the process that bundled it. A message that was cut
/// (its descriptors or its numbers) refuses the whole bundle; whatever was
/// received is closed then, as it drops.
pub fn unbundle(holder: OwnedFd) -> io::Result<std::collections::HashMap<RawFd, OwnedFd>> {
    let sock = std::os::unix::net::UnixDatagram::from(holder);
    sock.set_nonblocking(true)?;
    let mut out = std::collections::HashMap::new();
    let fd_bytes = BUNDLE_CHUNK * std::mem::size_of::<RawFd>();
    // One more than a full message: a longer one is not ours.
    let mut numbers = vec![0u8; fd_bytes + 4];
    // Safety: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((fd_bytes + 4) as u32) } as usize;
    let mut control = vec![0u8; space];
    loop {
        let mut iov = libc::iovec {
            iov_base: numbers.as_mut_ptr() as *mut libc::c_void,
            iov_len: numbers.len(),
        };
        // Safety: as in `bundle`; the buffers outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // Safety: a valid msghdr over our buffers.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(out);
            }
            return Err(e);
        }
        // Take ownership of whatever arrived before judging the message.
        let mut got = Vec::new();
        // Safety: walking the control buffer recvmsg filled, by its length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data = libc::CMSG_DATA(c) as *const RawFd;
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        got.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let n = n as usize;
        if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0
            || !n.is_multiple_of(4)
            || n / 4 != got.len()
        {
            return Err(io::Error::other(format!(
                "a bundle message does not match its descriptors ({n} bytes, {} descriptors)",
                got.len()
            )));
        }
        for (num, fd) in numbers[..n].chunks_exact(4).zip(got) {
            let num = RawFd::from_le_bytes(num.try_into().expect("chunks of 4"));
            if out.insert(num, fd).is_some() {
                return Err(io::Error::other(format!(
                    "descriptor {num} twice in the bundle"
                )));
            }
        }
    }
}

/// The snapshot in a sealed memfd (no one can change it after this).
pub fn write_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    let name = c"vdi-gateway-handover";
    // Safety: a valid C string; the flags are constants.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: memfd_create returned a new descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(bytes)?;
    file.rewind()?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // Safety: fcntl on our own descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

pub fn set_cloexec(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // Safety: F_GETFD/F_SETFD on a descriptor the caller holds.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        if libc::fcntl(fd, libc::F_SETFD, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The binary to execute: the path this process was started from, as it is
/// on disk now (after a package upgrade, the new version).
pub fn binary_on_disk() -> io::Result<std::path::PathBuf> {
    let link = std::fs::read_link("/proc/self/exe")?;
    let s = link.to_string_lossy();
    // The kernel marks a replaced file; the new one is at the same path.
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => std::path::PathBuf::from(p),
        None => link,
    })
}

/// Executes `path` in place of this process (same PID, same arguments),
/// handing it `memfd` and `fds`. Returns only if `execve` failed, with
/// every descriptor's close-on-exec flag set back.
pub fn exec(path: &std::path::Path, memfd: &OwnedFd, fds: &[OwnedFd]) -> io::Error {
    use std::os::unix::process::CommandExt;
    let all: Vec<RawFd> = std::iter::once(memfd.as_raw_fd())
        .chain(fds.iter().map(|f| f.as_raw_fd()))
        .collect();
    let cloexec = |on: bool| -> io::Result<()> {
        set_cloexec(memfd, on)?;
        fds.iter().try_for_each(|f| set_cloexec(f, on))
    };
    if let Err(e) = cloexec(false) {
        let _ = cloexec(true);
        return e;
    }
    let list: Vec<String> = all.iter().map(|fd| fd.to_string()).collect();
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(path);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let e = cmd.args(args).env(ENV, list.join(",")).exec();
    let _ = cloexec(true);
    e
}

/// The version and snapshot formats a binary declares
/// (`vdi-gateway handover-check`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    pub version: String,
    pub formats: Vec<u32>,
}

impl Capability {
    pub fn ours() -> Self {
        Self {
            version: vdi_wire::PRODUCT_VERSION.to_string(),
            formats: vec![FORMAT],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Snapshot, Blob) {
        let mut blob = Blob::default();
        let a = blob.push(b"to the desktop");
        let b = blob.push(b"");
        let s = Snapshot {
            written_at_ms: 1_700_000_000_000,
            next_stream: 42,
            listeners: vec![ListenerRec {
                kind: "api".into(),
                addr: "127.0.0.1:8000".parse().unwrap(),
                fd: 7,
            }],
            tunnels: vec![TunnelRec {
                id: "t1".into(),
                port: 5900,
                open: serde_json::from_str(r#"{"target_host":"10.0.0.5","target_port":5901}"#)
                    .unwrap(),
                target_addr: "10.0.0.5:5901".parse().unwrap(),
                opened_by: "192.0.2.7:40000".parse().unwrap(),
                created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                reserved_ms: -1500,
                last_stream_end_ms: None,
                listeners: vec![8],
            }],
            streams: vec![StreamRec {
                id: 41,
                tunnel: "t1".into(),
                via: StreamVia::Tcp,
                started_at: DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
                peer: "192.0.2.7:40001".parse().unwrap(),
                proxied: None,
                to_target: 10,
                to_client: 20,
                last_activity_ms: 1_700_000_000_500,
                client_fd: 9,
                target_fd: 10,
                pending_to_target: Some(a),
                pending_to_client: Some(b),
            }],
        };
        (s, blob)
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let (s, blob) = sample();
        let (back, blob2) = decode(&encode(&s, &blob)).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            blob2.get(s.streams[0].pending_to_target.unwrap()).unwrap(),
            b"to the desktop"
        );
        assert_eq!(
            blob2.get(s.streams[0].pending_to_client.unwrap()).unwrap(),
            b""
        );
    }

    #[test]
    fn another_format_is_refused_before_its_document_is_read() {
        let (s, blob) = sample();
        let mut bytes = encode(&s, &blob);
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        bytes.truncate(HEADER + 3); // whatever follows is not read
        assert!(matches!(decode(&bytes), Err(HandoverError::Format(2))));
        assert!(matches!(
            decode(b"VDIGWHO"),
            Err(HandoverError::NotSnapshot)
        ));
        assert!(matches!(
            decode(b"something else entirely"),
            Err(HandoverError::NotSnapshot)
        ));
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let (mut s, blob) = sample();
        let good = encode(&s, &blob);
        // Truncated inside the document.
        assert!(matches!(
            decode(&good[..HEADER + 10]),
            Err(HandoverError::Damaged(_))
        ));
        // A pending span past the blob's end.
        s.streams[0].pending_to_client = Some(Span { off: 10, len: 100 });
        assert!(matches!(
            decode(&encode(&s, &blob)),
            Err(HandoverError::Damaged(_))
        ));
        // A stream of a tunnel that is not there.
        let (mut s, blob) = sample();
        s.streams[0].tunnel = "t2".into();
        assert!(matches!(
            decode(&encode(&s, &blob)),
            Err(HandoverError::Damaged(_))
        ));
        // A span whose end overflows.
        assert!(
            Blob(vec![1, 2])
                .get(Span {
                    off: u64::MAX,
                    len: 2
                })
                .is_none()
        );
    }

    #[test]
    fn the_environment_lists_the_memfd_then_the_sockets() {
        assert_eq!(parse_env("5,6,7").unwrap(), (5, vec![6, 7]));
        assert_eq!(parse_env("9").unwrap(), (9, vec![]));
        for bad in ["", "1,5", "5,5", "x", "5,-1", "5,,6"] {
            assert!(parse_env(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_missing_descriptor_refuses_the_handover_and_closes_the_listed_ones() {
        use std::os::fd::IntoRawFd;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let memfd = write_memfd(b"not even a snapshot").unwrap().into_raw_fd();
        let fa = a.into_raw_fd();
        let err = take(&format!("{memfd},{fa},999999")).err().unwrap();
        assert!(matches!(err, HandoverError::MissingFd(999999)), "{err}");
        // `a` was owned, then closed with the refusal: its peer reads the end.
        reads_the_end(&mut b);
    }

    /// The other end of `peer` was closed: it reads EOF (within 5 s).
    fn reads_the_end(peer: &mut std::os::unix::net::UnixStream) {
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_bundle_carries_every_descriptor_under_its_number() {
        use std::io::Write as _;
        // More than one message's worth, each a live socket whose peer we keep.
        let mut peers = Vec::new();
        let mut fds = Vec::new();
        for _ in 0..(BUNDLE_CHUNK * 2 + 7) {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            fds.push(OwnedFd::from(a));
            peers.push(b);
        }
        let numbers: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let holder = bundle(&fds).unwrap();
        // Only the bundle holds them now.
        drop(fds);
        let mut back = unbundle(holder).unwrap();
        assert_eq!(back.len(), numbers.len());
        for (n, peer) in numbers.iter().zip(&mut peers) {
            let fd = back.remove(n).expect("every number comes back");
            let mut s = std::os::unix::net::UnixStream::from(fd);
            s.write_all(b"x").unwrap();
            let mut buf = [0u8; 1];
            peer.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"x");
        }
    }

    #[test]
    fn closing_a_bundle_closes_what_it_carries() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let holder = bundle(&[OwnedFd::from(a)]).unwrap();
        drop(holder);
        reads_the_end(&mut b);
    }

    #[test]
    fn a_message_that_is_not_a_bundle_is_refused() {
        let (keep, send) = std::os::unix::net::UnixDatagram::pair().unwrap();
        send.send(b"abcdefgh").unwrap();
        let err = unbundle(keep.into()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn store_names_carry_the_numbers_the_snapshot_uses() {
        assert_eq!(store_number(&store_name(17)), Some(17));
        for other in [
            STORE_SNAPSHOT,
            "vdi-fd-",
            "vdi-fd-x",
            "vdi-fd-2",
            "stored",
            "vdi-fd--5",
        ] {
            assert_eq!(store_number(other), None, "{other}");
        }
    }
}
