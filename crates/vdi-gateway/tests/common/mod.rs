//! Test harness: real gateways on unique loopback addresses (any 127/8 address
//! is local on Linux, so every gateway in every test process gets its own IP and
//! can use the product's fixed ports), and honest stand-ins for the desktop and
//! the dispatcher.
#![allow(dead_code, unused_imports)]

pub mod daemon;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vdi_gateway::Store;
use vdi_gateway::testing::LocalGateway;

pub use vdi_gateway::testing::{TempDir, unique_loopback};

pub struct TestGateway {
    pub ip: IpAddr,
    pub base: String,
    pub api_key: String,
    pub cli_key: String,
    pub db: PathBuf,
    pub http: reqwest::Client,
    local: LocalGateway,
}

/// Starts a gateway on a fresh loopback address with `patch` applied to the
/// defaults (ports 21000-21009, allowed_targets 127.0.0.1/32).
pub async fn start(patch: Value) -> TestGateway {
    start_on(unique_loopback(), patch).await
}

pub async fn start_on(ip: IpAddr, patch: Value) -> TestGateway {
    let local = LocalGateway::start_on(ip, patch, vdi_gateway::testing::options())
        .await
        .expect("gateway starts");
    let h = &local.handle;
    TestGateway {
        ip,
        base: h.api_url(),
        api_key: h.api_key(),
        cli_key: h.cli_key(),
        db: local.db.clone(),
        http: reqwest::Client::new(),
        local,
    }
}

impl TestGateway {
    /// The gateway itself, for what only the process sees.
    pub fn gw(&self) -> &vdi_gateway::Shared {
        self.local.handle.gateway()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .header("api_key", key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, header: &str, key: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header(header, key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The settings row as stored in the database.
    pub fn stored_text(&self) -> String {
        Store::open(&self.db).unwrap().load_text().unwrap()
    }

    /// The settings as stored in the database.
    pub fn stored(&self) -> vdi_wire::Settings {
        Store::open(&self.db).unwrap().load().unwrap()
    }

    /// `POST /v3/change_settings/` with the api_key.
    pub async fn change(&self, patch: Value) -> (u16, Value) {
        self.post(
            "/v3/change_settings/",
            "api_key",
            &self.api_key.clone(),
            patch,
        )
        .await
    }

    /// A change as root on the host makes it (the CLI's path, in-process):
    /// host-local fields allowed. The changed fields, or the error.
    pub async fn host_change(&self, patch: Value) -> Result<Vec<String>, String> {
        self.gw()
            .change(patch.as_object().unwrap(), vdi_gateway::Caller::Host)
            .await
            .map(|c| c.changed)
            .map_err(|e| e.to_string())
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    }

    pub async fn open(&self, target: SocketAddr, vm: Option<&str>) -> (u16, Value) {
        let mut body =
            json!({"target_host": target.ip().to_string(), "target_port": target.port()});
        if let Some(vm) = vm {
            body["vm_id"] = json!(vm);
        }
        self.post(
            "/v3/open_connection/",
            "cli_key",
            &self.cli_key.clone(),
            body,
        )
        .await
    }

    pub async fn connections(&self) -> Value {
        let (status, body) = self.get("/v3/get_connections/", &self.api_key).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn tunnel(&self, id: &str) -> Option<Value> {
        let c = self.connections().await;
        c["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
    }

    /// A WebSocket request for `/v3/connect/?id=ID` presenting `key` as cli_key.
    pub fn ws_request(
        &self,
        id: &str,
        key: &str,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}:8000/v3/connect/?id={id}", self.ip);
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("cli_key", key.parse().unwrap());
        req
    }

    /// Polls `get_connections` until `cond` holds (bounded: 15 s).
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let c = self.connections().await;
            if cond(&c) {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {c}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.local.stop().await;
    }
}

/// A PROXY protocol v2 header naming `client` (what HAProxy's `send-proxy-v2` sends).
pub fn v2_header(client: &str, to: SocketAddr) -> Vec<u8> {
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client.parse::<SocketAddr>().unwrap(), to),
    )
    .build()
    .unwrap()
}

/// The desktop stand-in: echoes every byte back, and on EOF closes its side
/// (so half-close is visible). Counts connections it has seen.
pub struct Echo {
    pub addr: SocketAddr,
    pub accepted: tokio::sync::watch::Receiver<usize>,
    /// Connections whose client side reached EOF (closed by the gateway).
    pub ended: tokio::sync::watch::Receiver<usize>,
}

impl Echo {
    /// Waits (bounded: 15 s) until `n` connections have ended at the desktop.
    pub async fn wait_ended(&mut self, n: usize) {
        let wait = self.ended.wait_for(|e| *e >= n);
        tokio::time::timeout(Duration::from_secs(15), wait)
            .await
            .expect("desktop connections ended in time")
            .unwrap();
    }
}

pub async fn echo_server(ip: IpAddr) -> Echo {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    let (ended_tx, ended) = tokio::sync::watch::channel(0usize);
    let ended_tx = std::sync::Arc::new(ended_tx);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tx.send_modify(|n| *n += 1);
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = sock.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
                ended_tx.send_modify(|n| *n += 1);
            });
        }
    });
    Echo {
        addr,
        accepted: rx,
        ended,
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ n as u64 ^ rand_seed();
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

/// Sends `data` through `sock` to the echo target, half-closes, and reads
/// everything back until EOF. Returns what came back.
pub async fn echo_round_trip(mut sock: TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = sock.split();
    let send = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let recv = async {
        let mut back = Vec::with_capacity(data.len());
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::join!(send, recv);
    back
}

/// Sends `what` and whether the same bytes come back (an echoing desktop).
pub async fn echoes(s: &mut TcpStream, what: &[u8]) -> bool {
    s.write_all(what).await.unwrap();
    let mut back = vec![0u8; what.len()];
    s.read_exact(&mut back).await.is_ok() && back == what
}

/// True when nothing listens on the address any more (and it can be bound).
pub fn port_is_free(addr: SocketAddr) -> bool {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&addr.into()).is_ok()
}
