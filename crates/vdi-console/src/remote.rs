//! What the console does on gateway hosts over SSH: service status and
//! actions (one host or rolling over many), the journal, configuration
//! previews, deploys, host key decisions. Every admin action is audited.

use crate::error::{Error, Result};
use crate::host_local::{self, HostSetError};
use crate::secrets::Kind;
use crate::ssh::{Credentials, Jump, Session, Target, config};
use crate::{Console, audit, deploy, journal, maintenance, preview, services, watch};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vdi_wire::Settings;
use vdi_wire::console::{
    ActionOutcome, AuditFormat, ConfigPreview, DeployParams, DeployProgress, DeployReport,
    GatewayEntry, JournalEntry, JournalEvent, JournalRequest, RebootParams, RebootPlan,
    ServiceAction, ServiceParams, SshAuth, TrustParams, UNITS, UnitStatus, WatchId,
};

/// How long one service action may take (start timeouts of our units are shorter).
const ACTION_LIMIT: Duration = Duration::from_secs(120);

/// An action's audit verdict: `ok` words a result (and may call it failed);
/// an error is a failure in its own words.
pub(crate) fn verdict<T>(r: &Result<T>, ok: impl FnOnce(&T) -> (bool, String)) -> (bool, String) {
    match r {
        Ok(v) => ok(v),
        Err(e) => (false, e.to_string()),
    }
}

/// One of the units the console manages, or a clear error.
pub fn unit(name: &str) -> Result<&'static str> {
    services::known_unit(name).ok_or_else(|| {
        Error::invalid(
            "unit",
            format!("{name:?} is not one of {}", UNITS.join(", ")),
        )
    })
}

impl Console {
    /// Where and how to log in to gateway `g`: the inventory entry, with the
    /// user's `~/.ssh/config` filling what the entry leaves at its default
    /// (port 22, user root, no key path, no jump host). A jump host logs in
    /// with its own credentials ([`Console::jump_credentials`]), never the
    /// gateway's.
    pub fn ssh_target(&self, g: &GatewayEntry) -> Result<(Target, Credentials)> {
        let alias = g.ssh_host.clone().ok_or_else(|| {
            Error::invalid(
                "ssh_host",
                "no SSH host is set for this gateway; add it with Edit",
            )
        })?;
        let home = dirs::home_dir().unwrap_or_default();
        let text = std::fs::read_to_string(home.join(".ssh/config")).unwrap_or_default();
        let resolve = |alias: &str, user: Option<String>, port: Option<u16>| {
            let c = config::resolve(&text, alias, &home);
            let target = Target {
                host: c.host_name.clone().unwrap_or_else(|| alias.to_string()),
                port: port.or(c.port).unwrap_or(22),
                user: user.or(c.user.clone()).unwrap_or_else(|| "root".into()),
                jump: None,
            };
            (target, c)
        };
        let entry_user = |e: &GatewayEntry| (e.ssh_user != "root").then(|| e.ssh_user.clone());
        let entry_port = |e: &GatewayEntry| (e.ssh_port != 22).then_some(e.ssh_port);
        let (mut target, cfg) = resolve(&alias, entry_user(g), entry_port(g));
        if let Some(spec) = g.ssh_jump.clone().or(cfg.proxy_jump.clone()) {
            let (user, host, port) = config::parse_jump(&spec).ok_or_else(|| {
                Error::invalid("ssh_jump", format!("cannot read jump host {spec:?}"))
            })?;
            let own = self.jump_entry(g.id, &host)?;
            let (jump, jump_cfg) = resolve(
                &host,
                user.or(own.as_ref().and_then(entry_user)),
                port.or(own.as_ref().and_then(entry_port)),
            );
            let creds = self.jump_credentials(own.as_ref(), &jump_cfg, &home)?;
            target.jump = Some(Box::new(Jump {
                target: jump,
                creds,
            }));
        }
        let creds = self.credentials(g, &cfg, &home, "SSH password")?;
        Ok((target, creds))
    }

    /// How gateway entry `e` logs in (its passphrase or password from its
    /// own secret).
    fn credentials(
        &self,
        e: &GatewayEntry,
        cfg: &config::HostConfig,
        home: &Path,
        missing: &'static str,
    ) -> Result<Credentials> {
        let secret = self
            .secrets
            .get(e.id, Kind::SshPassword)?
            .map(|s| s.expose().to_string());
        Ok(match &e.ssh_auth {
            SshAuth::Agent => Credentials::Agent,
            SshAuth::KeyFile { path } => Credentials::KeyFile {
                path: match path.strip_prefix("~/") {
                    Some(rest) => home.join(rest),
                    None if path.is_empty() => cfg.identity_file.clone().unwrap_or_default(),
                    None => path.into(),
                },
                passphrase: secret,
            },
            SshAuth::Password => Credentials::Password(secret.ok_or(Error::MissingKey(missing))?),
        })
    }

    /// The inventory entry of jump host `alias`, if the fleet has one (another
    /// gateway whose name or SSH host it is; by name first, then the oldest).
    fn jump_entry(&self, of: i64, alias: &str) -> Result<Option<GatewayEntry>> {
        let all = self.inventory.lock().unwrap().list()?;
        let others = || all.iter().filter(|e| e.id != of);
        let by_name = others().find(|e| e.name == alias);
        let by_host = others()
            .filter(|e| e.ssh_host.as_deref() == Some(alias))
            .min_by_key(|e| e.id);
        Ok(by_name.or(by_host).cloned())
    }

    /// A jump host's own login: its inventory entry's (method, key,
    /// password or passphrase from its own secret), else its `IdentityFile`
    /// in `~/.ssh/config`, else the ssh-agent. Never the target's password
    /// or passphrase: a bastion is another machine, with other owners.
    fn jump_credentials(
        &self,
        own: Option<&GatewayEntry>,
        cfg: &config::HostConfig,
        home: &Path,
    ) -> Result<Credentials> {
        if let Some(e) = own {
            return self.credentials(e, cfg, home, "SSH password (of the jump host's entry)");
        }
        Ok(match &cfg.identity_file {
            Some(path) => Credentials::KeyFile {
                path: path.clone(),
                passphrase: None,
            },
            None => Credentials::Agent,
        })
    }

    /// The shared SSH session of gateway `id` (connecting or reconnecting).
    pub async fn ssh(&self, id: i64) -> Result<Arc<Session>> {
        let g = self.get(id)?;
        // Resolved (~/.ssh/config, the keyring) only when the pool has no
        // live session: a view refreshing every few seconds costs nothing.
        let (s, event) = self
            .ssh_pool
            .get(id, || async {
                let (target, creds) = self.ssh_target(&g)?;
                tracing::debug!(gateway = id, target = %target, "ssh connecting");
                Session::connect(
                    &target,
                    &creds,
                    self.hostkeys.clone(),
                    self.pending_keys.clone(),
                    &self.ssh_options,
                )
                .await
                .map_err(Error::from)
            })
            .await?;
        if let Some(e) = event {
            let host = g.ssh_host.as_deref().unwrap_or_default();
            tracing::info!(gateway = id, host, event = ?e, "ssh");
        }
        Ok(s)
    }

    /// How many times gateway `id`'s SSH connection was re-established.
    pub async fn ssh_reconnects(&self, id: i64) -> u32 {
        self.ssh_pool.reconnects(id).await
    }

    /// Forgets the SSH connection of `id` (the next use connects again).
    pub async fn ssh_disconnect(&self, id: i64) {
        self.ssh_pool.drop_host(id).await;
    }

    /// Trusts the host key the admin was shown (by its fingerprint) for the
    /// host of gateway `id` or its jump host; replaces a changed key too.
    pub async fn trust_host_key(
        &self,
        id: i64,
        host: &str,
        port: u16,
        fingerprint: &str,
    ) -> Result<()> {
        let g = self.get(id)?;
        let (target, _) = self.ssh_target(&g)?;
        let ours = target.hops().any(|t| t.host == host && t.port == port);
        if !ours {
            return Err(Error::invalid(
                "host",
                format!("{host}:{port} is not a host of this gateway"),
            ));
        }
        // Not asked in this process (the CLI): connect once to see the key.
        if !self.pending_keys.has(host, port) {
            self.ssh_disconnect(id).await;
            let _ = self.ssh(id).await;
        }
        let key = self
            .pending_keys
            .take(host, port, fingerprint)
            .ok_or_else(|| {
                Error::invalid(
                    "fingerprint",
                    "this is not the key the host presented; connect again to see its key",
                )
            })?;
        let r = self
            .hostkeys
            .trust(host, port, &key)
            .map_err(|e| Error::HostKeys(e.to_string()));
        let params = TrustParams {
            port,
            fingerprint: fingerprint.into(),
        };
        let v = verdict(&r, |_| (true, format!("recorded {fingerprint}")));
        self.audited(Some(id), host, "trust_host_key", &params, v);
        r
    }

    /// Records an action in the audit log (a failure to record is logged, not
    /// hidden, and does not undo the action).
    pub(crate) fn audited(
        &self,
        id: Option<i64>,
        host: &str,
        action: &str,
        params: &impl Serialize,
        (ok, detail): (bool, String),
    ) {
        let params = serde_json::to_value(params).expect("audit parameters serialize");
        if let Err(e) = self.audit.record(id, host, action, &params, ok, &detail) {
            tracing::error!(error = %e, action, "audit log write failed");
        }
    }

    pub fn audit_log(&self, f: &audit::AuditFilter) -> Result<Vec<audit::AuditRecord>> {
        self.audit.list(f)
    }

    /// The filtered log as text: CSV, or JSON (pretty).
    pub fn audit_export(&self, f: &audit::AuditFilter, format: AuditFormat) -> Result<String> {
        let records = self.audit_log(f)?;
        Ok(match format {
            AuditFormat::Json => serde_json::to_string_pretty(&records).expect("records serialize"),
            AuditFormat::Csv => audit::to_csv(&records),
        })
    }

    pub async fn services(&self, id: i64) -> Result<Vec<UnitStatus>> {
        let s = self.ssh(id).await?;
        Ok(services::status(&s, &UNITS).await?)
    }

    /// Runs `action` on `unit` of gateway `id`, tracked until it settles.
    pub async fn service_action(
        &self,
        id: i64,
        unit_name: &str,
        action: ServiceAction,
    ) -> Result<ActionOutcome> {
        let u = unit(unit_name)?;
        let r = async {
            let s = self.ssh(id).await?;
            Ok::<_, Error>(services::act(&s, id, u, action, ACTION_LIMIT).await?)
        }
        .await;
        let params = ServiceParams {
            unit: u.into(),
            action,
        };
        let v = verdict(&r, |o| (o.ok, o.summary.clone()));
        self.audited(Some(id), &self.host_label(id), "service", &params, v);
        r
    }

    /// The "reboot when empty or after T" plan on gateway `id`'s host.
    pub async fn reboot_plan(&self, id: i64) -> Result<RebootPlan> {
        let s = self.ssh(id).await?;
        Ok(maintenance::state(&s).await?)
    }

    /// Drains gateway `id` and reboots its host once no stream is left, or
    /// after `after_secs` (at most a day) whatever still runs; audited.
    pub async fn plan_reboot(&self, id: i64, after_secs: u64) -> Result<RebootPlan> {
        let r = async {
            let after = maintenance::check_after(after_secs)
                .map_err(|m| Error::invalid("after_secs", m))?;
            let s = self.ssh(id).await?;
            maintenance::start(&s, after).await
        }
        .await;
        let v = verdict(&r, |p| match &p.failed {
            Some(why) => (false, why.clone()),
            None => (true, format!("reboot when empty or after {after_secs} s")),
        });
        let params = RebootParams {
            after_secs: Some(after_secs),
        };
        self.audited(Some(id), &self.host_label(id), "reboot_plan", &params, v);
        r
    }

    /// Cancels the plan (the drain stays until undrained); audited.
    pub async fn cancel_reboot(&self, id: i64) -> Result<RebootPlan> {
        let r = async {
            let s = self.ssh(id).await?;
            maintenance::cancel(&s).await
        }
        .await;
        let v = verdict(&r, |_| {
            (true, "reboot plan cancelled; still drained".into())
        });
        let params = RebootParams::default();
        self.audited(Some(id), &self.host_label(id), "reboot_cancel", &params, v);
        r
    }

    /// One action over several hosts, one at a time: after each host the
    /// unit must be active again (and for `vdi-gateway` its API healthy)
    /// before the next; the first failure stops the run. Outcomes so far are
    /// returned (and streamed through `each`).
    pub async fn rolling_action(
        &self,
        ids: &[i64],
        unit_name: &str,
        action: ServiceAction,
        mut each: impl FnMut(&ActionOutcome),
    ) -> Result<Vec<ActionOutcome>> {
        let u = unit(unit_name)?;
        let mut done = Vec::new();
        for &id in ids {
            let mut o = match self.service_action(id, u, action).await {
                Ok(o) => o,
                Err(e) => ActionOutcome {
                    gateway: id,
                    host: self.host_label(id),
                    unit: u.into(),
                    action,
                    ok: false,
                    summary: e.to_string(),
                    status: None,
                    log: vec![],
                    took_ms: 0,
                },
            };
            if o.ok
                && u == "vdi-gateway"
                && action != ServiceAction::Stop
                && let Err(e) = self.wait_healthy(id, Duration::from_secs(30)).await
            {
                o.ok = false;
                o.summary = format!("{}, but its API is not healthy: {e}", o.summary);
            }
            each(&o);
            let ok = o.ok;
            done.push(o);
            if !ok {
                break;
            }
        }
        Ok(done)
    }

    /// Writes host-local fields with the host's CLI, has the running gateway
    /// re-read its database and waits until its API shows them in force
    /// (`expected`); otherwise writes back their values from `current`, so
    /// the host is left as it was. Returns the settings in force.
    pub(crate) async fn set_on_host(
        &self,
        id: i64,
        assignments: &[String],
        current: &Settings,
        expected: &Settings,
        fields: &[String],
    ) -> Result<Settings> {
        let s = self.ssh(id).await?;
        host_local::write(&s, assignments).await?;
        let why = match host_local::reload(&s).await {
            Ok(()) => match self.wait_in_force(id, expected, fields).await {
                Ok(now) => return Ok(now),
                Err(why) => why,
            },
            Err(e) => e.to_string(),
        };
        let restored = match host_local::assignments(&host_local::previous(current, fields)) {
            Ok(back) => {
                host_local::write(&s, &back).await.is_ok() && host_local::reload(&s).await.is_ok()
            }
            Err(_) => false,
        };
        Err(HostSetError::NotApplied {
            fields: fields.to_vec(),
            why,
            secs: host_local::IN_FORCE_LIMIT.as_secs(),
            restored,
        }
        .into())
    }

    /// The settings in force once they hold `expected`'s `fields`, or why not.
    async fn wait_in_force(
        &self,
        id: i64,
        expected: &Settings,
        fields: &[String],
    ) -> Result<Settings, String> {
        let t = Instant::now();
        loop {
            let last = match self.client(id).map_err(|e| e.to_string())?.get_settings().await {
                Ok(now) if host_local::in_force(&now, expected, fields) => return Ok(now),
                Ok(_) => "its API still shows the previous values; see `journalctl -u vdi-gateway` on the host".to_string(),
                Err(e) => format!("its API: {e}"),
            };
            if t.elapsed() > host_local::IN_FORCE_LIMIT {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls the gateway's health until it answers (bounded).
    pub(crate) async fn wait_healthy(&self, id: i64, limit: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            match self.client(id)?.health().await {
                Ok(_) => return Ok(()),
                Err(e) if t.elapsed() > limit => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub async fn journal(
        &self,
        id: i64,
        q: &journal::Query,
        before_cursor: Option<&str>,
    ) -> Result<Vec<JournalEntry>> {
        q.validate().map_err(|e| Error::invalid("journal", e))?;
        let s = self.ssh(id).await?;
        journal::read(&s, q, before_cursor).await
    }

    /// Up to `lines` (at most [`journal::MAX_EARLIER`]) entries of `unit`
    /// before `before_cursor`: "load earlier".
    pub async fn journal_earlier(
        &self,
        id: i64,
        unit_name: &str,
        before_cursor: &str,
        lines: u32,
    ) -> Result<Vec<JournalEntry>> {
        let q = journal::Query {
            unit: unit(unit_name)?,
            lines: lines.min(journal::MAX_EARLIER),
            ..Default::default()
        };
        self.journal(id, &q, Some(before_cursor)).await
    }

    /// Follows the journal a view asks for (see [`journal::follow`]) as a
    /// watch: checked now, then pushed to `sink` until unwatched, replaced
    /// or refused. Runs on the current Tokio runtime.
    pub fn watch_journal(
        self: &Arc<Self>,
        id: i64,
        r: &JournalRequest,
        sink: impl FnMut(JournalEvent) -> bool + Send + 'static,
    ) -> Result<WatchId> {
        let q = journal::Query::of(r)?;
        let (watch, stop) = self.watches.start(watch::Kind::Journal);
        let console = self.clone();
        tokio::spawn(async move {
            if let Err(e) = console.follow_journal(id, q, stop, sink).await {
                tracing::warn!(error = %e, "journal watch");
            }
        });
        Ok(watch)
    }

    /// Follows the journal of a unit of gateway `id` (see [`journal::follow`]).
    pub async fn follow_journal(
        &self,
        id: i64,
        q: journal::Query,
        stop: CancellationToken,
        sink: impl FnMut(JournalEvent) -> bool,
    ) -> Result<()> {
        q.validate().map_err(|e| Error::invalid("journal", e))?;
        journal::follow(|| self.ssh(id), q, stop, sink).await;
        Ok(())
    }

    pub async fn config_preview(&self, id: i64, which: &str) -> Result<ConfigPreview> {
        let which = preview::known_file(which).ok_or_else(|| {
            Error::invalid(
                "which",
                format!("{which:?} is not one of {}", preview::FILES.join(", ")),
            )
        })?;
        let s = self.ssh(id).await?;
        Ok(preview::preview(&s, which).await?)
    }

    /// Installs or upgrades the gateway package `deb` on gateway `id`
    /// (`None`: the one this console bundles, [`crate::bundled_gateway_deb`]).
    /// Only the bundled package (by its SHA-256), or one whose SHA-256 the
    /// admin confirmed (`confirmed_sha256`), is sent; the host's copy is
    /// checked against that hash before `dpkg -i`, and the audit records it.
    pub async fn deploy(
        &self,
        id: i64,
        deb: Option<&Path>,
        force: bool,
        confirmed_sha256: Option<&str>,
        progress: impl FnMut(DeployProgress),
    ) -> Result<DeployReport> {
        let bundled = crate::bundled_gateway_deb();
        let deb = deb.or(bundled.as_deref()).ok_or(Error::NoPackage)?;
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| Error::invalid("package", format!("{}: {e}", p.display())))
        };
        let bytes = read(deb)?;
        let sha256 = deploy::sha256_hex(&bytes);
        let r = async {
            let is_bundled = match &bundled {
                Some(b) if b == deb => true,
                Some(b) => read(b).is_ok_and(|b| deploy::sha256_hex(&b) == sha256),
                None => false,
            };
            let confirmed = confirmed_sha256.map(|h| h.trim().to_ascii_lowercase());
            if !is_bundled && confirmed.as_deref() != Some(sha256.as_str()) {
                return Err(Error::PackageUnconfirmed {
                    package: deb.display().to_string(),
                    sha256: sha256.clone(),
                    given: confirmed,
                });
            }
            let s = self.ssh(id).await?;
            deploy::deploy(&s, id, &bytes, force, progress).await
        }
        .await;
        let params = DeployParams {
            package: deb.display().to_string(),
            force,
            sha256: Some(sha256),
        };
        let v = verdict(&r, |rep| {
            (
                rep.outcome.ok(),
                format!("{}: {}", rep.outcome, rep.message),
            )
        });
        self.audited(Some(id), &self.host_label(id), "deploy", &params, v);
        r
    }
}
