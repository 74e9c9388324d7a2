//! A typed client of one gateway's API v3 (reqwest). Errors keep the gateway's
//! own `{code, message}` so the UI can show them in words. Clients share one
//! `reqwest::Client` (its connection pool): a view polling every second
//! reuses its connection instead of opening one per call.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::time::Duration;
use vdi_wire::*;

/// The most bytes of one API answer the console reads. The largest real
/// answer is `get_connections` of a busy gateway: about 200 bytes a stream,
/// so 8 MiB hold some 40 000 streams (the default limits allow 6 400 per
/// 100 ports). A gateway sending more is refused ([`Error::TooLarge`]),
/// read no further.
pub const MAX_ANSWER: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct GatewayClient {
    base: String,
    api_key: Option<Secret>,
    cli_key: Option<Secret>,
    http: reqwest::Client,
    timeout: Duration,
}

impl GatewayClient {
    /// A client of the gateway at `base` over `http` (shared: clone it).
    pub fn new(
        http: reqwest::Client,
        base: &str,
        api_key: Option<Secret>,
        cli_key: Option<Secret>,
        timeout: Duration,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            api_key,
            cli_key,
            http,
            timeout,
        }
    }

    fn key(&self, role: &'static str) -> Result<&str> {
        let key = if role == "api_key" {
            &self.api_key
        } else {
            &self.cli_key
        };
        key.as_ref()
            .map(Secret::expose)
            .ok_or(Error::MissingKey(role))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        role: &'static str,
        body: Option<Value>,
    ) -> Result<T> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(role, self.key(role)?)
            .timeout(self.timeout);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let mut resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let too_large = || Error::TooLarge {
            what: format!("the answer of {}{path}", self.base),
            limit: MAX_ANSWER,
        };
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(too_large());
        }
        // Chunk by chunk: a body without a length (chunked) is bounded too.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(e))? {
            if bytes.len() + chunk.len() > MAX_ANSWER {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(Error::Api(status, body)),
            Err(_) => Err(Error::Decode(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))),
        }
    }

    fn transport(&self, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::Timeout(self.timeout.as_secs().max(1))
        } else if e.is_connect() {
            let cause = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            Error::Unreachable(format!("cannot connect to {}: {cause}", self.base))
        } else {
            Error::Unreachable(format!("{}: {e}", self.base))
        }
    }

    pub async fn health(&self) -> Result<Health> {
        self.call(reqwest::Method::GET, "/v3/health/", "api_key", None)
            .await
    }

    pub async fn get_settings(&self) -> Result<Settings> {
        self.call(reqwest::Method::GET, "/v3/get_settings/", "api_key", None)
            .await
    }

    pub async fn change_settings(&self, patch: Map<String, Value>) -> Result<SettingsChanged> {
        self.call(
            reqwest::Method::POST,
            "/v3/change_settings/",
            "api_key",
            Some(Value::Object(patch)),
        )
        .await
    }

    pub async fn get_connections(&self) -> Result<Connections> {
        self.call(
            reqwest::Method::GET,
            "/v3/get_connections/",
            "api_key",
            None,
        )
        .await
    }

    pub async fn disconnect(&self, d: &Disconnect) -> Result<Disconnected> {
        let body = serde_json::to_value(d).expect("serializes");
        self.call(
            reqwest::Method::POST,
            "/v3/disconnect/",
            "api_key",
            Some(body),
        )
        .await
    }

    /// Drains the node (`true`) or ends the drain.
    pub async fn set_draining(&self, on: bool) -> Result<DrainState> {
        let path = if on { "/v3/drain/" } else { "/v3/undrain/" };
        self.call(reqwest::Method::POST, path, "api_key", None)
            .await
    }

    pub async fn open_connection(&self, o: &OpenConnection) -> Result<ConnectionOpened> {
        let body = serde_json::to_value(o).expect("serializes");
        self.call(
            reqwest::Method::POST,
            "/v3/open_connection/",
            "cli_key",
            Some(body),
        )
        .await
    }
}
