//! HTTP API v3: `fn router(gateway) -> Router`, its OpenAPI document and docs page.
//! Only this module (with `vdi-wire`'s types) knows the JSON shapes.

mod error;
mod ws;

pub use error::ApiError;

use crate::metrics::{ReasonLabel, RequestLabels};
use crate::state::Shared;
use crate::tunnel::{OpenError, OpenRequest, Tunnel, TunnelView};
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::SwaggerUi;
use vdi_core::allow::AllowList;
use vdi_core::auth::{self, Decision, Role};
use vdi_core::settings as rules;
use vdi_wire::*;

/// The real client of a request (from a trusted PROXY header, else the peer).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Space Gateway API",
        description = "API v3 of the Space Gateway (`vdi-gateway`). Dispatcher endpoints take the `api_key`, \
            client endpoints the `cli_key`, in a header named after the key (`api_key: KEY`, `cli_key: KEY`) \
            or as `Authorization: Bearer KEY`. Every error answers with `ErrorBody`."
    ),
    modifiers(&Security),
    tags(
        (name = "dispatcher", description = "For the broker (api_key)"),
        (name = "client", description = "For desktop clients (cli_key)"),
        (name = "monitoring", description = "Prometheus metrics (api_key)")
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("api_key"))),
        );
        c.add_security_scheme(
            "cli_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("cli_key"))),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.info.version = PRODUCT_VERSION.to_string();
    }
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_doc().1
}

fn routes_and_doc() -> (Router<Shared>, utoipa::openapi::OpenApi) {
    let dispatcher = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(get_settings))
        .routes(routes!(change_settings))
        .routes(routes!(get_connections))
        .routes(routes!(disconnect))
        .routes(routes!(metrics))
        .route_layer(middleware::from_fn(require_dispatcher));
    let client = OpenApiRouter::new()
        .routes(routes!(open_connection))
        .routes(routes!(ws::connect))
        .route_layer(middleware::from_fn(require_client));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(dispatcher)
        .merge(client)
        .split_for_parts()
}

pub fn router(gw: Shared) -> Router {
    let (api, doc) = routes_and_doc();
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .route_layer(middleware::from_fn_with_state(gw.clone(), count_request))
        .fallback(|| async { ApiError::NotFound("no such endpoint; see /docs".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed for this endpoint; see /docs".into())
        })
        .layer(Extension(gw.clone()))
        .with_state(gw)
}

async fn count_request(State(gw): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let labels = RequestLabels {
        route,
        method,
        status: resp.status().as_u16(),
    };
    gw.metrics.requests.get_or_create(&labels).inc();
    resp
}

async fn require_dispatcher(req: Request, next: Next) -> Result<Response, ApiError> {
    require(Role::Dispatcher, req, next).await
}

async fn require_client(req: Request, next: Next) -> Result<Response, ApiError> {
    require(Role::Client, req, next).await
}

async fn require(role: Role, req: Request, next: Next) -> Result<Response, ApiError> {
    let gw = req
        .extensions()
        .get::<Shared>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("gateway state missing".into()))?;
    let s = gw.current();
    let tokens = presented_tokens(req.headers());
    let decision = auth::authorize(
        role,
        &tokens,
        s.api_key.expose().as_bytes(),
        s.cli_key.expose().as_bytes(),
    );
    if decision == Decision::Allow {
        return Ok(next.run(req).await);
    }
    let client = req
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let path = req.uri().path().to_string();
    let (reason, err) = match (decision, role) {
        (Decision::Missing, Role::Dispatcher) => (
            "missing",
            ApiError::Unauthorized(
                "this endpoint needs the api_key (header `api_key` or `Authorization: Bearer`)"
                    .into(),
            ),
        ),
        (Decision::Missing, Role::Client) => (
            "missing",
            ApiError::Unauthorized(
                "this endpoint needs the cli_key (header `cli_key` or `Authorization: Bearer`)"
                    .into(),
            ),
        ),
        (Decision::WrongRole, Role::Dispatcher) => (
            "wrong_role",
            ApiError::Forbidden("the cli_key does not grant dispatcher endpoints".into()),
        ),
        (Decision::WrongRole, Role::Client) => (
            "wrong_role",
            ApiError::Forbidden("the api_key does not grant client endpoints".into()),
        ),
        _ => (
            "wrong_key",
            ApiError::Unauthorized("the key is not valid".into()),
        ),
    };
    gw.metrics
        .auth_failures
        .get_or_create(&ReasonLabel { reason })
        .inc();
    tracing::warn!(%client, %path, reason, "authentication failed");
    Err(err)
}

/// Tokens from `api_key`, `cli_key` and `Authorization: Bearer` headers.
fn presented_tokens(h: &HeaderMap) -> Vec<&[u8]> {
    let mut tokens: Vec<&[u8]> = Vec::new();
    for name in ["api_key", "cli_key"] {
        tokens.extend(h.get_all(name).iter().map(|v| v.as_bytes()));
    }
    for v in h.get_all(axum::http::header::AUTHORIZATION) {
        let b = v.as_bytes();
        if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
            tokens.push(b[7..].trim_ascii());
        }
    }
    tokens
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn idle(gw: &Shared) -> Duration {
    Duration::from_secs(rules::tunnel_idle_secs(&gw.current()))
}

/// Health of this node.
#[utoipa::path(get, path = "/v3/health/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Health), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn health(State(gw): State<Shared>) -> Json<Health> {
    let s = gw.current();
    let (tunnels, streams, ports_in_use, ports_free) = gw.tunnels.counts();
    Json(Health {
        status: if s.is_enabled { "ok" } else { "disabled" }.into(),
        version: PRODUCT_VERSION.into(),
        uptime_secs: gw.started.elapsed().as_secs(),
        is_enabled: s.is_enabled,
        tunnels: tunnels as u64,
        streams: streams as u64,
        ports_in_use: ports_in_use as u64,
        ports_free: ports_free as u64,
        units: gw.units.get().await,
        ha: gw.ha_state(),
        holds_vip: vdi_core::settings::ha_managed(&s) && holds(s.virtual_addr),
    })
}

/// Whether `ip` is assigned to one of this host's interfaces.
fn holds(ip: IpAddr) -> bool {
    if_addrs::get_if_addrs().is_ok_and(|all| all.iter().any(|i| i.ip() == ip))
}

/// The settings document in force.
#[utoipa::path(get, path = "/v3/get_settings/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Settings), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_settings(State(gw): State<Shared>) -> Json<Settings> {
    Json((*gw.current()).clone())
}

/// Partial update: only the fields given; `null` resets an optional field.
/// Validated as a whole, persisted, applied at once. A rejected change changes nothing.
#[utoipa::path(post, path = "/v3/change_settings/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    request_body(content = Object, description = "Any subset of the settings fields", example = json!({"port_range_stop": 5949})),
    responses((status = 200, body = SettingsChanged), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Valid, but cannot be applied (e.g. the new API port is taken)"),
        (status = 422, body = ErrorBody, description = "Invalid; `fields` names each problem")))]
async fn change_settings(
    State(gw): State<Shared>,
    body: Bytes,
) -> Result<Json<SettingsChanged>, ApiError> {
    let patch = match parse_body::<Value>(&body)? {
        Value::Object(map) => map,
        _ => {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object of settings fields".into(),
            ));
        }
    };
    let change = gw.change(&patch).await?;
    tracing::info!(changed = ?change.changed, "settings changed through the API");
    Ok(Json(SettingsChanged {
        changed: change.changed,
        settings: change.settings,
    }))
}

/// Every tunnel of this node with its streams.
#[utoipa::path(get, path = "/v3/get_connections/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Connections), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_connections(State(gw): State<Shared>) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let tunnels = gw.tunnels.all();
    let idle = idle(&gw);
    // Milliseconds of CPU with 10 000 streams: off the runtime's workers, so
    // the relays they drive are not held up while the broker polls.
    let json = tokio::task::spawn_blocking(move || {
        // Sized up front: a stream takes ~190 bytes, and growing a megabyte
        // buffer by doubling copies it over and over.
        let streams: usize = tunnels.iter().map(|t| t.stream_count()).sum();
        let mut json = Vec::with_capacity(512 + tunnels.len() * 400 + streams * 224);
        serde_json::to_writer(
            &mut json,
            &ConnectionsView {
                tunnels: &tunnels,
                idle,
            },
        )
        .map(|()| json)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    // The server's own share of the exchange, for the broker and benchmarks.
    let timing = format!("app;dur={:.2}", started.elapsed().as_secs_f64() * 1000.0);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("server-timing"),
                HeaderValue::try_from(timing).map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
        ],
        json,
    )
        .into_response())
}

/// `Connections`, written straight from the registry (see `TunnelView`).
struct ConnectionsView<'a> {
    tunnels: &'a [Arc<Tunnel>],
    idle: Duration,
}

impl serde::Serialize for ConnectionsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Tunnels<'a>(&'a ConnectionsView<'a>);
        impl serde::Serialize for Tunnels<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let idle = self.0.idle;
                s.collect_seq(
                    self.0
                        .tunnels
                        .iter()
                        .map(|tunnel| TunnelView { tunnel, idle }),
                )
            }
        }
        let mut m = s.serialize_struct("Connections", 1)?;
        m.serialize_field("tunnels", &Tunnels(self))?;
        m.end()
    }
}

/// Closes a tunnel (with its streams), one stream, or everything; answers with what it closed.
#[utoipa::path(post, path = "/v3/disconnect/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    request_body(content = Disconnect, example = json!({"tunnel_id": "3f2c..."})),
    responses((status = 200, body = Disconnected), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn disconnect(State(gw): State<Shared>, body: Bytes) -> Result<Json<Disconnected>, ApiError> {
    let req: Disconnect = parse_body(&body)?;
    let mut done = Disconnected::default();
    match (req.tunnel_id, req.stream_id, req.all) {
        (Some(id), None, None) => {
            let t = gw
                .tunnels
                .get(&id)
                .ok_or_else(|| ApiError::NotFound(format!("no tunnel {id}")))?;
            done.streams = t.close().await;
            done.tunnels.push(id);
        }
        (None, Some(id), None) => {
            let (t, s) = gw
                .tunnels
                .find_stream(&id)
                .ok_or_else(|| ApiError::NotFound(format!("no stream {id}")))?;
            t.close_stream(&s).await;
            done.streams.push(id);
        }
        (None, None, Some(true)) => {
            let all = gw.tunnels.all();
            let closed = futures_util::future::join_all(all.iter().map(|t| t.close())).await;
            for (t, streams) in all.iter().zip(closed) {
                done.tunnels.push(t.id.clone());
                done.streams.extend(streams);
            }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of tunnel_id, stream_id or \"all\": true".into(),
            ));
        }
    }
    tracing::info!(tunnels = ?done.tunnels, streams = ?done.streams, "disconnected through the API");
    Ok(Json(done))
}

/// Opens (or reuses) a tunnel to a desktop and answers where to connect.
#[utoipa::path(post, path = "/v3/open_connection/", tag = "client",
    security(("cli_key" = []), ("bearer" = [])),
    request_body(content = OpenConnection, example = json!({"target_host": "10.1.2.3", "target_port": 5900, "protocol": "spice", "vm_id": "vm-42"})),
    responses((status = 200, body = ConnectionOpened), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Wrong key role, or target outside allowed_targets"),
        (status = 422, body = ErrorBody, description = "Target name does not resolve"),
        (status = 503, body = ErrorBody, description = "Gateway disabled, or no free port")))]
async fn open_connection(
    State(gw): State<Shared>,
    body: Bytes,
) -> Result<Json<ConnectionOpened>, ApiError> {
    let req: OpenConnection = parse_body(&body)?;
    let s = gw.current();
    if !s.is_enabled {
        return Err(ApiError::Disabled(
            "the gateway is disabled (is_enabled = false); running streams go on".into(),
        ));
    }
    check_open_request(&req)?;
    let target_addr = resolve_allowed(&gw, &req).await?;
    let open = OpenRequest {
        target_host: req.target_host,
        target_port: req.target_port,
        target_addr,
        protocol: req.protocol,
        vm_id: req.vm_id,
    };
    let ttl = Duration::from_secs(rules::tunnel_ttl_secs(&s));
    let tunnel = match gw.tunnels.reuse(&open, ttl) {
        Some(t) => t,
        None => gw
            .tunnels
            .open(
                open,
                &gw.local_addrs(),
                gw.settings.subscribe(),
                &gw.shutdown,
            )
            .map_err(|e| match e {
                OpenError::NoFreePort { .. } => ApiError::NoFreePort(e.to_string()),
            })?,
    };
    Ok(Json(ConnectionOpened {
        id: tunnel.id.clone(),
        address: s.public_addr.to_string(),
        port: tunnel.port,
        expires_at: tunnel.expires_at(idle(&gw)),
    }))
}

fn check_open_request(req: &OpenConnection) -> Result<(), ApiError> {
    let host = &req.target_host;
    if host.is_empty()
        || host.len() > 253
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::BadRequest(
            "target_host must be an IP address or a DNS name".into(),
        ));
    }
    if req.target_port == 0 {
        return Err(ApiError::BadRequest("target_port must be 1-65535".into()));
    }
    for (name, v) in [("protocol", &req.protocol), ("vm_id", &req.vm_id)] {
        if v.as_ref().is_some_and(|v| v.len() > 128) {
            return Err(ApiError::BadRequest(format!(
                "{name} is longer than 128 characters"
            )));
        }
    }
    Ok(())
}

/// Resolves the target once (the tunnel keeps this address: no DNS rebinding)
/// and checks every address it resolves to against the allow-list.
async fn resolve_allowed(gw: &Shared, req: &OpenConnection) -> Result<SocketAddr, ApiError> {
    let s = gw.current();
    let addrs: Vec<SocketAddr> = match req.target_host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, req.target_port)],
        Err(_) => {
            let timeout = Duration::from_secs(rules::connect_timeout_secs(&s));
            let lookup = tokio::net::lookup_host((req.target_host.as_str(), req.target_port));
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(it)) => it.collect(),
                _ => Vec::new(),
            }
        }
    };
    let Some(first) = addrs.first().copied() else {
        return Err(ApiError::Unresolvable(format!(
            "cannot resolve target_host {:?}",
            req.target_host
        )));
    };
    let mut own = s.internal_addrs.clone();
    own.extend([s.public_addr, s.virtual_addr]);
    let allow = AllowList::new(&rules::allowed_targets(&s), &own);
    for a in &addrs {
        if let Err(refusal) = allow.check(a.ip()) {
            gw.metrics.refused("allow_list");
            tracing::warn!(target_host = %req.target_host, error = %refusal, "tunnel refused");
            return Err(ApiError::TargetNotAllowed(format!(
                "target refused: {refusal}"
            )));
        }
    }
    Ok(first)
}

/// Prometheus metrics in text format.
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn metrics(State(gw): State<Shared>) -> impl IntoResponse {
    let (tunnels, streams, in_use, free) = gw.tunnels.counts();
    gw.metrics.tunnels.set(tunnels as i64);
    gw.metrics.streams.set(streams as i64);
    gw.metrics.ports_in_use.set(in_use as i64);
    gw.metrics.ports_free.set(free as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gw.metrics.encode(),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ConnectQuery {
    /// Tunnel id from `open_connection`.
    pub id: String,
}

#[cfg(test)]
mod tests;
