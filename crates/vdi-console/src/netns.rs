//! Sockets in another network namespace (Linux). A socket belongs to the
//! namespace of the thread that created it, for its whole life, whichever
//! thread uses it later: so a short-lived thread enters the namespace, makes
//! the socket and ends, and the runtime drives the socket as any other.
//! (Never `setns` on a runtime's worker or blocking-pool thread: the thread
//! would stay in the namespace for every task that runs on it later.)

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A network namespace by its path (`/run/netns/NAME`).
#[derive(Clone, Debug)]
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
        }
    }

    /// A TCP socket (IPv4 or IPv6 as `for_addr`) made inside the namespace.
    pub fn socket(&self, for_addr: SocketAddr) -> io::Result<TcpSocket> {
        let path = self.path.clone();
        std::thread::spawn(move || -> io::Result<TcpSocket> {
            let ns = std::fs::File::open(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            // SAFETY: a plain syscall on a descriptor we own; it moves only
            // this (new, about to end) thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("setns {}: {e}", path.display()),
                ));
            }
            if for_addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// Connects to `addr` from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.socket(addr)?.connect(addr).await
    }

    /// Listens on `addr` inside the namespace.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let s = self.socket(addr)?;
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        s.listen(128)
    }
}

/// Where a connection starts: here, or in a namespace.
#[derive(Clone, Debug, Default)]
pub enum Net {
    #[default]
    Here,
    In(Netns),
}

impl Net {
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        match self {
            Net::Here => TcpStream::connect(addr).await,
            Net::In(ns) => ns.connect(addr).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A namespace path that is not one fails with the path named, and the
    /// calling thread's namespace is untouched.
    #[test]
    fn a_missing_namespace_is_named() {
        let e = Netns::new("/nonexistent/netns")
            .socket("127.0.0.1:1".parse().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/netns"), "{e}");
    }

    /// The thread's own namespace (`/proc/self/ns/net` of this thread) works
    /// like a plain socket: connect and listen reach each other.
    #[tokio::test]
    async fn own_namespace_connects_and_listens() {
        let tid = unsafe { libc::gettid() };
        let ns = Netns::new(format!("/proc/self/task/{tid}/ns/net"));
        let l = match ns.listen("127.0.0.1:0".parse().unwrap()) {
            Ok(l) => l,
            // Entering a namespace takes CAP_SYS_ADMIN, even one's own.
            Err(e) if unsafe { libc::geteuid() } != 0 => {
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let addr = l.local_addr().unwrap();
        let net = Net::In(ns);
        let (c, a) = tokio::join!(net.connect(addr), l.accept());
        assert_eq!(c.unwrap().peer_addr().unwrap(), addr);
        a.unwrap();
    }
}
