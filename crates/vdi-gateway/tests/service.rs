//! The service tunnel (port 4300 -> the dispatchers) and TLS.

mod common;

use common::*;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DISP_PORT: u16 = 4200;

/// The dispatcher stand-in: greets with its name, then echoes.
async fn dispatcher(ip: IpAddr, name: &'static str) {
    let l = TcpListener::bind((ip, DISP_PORT)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                s.write_all(format!("{name}\n").as_bytes()).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

async fn greeting<S: AsyncReadExt + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        s.read_exact(&mut b).await.unwrap();
        if b[0] == b'\n' {
            return String::from_utf8(out).unwrap();
        }
        out.push(b[0]);
    }
}

#[tokio::test]
async fn round_robin_over_dispatchers_skipping_one_that_is_down() {
    let (d1, down, d2) = (unique_loopback(), unique_loopback(), unique_loopback());
    dispatcher(d1, "d1").await;
    dispatcher(d2, "d2").await;
    let g = start(json!({
        "disp_addrs": [d1.to_string(), down.to_string(), d2.to_string()],
        "disp_port": DISP_PORT,
    }))
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect((g.ip, 4300)).await.unwrap();
        // The client speaks first: the dispatcher is dialled then.
        s.write_all(b"ping").await.unwrap();
        let name = greeting(&mut s).await;
        let mut pong = [0u8; 4];
        s.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"ping");
        seen.push(name);
    }
    // Every connection reached a live dispatcher, both were used, the dead one skipped.
    assert!(seen.iter().all(|n| n == "d1" || n == "d2"), "{seen:?}");
    assert!(
        seen.contains(&"d1".to_string()) && seen.contains(&"d2".to_string()),
        "{seen:?}"
    );
    let metrics = g.metrics().await;
    assert!(
        metrics.contains("vdi_gateway_service_tunnel_connections_total{reason=\"relayed\"} 6"),
        "{metrics}"
    );
    g.stop().await;
}

#[tokio::test]
async fn no_dispatcher_reachable_closes_the_connection() {
    let down = unique_loopback();
    let g = start(json!({"disp_addrs": [down.to_string()], "disp_port": DISP_PORT})).await;
    let mut s = TcpStream::connect((g.ip, 4300)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
    g.stop().await;
}

#[tokio::test]
async fn ssl_terminates_tls_on_4300_and_the_api_with_a_generated_certificate() {
    let d1 = unique_loopback();
    dispatcher(d1, "tls-d").await;
    let g =
        start(json!({"ssl": true, "disp_addrs": [d1.to_string()], "disp_port": DISP_PORT})).await;
    let dir = g.db.parent().unwrap();
    let cert_pem = std::fs::read(dir.join("tls/cert.pem"))
        .expect("a certificate was generated next to the database");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(dir.join("tls/key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // The API over HTTPS, trusting the generated certificate.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert_pem).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://{}:8000/v3/health/", g.ip))
        .header("api_key", &g.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Plain HTTP on the TLS port does not get an answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}:8000/v3/health/", g.ip))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // The service tunnel: TLS from the client, plain TCP to the dispatcher.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(SocketAddr::new(g.ip, 4300))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(g.ip.into());
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(greeting(&mut tls).await, "tls-d");
    tls.write_all(b"secret").await.unwrap();
    let mut back = [0u8; 6];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"secret");
    g.stop().await;
}

#[tokio::test]
async fn a_missing_custom_certificate_is_refused_and_nothing_changes() {
    let g = start(json!({})).await;
    let before = g.stored_text();
    let missing = std::env::temp_dir().join(format!("vdi-none-{}", std::process::id()));
    let err = g
        .host_change(json!({"ssl": true, "tls_cert_path": missing.join("cert.pem"), "tls_key_path": missing.join("key.pem")}))
        .await
        .unwrap_err();
    assert!(err.contains("tls_cert_path"), "{err}");
    assert_eq!(g.stored_text(), before);
    assert_eq!(
        g.get("/v3/health/", &g.api_key).await.0,
        200,
        "still plain HTTP"
    );
    g.stop().await;
}
