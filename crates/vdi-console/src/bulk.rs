//! Changes and maintenance over many gateways, one host at a time (Ansible's
//! `serial: 1` with no failure allowed): a settings change is previewed with
//! its diff per host, then applied host after host, each checked in force
//! before the next; the first host that fails stops the run, and the hosts
//! after it are left as they were. Drain, upgrade and undrain roll the same way.

use crate::error::{Error, Result};
use crate::{Console, host_local};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use vdi_console_view::settings::{masked, texts};
use vdi_wire::console::{
    BulkChange, BulkOutcome, BulkParams, ConsoleError, FieldDiff, HostPlan, Planned, RollingOp,
};
use vdi_wire::{FieldError, SECRET_FIELDS, SETTINGS_FIELDS, Settings};

/// The most hosts one bulk operation takes.
pub const MAX_HOSTS: usize = 1000;

/// How the preview shows a rotated key: the value itself is made at apply
/// time, per host, and never shown.
pub const NEW_RANDOM_KEY: &str = "a new random key";

/// How long a host may take to answer healthy after an upgrade.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// Checks the hosts and the change before any host is asked.
pub fn check(ids: &[i64], change: &BulkChange) -> Result<()> {
    let mut errors = Vec::new();
    check_hosts(ids, &mut errors);
    if change.set.is_empty() && change.rotate.is_empty() {
        errors.push(FieldError::new(
            "change",
            "nothing to change: set a field or rotate a key",
        ));
    }
    for f in change.set.keys() {
        if !SETTINGS_FIELDS.contains(&f.as_str()) {
            errors.push(FieldError::new(f, "not a settings field"));
        } else if SECRET_FIELDS.contains(&f.as_str()) && ids.len() > 1 && !change.rotate.contains(f)
        {
            // One leaked key would then open every host.
            errors.push(FieldError::new(
                f,
                "one key for several hosts: rotate it instead (a new key per host)",
            ));
        }
    }
    let mut seen = HashSet::new();
    for f in &change.rotate {
        if !SECRET_FIELDS.contains(&f.as_str()) {
            errors.push(FieldError::new(
                f,
                format!("only keys rotate ({})", SECRET_FIELDS.join(", ")),
            ));
        } else if change.set.contains_key(f) {
            errors.push(FieldError::new(f, "both set and rotated: choose one"));
        } else if !seen.insert(f) {
            errors.push(FieldError::new(f, "rotated twice"));
        }
    }
    invalid_if_any(errors)
}

fn check_hosts(ids: &[i64], errors: &mut Vec<FieldError>) {
    if ids.is_empty() {
        errors.push(FieldError::new("gateways", "choose at least one gateway"));
    } else if ids.len() > MAX_HOSTS {
        errors.push(FieldError::new(
            "gateways",
            format!("at most {MAX_HOSTS} gateways at once"),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
        errors.push(FieldError::new(
            "gateways",
            format!("gateway {dup} is listed twice"),
        ));
    }
}

fn invalid_if_any(errors: Vec<FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::of_fields(errors))
    }
}

/// `items` one after the other: each outcome streamed through `each` as it
/// is known, and the first that is not ok ends the run.
async fn roll<T: Clone, Fut>(
    items: &[T],
    mut each: impl FnMut(&BulkOutcome),
    mut one: impl FnMut(T) -> Fut,
) -> Vec<BulkOutcome>
where
    Fut: std::future::Future<Output = BulkOutcome>,
{
    let mut done = Vec::new();
    for item in items {
        let o = one(item.clone()).await;
        each(&o);
        let ok = o.ok;
        done.push(o);
        if !ok {
            break;
        }
    }
    done
}

/// One host's patch: `set`, and a key from `key()` for each rotated field.
pub fn patch_for(change: &BulkChange, mut key: impl FnMut() -> String) -> Map<String, Value> {
    let mut patch = change.set.clone();
    for f in &change.rotate {
        patch.insert(f.clone(), Value::String(key()));
    }
    patch
}

/// A digest of a settings document (16 hex digits of its SHA-256): equal
/// digests, equal settings, and no key can be read back from it.
pub fn version(s: &Settings) -> String {
    let doc = vdi_core::settings::render_document(s);
    let d = Sha256::digest(doc.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The fields of `changed`, before and after, in document order; keys
/// masked, a rotated one as [`NEW_RANDOM_KEY`].
pub fn diff(
    before: &Settings,
    after: &Settings,
    changed: &[String],
    rotated: &[String],
) -> Vec<FieldDiff> {
    let (b, a) = (texts(before), texts(after));
    SETTINGS_FIELDS
        .iter()
        .filter(|f| changed.iter().any(|c| c == *f))
        .map(|f| {
            let text = |m: &std::collections::BTreeMap<String, String>| {
                masked(f, m.get(*f).map(String::as_str).unwrap_or(""))
            };
            let after = if rotated.iter().any(|r| r == f) {
                NEW_RANDOM_KEY.to_string()
            } else {
                text(&a)
            };
            FieldDiff {
                field: f.to_string(),
                before: text(&b),
                after,
            }
        })
        .collect()
}

/// The audit's words for a rolling run: "3 of 3", or where it stopped.
fn run_verdict(outcomes: &[BulkOutcome], hosts: usize) -> (bool, String) {
    let done = outcomes.iter().filter(|o| o.ok).count();
    match outcomes.iter().find(|o| !o.ok) {
        None if done == hosts => (true, format!("{done} of {hosts} host(s)")),
        None => (false, format!("{done} of {hosts} host(s), then it ended")),
        Some(f) => (
            false,
            format!(
                "{done} of {hosts} host(s); stopped at {}: {}",
                f.host, f.summary
            ),
        ),
    }
}

fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

impl Console {
    /// The gateways with tag `tag`, by name (a bulk operation's group).
    pub fn tagged(&self, tag: &str) -> Result<Vec<i64>> {
        let mut all = self.list()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all
            .into_iter()
            .filter(|g| g.tags.iter().any(|t| t == tag))
            .map(|g| g.id)
            .collect())
    }

    /// What `change` would do on each of `ids` (asked in parallel): the diff
    /// per host, or why that host would refuse it. Changes nothing.
    pub async fn plan_bulk_change(
        &self,
        ids: &[i64],
        change: &BulkChange,
    ) -> Result<Vec<HostPlan>> {
        check(ids, change)?;
        for &id in ids {
            self.get(id)?;
        }
        let plans = ids.iter().map(|&id| self.plan_one(id, change));
        Ok(futures_util::future::join_all(plans).await)
    }

    async fn plan_one(&self, id: i64, change: &BulkChange) -> HostPlan {
        let host = self.host_label(id);
        let current = match self.settings(id).await {
            Ok(s) => s,
            Err(e) => {
                return HostPlan {
                    gateway: id,
                    host,
                    diff: vec![],
                    error: Some(e.into()),
                    version: String::new(),
                };
            }
        };
        let version = version(&current);
        // A throwaway key for each rotated field, so the gateway's rules see
        // a valid value; the apply makes the real ones.
        // The same checks as the change itself (`change_settings`).
        let patch = patch_for(change, vdi_gateway::random_key);
        let host_fields = host_local::split(patch.clone()).1;
        let (diff, error) = match self.check_patch(id, &current, &patch, &host_fields) {
            Ok((c, _)) => (
                diff(&current, &c.settings, &c.changed, &change.rotate),
                None,
            ),
            Err(e) => (vec![], Some(ConsoleError::from(e))),
        };
        HostPlan {
            gateway: id,
            host,
            diff,
            error,
            version,
        }
    }

    /// Applies a previewed `change` host after host, in `plan`'s order: a
    /// host whose settings changed since the preview is refused, each host's
    /// change must be in force (read back) before the next, and the first
    /// failure stops the run. Each outcome is streamed through `each` and
    /// each host's change is audited, the run as a whole too.
    pub async fn apply_bulk_change(
        &self,
        change: &BulkChange,
        plan: &[Planned],
        mut each: impl FnMut(&BulkOutcome),
    ) -> Result<Vec<BulkOutcome>> {
        let ids: Vec<i64> = plan.iter().map(|p| p.gateway).collect();
        check(&ids, change)?;
        for &id in &ids {
            self.get(id)?;
        }
        let done = roll(plan, &mut each, |p| async move {
            let t = Instant::now();
            let r = self.apply_one(&p, change).await;
            BulkOutcome {
                gateway: p.gateway,
                host: self.host_label(p.gateway),
                ok: r.is_ok(),
                summary: match &r {
                    Ok(c) if c.is_empty() => "nothing to change".into(),
                    Ok(c) => format!("changed: {}", c.join(", ")),
                    Err(e) => e.to_string(),
                },
                changed: r.unwrap_or_default(),
                took_ms: ms(t),
            }
        })
        .await;
        let params = BulkParams {
            hosts: ids.iter().map(|&id| self.host_label(id)).collect(),
            set: change.set.keys().cloned().collect(),
            rotate: change.rotate.clone(),
        };
        let v = run_verdict(&done, ids.len());
        self.audited(None, "fleet", "bulk_change", &params, v);
        Ok(done)
    }

    /// One host: its settings still as previewed, the change (audited as
    /// `change_settings`), then read back in force. The changed fields.
    async fn apply_one(&self, p: &Planned, change: &BulkChange) -> Result<Vec<String>> {
        let current = self.settings(p.gateway).await?;
        if version(&current) != p.version {
            return Err(Error::invalid(
                "version",
                "its settings changed since the preview; preview again",
            ));
        }
        let patch = patch_for(change, vdi_gateway::random_key);
        let expected = vdi_core::settings::apply_patch(&current, &patch)
            .map_err(|e| Error::of_fields(e.field_errors()))?
            .settings;
        let changed = self.change_settings(p.gateway, patch.clone()).await?;
        let fields: Vec<String> = patch.keys().cloned().collect();
        let now = self.settings(p.gateway).await?;
        if !host_local::in_force(&now, &expected, &fields) {
            return Err(Error::ActionFailed(format!(
                "its API does not show {} as set",
                fields.join(", ")
            )));
        }
        Ok(changed.changed)
    }

    /// Drains, undrains or upgrades (drain, install the package, healthy,
    /// undrain) `ids` one host at a time; the first failure stops the run (a
    /// host whose upgrade failed stays drained, out of the VIP's way). The
    /// package is `deb` (confirmed by its SHA-256 as [`Console::deploy`]
    /// asks) or, with `None`, the bundled one. Streamed through `each`;
    /// audited per host and as a run.
    pub async fn rolling_maintenance(
        &self,
        ids: &[i64],
        op: RollingOp,
        package: Option<(&std::path::Path, &str)>,
        mut each: impl FnMut(&BulkOutcome),
    ) -> Result<Vec<BulkOutcome>> {
        let mut errors = Vec::new();
        check_hosts(ids, &mut errors);
        invalid_if_any(errors)?;
        for &id in ids {
            self.get(id)?;
        }
        if op == RollingOp::Upgrade && package.is_none() && crate::bundled_gateway_deb().is_none() {
            return Err(Error::NoPackage);
        }
        let done = roll(ids, &mut each, |id| async move {
            let t = Instant::now();
            let (ok, summary) = match self.maintain_one(id, op, package).await {
                Ok(s) => (true, s),
                Err(s) => (false, s),
            };
            BulkOutcome {
                gateway: id,
                host: self.host_label(id),
                ok,
                summary,
                changed: vec![],
                took_ms: ms(t),
            }
        })
        .await;
        let params = BulkParams {
            hosts: ids.iter().map(|&id| self.host_label(id)).collect(),
            ..Default::default()
        };
        let v = run_verdict(&done, ids.len());
        self.audited(
            None,
            "fleet",
            &format!("rolling_{}", op.as_str()),
            &params,
            v,
        );
        Ok(done)
    }

    /// One host's maintenance, in words either way.
    async fn maintain_one(
        &self,
        id: i64,
        op: RollingOp,
        package: Option<(&std::path::Path, &str)>,
    ) -> std::result::Result<String, String> {
        let drain = |on: bool| async move {
            match self.set_draining(id, on).await {
                Ok(s) if s.draining == on => Ok(format!(
                    "{} ({} stream(s) open)",
                    if on { "drained" } else { "undrained" },
                    s.streams
                )),
                Ok(_) => Err(format!(
                    "it did not {}",
                    if on { "drain" } else { "undrain" }
                )),
                Err(e) => Err(e.to_string()),
            }
        };
        match op {
            RollingOp::Drain => drain(true).await,
            RollingOp::Undrain => drain(false).await,
            RollingOp::Upgrade => {
                let drained = drain(true).await?;
                let report = self
                    .deploy(
                        id,
                        package.map(|p| p.0),
                        false,
                        package.map(|p| p.1),
                        |_| {},
                    )
                    .await
                    .map_err(|e| format!("{drained}; upgrade failed: {e}; left drained"))?;
                let (before, after) = (
                    report.before.as_deref().unwrap_or("none"),
                    report.after.as_deref().unwrap_or("none"),
                );
                if !report.outcome.ok() {
                    return Err(format!(
                        "{drained}; upgrade {} ({after} installed): {}; left drained",
                        report.outcome, report.message
                    ));
                }
                let step = format!("{}: {before} → {after}", report.outcome);
                self.wait_healthy(id, HEALTHY_WITHIN).await.map_err(|e| {
                    format!("{drained}; {step}, but its API is not healthy: {e}; left drained")
                })?;
                let undrained = drain(false)
                    .await
                    .map_err(|e| format!("{drained}; {step}; {e}"))?;
                Ok(format!("{drained}, {step}, {undrained}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        vdi_core::settings::local_defaults(
            "QUJDREVGR0hJSktMTU5PUA==".into(),
            "UVJTVFVWV1hZWmFiY2RlZg==".into(),
        )
    }

    fn change(set: Value, rotate: &[&str]) -> BulkChange {
        BulkChange {
            set: set.as_object().unwrap().clone(),
            rotate: rotate.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn fields(e: Error) -> Vec<(String, String)> {
        match e {
            Error::Invalid(_, f) => f.into_iter().map(|f| (f.field, f.message)).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_change_is_checked_before_any_host_is_asked() {
        assert!(
            check(
                &[1, 2],
                &change(json!({"tunnel_idle_secs": 60}), &["cli_key"])
            )
            .is_ok()
        );
        let f = fields(check(&[], &change(json!({}), &[])).unwrap_err());
        assert_eq!(f[0].0, "gateways");
        assert_eq!(f[1].0, "change");
        let f = fields(check(&[1, 1], &change(json!({"nope": 1}), &["public_addr"])).unwrap_err());
        let names: Vec<_> = f.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["gateways", "nope", "public_addr"]);
        assert!(f[0].1.contains("twice"), "{f:?}");
        let f = fields(
            check(
                &[1],
                &change(json!({"cli_key": "x"}), &["cli_key", "api_key", "api_key"]),
            )
            .unwrap_err(),
        );
        assert_eq!(
            f,
            [
                ("cli_key".into(), "both set and rotated: choose one".into()),
                ("api_key".into(), "rotated twice".into())
            ]
        );
        let f = fields(check(&[1, 2], &change(json!({"api_key": "QUJD"}), &[])).unwrap_err());
        assert_eq!(f[0].0, "api_key");
        assert!(f[0].1.contains("a new key per host"), "{f:?}");
        assert!(check(&[1], &change(json!({"api_key": "QUJD"}), &[])).is_ok());
        let many: Vec<i64> = (0..=MAX_HOSTS as i64).collect();
        assert!(check(&many, &change(json!({}), &["cli_key"])).is_err());
    }

    #[test]
    fn each_host_gets_its_own_key() {
        let c = change(json!({"tunnel_idle_secs": 60}), &["cli_key", "api_key"]);
        let mut n = 0;
        let mut key = || {
            n += 1;
            format!("k{n}")
        };
        let a = patch_for(&c, &mut key);
        let b = patch_for(&c, &mut key);
        assert_eq!(a["tunnel_idle_secs"], 60);
        assert_eq!((&a["cli_key"], &a["api_key"]), (&json!("k1"), &json!("k2")));
        assert_eq!((&b["cli_key"], &b["api_key"]), (&json!("k3"), &json!("k4")));
        // The real generator: 24 base64 characters, never the same twice.
        let (x, y) = (vdi_gateway::random_key(), vdi_gateway::random_key());
        assert_eq!(x.len(), 24);
        assert_ne!(x, y);
    }

    #[test]
    fn the_diff_masks_keys_and_follows_the_document() {
        let before = settings();
        let c = change(
            json!({"tunnel_idle_secs": 60, "api_key": "Tk9UU0VDUkVUMTIzNDU2Nw=="}),
            &["cli_key"],
        );
        let patch = patch_for(&c, || "WllaWllaWllaWllaWllaWg==".into());
        let after = vdi_core::settings::apply_patch(&before, &patch).unwrap();
        let d = diff(&before, &after.settings, &after.changed, &c.rotate);
        let shown: Vec<_> = d
            .iter()
            .map(|d| (d.field.as_str(), d.before.as_str(), d.after.as_str()))
            .collect();
        let dots = "•".repeat(8);
        assert_eq!(
            shown,
            [
                ("api_key", dots.as_str(), dots.as_str()),
                ("cli_key", dots.as_str(), NEW_RANDOM_KEY),
                ("tunnel_idle_secs", "default", "60"),
            ]
        );
        let text = serde_json::to_string(&d).unwrap();
        assert!(
            !text.contains("Tk9UU0VDUkVU") && !text.contains("WllaWlla"),
            "{text}"
        );
    }

    #[test]
    fn the_version_follows_every_field_and_hides_the_keys() {
        let a = settings();
        let mut b = a.clone();
        assert_eq!(version(&a), version(&b));
        assert_eq!(version(&a).len(), 16);
        b.cli_key = vdi_wire::Secret::new("WllaWllaWllaWllaWllaWg==".to_string());
        assert_ne!(version(&a), version(&b));
        assert!(!version(&a).contains("QUJD"));
    }

    #[test]
    fn the_run_says_where_it_stopped() {
        let o = |host: &str, ok: bool| BulkOutcome {
            gateway: 1,
            host: host.into(),
            ok,
            summary: if ok {
                "changed: cli_key".into()
            } else {
                "unreachable".into()
            },
            changed: vec![],
            took_ms: 1,
        };
        assert_eq!(
            run_verdict(&[o("a", true), o("b", true)], 2),
            (true, "2 of 2 host(s)".into())
        );
        assert_eq!(
            run_verdict(&[o("a", true), o("b", false)], 3),
            (false, "1 of 3 host(s); stopped at b: unreachable".into())
        );
    }
}
