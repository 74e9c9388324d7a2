use super::*;
use axum::http::HeaderValue;

#[test]
fn tokens_come_from_all_three_headers() {
    let mut h = HeaderMap::new();
    h.insert("api_key", HeaderValue::from_static("AAAAAAAAAAAAAAAA"));
    h.insert("cli_key", HeaderValue::from_static("BBBBBBBBBBBBBBBB"));
    h.append(
        axum::http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer CCCCCCCCCCCCCCCC "),
    );
    h.append(
        axum::http::header::AUTHORIZATION,
        HeaderValue::from_static("Basic DDDD"),
    );
    let tokens: Vec<&[u8]> = presented_tokens(&h);
    assert_eq!(
        tokens,
        [
            b"AAAAAAAAAAAAAAAA".as_slice(),
            b"BBBBBBBBBBBBBBBB",
            b"CCCCCCCCCCCCCCCC"
        ]
    );
    assert!(presented_tokens(&HeaderMap::new()).is_empty());
}

#[test]
fn every_error_has_the_one_shape() {
    let errors = [
        ApiError::Unauthorized("u".into()),
        ApiError::Forbidden("f".into()),
        ApiError::TargetNotAllowed("t".into()),
        ApiError::NotFound("n".into()),
        ApiError::BadRequest("b".into()),
        ApiError::InvalidSettings(vec![FieldError::new(
            "api_port",
            "0 is out of range 1..=65535",
        )]),
        ApiError::Unresolvable("r".into()),
        ApiError::Conflict("c".into()),
        ApiError::Disabled("d".into()),
        ApiError::Draining("d".into()),
        ApiError::NoFreePort("p".into()),
        ApiError::StreamLimit("s".into()),
        ApiError::MethodNotAllowed("m".into()),
        ApiError::StorageFull("f".into()),
        ApiError::StorageUnavailable("u".into()),
        ApiError::Internal("i".into()),
    ];
    let shapes: Vec<(u16, Value)> = errors
        .into_iter()
        .map(|e| {
            let body = serde_json::to_value(e.body()).unwrap();
            (e.into_response().status().as_u16(), body)
        })
        .collect();
    insta::assert_json_snapshot!(shapes);
}

#[test]
fn openapi_document_is_stable() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let mut paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    paths.sort();
    insta::assert_json_snapshot!(paths);
}

/// The router in-process, over a gateway that binds nothing (the domain
/// below it is real: a SQLite store, the registry): `oneshot` per request.
mod in_process {
    use super::*;
    use crate::gateway::{Gateway, Options};
    use crate::store::Store;
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    struct Fixture {
        router: Router,
        api_key: String,
        cli_key: String,
        _dir: crate::testing::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = crate::testing::TempDir::new();
        let (store, _) =
            Store::open_or_create(dir.0.join("settings.db"), crate::first_start_settings).unwrap();
        // A change binds the listeners it needs: on an address of its own.
        let ip = crate::testing::unique_loopback();
        store.update(&crate::testing::base_patch(ip)).unwrap();
        let settings = store.load().unwrap();
        let (api_key, cli_key) = (
            settings.api_key.expose().to_string(),
            settings.cli_key.expose().to_string(),
        );
        let (gw, _bound) = Gateway::new(
            store,
            settings,
            Options::embedded(),
            CancellationToken::new(),
        );
        Fixture {
            router: router(gw),
            api_key,
            cli_key,
            _dir: dir,
        }
    }

    async fn call(
        f: &Fixture,
        method: Method,
        path: &str,
        key: Option<(&str, &str)>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some((header, key)) = key {
            req = req.header(header, key);
        }
        let mut req = req.body(Body::from(body.to_string())).unwrap();
        req.extensions_mut()
            .insert(ClientAddr("127.0.0.1:40000".parse().unwrap()));
        let resp = f.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The one error shape: a stable code and a sentence.
    fn assert_error(body: &Value, code: &str) {
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_drained_node_refuses_tunnels_and_its_check_says_so() {
        let f = fixture();
        let api = Some(("api_key", f.api_key.as_str()));
        let cli = Some(("cli_key", f.cli_key.as_str()));
        let open = r#"{"target_host": "127.0.0.1", "target_port": 5900}"#;
        let (s, b) = call(&f, Method::GET, "/v3/ready/", None, "").await;
        assert_eq!(
            (s, b["ready"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{b}"
        );
        let (s, b) = call(&f, Method::POST, "/v3/drain/", api, "").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            (b["draining"].as_bool(), b["streams"].as_u64()),
            (Some(true), Some(0)),
            "{b}"
        );
        assert!(b["since"].is_string(), "{b}");
        let (s, b) = call(&f, Method::POST, "/v3/open_connection/", cli, open).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_error(&b, "draining");
        let (s, b) = call(&f, Method::GET, "/v3/ready/", None, "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_error(&b, "draining");
        let (_, h) = call(&f, Method::GET, "/v3/health/", api, "").await;
        assert_eq!(
            (h["status"].as_str(), h["draining"].as_bool()),
            (Some("draining"), Some(true)),
            "{h}"
        );
        let (s, b) = call(&f, Method::POST, "/v3/undrain/", api, "").await;
        assert_eq!(
            (s, b["draining"].as_bool()),
            (StatusCode::OK, Some(false)),
            "{b}"
        );
        assert!(b.get("since").is_none(), "{b}");
        let (s, b) = call(&f, Method::POST, "/v3/open_connection/", cli, open).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        // Disabled: the check fails too, with its own code.
        let (s, b) = call(
            &f,
            Method::POST,
            "/v3/change_settings/",
            api,
            r#"{"is_enabled": false}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = call(&f, Method::GET, "/v3/ready/", None, "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_error(&b, "gateway_disabled");
    }

    #[tokio::test]
    async fn every_endpoint_takes_only_its_own_key() {
        let f = fixture();
        let dispatcher = [
            (Method::GET, "/v3/health/"),
            (Method::GET, "/v3/get_settings/"),
            (Method::POST, "/v3/change_settings/"),
            (Method::GET, "/v3/get_connections/"),
            (Method::POST, "/v3/disconnect/"),
            (Method::GET, "/metrics"),
            (Method::POST, "/v3/drain/"),
            (Method::POST, "/v3/undrain/"),
        ];
        let client = [
            (Method::POST, "/v3/open_connection/"),
            (Method::GET, "/v3/connect/?id=x"),
        ];
        let routes = dispatcher
            .iter()
            .map(|r| (r, "api_key", &f.api_key, "cli_key", &f.cli_key))
            .chain(
                client
                    .iter()
                    .map(|r| (r, "cli_key", &f.cli_key, "api_key", &f.api_key)),
            );
        for ((method, path), own, own_key, other, other_key) in routes {
            let (s, b) = call(&f, method.clone(), path, None, "{}").await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {path} without a key: {b}"
            );
            assert_error(&b, "unauthorized");
            let (s, b) = call(
                &f,
                method.clone(),
                path,
                Some((own, "AAAAAAAAAAAAAAAAAAAAAAAA")),
                "{}",
            )
            .await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {path} wrong key: {b}"
            );
            assert_error(&b, "unauthorized");
            let (s, b) = call(&f, method.clone(), path, Some((other, other_key)), "{}").await;
            assert_eq!(
                s,
                StatusCode::FORBIDDEN,
                "{method} {path} other role's key: {b}"
            );
            assert_error(&b, "forbidden");
            let bearer = format!("Bearer {own_key}");
            let (s, b) = call(
                &f,
                method.clone(),
                path,
                Some(("authorization", &bearer)),
                "{}",
            )
            .await;
            assert!(
                s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                "{method} {path} with its own key: {s} {b}"
            );
        }
    }

    #[tokio::test]
    async fn errors_answer_the_one_json_shape() {
        let f = fixture();
        let api = Some(("api_key", f.api_key.as_str()));
        let cli = Some(("cli_key", f.cli_key.as_str()));
        let cases = [
            (
                Method::GET,
                "/v3/nothing-here/",
                None,
                "",
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                Method::DELETE,
                "/v3/health/",
                api,
                "",
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                Method::POST,
                "/v3/change_settings/",
                api,
                "{not json",
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                Method::POST,
                "/v3/change_settings/",
                api,
                "[1]",
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                Method::POST,
                "/v3/change_settings/",
                api,
                r#"{"api_port": 0}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_settings",
            ),
            (
                Method::POST,
                "/v3/disconnect/",
                api,
                "{}",
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                Method::POST,
                "/v3/disconnect/",
                api,
                r#"{"tunnel_id": "nope"}"#,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                Method::POST,
                "/v3/disconnect/",
                api,
                r#"{"stream_id": "s999"}"#,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                Method::POST,
                "/v3/open_connection/",
                cli,
                r#"{"target_host": "", "target_port": 5900}"#,
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                Method::POST,
                "/v3/open_connection/",
                cli,
                r#"{"target_host": "8.8.8.8", "target_port": 5900}"#,
                StatusCode::FORBIDDEN,
                "target_not_allowed",
            ),
            (
                Method::POST,
                "/v3/change_settings/",
                api,
                r#"{"ha_managed": true}"#,
                StatusCode::CONFLICT,
                "cannot_apply",
            ),
        ];
        for (method, path, key, body, status, code) in cases {
            let (s, b) = call(&f, method.clone(), path, key, body).await;
            assert_eq!(s, status, "{method} {path} {body}: {b}");
            assert_error(&b, code);
        }
        // A disabled gateway opens nothing and says so.
        let (s, _) = call(
            &f,
            Method::POST,
            "/v3/change_settings/",
            api,
            r#"{"is_enabled": false}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, b) = call(
            &f,
            Method::POST,
            "/v3/open_connection/",
            cli,
            r#"{"target_host": "127.0.0.1", "target_port": 5900}"#,
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_error(&b, "gateway_disabled");
    }
}

/// The document says what the API does: typed settings patch (host-local
/// fields read-only), ports 1-65535, `disconnect` as exactly one of three,
/// `id` a required query parameter of `/v3/connect/`.
#[test]
fn the_openapi_document_describes_the_api() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let patch = &schemas["SettingsPatch"];
    assert_eq!(patch["additionalProperties"], false);
    assert!(patch.get("required").is_none());
    for f in vdi_wire::SETTINGS_FIELDS {
        assert!(patch["properties"].get(*f).is_some(), "{f} missing");
    }
    for f in vdi_wire::HOST_LOCAL_FIELDS {
        assert_eq!(patch["properties"][*f]["readOnly"], true, "{f}");
    }
    assert_eq!(patch["properties"]["api_port"]["minimum"], 1.0);
    assert_eq!(patch["properties"]["api_port"]["maximum"], 65535.0);
    assert_eq!(patch["properties"]["tunnel_ttl_secs"]["maximum"], 604800.0);
    let body = &doc["paths"]["/v3/change_settings/"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(body["$ref"], "#/components/schemas/SettingsPatch");
    let host = &schemas["OpenConnection"]["properties"]["target_host"];
    assert_eq!(host["pattern"], vdi_wire::TARGET_HOST_PATTERN);
    assert_eq!(host["maxLength"], 253);
    let port = &schemas["OpenConnection"]["properties"]["target_port"];
    assert_eq!(
        (port["minimum"].as_f64(), port["maximum"].as_f64()),
        (Some(1.0), Some(65535.0))
    );
    assert_eq!(
        schemas["DisconnectRequest"]["oneOf"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    for s in ["TunnelSelector", "StreamSelector", "AllSelector"] {
        assert_eq!(schemas[s]["additionalProperties"], false, "{s}");
    }
    let params = doc["paths"]["/v3/connect/"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let id = params.iter().find(|p| p["name"] == "id").unwrap();
    assert_eq!(
        (id["in"].as_str(), id["required"].as_bool()),
        (Some("query"), Some(true))
    );
}

/// The handshake check is the document's header patterns: what they admit is
/// taken, the rest refused (RFC 6455 4.2.1).
#[test]
fn the_websocket_handshake_is_checked_as_documented() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let params = doc["paths"]["/v3/connect/"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .clone();
    let pattern = |name: &str| {
        let p = params.iter().find(|p| p["name"] == name).unwrap();
        regex::Regex::new(p["schema"]["pattern"].as_str().unwrap()).unwrap()
    };
    let good = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let headers = |over: &[(&str, &str)]| {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in good.iter().chain(over) {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    };
    assert_eq!(super::ws::handshake_check(&headers(&[])), Ok(()));
    for (name, value) in [
        ("Connection", "keep-alive, Upgrade"),
        ("Connection", " upgrade\t,x"),
        ("Connection", "xupgradex"),
        ("Connection", "keep-alive"),
        ("Upgrade", "WebSocket"),
        ("Upgrade", "websocket2"),
        ("Sec-WebSocket-Version", "8"),
        ("Sec-WebSocket-Key", "short=="),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=!"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ"),
    ] {
        let documented = pattern(name).is_match(value);
        let taken = super::ws::handshake_check(&headers(&[(name, value)])).is_ok();
        assert_eq!(documented, taken, "{name}: {value:?}");
    }
}
