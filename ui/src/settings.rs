//! The settings of one gateway: a form for every field, checked with the
//! gateway's own rules (vdi-core, compiled to WebAssembly) as you type, a diff
//! of what is pending, and the server's per-field errors shown inline.

use crate::api;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use vdi_core::settings as rules;
use vdi_wire::console::ConsoleError;
use vdi_wire::{FieldError, SECRET_FIELDS, SETTINGS_FIELDS, Settings};

/// A field's value as the form shows it: lists as `a, b`, unset optional as "".
fn as_text(v: Option<&Value>) -> String {
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

fn texts(s: &Settings) -> BTreeMap<String, String> {
    let doc = serde_json::to_value(s).unwrap_or(Value::Null);
    SETTINGS_FIELDS
        .iter()
        .map(|f| (f.to_string(), as_text(doc.get(*f))))
        .collect()
}

/// The patch of the fields that differ from the original; "" resets an optional field.
fn patch_of(
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
fn masked(field: &str, v: &str) -> String {
    if v.is_empty() {
        "default".into()
    } else if SECRET_FIELDS.contains(&field) {
        "•".repeat(8)
    } else {
        v.to_string()
    }
}

fn random_key() -> String {
    let mut bytes = [0u8; 16];
    if let Some(c) = web_crypto() {
        let _ = c.get_random_values_with_u8_array(&mut bytes);
    }
    base64(&bytes)
}

fn web_crypto() -> Option<web_sys::Crypto> {
    window().crypto().ok()
}

fn base64(bytes: &[u8]) -> String {
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

#[component]
pub fn SettingsView(
    selected: ReadSignal<Option<i64>>,
    set_notice: WriteSignal<Option<Result<String, ConsoleError>>>,
) -> impl IntoView {
    let (current, set_current) = signal(None::<Result<Settings, ConsoleError>>);
    let (original, set_original) = signal(BTreeMap::<String, String>::new());
    let (edited, set_edited) = signal(BTreeMap::<String, String>::new());
    let (server_errors, set_server_errors) = signal(Vec::<FieldError>::new());
    let (revealed, set_revealed) = signal(false);
    let load = move || {
        if let Some(id) = selected.get_untracked() {
            spawn_local(async move {
                let r = api::gateway_settings(id).await;
                if let Ok(s) = &r {
                    set_original.set(texts(s));
                    set_edited.set(texts(s));
                    set_server_errors.set(Vec::new());
                }
                set_current.set(Some(r));
            });
        }
    };
    Effect::new(move |_| {
        selected.track();
        load();
    });
    // The gateway's own rules, on every keystroke.
    let local_errors = Memo::new(move |_| {
        let Some(Ok(s)) = current.get() else {
            return Vec::new();
        };
        match patch_of(&original.get(), &edited.get()) {
            Err(e) => e,
            Ok(p) if p.is_empty() => Vec::new(),
            Ok(p) => rules::apply_patch(&s, &p)
                .err()
                .map(|e| e.field_errors())
                .unwrap_or_default(),
        }
    });
    let pending = Memo::new(move |_| {
        let (o, e) = (original.get(), edited.get());
        e.iter()
            .filter(|(k, v)| o.get(*k) != Some(*v))
            .map(|(k, v)| {
                (
                    k.clone(),
                    masked(k, o.get(k).map(String::as_str).unwrap_or("")),
                    masked(k, v),
                )
            })
            .collect::<Vec<_>>()
    });
    let error_of = move |field: &str| {
        local_errors
            .get()
            .into_iter()
            .chain(server_errors.get())
            .filter(|e| e.field == field)
            .map(|e| e.message)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let apply = move |_| {
        let (Some(id), Ok(patch)) = (
            selected.get_untracked(),
            patch_of(&original.get_untracked(), &edited.get_untracked()),
        ) else {
            return;
        };
        spawn_local(async move {
            match api::change_settings(id, &patch).await {
                Ok(c) => {
                    set_notice.set(Some(Ok(format!("Changed: {}", c.changed.join(", ")))));
                    set_original.set(texts(&c.settings));
                    set_edited.set(texts(&c.settings));
                    set_current.set(Some(Ok(c.settings)));
                    set_server_errors.set(Vec::new());
                }
                Err(e) => {
                    set_server_errors.set(e.fields.clone());
                    set_notice.set(Some(Err(e)));
                }
            }
        });
    };
    view! {
        {move || match (selected.get(), current.get()) {
            (None, _) => view! { <p class="muted">"Choose a gateway in the fleet view."</p> }.into_any(),
            (Some(_), None) => view! { <p class="muted">"Loading…"</p> }.into_any(),
            (Some(_), Some(Err(e))) => view! { <p class="error" role="alert">{format!("{} ({})", e.message, e.code)}</p> }.into_any(),
            (Some(_), Some(Ok(_))) => view! {
                <div class="toolbar">
                    <button class="action" id="settings-apply"
                        disabled=move || pending.get().is_empty() || !local_errors.get().is_empty()
                        on:click=apply>"Apply"</button>
                    <button class="plain" id="settings-reset" on:click=move |_| load()>"Reset"</button>
                    <label class="muted"><input type="checkbox" id="reveal-keys"
                        on:change=move |e| set_revealed.set(event_target_checked(&e))/>" Reveal keys"</label>
                </div>
                <div class="summary" id="settings-pending">{move || {
                    let p = pending.get();
                    if p.is_empty() { "No pending changes.".to_string() } else {
                        format!("Pending: {}", p.iter().map(|(k, a, b)| format!("{k}: {a} → {b}")).collect::<Vec<_>>().join(" · "))
                    }
                }}</div>
                <table id="settings-table">
                    <thead><tr><th>"Field"</th><th>"Value"</th><th></th></tr></thead>
                    <tbody>
                        {SETTINGS_FIELDS.iter().map(|f| {
                            let field = f.to_string();
                            let secret = SECRET_FIELDS.contains(f);
                            let (f1, f2, f3, f4) = (field.clone(), field.clone(), field.clone(), field.clone());
                            view! {
                                <tr>
                                    <td><label for=format!("set-{field}")>{field.clone()}</label></td>
                                    <td>
                                        <input id=format!("set-{field}") size="40"
                                            type=move || if secret && !revealed.get() { "password" } else { "text" }
                                            prop:value=move || edited.get().get(&f1).cloned().unwrap_or_default()
                                            on:input=move |e| { let v = event_target_value(&e); set_edited.update(|m| { m.insert(f2.clone(), v); }); }/>
                                        <span class="error field-error">{move || error_of(&f3)}</span>
                                    </td>
                                    <td>{secret.then(|| {
                                        let (fc, fr) = (f4.clone(), f4.clone());
                                        view! {
                                            <button class="plain" on:click=move |_| {
                                                let v = edited.get_untracked().get(&fc).cloned().unwrap_or_default();
                                                let _ = window().navigator().clipboard().write_text(&v);
                                                set_notice.set(Some(Ok(format!("{fc} copied"))));
                                            }>"Copy"</button>
                                            <button class="plain" on:click=move |_| {
                                                let k = random_key();
                                                set_edited.update(|m| { m.insert(fr.clone(), k); });
                                            }>"Rotate"</button>
                                        }
                                    })}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any(),
        }}
    }
}
