//! TLS for the API and the service tunnel when `ssl` is on. The certificate and
//! key come from `tls_cert_path`/`tls_key_path`; when those are unset and the
//! default files (`tls/cert.pem`, `tls/key.pem` next to the database) are
//! missing, a self-signed pair is generated there once.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use vdi_wire::Settings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_cert_path {0}: {1}")]
    Cert(PathBuf, String),
    #[error("tls_key_path {0}: {1}")]
    Key(PathBuf, String),
    #[error("generating a self-signed certificate in {0}: {1}")]
    Generate(PathBuf, String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

pub fn default_paths(db_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = db_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

pub fn acceptor(s: &Settings, db_dir: &Path) -> Result<TlsAcceptor, TlsError> {
    let (default_cert, default_key) = default_paths(db_dir);
    let cert_path = s
        .tls_cert_path
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or(default_cert);
    let key_path = s
        .tls_key_path
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or(default_key);
    let using_defaults = s.tls_cert_path.is_none() && s.tls_key_path.is_none();
    if using_defaults && !cert_path.exists() && !key_path.exists() {
        generate(s, &cert_path, &key_path)?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect())
        .map_err(|e| TlsError::Cert(cert_path.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(
            cert_path,
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| TlsError::Key(key_path.clone(), e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn generate(s: &Settings, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    let fail = |e: &dyn std::fmt::Display| TlsError::Generate(dir.to_path_buf(), e.to_string());
    let mut names: Vec<String> = vec![
        "localhost".into(),
        s.public_addr.to_string(),
        s.virtual_addr.to_string(),
    ];
    names.extend(s.internal_addrs.iter().map(|a| a.to_string()));
    names.sort();
    names.dedup();
    let pair = rcgen::generate_simple_self_signed(names).map_err(|e| fail(&e))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    write_private(key_path, pair.signing_key.serialize_pem().as_bytes()).map_err(|e| fail(&e))?;
    std::fs::write(cert_path, pair.cert.pem()).map_err(|e| fail(&e))?;
    tracing::warn!(cert = %cert_path.display(), "generated a self-signed TLS certificate; replace it with one clients trust");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
