//! The settings form: every field as text, the patch of what was edited
//! (parsed by the gateway's own rules, `vdi-core`), masked keys in the
//! pending diff, and new keys from random bytes.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use vdi_core::settings as rules;
use vdi_wire::console::NO_SSH_FOR_HOST_LOCAL;
use vdi_wire::{FieldError, HOST_LOCAL_FIELDS, SECRET_FIELDS, SETTINGS_FIELDS, Settings};

/// The badge of a host-local field: the API refuses them, the console sets
/// them on the host over SSH.
pub const HOST_LOCAL_BADGE: &str = "host-local: set over SSH";

/// How the form offers a host-local field: why it cannot be edited (no SSH
/// host), or `None` when it can; not a host-local field: `None` too.
pub fn host_local_lock(field: &str, has_ssh_host: bool) -> Option<&'static str> {
    (HOST_LOCAL_FIELDS.contains(&field) && !has_ssh_host).then_some(NO_SSH_FOR_HOST_LOCAL)
}

/// Whether `field` is host-local (shown with [`HOST_LOCAL_BADGE`]).
pub fn is_host_local(field: &str) -> bool {
    HOST_LOCAL_FIELDS.contains(&field)
}

/// A field's value as the form shows it: lists as `a, b`, unset optional as "".
pub fn as_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| as_text(Some(i)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

/// Every field of `s` as text, by name.
pub fn texts(s: &Settings) -> BTreeMap<String, String> {
    let doc = serde_json::to_value(s).unwrap_or(Value::Null);
    SETTINGS_FIELDS
        .iter()
        .map(|f| (f.to_string(), as_text(doc.get(*f))))
        .collect()
}

/// The patch of the fields that differ from the original; "" resets an optional field.
pub fn patch_of(
    original: &BTreeMap<String, String>,
    edited: &BTreeMap<String, String>,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut patch = Map::new();
    let mut errors = Vec::new();
    for (k, v) in edited {
        if original.get(k) == Some(v) {
            continue;
        }
        let text = if v.trim().is_empty() {
            "null".to_string()
        } else {
            v.trim().to_string()
        };
        match rules::parse_assignment(&format!("{k}={text}")) {
            Ok((k, v)) => {
                patch.insert(k, v);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(patch)
    } else {
        Err(errors)
    }
}

/// How a value appears in the pending diff: keys masked, unset as "default".
pub fn masked(field: &str, v: &str) -> String {
    if v.is_empty() {
        "default".into()
    } else if SECRET_FIELDS.contains(&field) {
        "•".repeat(8)
    } else {
        v.to_string()
    }
}

/// Standard base64 with padding (the original's key format).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A new key from 16 random bytes; `None` (no secure random source) is an
/// error, never a predictable key.
pub fn new_key(random: Option<[u8; 16]>) -> Result<String, String> {
    random.map(|b| base64(&b)).ok_or_else(|| {
        "no secure random numbers here (the webview's crypto is missing): type a key instead".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        serde_json::from_value(serde_json::json!({
            "is_enabled": true, "internal_addrs": ["10.0.0.1", "10.0.0.2"], "ssl": false,
            "disp_addrs": [], "disp_port": 8002, "public_addr": "10.0.0.1",
            "virtual_addr": "10.0.0.9", "api_port": 8000, "balancer_api_port": 8002,
            "port_range_start": 5900, "port_range_stop": 5999,
            "api_key": "QUJDREVGR0hJSktMTU5PUA==", "cli_key": "UVJTVFVWV1hZWmFiY2RlZg=="
        }))
        .unwrap()
    }

    #[test]
    fn fields_as_text_and_back_as_a_patch() {
        let original = texts(&settings());
        assert_eq!(original["internal_addrs"], "10.0.0.1, 10.0.0.2");
        assert_eq!(original["tunnel_ttl_secs"], "");
        assert_eq!(original["ssl"], "false");
        assert_eq!(original.len(), SETTINGS_FIELDS.len());
        assert_eq!(patch_of(&original, &original).unwrap(), Map::new());

        let mut edited = original.clone();
        edited.insert("tunnel_ttl_secs".into(), " 300 ".into());
        edited.insert("internal_addrs".into(), "10.0.0.3".into());
        let p = patch_of(&original, &edited).unwrap();
        assert_eq!(p["tunnel_ttl_secs"], 300);
        assert_eq!(p["internal_addrs"], serde_json::json!(["10.0.0.3"]));

        edited.insert("tunnel_ttl_secs".into(), "".into());
        edited.insert("no_such_field".into(), "1".into());
        let mut from = original.clone();
        from.insert("tunnel_ttl_secs".into(), "120".into());
        let errors = patch_of(&from, &edited).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "no_such_field");
        edited.remove("no_such_field");
        assert_eq!(
            patch_of(&from, &edited).unwrap()["tunnel_ttl_secs"],
            Value::Null
        );
    }

    #[test]
    fn host_local_fields_are_marked_and_locked_without_an_ssh_host() {
        assert!(is_host_local("haproxy_cfg_path") && !is_host_local("api_port"));
        assert_eq!(host_local_lock("haproxy_cfg_path", true), None);
        assert_eq!(
            host_local_lock("tls_key_path", false),
            Some(NO_SSH_FOR_HOST_LOCAL)
        );
        assert_eq!(host_local_lock("api_port", false), None);
        let marked: Vec<_> = SETTINGS_FIELDS
            .iter()
            .filter(|f| is_host_local(f))
            .collect();
        assert_eq!(marked.len(), HOST_LOCAL_FIELDS.len());
    }

    #[test]
    fn keys_are_masked_and_made_from_random_bytes_only() {
        assert_eq!(masked("api_key", "QUJD"), "••••••••");
        assert_eq!(masked("api_port", "8000"), "8000");
        assert_eq!(masked("tunnel_ttl_secs", ""), "default");
        assert_eq!(base64(b"ABCDEFGHIJKLMNOP"), "QUJDREVGR0hJSktMTU5PUA==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(
            new_key(Some(*b"ABCDEFGHIJKLMNOP")).unwrap(),
            "QUJDREVGR0hJSktMTU5PUA=="
        );
        assert!(new_key(None).unwrap_err().contains("crypto"));
    }
}
