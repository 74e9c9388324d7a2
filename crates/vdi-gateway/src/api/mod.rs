//! HTTP API v3: `fn router(gateway) -> Router`, its OpenAPI document and docs page.
//! Only this module (with `vdi-wire`'s types) knows the JSON shapes. Handlers
//! translate between HTTP and the gateway's domain calls; they decide nothing.

mod error;
mod ws;

pub use error::ApiError;

use crate::gateway::{Caller, Closing, Shared};
use crate::metrics::{ReasonLabel, RequestLabels};
use crate::tunnel::{Tunnel, TunnelView};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};
#[cfg(feature = "daemon")]
use utoipa_swagger_ui::SwaggerUi;
use vdi_core::auth::{self, Decision, Role};
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
        (name = "monitoring", description = "Prometheus metrics (api_key)"),
        (name = "balancer", description = "For HAProxy's health check (no key)")
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

/// `disconnect`'s body: exactly one of the three (the handler parses
/// `vdi_wire::Disconnect` and says which rule a body breaks).
#[derive(utoipa::ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(as = DisconnectRequest)]
enum DisconnectDoc {
    #[schema(title = "Close one tunnel and its streams")]
    Tunnel(TunnelSelector),
    #[schema(title = "Close one stream")]
    Stream(StreamSelector),
    #[schema(title = "Close everything")]
    All(AllSelector),
}

#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
struct TunnelSelector {
    tunnel_id: String,
}

#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
struct StreamSelector {
    /// `s42`
    #[schema(pattern = "^s[0-9]+$")]
    stream_id: String,
}

#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
struct AllSelector {
    /// Must be `true`.
    all: bool,
}

/// Placeholder for the generated `SettingsPatch` schema (see [`SettingsPatch`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(as = SettingsPatch)]
struct SettingsPatchDoc {}

/// Builds the `SettingsPatch` schema from `Settings`: every field optional,
/// `null` resets an optional one, nothing else allowed, the rules' bounds,
/// host-local fields read-only (`x-host-local`: refused through the API).
struct SettingsPatch;

impl Modify for SettingsPatch {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(c) = openapi.components.as_mut() else {
            return;
        };
        let Some(settings) = c.schemas.get("Settings") else {
            return;
        };
        let mut doc = serde_json::to_value(settings).unwrap_or(Value::Null);
        let Some(obj) = doc.as_object_mut() else {
            return;
        };
        obj.remove("required");
        obj.insert("additionalProperties".into(), Value::Bool(false));
        obj.insert("description".into(), Value::String(
            "Any subset of the settings fields; `null` resets an optional field to its default.".into(),
        ));
        if let Some(Value::Object(props)) = obj.get_mut("properties") {
            for (name, prop) in props.iter_mut() {
                hint(name, prop);
            }
        }
        if let Ok(schema) = serde_json::from_value(doc) {
            c.schemas.insert("SettingsPatch".into(), schema);
        }
        // Each disconnect selector is exact: its one field, nothing else.
        for (name, field, value) in [
            ("TunnelSelector", "tunnel_id", None),
            ("StreamSelector", "stream_id", None),
            (
                "AllSelector",
                "all",
                Some(serde_json::json!({"type": "boolean", "enum": [true]})),
            ),
        ] {
            let Some(schema) = c.schemas.get(name) else {
                continue;
            };
            let mut doc = serde_json::to_value(schema).unwrap_or(Value::Null);
            if let Some(obj) = doc.as_object_mut() {
                obj.insert("additionalProperties".into(), Value::Bool(false));
                obj.insert("required".into(), serde_json::json!([field]));
                if let Some(v) = value {
                    obj["properties"][field] = v;
                }
            }
            if let Ok(schema) = serde_json::from_value(doc) {
                c.schemas.insert(name.into(), schema);
            }
        }
    }
}

/// Adds a field's rule (vdi-core's hints) to its property schema.
fn hint(name: &str, prop: &mut Value) {
    let Some(p) = prop.as_object_mut() else {
        return;
    };
    if vdi_wire::HOST_LOCAL_FIELDS.contains(&name) {
        p.insert("readOnly".into(), Value::Bool(true));
        p.insert("x-host-local".into(), Value::Bool(true));
        return;
    }
    let h = vdi_core::settings::hints(name);
    let mut put = |k: &str, v: Value| {
        p.insert(k.into(), v);
    };
    if let Some(v) = h.minimum {
        put("minimum", serde_json::json!(v));
    }
    if let Some(v) = h.maximum {
        put("maximum", serde_json::json!(v));
    }
    if let Some(v) = h.min_length {
        put("minLength", serde_json::json!(v));
    }
    if let Some(v) = h.max_length {
        put("maxLength", serde_json::json!(v));
    }
    if let Some(v) = h.pattern {
        put("pattern", serde_json::json!(v));
    }
    let ip = serde_json::json!({"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]});
    if h.non_empty_unique {
        put("minItems", serde_json::json!(1));
        put("uniqueItems", Value::Bool(true));
        if h.ip {
            put("items", ip);
        }
    } else if h.ip {
        p.remove("type");
        p.extend(ip.as_object().cloned().unwrap_or_default());
    }
    if h.cidr_list {
        p.insert(
            "items".into(),
            serde_json::json!({"anyOf": [
                {"type": "string", "format": "ipv4"},
                {"type": "string", "format": "ipv6"},
                {"type": "string", "pattern": vdi_core::settings::CIDR_V4_PATTERN},
                {"type": "string", "pattern": vdi_core::settings::cidr_v6_pattern()},
            ]}),
        );
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
        .routes(routes!(drain))
        .routes(routes!(undrain))
        .route_layer(middleware::from_fn(require_dispatcher));
    // No key: HAProxy's check sends none, and it tells one bit.
    let balancer = OpenApiRouter::new().routes(routes!(ready));
    let client = OpenApiRouter::new()
        .routes(routes!(open_connection))
        .routes(routes!(ws::connect))
        .route_layer(middleware::from_fn(require_client));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(dispatcher)
        .merge(client)
        .merge(balancer)
        .split_for_parts();
    // After the routes brought their schemas in.
    SettingsPatch.modify(&mut doc);
    (router, doc)
}

pub fn router(gw: Shared) -> Router {
    let (api, doc) = routes_and_doc();
    #[cfg(feature = "daemon")]
    let api = api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc));
    // The embedded gateway serves the document without the docs page.
    #[cfg(not(feature = "daemon"))]
    let api = api.route(
        "/openapi.json",
        axum::routing::get(move || std::future::ready(Json(doc.clone()))),
    );
    api.route_layer(middleware::from_fn_with_state(gw.clone(), count_request))
        .fallback(|| async { ApiError::NotFound("no such endpoint; see /docs".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed for this endpoint; see /docs".into())
        })
        .layer(Extension(gw.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gw)
}

async fn count_request(State(gw): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let labels = RequestLabels {
        route,
        method,
        status: resp.status().as_u16(),
    };
    gw.metrics.request(labels, started.elapsed());
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

/// A request body as the handlers take it: the extractor's refusal (too
/// large, unreadable) becomes the one error shape too.
type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

/// Most bytes of a request body: the largest real one (a settings change) is
/// a few KiB; nothing makes the gateway buffer more.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn parse_body<T: serde::de::DeserializeOwned>(body: &Body) -> Result<T, ApiError> {
    let bytes = body.as_ref().map_err(|e| match e {
        axum::extract::rejection::BytesRejection::FailedToBufferBody(_) => ApiError::TooLarge(
            format!("the body is larger than {MAX_BODY_BYTES} bytes or could not be read"),
        ),
        other => ApiError::BadRequest(other.body_text()),
    })?;
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    whole_numbers(&mut value);
    serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// JSON Schema counts `300.0` as an integer; serde does not. Integral floats
/// become integers, so what the OpenAPI document allows is what is read.
fn whole_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15)
            {
                *v = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// Health of this node.
#[utoipa::path(get, path = "/v3/health/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Health), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn health(State(gw): State<Shared>) -> Json<Health> {
    Json(gw.health().await)
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
    request_body(content = SettingsPatchDoc, description = "Any subset of the settings fields (schema `SettingsPatch`); host-local fields are read-only here", example = json!({"port_range_stop": 5949})),
    responses((status = 200, body = SettingsChanged), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Wrong key role, or a host-local field (`host_local_field`)"),
        (status = 413, body = ErrorBody, description = "Body over 64 KiB"),
        (status = 409, body = ErrorBody, description = "Valid, but cannot be applied (e.g. the new API port is taken)"),
        (status = 422, body = ErrorBody, description = "Invalid; `fields` names each problem"),
        (status = 503, body = ErrorBody, description = "The database's file system is read-only (`storage_unavailable`); nothing changed"),
        (status = 507, body = ErrorBody, description = "The database's disk is full (`storage_full`); nothing changed")))]
async fn change_settings(
    State(gw): State<Shared>,
    body: Body,
) -> Result<Json<SettingsChanged>, ApiError> {
    let patch = match parse_body::<Value>(&body)? {
        Value::Object(map) => map,
        _ => {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object of settings fields".into(),
            ));
        }
    };
    let change = gw.change(&patch, Caller::Broker).await?;
    tracing::info!(changed = ?change.changed, "settings changed through the API");
    Ok(Json(SettingsChanged {
        changed: change.changed,
        settings: change.settings,
    }))
}

/// Every tunnel of this node with its streams; with `since` (the `cursor` of
/// the previous answer), only what changed after it: tunnels opened, closed
/// (`removed`), or with a stream started or ended or a new reservation,
/// each reported whole. Byte counters and `last_activity` are not changes.
/// A cursor this process cannot answer from (it restarted, a setting
/// changed, it is too old) gets everything with `full: true`.
#[utoipa::path(get, path = "/v3/get_connections/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    params(ConnectionsQuery),
    responses((status = 200, body = Connections), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_connections(
    State(gw): State<Shared>,
    query: Result<Query<ConnectionsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let since = match query {
        Ok(Query(ConnectionsQuery { since: None })) => None,
        Ok(Query(ConnectionsQuery { since: Some(c) })) => Some(c.parse().map_err(|()| {
            ApiError::BadRequest(format!(
                "since: {c:?} is not a cursor; pass the `cursor` of a previous answer"
            ))
        })?),
        Err(e) => return Err(ApiError::BadRequest(e.body_text())),
    };
    // The cursor first, then the tunnels (see `tunnel::Changes`).
    let delta = gw.tunnels.changes().read(since);
    let mut tunnels = gw.tunnels.all();
    if let Some(g) = delta.after {
        tunnels.retain(|t| t.changed_after(g));
    }
    let idle = gw.idle();
    let streams: usize = tunnels.iter().map(|t| t.stream_count()).sum();
    let write = move || {
        // Sized up front: a stream takes ~190 bytes, and growing a megabyte
        // buffer by doubling copies it over and over.
        let mut json = Vec::with_capacity(512 + tunnels.len() * 400 + streams * 224);
        serde_json::to_writer(
            &mut json,
            &ConnectionsView {
                tunnels: &tunnels,
                idle,
                delta: &delta,
            },
        )
        .map(|()| json)
    };
    // Milliseconds of CPU with 10 000 streams: off the runtime's workers, so
    // the relays they drive are not held up while the broker polls. A small
    // answer (a quiet delta) is written here: a thread hop would cost more.
    let json = if streams <= INLINE_STREAMS {
        write()
    } else {
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    // The server's own share of the exchange, for the broker and benchmarks.
    let timing = format!("app;dur={:.3}", started.elapsed().as_secs_f64() * 1000.0);
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

/// Up to this many streams, `get_connections` writes its answer on the
/// runtime's thread (some tens of microseconds).
const INLINE_STREAMS: usize = 64;

/// `Connections`, written straight from the registry (see `TunnelView`).
struct ConnectionsView<'a> {
    tunnels: &'a [Arc<Tunnel>],
    idle: Duration,
    delta: &'a crate::tunnel::Delta,
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
        let mut m = s.serialize_struct("Connections", 4)?;
        m.serialize_field("tunnels", &Tunnels(self))?;
        m.serialize_field("cursor", &self.delta.cursor.to_string())?;
        m.serialize_field("full", &self.delta.after.is_none())?;
        m.serialize_field("removed", &self.delta.removed)?;
        m.end()
    }
}

/// Closes a tunnel (with its streams), one stream, or everything; answers with what it closed.
#[utoipa::path(post, path = "/v3/disconnect/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    request_body(content = DisconnectDoc, example = json!({"tunnel_id": "3f2c..."})),
    responses((status = 200, body = Disconnected), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn disconnect(State(gw): State<Shared>, body: Body) -> Result<Json<Disconnected>, ApiError> {
    let what = match parse_body(&body)? {
        Disconnect {
            tunnel_id: Some(id),
            stream_id: None,
            all: None,
        } => Closing::Tunnel(id),
        Disconnect {
            tunnel_id: None,
            stream_id: Some(id),
            all: None,
        } => Closing::Stream(id),
        Disconnect {
            tunnel_id: None,
            stream_id: None,
            all: Some(true),
        } => Closing::All,
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of tunnel_id, stream_id or \"all\": true".into(),
            ));
        }
    };
    Ok(Json(gw.disconnect(what).await?))
}

/// Opens (or reuses) a tunnel to a desktop and answers where to connect.
#[utoipa::path(post, path = "/v3/open_connection/", tag = "client",
    security(("cli_key" = []), ("bearer" = [])),
    request_body(content = OpenConnection, example = json!({"target_host": "10.1.2.3", "target_port": 5900, "protocol": "spice", "vm_id": "vm-42"})),
    responses((status = 200, body = ConnectionOpened), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Wrong key role, or target outside allowed_targets"),
        (status = 413, body = ErrorBody, description = "Body over 64 KiB"),
        (status = 404, body = ErrorBody, description = "`target_host` does not resolve (`unresolvable_target`)"),
        (status = 429, body = ErrorBody, description = "The client holds max_tunnels_per_client tunnels (`too_many_tunnels`)"),
        (status = 503, body = ErrorBody, description = "Gateway disabled, or no free port")))]
async fn open_connection(
    State(gw): State<Shared>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    body: Body,
) -> Result<Json<ConnectionOpened>, ApiError> {
    let tunnel = gw.open_tunnel(parse_body(&body)?, client).await?;
    Ok(Json(ConnectionOpened {
        id: tunnel.id.clone(),
        address: gw.current().public_addr.to_string(),
        port: tunnel.port,
        expires_at: tunnel.expires_at(gw.idle()),
    }))
}

/// Drains this node for maintenance: no new tunnels here (`open_connection`
/// answers 503 `draining`), running streams go on, Keepalived moves the VIP
/// away. Kept across restarts until undrained. Answers what still runs.
#[utoipa::path(post, path = "/v3/drain/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = DrainState), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "The drain state cannot be written (`storage_unavailable`); nothing changed"),
        (status = 507, body = ErrorBody, description = "The disk is full (`storage_full`); nothing changed")))]
async fn drain(State(gw): State<Shared>) -> Result<Json<DrainState>, ApiError> {
    Ok(Json(gw.set_draining(true)?))
}

/// Ends a drain: this node takes new tunnels again.
#[utoipa::path(post, path = "/v3/undrain/", tag = "dispatcher",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = DrainState), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "The drain state cannot be written (`storage_unavailable`); nothing changed"),
        (status = 507, body = ErrorBody, description = "The disk is full (`storage_full`); nothing changed")))]
async fn undrain(State(gw): State<Shared>) -> Result<Json<DrainState>, ApiError> {
    Ok(Json(gw.set_draining(false)?))
}

/// Whether this node takes new tunnels: 200 when enabled and not drained,
/// else 503 (`draining` or `gateway_disabled`). HAProxy's check of the API
/// backend, so new `open_connection` calls go to nodes that take them.
#[utoipa::path(get, path = "/v3/ready/", tag = "balancer",
    responses((status = 200, body = Ready), (status = 503, body = ErrorBody)))]
async fn ready(State(gw): State<Shared>) -> Result<Json<Ready>, ApiError> {
    if gw.ready() {
        return Ok(Json(Ready { ready: true }));
    }
    Err(if gw.current().is_enabled {
        ApiError::Draining("this node is drained for maintenance".into())
    } else {
        ApiError::Disabled("the gateway is disabled (is_enabled = false)".into())
    })
}

/// Prometheus metrics in text format.
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn metrics(State(gw): State<Shared>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        gw.metrics_text(),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectionsQuery {
    /// The `cursor` of a previous answer: answer only what changed since.
    #[param(pattern = "^[0-9a-f]{8}\\.[0-9]{1,20}$")]
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectQuery {
    /// Tunnel id from `open_connection`.
    pub id: String,
}

/// The headers of a WebSocket upgrade (RFC 6455), as the schema of
/// `/v3/connect/` (read by axum's `WebSocketUpgrade`, not from this struct).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct UpgradeHeaders {
    /// A token list with `upgrade` in it (any case).
    #[param(
        rename = "Connection",
        pattern = "^(?:[^,]*,)*[ \\t]*[Uu][Pp][Gg][Rr][Aa][Dd][Ee][ \\t]*(?:,[^,]*)*$"
    )]
    connection: String,
    #[param(rename = "Upgrade", pattern = "^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$")]
    upgrade: String,
    #[param(rename = "Sec-WebSocket-Version", pattern = "^13$")]
    sec_websocket_version: String,
    /// 16 random bytes, base64.
    #[param(rename = "Sec-WebSocket-Key", pattern = "^[A-Za-z0-9+/]{22}==$")]
    sec_websocket_key: String,
}

#[cfg(test)]
mod tests;
