use super::*;
use serde_json::json;

const SEED: &str = include_str!("seed.json");

fn seed() -> Settings {
    parse_document_text(SEED).expect("the seed document is valid")
}

fn patch(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("patch must be an object"),
    }
}

#[test]
fn seed_round_trips_byte_for_byte() {
    assert_eq!(render_document(&seed()), SEED);
}

#[test]
fn seed_values_are_read() {
    let s = seed();
    assert!(s.is_enabled);
    assert_eq!(
        s.internal_addrs,
        vec!["10.254.150.132".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(s.api_port, 8000);
    assert_eq!((s.port_range_start, s.port_range_stop), (5900, 5999));
    assert_eq!(s.api_key.expose(), "IVNGbmpzZGtmdWV3");
    assert_eq!(allowed_targets(&s), DEFAULT_ALLOWED_TARGETS);
    assert_eq!(tunnel_ttl_secs(&s), DEFAULT_TUNNEL_TTL_SECS);
    // The original always manages HAProxy and Keepalived.
    assert!(ha_managed(&s));
    assert_eq!(
        haproxy_reload_cmd(&s),
        ["systemctl", "reload-or-restart", "haproxy"]
    );
    assert_eq!(keepalived_conf_path(&s), "/etc/keepalived/keepalived.conf");
    assert_eq!((vrrp_router_id(&s), vrrp_advert_int(&s)), (1, 1.0));
}

#[test]
fn debug_never_shows_keys() {
    let text = format!("{:?}", seed());
    assert!(!text.contains("IVNGbmpzZGtmdWV3"), "{text}");
    assert!(!text.contains("U0ZuanNka2Z1ZXch"), "{text}");
}

#[test]
fn local_defaults_are_valid_and_render_in_seed_order() {
    let s = local_defaults("a".repeat(16), "b".repeat(16));
    assert!(validate(&s).is_empty());
    let text = render_document(&s);
    assert_eq!(parse_document_text(&text).unwrap(), s);
    insta::assert_snapshot!(render_document(&masked(&s)));
}

/// One row per rule: a patch on the seed document and the field it must blame.
#[test]
fn validation_table() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"internal_addrs": ["10.0.0.300"]}),
            "internal_addrs",
            "not an IP address",
        ),
        (
            json!({"internal_addrs": []}),
            "internal_addrs",
            "at least one",
        ),
        (
            json!({"internal_addrs": ["10.0.0.1", "10.0.0.1"]}),
            "internal_addrs",
            "twice",
        ),
        (
            json!({"internal_addrs": "10.0.0.1"}),
            "internal_addrs",
            "expected a list",
        ),
        (json!({"disp_addrs": []}), "disp_addrs", "at least one"),
        (
            json!({"public_addr": "gateway.example"}),
            "public_addr",
            "not an IP address",
        ),
        (
            json!({"virtual_addr": 5}),
            "virtual_addr",
            "expected a string",
        ),
        (json!({"api_port": 0}), "api_port", "out of range"),
        (json!({"api_port": 65536}), "api_port", "out of range"),
        (json!({"api_port": -1}), "api_port", "whole number"),
        (json!({"api_port": "8000"}), "api_port", "whole number"),
        (json!({"disp_port": 70000}), "disp_port", "out of range"),
        (json!({"is_enabled": "yes"}), "is_enabled", "true or false"),
        (
            json!({"port_range_start": 6000, "port_range_stop": 5999}),
            "port_range_start",
            "above port_range_stop",
        ),
        (
            json!({"port_range_start": 7990, "port_range_stop": 8010}),
            "port_range_start",
            "api_port (8000)",
        ),
        (
            json!({"port_range_start": 7990, "port_range_stop": 8002, "api_port": 9000}),
            "port_range_start",
            "balancer_api_port (8002)",
        ),
        (
            json!({"port_range_start": 400, "port_range_stop": 500}),
            "port_range_start",
            "service port (443)",
        ),
        (
            json!({"port_range_start": 4300, "port_range_stop": 4301}),
            "port_range_start",
            "service tunnel port (4300)",
        ),
        (
            json!({"port_range_start": 8003, "port_range_stop": 8003}),
            "port_range_start",
            "stats port (8003)",
        ),
        (
            json!({"port_range_start": 9990, "port_range_stop": 10010}),
            "port_range_start",
            "peers port (10000)",
        ),
        (json!({"api_port": 4300}), "api_port", "service tunnel port"),
        (
            json!({"balancer_api_port": 443}),
            "balancer_api_port",
            "service port",
        ),
        (json!({"api_key": "short"}), "api_key", "at least 16"),
        (
            json!({"cli_key": "has a space in it ok"}),
            "cli_key",
            "printable ASCII",
        ),
        (
            json!({"cli_key": "IVNGbmpzZGtmdWV3"}),
            "cli_key",
            "differ from api_key",
        ),
        (
            json!({"allowed_targets": ["10.0.0.0/33"]}),
            "allowed_targets",
            "not a network",
        ),
        (
            json!({"allowed_targets": ["10.0.0.1/8"]}),
            "allowed_targets",
            "host bits",
        ),
        (
            json!({"tunnel_ttl_secs": 0}),
            "tunnel_ttl_secs",
            "out of range",
        ),
        (
            json!({"tunnel_idle_secs": 9999999}),
            "tunnel_idle_secs",
            "out of range",
        ),
        (
            json!({"max_streams_per_tunnel": 0}),
            "max_streams_per_tunnel",
            "out of range",
        ),
        (
            json!({"connect_timeout_secs": 301}),
            "connect_timeout_secs",
            "out of range",
        ),
        (
            json!({"tls_cert_path": "cert.pem"}),
            "tls_cert_path",
            "absolute",
        ),
        (
            json!({"no_such_field": 1}),
            "no_such_field",
            "unknown field",
        ),
    ];
    let current = seed();
    for (p, field, needle) in cases {
        let err = apply_patch(&current, &patch(p.clone())).expect_err(&p.to_string());
        let fields = err.field_errors();
        assert!(
            fields
                .iter()
                .any(|e| e.field == field && e.message.contains(needle)),
            "{p}: expected {field} ~ {needle:?}, got {fields:?}"
        );
    }
}

#[test]
fn key_errors_never_echo_the_key() {
    let err = apply_patch(
        &seed(),
        &patch(json!({"api_key": "secret-but-short"[..10].to_string()})),
    )
    .unwrap_err();
    assert!(!err.to_string().contains("secret-but"), "{err}");
    let err = apply_patch(&seed(), &patch(json!({"cli_key": "IVNGbmpzZGtmdWV3"}))).unwrap_err();
    assert!(!err.to_string().contains("IVNGbmpzZGtmdWV3"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = apply_patch(
        &seed(),
        &patch(json!({"api_port": 0, "disp_port": "x", "public_addr": "nope"})),
    )
    .unwrap_err();
    let fields: Vec<_> = err.field_errors().into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["disp_port", "public_addr", "api_port"]);
}

#[test]
fn patch_changes_only_given_fields() {
    let change = apply_patch(
        &seed(),
        &patch(json!({"port_range_stop": 5949, "tunnel_ttl_secs": 30, "is_enabled": true})),
    )
    .unwrap();
    assert_eq!(change.changed, ["port_range_stop", "tunnel_ttl_secs"]);
    assert_eq!(change.settings.port_range_stop, 5949);
    assert_eq!(change.settings.tunnel_ttl_secs, Some(30));
    assert_eq!(change.settings.api_key, seed().api_key);
}

#[test]
fn null_resets_an_optional_field_and_cannot_clear_a_required_one() {
    let with = apply_patch(&seed(), &patch(json!({"tunnel_ttl_secs": 30})))
        .unwrap()
        .settings;
    let reset = apply_patch(&with, &patch(json!({"tunnel_ttl_secs": null}))).unwrap();
    assert_eq!(reset.settings, seed());
    assert_eq!(render_document(&reset.settings), SEED);
    let err = apply_patch(&seed(), &patch(json!({"api_port": null}))).unwrap_err();
    assert_eq!(
        err.field_errors(),
        vec![FieldError::new("api_port", "missing")]
    );
}

#[test]
fn document_level_errors() {
    assert!(matches!(
        parse_document_text("{"),
        Err(SettingsError::Json(_))
    ));
    assert_eq!(parse_document_text("[1]"), Err(SettingsError::NotAnObject));
    let err = parse_document_text("{}").unwrap_err();
    assert_eq!(err.field_errors().len(), 13);
}

#[test]
fn assignments_from_the_command_line() {
    let cases = [
        ("api_port=8100", ("api_port", json!(8100))),
        ("is_enabled=false", ("is_enabled", json!(false))),
        ("public_addr=10.0.0.5", ("public_addr", json!("10.0.0.5"))),
        (
            "internal_addrs=10.0.0.1,10.0.0.2",
            ("internal_addrs", json!(["10.0.0.1", "10.0.0.2"])),
        ),
        (
            "disp_addrs=[\"10.0.0.9\"]",
            ("disp_addrs", json!(["10.0.0.9"])),
        ),
        (
            "allowed_targets=127.0.0.1/32",
            ("allowed_targets", json!(["127.0.0.1/32"])),
        ),
        (
            "api_key=QUJDREVGR0hJSktMTU5PUA==",
            ("api_key", json!("QUJDREVGR0hJSktMTU5PUA==")),
        ),
        ("tunnel_ttl_secs=null", ("tunnel_ttl_secs", json!(null))),
    ];
    for (arg, (k, v)) in cases {
        assert_eq!(parse_assignment(arg).unwrap(), (k.to_string(), v), "{arg}");
    }
    assert!(parse_assignment("nofield=1").is_err());
    assert!(parse_assignment("api_port").is_err());
}

/// docs/settings.md documents every field, once, in document order: the
/// field list is generated, the prose cannot be, so a test holds them equal.
#[test]
fn the_settings_doc_lists_every_field_in_order() {
    let doc = include_str!("../../../../docs/settings.md");
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(documented, vdi_wire::SETTINGS_FIELDS);
}

#[test]
fn host_paths_are_plain_absolute_paths_of_the_right_kind() {
    let base = seed();
    let ok = [
        ("haproxy_cfg_path", "/etc/haproxy/haproxy.cfg"),
        ("keepalived_conf_path", "/etc/keepalived/keepalived.conf"),
        ("haproxy_admin_socket", "/run/haproxy/admin.sock"),
        ("tls_cert_path", "/etc/vdi-gateway/cert.pem"),
        ("tls_key_path", "/etc/ssl/private/gw.key"),
    ];
    for (field, path) in ok {
        let patch = serde_json::json!({ field: path });
        assert!(
            apply_patch(&base, patch.as_object().unwrap()).is_ok(),
            "{field}={path}"
        );
    }
    let bad = [
        ("haproxy_cfg_path", "etc/haproxy/haproxy.cfg"),
        (
            "haproxy_cfg_path",
            "/etc/haproxy/../../opt/vdi-gateway/app/settings.db",
        ),
        ("haproxy_cfg_path", "/etc/haproxy//haproxy.cfg"),
        ("haproxy_cfg_path", "/etc/haproxy/./haproxy.cfg"),
        ("haproxy_cfg_path", "/opt/vdi-gateway/app/settings.db"),
        ("keepalived_conf_path", "/etc/keepalived/"),
        ("keepalived_conf_path", "/etc/passwd"),
        (
            "haproxy_admin_socket",
            "/run/haproxy/admin.sock\n  stats socket /tmp/x",
        ),
        ("haproxy_admin_socket", "/run/haproxy/admin sock.sock"),
        ("tls_cert_path", "/etc/shadow"),
        ("haproxy_admin_socket", "/run/haproxy/it's.sock"),
        ("haproxy_admin_socket", "/run/haproxy/a#b.sock"),
        ("haproxy_cfg_path", "/etc/haproxy/a\\b.cfg"),
    ];
    for (field, path) in bad {
        let patch = serde_json::json!({ field: path });
        let err = apply_patch(&base, patch.as_object().unwrap()).unwrap_err();
        assert_eq!(
            err.field_errors()[0].field,
            field,
            "{field}={path:?}: {err}"
        );
    }
}

#[test]
fn every_field_has_its_rule_and_the_hints_match_the_rules() {
    let names: Vec<&str> = FIELD_RULES.iter().map(|(f, _)| *f).collect();
    assert_eq!(names, vdi_wire::SETTINGS_FIELDS);
    // The bounds a hint states are the rule's: the edges pass, one step past fails.
    for (field, _) in FIELD_RULES {
        let h = hints(field);
        let (Some(min), Some(max)) = (h.minimum, h.maximum) else {
            continue;
        };
        let step = if min < 1.0 { 0.001 } else { 1.0 };
        for (v, ok) in [
            (min, true),
            (max, true),
            (min - step, false),
            (max + step, false),
        ] {
            let value = if step < 1.0 {
                json!(v)
            } else {
                json!(v as i64)
            };
            let mut patch = serde_json::Map::new();
            patch.insert(field.to_string(), value.clone());
            // Ranges that cross other fields (ports) may fail for other reasons:
            // only the field's own error counts here.
            let own_error = apply_patch(&seed(), &patch).err().is_some_and(|e| {
                e.field_errors()
                    .iter()
                    .any(|f| f.field == *field && f.message.contains("out of range"))
            });
            assert_eq!(!own_error, ok, "{field}={value}");
        }
    }
}

/// The OpenAPI patterns of `allowed_targets` items admit only what the
/// parser takes (host bits aside, which no pattern states), and what std
/// prints for a network matches them.
#[test]
fn the_documented_network_patterns_hold() {
    use crate::allow::parse_net;
    let v4 = regex::Regex::new(CIDR_V4_PATTERN).unwrap();
    let v6 = regex::Regex::new(&cidr_v6_pattern()).unwrap();
    let taken = |s: &str| match parse_net(s) {
        Ok(_) => true,
        Err(e) => e.contains("host bits"),
    };
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut v4_hits, mut v6_hits) = (0, 0);
    for _ in 0..100_000 {
        let r = next();
        let ip: std::net::IpAddr = if r % 2 == 0 {
            std::net::Ipv4Addr::from((next() >> 32) as u32).into()
        } else {
            // Runs of zero groups, so std compresses with `::`.
            let groups: Vec<u16> = (0..8)
                .map(|i| {
                    if (r >> (i + 8)) & 1 == 0 {
                        0
                    } else {
                        next() as u16
                    }
                })
                .collect();
            let g: [u16; 8] = groups.try_into().unwrap();
            std::net::Ipv6Addr::from(g).into()
        };
        let max = if ip.is_ipv4() { 33 } else { 129 };
        let s = format!("{ip}/{}", next() % max);
        let re = if ip.is_ipv4() { &v4 } else { &v6 };
        // std prints embedded-IPv4 forms for ::a.b.c.d; the pattern leaves them out.
        if !s.contains('.') || ip.is_ipv4() {
            assert!(re.is_match(&s), "{s} does not match its pattern");
        }
        assert!(taken(&s), "{s}");
        // Mutations: whatever still matches a pattern must be taken.
        let mut m: Vec<char> = s.chars().collect();
        let i = (next() as usize) % m.len();
        m[i] = b"0123456789abcdef:./"[(next() % 19) as usize] as char;
        if next() % 3 == 0 {
            m.remove((next() as usize) % m.len());
        }
        let m: String = m.into_iter().collect();
        if v4.is_match(&m) {
            v4_hits += 1;
            assert!(taken(&m), "{m} matches the IPv4 pattern but is refused");
        }
        if v6.is_match(&m) {
            v6_hits += 1;
            assert!(taken(&m), "{m} matches the IPv6 pattern but is refused");
        }
    }
    assert!(v4_hits > 1000 && v6_hits > 1000, "{v4_hits} {v6_hits}");
    for bad in [
        "10.0.0.0/33",
        "010.0.0.0/8",
        "1.2.3/8",
        "::/129",
        "1:2:3:4:5:6:7:8:9/64",
        ":::/8",
    ] {
        assert!(!v4.is_match(bad) && !v6.is_match(bad), "{bad}");
    }
}
