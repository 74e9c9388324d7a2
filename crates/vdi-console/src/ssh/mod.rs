//! SSH to the gateway hosts (russh): host keys checked against known_hosts,
//! login by ssh-agent, key file (with passphrase) or password, an optional
//! jump host, keepalive. One [`Session`] per host is shared by every view
//! through [`Pool`], which reconnects after a drop.

pub mod config;
pub mod hostkeys;

use hostkeys::{HostKeys, Verdict};
use russh::ChannelMsg;
use russh::client::{self, AuthResult, Handle};
use russh::keys::{
    Algorithm, EcdsaCurve, HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vdi_wire::console::HostKeyDetail;

/// The most a remote command's output (stdout and stderr together) may
/// hold before the console stops reading it ([`SshError::TooLarge`]): a
/// compromised host cannot make the console buffer without end. Our
/// commands print kilobytes (`systemctl show`, `dpkg-query`, the settings
/// document); the journal has its own bounds ([`crate::journal`]).
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// Where to log in, fully resolved (config file applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub jump: Option<Box<Jump>>,
}

/// A jump host and its own login: never the target's (a password given
/// for the gateway host is not sent to the bastion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub target: Target,
    pub creds: Credentials,
}

impl Target {
    /// This host and the jump hosts it is reached through.
    pub fn hops(&self) -> impl Iterator<Item = &Target> {
        std::iter::successors(Some(self), |t| t.jump.as_deref().map(|j| &j.target))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)?;
        if let Some(j) = &self.jump {
            write!(f, " via {}", j.target)?;
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, Eq)]
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
    /// Also when the host now presents a key of another type than the
    /// recorded ones (as a man in the middle with a key of his own would).
    #[error(
        "THE HOST KEY OF {}:{} HAS CHANGED: it now presents {} {}, but {}:{} records {} {}. This can be a reinstalled host or someone in the middle; the console refuses to connect. After checking the new key on the host itself, replace it explicitly",
        .0.host, .0.port, .0.algorithm, .0.fingerprint, .0.file, .0.line, .0.expected_algorithm, .0.expected
    )]
    HostKeyChanged(Box<ChangedKey>),
    /// A remote command printed more than the console reads.
    #[error(
        "{what} on {host} printed more than {} MiB; the console stopped reading it (a host should never send this much)",
        limit / (1024 * 1024)
    )]
    TooLarge {
        host: String,
        what: String,
        limit: usize,
    },
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    #[error("no SSH answer from {0} within {1} s")]
    Timeout(String, u64),
    #[error("login to {0} refused: {1}")]
    Auth(String, String),
    #[error(
        "the key file {0} needs its passphrase: store it as the SSH password of this gateway (for a jump host: of the jump host's own inventory entry)"
    )]
    Passphrase(String),
    #[error("SSH: {0}")]
    Protocol(String),
}

/// What [`SshError::HostKeyChanged`] tells the admin.
#[derive(Debug)]
pub struct ChangedKey {
    pub host: String,
    pub port: u16,
    pub algorithm: String,
    pub fingerprint: String,
    pub expected_algorithm: String,
    pub expected: String,
    pub file: String,
    pub line: usize,
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
            SshError::HostKeyChanged(c) => Some(HostKeyDetail {
                host: c.host.clone(),
                port: c.port,
                algorithm: Some(c.algorithm.clone()),
                fingerprint: c.fingerprint.clone(),
                expected: Some(c.expected.clone()),
                file: Some(c.file.clone()),
                line: Some(c.line),
            }),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            SshError::HostKeyUnknown { .. } => "host_key_unknown",
            SshError::HostKeyChanged(_) => "host_key_changed",
            SshError::Connect(..) => "unreachable",
            SshError::Timeout(..) => "timeout",
            SshError::Auth(..) => "ssh_auth",
            SshError::Passphrase(_) => "ssh_passphrase",
            SshError::Protocol(_) => "ssh",
            SshError::TooLarge { .. } => "too_large",
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
                expected_algorithm,
            } => {
                self.pending
                    .0
                    .lock()
                    .unwrap()
                    .insert((self.host.clone(), self.port), key.clone());
                Err(SshError::HostKeyChanged(Box::new(ChangedKey {
                    host: self.host.clone(),
                    port: self.port,
                    algorithm: key.algorithm().to_string(),
                    fingerprint,
                    expected_algorithm,
                    expected,
                    file: file.display().to_string(),
                    line,
                })))
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
        let recorded = keys.recorded_algorithms(&target.host, target.port);
        let config = Arc::new(client::Config {
            keepalive_interval: Some(opts.keepalive),
            keepalive_max: 3,
            nodelay: true,
            preferred: russh::Preferred {
                key: Cow::Owned(host_key_order(&recorded)),
                ..russh::Preferred::DEFAULT
            },
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
                let jump =
                    Box::pin(Session::connect(&j.target, &j.creds, keys, pending, opts)).await?;
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

    /// Runs `command` and collects its output (bounded in time by `limit`,
    /// in size by [`MAX_OUTPUT`]).
    pub async fn exec(&self, command: &str, limit: Duration) -> Result<Output, SshError> {
        self.exec_with_input(command, None, limit).await
    }

    /// Like [`Session::exec`], reading at most `max_bytes` of output.
    pub async fn exec_bounded(
        &self,
        command: &str,
        limit: Duration,
        max_bytes: usize,
    ) -> Result<Output, SshError> {
        self.run(command, &[], limit, max_bytes, |_, _| {}).await
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
        progress: impl FnMut(usize, usize),
    ) -> Result<Output, SshError> {
        self.run(command, data, limit, MAX_OUTPUT, progress).await
    }

    async fn run(
        &self,
        command: &str,
        data: &[u8],
        limit: Duration,
        max_bytes: usize,
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
                let (stderr, data) = match msg {
                    ChannelMsg::Data { data } => (false, data),
                    ChannelMsg::ExtendedData { data, .. } => (true, data),
                    ChannelMsg::ExitStatus { exit_status } => {
                        out.status = Some(exit_status);
                        continue;
                    }
                    _ => continue,
                };
                if out_len(&out) + data.len() > max_bytes {
                    let _ = ch.close().await;
                    return Err(SshError::TooLarge {
                        host: name.clone(),
                        what: command_name(command),
                        limit: max_bytes,
                    });
                }
                if stderr {
                    &mut out.stderr
                } else {
                    &mut out.stdout
                }
                .extend_from_slice(&data);
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

fn out_len(o: &Output) -> usize {
    o.stdout.len() + o.stderr.len()
}

/// How a command is named in an error: its first words, not its arguments.
pub(crate) fn command_name(command: &str) -> String {
    let words: Vec<&str> = command
        .split_whitespace()
        .filter(|w| !w.contains('='))
        .take(2)
        .collect();
    format!("`{}`", words.join(" "))
}

/// Host key algorithms to offer, most wanted first: those of the keys
/// recorded for the host first (as OpenSSH orders them), so a host with
/// several keys presents the one we can check; then the other safe ones. A
/// host offering only other types then presents a key that is refused as
/// CHANGED. Never `ssh-rsa` (RSA with SHA-1 signatures): RSA host keys only
/// with rsa-sha2-512/256.
pub fn host_key_order(recorded: &[Algorithm]) -> Vec<Algorithm> {
    let safe = [
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
    ];
    let mut out: Vec<Algorithm> = Vec::new();
    for r in recorded {
        for a in &safe {
            // A recorded RSA key (`ssh-rsa` in known_hosts) is checked
            // through either SHA-2 signature.
            let same = match (r, a) {
                (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
                (r, a) => r == a,
            };
            if same && !out.contains(a) {
                out.push(a.clone());
            }
        }
    }
    for a in safe {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The signature hash for a user key: none for non-RSA keys; for RSA the
/// best SHA-2 one the server accepts (rsa-sha2-256 when it does not say, as
/// RFC 8332 allows). A server that takes RSA keys only with SHA-1 (`ssh-rsa`)
/// is refused: the console never signs with SHA-1.
async fn rsa_hash(
    handle: &Handle<Client>,
    key_is_rsa: bool,
    who: &str,
) -> Result<Option<HashAlg>, SshError> {
    if !key_is_rsa {
        return Ok(None);
    }
    match handle.best_supported_rsa_hash().await? {
        Some(Some(h)) => Ok(Some(h)),
        None => Ok(Some(HashAlg::Sha256)),
        Some(None) => Err(SshError::Auth(
            who.to_string(),
            "the server accepts RSA keys only with SHA-1 signatures (ssh-rsa), which the console does not make; allow rsa-sha2-256/512 on the server (PubkeyAcceptedAlgorithms) or use an Ed25519 key".into(),
        )),
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
            let hash = rsa_hash(handle, key.algorithm().is_rsa(), &who).await?;
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
            let mut sha1_only = None;
            for id in ids {
                let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                    continue;
                };
                let hash = match rsa_hash(handle, key.algorithm().is_rsa(), &who).await {
                    Ok(h) => h,
                    Err(e) => {
                        // This key would need SHA-1; another may do.
                        sha1_only = Some(e);
                        continue;
                    }
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
            Err(sha1_only.unwrap_or(SshError::Auth(
                who,
                "no key of the ssh-agent was accepted".into(),
            )))
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
        self.forget(id);
    }

    /// Forgets host `id`'s session (views holding it finish with it): its
    /// entry was edited or removed, and an id may be given to a new entry.
    pub fn forget(&self, id: i64) {
        self.hosts.lock().unwrap().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_key_types_first_and_never_ssh_rsa() {
        let names = |v: Vec<Algorithm>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let default = names(host_key_order(&[]));
        assert_eq!(
            default,
            [
                "ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521",
                "rsa-sha2-512",
                "rsa-sha2-256"
            ]
        );
        assert!(
            !default.iter().any(|a| a == "ssh-rsa"),
            "no SHA-1 host signatures"
        );
        // A host recorded with RSA (`ssh-rsa` in known_hosts) and ECDSA: those first,
        // RSA through SHA-2 only.
        let recorded = [
            Algorithm::Rsa { hash: None },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
        ];
        assert_eq!(
            names(host_key_order(&recorded)),
            [
                "rsa-sha2-512",
                "rsa-sha2-256",
                "ecdsa-sha2-nistp384",
                "ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp521"
            ]
        );
    }

    #[test]
    fn errors_name_the_command_not_its_arguments() {
        assert_eq!(
            command_name("LC_ALL=C journalctl -u haproxy.service -o json"),
            "`journalctl -u`"
        );
        assert_eq!(
            command_name("cat '/etc/haproxy/haproxy.cfg'"),
            "`cat '/etc/haproxy/haproxy.cfg'`"
        );
    }
}
