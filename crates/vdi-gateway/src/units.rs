//! State of the systemd units the gateway depends on, for `/v3/health/`.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use vdi_wire::UnitStates;

const TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct UnitCache {
    last: Mutex<Option<(Instant, UnitStates)>>,
}

impl UnitCache {
    /// `systemctl is-active` for each unit, cached for two seconds; `unknown`
    /// where the host has no systemd (or it does not answer in time).
    pub async fn get(&self) -> UnitStates {
        if let Some((at, states)) = self.last.lock().unwrap().as_ref()
            && at.elapsed() < TTL
        {
            return states.clone();
        }
        let (vdi_gateway, haproxy, keepalived) = tokio::join!(
            is_active("vdi-gateway"),
            is_active("haproxy"),
            is_active("keepalived")
        );
        let states = UnitStates {
            vdi_gateway,
            haproxy,
            keepalived,
        };
        *self.last.lock().unwrap() = Some((Instant::now(), states.clone()));
        states
    }
}

async fn is_active(unit: &str) -> String {
    if !std::path::Path::new("/run/systemd/system").exists() {
        return "unknown".into();
    }
    let out = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::process::Command::new("systemctl")
            .args(["is-active", unit])
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match out {
        Ok(Ok(o)) => {
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if state.is_empty() {
                "unknown".into()
            } else {
                state
            }
        }
        _ => "unknown".into(),
    }
}
