//! The API v3 against a real gateway on a loopback address.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const ENDPOINTS: &[(&str, &str, Role)] = &[
    ("GET", "/v3/health/", Role::Dispatcher),
    ("GET", "/v3/get_settings/", Role::Dispatcher),
    ("POST", "/v3/change_settings/", Role::Dispatcher),
    ("GET", "/v3/get_connections/", Role::Dispatcher),
    ("POST", "/v3/disconnect/", Role::Dispatcher),
    ("GET", "/metrics", Role::Dispatcher),
    ("POST", "/v3/drain/", Role::Dispatcher),
    ("POST", "/v3/undrain/", Role::Dispatcher),
    ("POST", "/v3/open_connection/", Role::Client),
    ("GET", "/v3/connect/", Role::Client),
    ("GET", "/v3/ready/", Role::Public),
];

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Dispatcher,
    Client,
    /// HAProxy's readiness check: no key, and any key is ignored.
    Public,
}

#[tokio::test]
async fn auth_matrix_for_every_endpoint() {
    let g = start(json!({})).await;
    for &(method, path, role) in ENDPOINTS {
        let (mine, other) = match role {
            Role::Dispatcher => (g.api_key.clone(), g.cli_key.clone()),
            Role::Client => (g.cli_key.clone(), g.api_key.clone()),
            Role::Public => {
                for key in [None, Some(&g.api_key), Some(&g.cli_key)] {
                    let mut rb = g.http.request(method.parse().unwrap(), g.url(path));
                    if let Some(k) = key {
                        rb = rb.header("api_key", k);
                    }
                    let r = rb.send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 200, "{method} {path}");
                }
                continue;
            }
        };
        let call = |headers: Vec<(&'static str, String)>| {
            let mut rb = g.http.request(method.parse().unwrap(), g.url(path));
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            async move {
                let r = rb.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let (s, body) = call(vec![]).await;
        assert_eq!(s, 401, "{method} {path} without key: {body}");
        assert_eq!(body["code"], "unauthorized");
        let (s, _) = call(vec![("api_key", "WRONGWRONGWRONGWRONG".into())]).await;
        assert_eq!(s, 401, "{method} {path} wrong key");
        let (s, _) = call(vec![(
            "authorization",
            "Bearer WRONGWRONGWRONGWRONG".into(),
        )])
        .await;
        assert_eq!(s, 401, "{method} {path} wrong bearer");
        for header in ["api_key", "cli_key"] {
            let (s, body) = call(vec![(header, other.clone())]).await;
            assert_eq!(
                s, 403,
                "{method} {path} other role's key in {header}: {body}"
            );
            assert_eq!(body["code"], "forbidden");
        }
        let (s, _) = call(vec![("authorization", format!("Bearer {other}"))]).await;
        assert_eq!(s, 403, "{method} {path} other role's key as bearer");
        for headers in [
            vec![("api_key", mine.clone())],
            vec![("cli_key", mine.clone())],
            vec![("authorization", format!("Bearer {mine}"))],
            vec![("authorization", format!("bearer {mine}"))],
        ] {
            let (s, body) = call(headers).await;
            assert!(
                s != 401 && s != 403,
                "{method} {path} with its key: {s} {body}"
            );
        }
    }
    let metrics = g.metrics().await;
    assert!(
        metrics.contains("vdi_gateway_auth_failures_total{reason=\"wrong_role\"}"),
        "{metrics}"
    );
    g.stop().await;
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes_that_exist() {
    let g = start(json!({})).await;
    let doc: Value = g
        .http
        .get(g.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, expected);
    // Every listed route answers (with its key) and an unlisted one is a 404 in the error shape.
    let (s, body) = g.get("/v3/no_such_endpoint/", &g.api_key).await;
    assert_eq!((s, body["code"].as_str()), (404, Some("not_found")));
    let r = g
        .http
        .delete(g.url("/v3/health/"))
        .header("api_key", &g.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "method_not_allowed"
    );
    assert_eq!(doc["info"]["version"], vdi_wire::PRODUCT_VERSION);
    assert_eq!(doc["info"]["title"], "Space Gateway API");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["api_key"]["name"], "api_key");
    assert_eq!(schemes["cli_key"]["name"], "cli_key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    g.stop().await;
}

#[tokio::test]
async fn docs_page_is_served_from_the_binary() {
    let g = start(json!({})).await;
    let r = g.http.get(g.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    for needle in ["http://", "https://"] {
        assert!(
            !html.contains(needle),
            "docs page references an external URL: {html}"
        );
    }
    let init = g
        .http
        .get(g.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    let bundle = g
        .http
        .get(g.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status().as_u16(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    g.stop().await;
}

#[tokio::test]
async fn health_reports_the_node() {
    let g = start(json!({})).await;
    let (s, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(s, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], vdi_wire::PRODUCT_VERSION);
    assert_eq!(h["is_enabled"], true);
    assert_eq!(h["holds_vip"], false, "an unmanaged gateway holds no VIP");
    assert_eq!(
        (h["tunnels"].as_u64(), h["streams"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (h["ports_in_use"].as_u64(), h["ports_free"].as_u64()),
        (Some(0), Some(10))
    );
    let systemd = std::path::Path::new("/run/systemd/system").exists();
    for unit in ["vdi_gateway", "haproxy", "keepalived"] {
        let state = h["units"][unit].as_str().unwrap();
        if !systemd {
            assert_eq!(state, "unknown", "{unit}");
        } else {
            assert!(!state.is_empty());
        }
    }
    g.stop().await;
}

#[tokio::test]
async fn get_settings_returns_the_document() {
    let g = start(json!({"disp_port": 4242})).await;
    let (s, doc) = g.get("/v3/get_settings/", &g.api_key).await;
    assert_eq!(s, 200);
    assert_eq!(doc["disp_port"], 4242);
    assert_eq!(doc["api_key"], g.api_key);
    let stored: Value = serde_json::from_str(&g.stored_text()).unwrap();
    assert_eq!(doc, stored);
    g.stop().await;
}

#[tokio::test]
async fn change_settings_persists_and_applies_live() {
    let g = start(json!({})).await;
    let (s, body) = g
        .change(json!({"port_range_stop": 21004, "tunnel_ttl_secs": 300}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["changed"],
        json!(["port_range_stop", "tunnel_ttl_secs"])
    );
    let stored = g.stored();
    assert_eq!(stored.port_range_stop, 21004);
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(h["ports_free"], 5);
    g.stop().await;
}

#[tokio::test]
async fn rejected_change_reports_each_field_and_changes_nothing() {
    let g = start(json!({})).await;
    let before = g.stored_text();
    let (s, body) = g
        .change(json!({"api_port": 0, "public_addr": "not-an-ip", "port_range_stop": 5}))
        .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["code"], "invalid_settings");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["public_addr", "api_port"]);
    let (s, body) = g
        .change(json!({"port_range_start": 21005, "port_range_stop": 21001}))
        .await;
    assert_eq!(
        (s, body["fields"][0]["field"].as_str()),
        (422, Some("port_range_start"))
    );
    let (s, body) = g.change(json!({"nope": 1})).await;
    assert_eq!(
        (s, body["fields"][0]["message"].as_str()),
        (422, Some("unknown field"))
    );
    let r = g
        .http
        .post(g.url("/v3/change_settings/"))
        .header("api_key", &g.api_key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "bad_request");
    let (s, _) = g.change(json!([1, 2])).await;
    assert_eq!(s, 400);
    assert_eq!(g.stored_text(), before);
    let (_, doc) = g.get("/v3/get_settings/", &g.api_key).await;
    assert_eq!(doc["api_port"], 8000);
    g.stop().await;
}

#[tokio::test]
async fn new_keys_take_effect_at_once() {
    let g = start(json!({})).await;
    let new_api = "TkVXYXBpS2V5MTIzNDU2Nzg=";
    let new_cli = "TkVXY2xpS2V5MTIzNDU2Nzg=";
    let (s, body) = g
        .change(json!({"api_key": new_api, "cli_key": new_cli}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(g.get("/v3/health/", &g.api_key).await.0, 401);
    assert_eq!(g.get("/v3/health/", new_api).await.0, 200);
    let (s, _) = g
        .post(
            "/v3/open_connection/",
            "cli_key",
            &g.cli_key,
            json!({"target_host": "127.0.0.1", "target_port": 9}),
        )
        .await;
    assert_eq!(s, 401);
    g.stop().await;
}

#[tokio::test]
async fn changing_the_api_port_moves_the_listener() {
    let g = start(json!({})).await;
    let (s, body) = g.change(json!({"api_port": 8100})).await;
    assert_eq!(s, 200, "{body}");
    let new = format!("http://{}:8100/v3/health/", g.ip);
    let r = g
        .http
        .get(&new)
        .header("api_key", &g.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        port_is_free(std::net::SocketAddr::new(g.ip, 8000)),
        "the old API port was released"
    );
    g.stop().await;
}

#[tokio::test]
async fn a_change_that_cannot_be_applied_is_not_persisted() {
    let g = start(json!({})).await;
    let taken = std::net::TcpListener::bind((g.ip, 8200)).unwrap();
    let before = g.stored_text();
    let (s, body) = g.change(json!({"api_port": 8200})).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["code"], "cannot_apply");
    assert!(body["message"].as_str().unwrap().contains("8200"), "{body}");
    assert_eq!(g.stored_text(), before);
    assert_eq!(g.get("/v3/health/", &g.api_key).await.0, 200);
    drop(taken);
    g.stop().await;
}

#[tokio::test]
async fn disconnect_needs_exactly_one_selector() {
    let g = start(json!({})).await;
    for body in [
        json!({}),
        json!({"tunnel_id": "a", "all": true}),
        json!({"all": false}),
        json!({"bogus": 1}),
    ] {
        let (s, b) = g
            .post("/v3/disconnect/", "api_key", &g.api_key, body.clone())
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some("bad_request")),
            "{body}"
        );
    }
    let (s, _) = g
        .post(
            "/v3/disconnect/",
            "api_key",
            &g.api_key,
            json!({"tunnel_id": "nope"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = g
        .post(
            "/v3/disconnect/",
            "api_key",
            &g.api_key,
            json!({"stream_id": "s999999"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, b) = g
        .post(
            "/v3/disconnect/",
            "api_key",
            &g.api_key,
            json!({"all": true}),
        )
        .await;
    assert_eq!((s, b), (200, json!({"tunnels": [], "streams": []})));
    g.stop().await;
}

/// Nothing keeps a stopped gateway alive (the router is the server's, not the
/// gateway's): in-process users (tests, the console) free it.
#[tokio::test]
async fn a_stopped_gateway_is_freed() {
    let g = vdi_gateway::testing::LocalGateway::start(json!({}))
        .await
        .unwrap();
    let weak = std::sync::Arc::downgrade(g.handle.gateway());
    // Serve a request first, so a connection and the router have been used.
    let url = format!("{}/v3/health/", g.handle.api_url());
    let key = g.handle.api_key();
    let r = reqwest::Client::new()
        .get(url)
        .header("api_key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(r);
    g.stop().await;
    assert!(weak.upgrade().is_none(), "the gateway outlived its stop");
}
