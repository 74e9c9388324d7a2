//! SSH to the gateway hosts (russh): host keys checked against known_hosts,
//! login by ssh-agent, key file (with passphrase) or password, an optional
//! jump host, keepalive. One [`Session`] per host is shared by every view
//! through [`Pool`], which reconnects after a drop.

pub mod config;
pub mod hostkeys;

use hostkeys::{HostKeys, Verdict};
use russh::ChannelMsg;
use russh::client::{self, AuthResult, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vdi_wire::console::HostKeyDetail;

/// Where to log in, fully resolved (config file applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub jump: Option<Box<Target>>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)?;
        if let Some(j) = &self.jump {
            write!(f, " via {j}")?;
        }
        Ok(())
    }
}

#[derive(Clone)]
pub enum Credentials {
    Agent,
    KeyFile {
        path: PathBuf,
        passphrase: Option<String>,
    },
    Password(String),
}

impl std::fmt::Debug for Credentials {
    // Never print a password or passphrase.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Agent => write!(f, "Agent"),
            Credentials::KeyFile { path, .. } => write!(f, "KeyFile({})", path.display()),
            Credentials::Password(_) => write!(f, "Password(***)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "the host key of {host}:{port} is not known yet: {algorithm} {fingerprint}. Compare it with the host's own (`ssh-keygen -lf /etc/ssh/ssh_host_{short}_key.pub` on its console) and trust it if it matches"
    )]
    HostKeyUnknown {
        host: String,
        port: u16,
        algorithm: String,
        short: String,
        fingerprint: String,
    },
    #[error(
        "THE HOST KEY OF {host}:{port} HAS CHANGED: it now presents {fingerprint}, but {file}:{line} records {expected}. This can be a reinstalled host or someone in the middle; the console refuses to connect. After checking the new key on the host itself, replace it explicitly"
    )]
    HostKeyChanged {
        host: String,
        port: u16,
        fingerprint: String,
        expected: String,
        file: String,
        line: usize,
    },
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    #[error("no SSH answer from {0} within {1} s")]
    Timeout(String, u64),
    #[error("login to {0} refused: {1}")]
    Auth(String, String),
    #[error("the key file {0} needs its passphrase: store it as the SSH password of this gateway")]
    Passphrase(String),
    #[error("SSH: {0}")]
    Protocol(String),
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> Self {
        SshError::Protocol(e.to_string())
    }
}

impl SshError {
    /// What the UI needs to act: the host and the key it was shown.
    pub fn detail(&self) -> Option<HostKeyDetail> {
        match self {
            SshError::HostKeyUnknown {
                host,
                port,
                algorithm,
                fingerprint,
                ..
            } => Some(HostKeyDetail {
                host: host.clone(),
                port: *port,
                algorithm: Some(algorithm.clone()),
                fingerprint: fingerprint.clone(),
                expected: None,
                file: None,
                line: None,
            }),
            SshError::HostKeyChanged {
                host,
                port,
                fingerprint,
                expected,
                file,
                line,
            } => Some(HostKeyDetail {
                host: host.clone(),
                port: *port,
                algorithm: None,
                fingerprint: fingerprint.clone(),
                expected: Some(expected.clone()),
                file: Some(file.clone()),
                line: Some(*line),
            }),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            SshError::HostKeyUnknown { .. } => "host_key_unknown",
            SshError::HostKeyChanged { .. } => "host_key_changed",
            SshError::Connect(..) => "unreachable",
            SshError::Timeout(..) => "timeout",
            SshError::Auth(..) => "ssh_auth",
            SshError::Passphrase(_) => "ssh_passphrase",
            SshError::Protocol(_) => "ssh",
        }
    }
}

/// A host key the admin was asked about, kept so that "trust" records the
/// very key that was shown (matched by fingerprint).
#[derive(Default)]
pub struct PendingKeys(Mutex<HashMap<(String, u16), PublicKey>>);

impl PendingKeys {
    pub fn has(&self, host: &str, port: u16) -> bool {
        self.0
            .lock()
            .unwrap()
            .contains_key(&(host.to_string(), port))
    }

    pub fn take(&self, host: &str, port: u16, fingerprint: &str) -> Option<PublicKey> {
        let mut all = self.0.lock().unwrap();
        let k = all.get(&(host.to_string(), port))?;
        if hostkeys::fingerprint(k) != fingerprint {
            return None;
        }
        all.remove(&(host.to_string(), port))
    }
}

struct Client {
    host: String,
    port: u16,
    keys: Arc<HostKeys>,
    pending: Arc<PendingKeys>,
}

impl client::Handler for Client {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return Err(SshError::Protocol(
                    "host certificates are not supported; configure a plain host key".into(),
                ));
            }
        };
        let fingerprint = hostkeys::fingerprint(key);
        match self.keys.check(&self.host, self.port, key) {
            Verdict::Known => Ok(true),
            Verdict::Unknown => {
                self.pending
                    .0
                    .lock()
                    .unwrap()
                    .insert((self.host.clone(), self.port), key.clone());
                let algorithm = key.algorithm().to_string();
                let short = algorithm
                    .strip_prefix("ssh-")
                    .unwrap_or(if algorithm.starts_with("ecdsa") {
                        "ecdsa"
                    } else {
                        &algorithm
                    })
                    .to_string();
                Err(SshError::HostKeyUnknown {
                    host: self.host.clone(),
                    port: self.port,
                    algorithm,
                    short,
                    fingerprint,
                })
            }
            Verdict::Changed {
                file,
                line,
                expected,
            } => {
                self.pending
                    .0
                    .lock()
                    .unwrap()
                    .insert((self.host.clone(), self.port), key.clone());
                Err(SshError::HostKeyChanged {
                    host: self.host.clone(),
                    port: self.port,
                    fingerprint,
                    expected,
                    file: file.display().to_string(),
                    line,
                })
            }
        }
    }
}

/// What a remote command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// `None` when it ended by a signal or without a status.
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Options that apply to every connection.
#[derive(Clone)]
pub struct Options {
    pub connect_timeout: Duration,
    pub keepalive: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// One logged-in SSH connection (and the jump host's, which carries it).
pub struct Session {
    handle: Handle<Client>,
    target: Target,
    _jump: Option<Box<Session>>,
}

impl Session {
    /// Connects and logs in; the host key is checked before any credential is sent.
    pub async fn connect(
        target: &Target,
        creds: &Credentials,
        keys: Arc<HostKeys>,
        pending: Arc<PendingKeys>,
        opts: &Options,
    ) -> Result<Session, SshError> {
        let config = Arc::new(client::Config {
            keepalive_interval: Some(opts.keepalive),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let handler = Client {
            host: target.host.clone(),
            port: target.port,
            keys: keys.clone(),
            pending: pending.clone(),
        };
        let name = format!("{}:{}", target.host, target.port);
        let limit = opts.connect_timeout;
        let timeout = || SshError::Timeout(name.clone(), limit.as_secs());
        let (jump, mut handle) = match &target.jump {
            None => {
                let tcp = tokio::time::timeout(
                    limit,
                    tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
                )
                .await
                .map_err(|_| timeout())?
                .map_err(|e| SshError::Connect(name.clone(), e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                let h = tokio::time::timeout(limit, client::connect_stream(config, tcp, handler))
                    .await
                    .map_err(|_| timeout())??;
                (None, h)
            }
            Some(j) => {
                let jump = Box::pin(Session::connect(j, creds, keys, pending, opts)).await?;
                let ch = jump
                    .handle
                    .channel_open_direct_tcpip(
                        target.host.clone(),
                        target.port as u32,
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| {
                        SshError::Connect(name.clone(), format!("through {}: {e}", jump.target))
                    })?;
                let h = tokio::time::timeout(
                    limit,
                    client::connect_stream(config, ch.into_stream(), handler),
                )
                .await
                .map_err(|_| timeout())??;
                (Some(Box::new(jump)), h)
            }
        };
        authenticate(&mut handle, target, creds).await?;
        Ok(Session {
            handle,
            target: target.clone(),
            _jump: jump,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed() || self._jump.as_ref().is_some_and(|j| j.is_closed())
    }

    /// Runs `command` and collects its output (bounded by `limit`).
    pub async fn exec(&self, command: &str, limit: Duration) -> Result<Output, SshError> {
        self.exec_with_input(command, None, limit).await
    }

    /// Runs `command` with `input` on its stdin.
    pub async fn exec_with_input(
        &self,
        command: &str,
        input: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Output, SshError> {
        self.upload(command, input.unwrap_or_default(), limit, |_, _| {})
            .await
    }

    /// Runs `command` (e.g. `cat > FILE`) with `data` on its stdin, in chunks,
    /// calling `progress(sent, total)` after each.
    pub async fn upload(
        &self,
        command: &str,
        data: &[u8],
        limit: Duration,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Output, SshError> {
        let name = self.target.host.clone();
        tokio::time::timeout(limit, async {
            let mut ch = self.handle.channel_open_session().await?;
            ch.exec(true, command).await?;
            let mut sent = 0;
            for chunk in data.chunks(256 * 1024) {
                ch.data(chunk).await?;
                sent += chunk.len();
                progress(sent, data.len());
            }
            ch.eof().await?;
            let mut out = Output::default();
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    _ => {}
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| SshError::Timeout(name, limit.as_secs()))?
    }

    /// Starts `command` and hands back its channel, for long-running output
    /// (a followed journal).
    pub async fn stream(&self, command: &str) -> Result<russh::Channel<client::Msg>, SshError> {
        let ch = self.handle.channel_open_session().await?;
        ch.exec(true, command).await?;
        Ok(ch)
    }
}

async fn authenticate(
    handle: &mut Handle<Client>,
    target: &Target,
    creds: &Credentials,
) -> Result<(), SshError> {
    let who = format!("{}@{}", target.user, target.host);
    let refused = |r: AuthResult, how: &str| match r {
        AuthResult::Success => Ok(()),
        AuthResult::Failure {
            remaining_methods, ..
        } => Err(SshError::Auth(
            who.clone(),
            format!(
                "{how} not accepted (the server allows: {})",
                remaining_methods
                    .iter()
                    .map(<&str>::from)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    };
    match creds {
        Credentials::Password(p) => {
            let r = handle.authenticate_password(&target.user, p).await?;
            refused(r, "the password was")
        }
        Credentials::KeyFile { path, passphrase } => {
            let key =
                russh::keys::load_secret_key(path, passphrase.as_deref()).map_err(|e| match e {
                    russh::keys::Error::KeyIsEncrypted => {
                        SshError::Passphrase(path.display().to_string())
                    }
                    e => SshError::Auth(who.clone(), format!("key file {}: {e}", path.display())),
                })?;
            let hash = handle.best_supported_rsa_hash().await?.flatten();
            let r = handle
                .authenticate_publickey(
                    &target.user,
                    PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await?;
            refused(r, &format!("the key {}", path.display()))
        }
        Credentials::Agent => {
            let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                .await
                .map_err(|e| {
                    SshError::Auth(
                        who.clone(),
                        format!("no ssh-agent ({e}); is SSH_AUTH_SOCK set?"),
                    )
                })?;
            let ids = agent
                .request_identities()
                .await
                .map_err(|e| SshError::Auth(who.clone(), format!("ssh-agent: {e}")))?;
            let hash = handle.best_supported_rsa_hash().await?.flatten();
            for id in ids {
                let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                    continue;
                };
                match handle
                    .authenticate_publickey_with(&target.user, key, hash, &mut agent)
                    .await
                {
                    Ok(AuthResult::Success) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(SshError::Auth(who.clone(), format!("ssh-agent: {e}"))),
                }
            }
            Err(SshError::Auth(
                who,
                "no key of the ssh-agent was accepted".into(),
            ))
        }
    }
}

/// Quotes `s` for the remote POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Connection state of a host, for the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Connected,
    /// A dropped connection was re-established.
    Reconnected,
}

/// One connection per host, shared by every view; a dropped one is replaced
/// on next use (and counted, so the UI can say so). Each host has its own
/// lock: a slow or dead host never holds up the others.
#[derive(Default)]
pub struct Pool {
    hosts: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Slot>>>>,
}

#[derive(Default)]
struct Slot {
    session: Option<Arc<Session>>,
    reconnects: u32,
}

impl Pool {
    fn slot(&self, id: i64) -> Arc<tokio::sync::Mutex<Slot>> {
        self.hosts.lock().unwrap().entry(id).or_default().clone()
    }

    /// The live session of host `id`, connecting (again) when needed.
    /// `connect` runs only then (it may resolve the target and read secrets).
    pub async fn get<F, Fut, E>(
        &self,
        id: i64,
        connect: F,
    ) -> Result<(Arc<Session>, Option<LinkEvent>), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Session, E>>,
    {
        let slot = self.slot(id);
        let mut slot = slot.lock().await;
        let event = match &slot.session {
            Some(s) if !s.is_closed() => return Ok((s.clone(), None)),
            Some(_) => LinkEvent::Reconnected,
            None => LinkEvent::Connected,
        };
        let s = Arc::new(connect().await?);
        if event == LinkEvent::Reconnected {
            slot.reconnects += 1;
        }
        slot.session = Some(s.clone());
        Ok((s, Some(event)))
    }

    /// How many times host `id`'s connection was re-established.
    pub async fn reconnects(&self, id: i64) -> u32 {
        self.slot(id).lock().await.reconnects
    }

    pub async fn drop_host(&self, id: i64) {
        self.hosts.lock().unwrap().remove(&id);
    }
}
