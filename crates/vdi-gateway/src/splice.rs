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

/// Copies `from` → `to` until EOF (then half-closes `to`), counting bytes.
/// `first` is written before (bytes already read while sniffing).
pub async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    first: &[u8],
    counters: &Counters,
    dir: Direction,
) -> io::Result<()> {
    send_all(to, first, counters, dir).await?;
    // Small reads go through a per-thread buffer with one recv and one send
    // (interactive traffic: fewer syscalls than through a pipe); a read that
    // fills it means bulk, and the following reads are spliced until one
    // moves less than that again (HAProxy's splice-auto idea).
    let mut bulk = false;
    loop {
        from.readable().await?;
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
                    return Ok(());
                }
                Ok(Small::Read { n, sent, rest }) => {
                    counters.add(dir, sent);
                    // The other side's buffer is full: the rest waits here.
                    send_all(to, &rest, counters, dir).await?;
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
                return Ok(());
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
            to.writable().await?;
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

async fn send_all(
    to: &TcpStream,
    mut bytes: &[u8],
    counters: &Counters,
    dir: Direction,
) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => {
                bytes = &bytes[n..];
                counters.add(dir, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
            copy(&a2, &b1, b"hello ", &counters, Direction::ToTarget)
                .await
                .unwrap()
        };
        let reader = async {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(relay, reader);
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
}
