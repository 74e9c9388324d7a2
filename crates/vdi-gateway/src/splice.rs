//! Zero-copy relaying between two TCP sockets on Linux: splice(2) moves the
//! bytes socket → pipe → socket inside the kernel, so they never cross into
//! user space. A pipe is only borrowed for one chunk (filled, then drained
//! empty) from a shared pool, as HAProxy does: an idle stream holds no buffer
//! and no pipe, and the descriptors in use follow the chunks in flight, not
//! the streams. Readiness comes from tokio's reactor (`readable()` /
//! `try_io`), so a stream costs a task and its two sockets.

use crate::relay::{Counters, Direction};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What one splice call moves at most (the pipe's default capacity).
const CHUNK: usize = 64 * 1024;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// Empty pipes kept for reuse (more are made when all are lent).
static POOL: std::sync::Mutex<Vec<Pipe>> = std::sync::Mutex::new(Vec::new());
const POOL_KEEP: usize = 256;

impl Pipe {
    fn take() -> io::Result<Pipe> {
        match POOL.lock().unwrap().pop() {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }

    /// Back to the pool; only ever called with an empty pipe.
    fn give_back(self) {
        let mut pool = POOL.lock().unwrap();
        if pool.len() < POOL_KEEP {
            pool.push(self);
        }
    }

    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // Safety: pipe2 fills both descriptors on success; we own them after.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // Safety: plain descriptors, no offsets (sockets and pipes).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// How one direction of a spliced relay stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// EOF read and passed on (`to` half-closed).
    Eof,
    /// Stopped at a chunk boundary for a handover (`park` fired): these bytes
    /// were read from `from` and not yet written to `to`. Nothing else of the
    /// direction is in user space or in a pipe.
    Parked(Vec<u8>),
}

/// Copies `from` → `to` until EOF (then half-closes `to`), counting bytes,
/// or until `park` fires (then returns what was in flight). `first` is
/// written before (bytes already read while sniffing, or carried over from
/// the previous process).
pub async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    first: &[u8],
    counters: &Counters,
    dir: Direction,
    park: &CancellationToken,
) -> io::Result<Ended> {
    if let Some(rest) = send_all(to, first, counters, dir, park).await? {
        return Ok(Ended::Parked(rest));
    }
    // Small reads go through a per-thread buffer with one recv and one send
    // (interactive traffic: fewer syscalls than through a pipe); a read that
    // fills it means bulk, and the following reads are spliced until one
    // moves less than that again (HAProxy's splice-auto idea).
    let mut bulk = false;
    loop {
        // Nothing is in flight here: the one place a direction parks empty.
        tokio::select! {
            biased;
            _ = park.cancelled() => return Ok(Ended::Parked(Vec::new())),
            r = from.readable() => r?,
        }
        if !bulk {
            let read = SMALL.with(|b| {
                let mut b = b.borrow_mut();
                match from.try_read(&mut b[..]) {
                    Ok(0) => Ok(Small::Eof),
                    Ok(n) => {
                        // Sent before any await: the buffer is this thread's.
                        let sent = match to.try_write(&b[..n]) {
                            Ok(k) => k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                            Err(e) => return Err(e),
                        };
                        Ok(Small::Read {
                            n,
                            sent,
                            rest: b[sent..n].to_vec(),
                        })
                    }
                    Err(e) => Err(e),
                }
            });
            match read {
                Ok(Small::Eof) => {
                    socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)?;
                    return Ok(Ended::Eof);
                }
                Ok(Small::Read { n, sent, rest }) => {
                    counters.add(dir, sent);
                    // The other side's buffer is full: the rest waits here.
                    if let Some(rest) = send_all(to, &rest, counters, dir, park).await? {
                        return Ok(Ended::Parked(rest));
                    }
                    bulk = n == SMALL_SIZE;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        // Fill a pipe from the socket. A pipe from the pool is empty, so
        // EAGAIN can only mean the socket has nothing to read.
        let p = Pipe::take()?;
        let moved = match from.try_io(Interest::READABLE, || {
            splice(from.as_raw_fd(), p.write.as_raw_fd(), CHUNK)
        }) {
            Ok(0) => {
                p.give_back();
                socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)?;
                return Ok(Ended::Eof);
            }
            Ok(n) => n,
            // Readiness left over from the last drain: wait for more (still bulk).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                p.give_back();
                continue;
            }
            // The pipe may hold bytes now: dropped, not pooled.
            Err(e) => return Err(e),
        };
        bulk = moved >= SMALL_SIZE;
        // Drain it into the other socket (EAGAIN: its send buffer is full).
        let mut left = moved;
        while left > 0 {
            tokio::select! {
                biased;
                _ = park.cancelled() => {
                    // A pipe is readable as a file: what it holds becomes
                    // the direction's pending bytes, and the pipe goes back empty.
                    let rest = read_out(&p, left)?;
                    p.give_back();
                    return Ok(Ended::Parked(rest));
                }
                r = to.writable() => r?,
            }
            match to.try_io(Interest::WRITABLE, || {
                splice(p.read.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(n) => {
                    left -= n;
                    counters.add(dir, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        p.give_back();
    }
}

/// Reads the `len` bytes a pipe holds (all of them are there: nothing else
/// writes to a borrowed pipe).
fn read_out(p: &Pipe, len: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    let mut got = 0;
    while got < len {
        // Safety: reads into the unfilled part of our own buffer.
        let n = unsafe {
            libc::read(
                p.read.as_raw_fd(),
                out[got..].as_mut_ptr().cast(),
                len - got,
            )
        };
        match n {
            n if n > 0 => got += n as usize,
            0 => break,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    if got != len {
        return Err(io::Error::other(format!(
            "a pipe held {got} bytes where {len} were spliced in"
        )));
    }
    Ok(out)
}

/// Reads up to this much with a plain recv; a full read switches to splice.
const SMALL_SIZE: usize = 4096;

thread_local! {
    static SMALL: std::cell::RefCell<Box<[u8; SMALL_SIZE]>> =
        std::cell::RefCell::new(Box::new([0; SMALL_SIZE]));
}

enum Small {
    Eof,
    /// `n` bytes read, `sent` of them written at once, `rest` still to write.
    Read {
        n: usize,
        sent: usize,
        rest: Vec<u8>,
    },
}

/// Writes `bytes`; `Some(rest)` when `park` fired before all were written.
async fn send_all(
    to: &TcpStream,
    mut bytes: &[u8],
    counters: &Counters,
    dir: Direction,
    park: &CancellationToken,
) -> io::Result<Option<Vec<u8>>> {
    while !bytes.is_empty() {
        tokio::select! {
            biased;
            _ = park.cancelled() => return Ok(Some(bytes.to_vec())),
            r = to.writable() => r?,
        }
        match to.try_write(bytes) {
            Ok(n) => {
                bytes = &bytes[n..];
                counters.add(dir, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// a → [relay: a2 → b1] → b: the bytes, their count, the half-close.
    #[tokio::test]
    async fn moves_bytes_counts_them_and_passes_eof_on() {
        let (mut a, a2) = pair().await;
        let (b1, mut b) = pair().await;
        let counters = Counters::new("127.0.0.1:1".parse().unwrap(), Arc::new(Metrics::default()));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let relay = async {
            let never = CancellationToken::new();
            copy(&a2, &b1, b"hello ", &counters, Direction::ToTarget, &never)
                .await
                .unwrap()
        };
        let reader = async {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        };
        let (ended, got) = tokio::join!(relay, reader);
        assert_eq!(ended, Ended::Eof);
        writer.await.unwrap();
        assert_eq!(&got[..6], b"hello ");
        assert!(got[6..] == data[..], "the bytes arrive unchanged");
        assert_eq!(
            counters
                .to_target
                .load(std::sync::atomic::Ordering::Relaxed),
            data.len() as u64 + 6
        );
    }
    /// Parked mid-stream (the reader slow, so bytes sit in the pipe or the
    /// small buffer) and resumed with the parked bytes first: the reader gets
    /// every byte once, in order.
    #[tokio::test]
    async fn a_parked_direction_resumes_without_losing_or_repeating_a_byte() {
        let (mut a, a2) = pair().await;
        let (b1, mut b) = pair().await;
        let counters = Counters::new("127.0.0.1:1".parse().unwrap(), Arc::new(Metrics::default()));
        let data: Vec<u8> = (0..8_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let park = CancellationToken::new();
        let relay = copy(&a2, &b1, &[], &counters, Direction::ToTarget, &park);
        let mut got = vec![0u8; 300_000];
        let parker = async {
            // The reader takes a little, then stops until after the park.
            b.read_exact(&mut got).await.unwrap();
            // Bounded: the relay fills b's receive buffer within moments.
            for _ in 0..500 {
                if counters
                    .to_target
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 1_000_000
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            park.cancel();
        };
        let (ended, ()) = tokio::join!(relay, parker);
        let Ended::Parked(pending) = ended.unwrap() else {
            panic!("parked before the end of 8 MB")
        };
        let never = CancellationToken::new();
        let resumed = copy(&a2, &b1, &pending, &counters, Direction::ToTarget, &never);
        let reader = async {
            b.read_to_end(&mut got).await.unwrap();
            got
        };
        let (ended, got) = tokio::join!(resumed, reader);
        assert_eq!(ended.unwrap(), Ended::Eof);
        writer.await.unwrap();
        assert_eq!(got.len(), data.len(), "every byte once");
        assert!(got == data, "in order, unchanged");
        assert_eq!(
            counters
                .to_target
                .load(std::sync::atomic::Ordering::Relaxed),
            data.len() as u64
        );
    }
}
