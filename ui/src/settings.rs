//! The settings of one gateway: a form for every field, checked with the
//! gateway's own rules (vdi-core, compiled to WebAssembly) as you type, a diff
//! of what is pending, and the server's per-field errors shown inline.
//! Host-local fields are marked: the console sets them on the host over SSH
//! (so they are locked for a gateway without an SSH host).

use crate::api;
use crate::pane::{Ctx, Loader, Pane};
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::collections::BTreeMap;
use vdi_console_view::settings::{self as form, HOST_LOCAL_BADGE, masked, patch_of, texts};
use vdi_core::settings as rules;
use vdi_wire::console::{ConsoleError, NO_SSH_FOR_HOST_LOCAL};
use vdi_wire::{FieldError, SECRET_FIELDS, SETTINGS_FIELDS, Settings};

/// A new key from the webview's secure random numbers, or why there is none.
fn random_key() -> Result<String, ConsoleError> {
    let random = window().crypto().ok().and_then(|c| {
        let mut bytes = [0u8; 16];
        c.get_random_values_with_u8_array(&mut bytes).ok()?;
        Some(bytes)
    });
    form::new_key(random).map_err(|message| ConsoleError {
        code: "no_random".into(),
        message,
        fields: vec![],
        detail: None,
    })
}

#[component]
pub fn SettingsView() -> impl IntoView {
    let ctx = Ctx::get();
    let selected = ctx.selected;
    let current = Loader::<Settings>::new();
    let (original, set_original) = signal(BTreeMap::<String, String>::new());
    let (edited, set_edited) = signal(BTreeMap::<String, String>::new());
    let (server_errors, set_server_errors) = signal(Vec::<FieldError>::new());
    let (revealed, set_revealed) = signal(false);
    // Host-local fields go over SSH: does this gateway have an SSH host?
    let ssh = LocalResource::new(move || {
        let id = selected.get();
        async move {
            match id {
                Some(id) => crate::inventory::entry(id)
                    .await
                    .is_some_and(|g| g.ssh_host.is_some()),
                None => false,
            }
        }
    });
    let has_ssh = move || ssh.get().unwrap_or(false);
    let load = move || {
        if let Some(id) = selected.get_untracked() {
            current.load(api::gateway_settings(id), move |r| {
                if let Ok(s) = r {
                    set_original.set(texts(s));
                    set_edited.set(texts(s));
                    set_server_errors.set(Vec::new());
                }
            });
        }
    };
    Effect::new(move |_| {
        selected.track();
        load();
    });
    // The gateway's own rules, on every keystroke.
    let local_errors = Memo::new(move |_| {
        let Some(Ok(s)) = current.state.get() else {
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
                    ctx.say(Ok(format!("Changed: {}", c.changed.join(", "))));
                    set_original.set(texts(&c.settings));
                    set_edited.set(texts(&c.settings));
                    current.state.set(Some(Ok(c.settings)));
                    set_server_errors.set(Vec::new());
                }
                // The host-local half is in force: show what is now.
                Err(e) if e.code == "partially_applied" => {
                    load();
                    ctx.fail(e);
                }
                Err(e) => {
                    set_server_errors.set(e.fields.clone());
                    ctx.fail(e);
                }
            }
        });
    };
    view! {
        <Pane state={current.state} loading="Loading…" data={move |_, _: Settings| view! {
                <div class="toolbar">
                    <button class="action" id="settings-apply"
                        disabled=move || pending.get().is_empty() || !local_errors.get().is_empty()
                        on:click=apply>"Apply"</button>
                    <button class="plain" id="settings-reset" on:click=move |_| load()>"Reset"</button>
                    <label class="muted"><input type="checkbox" id="reveal-keys"
                        on:change=move |e| set_revealed.set(event_target_checked(&e))/>" Reveal keys"</label>
                </div>
                {move || (!has_ssh()).then(|| view! {
                    <p class="muted" id="host-local-note">{format!("Host-local fields: {NO_SSH_FOR_HOST_LOCAL}.")}</p>
                })}
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
                            let name: &'static str = f;
                            let lock = move || form::host_local_lock(name, has_ssh());
                            view! {
                                <tr>
                                    <td>
                                        <label for=format!("set-{field}")>{field.clone()}</label>
                                        {form::is_host_local(f).then(|| view! {
                                            <span class="badge host-local" title=HOST_LOCAL_BADGE>"host-local"</span>
                                        })}
                                    </td>
                                    <td>
                                        <input id=format!("set-{field}") size="40"
                                            disabled=move || lock().is_some()
                                            title=move || lock().unwrap_or_default()
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
                                                ctx.say(Ok(format!("{fc} copied")));
                                            }>"Copy"</button>
                                            <button class="plain" on:click=move |_| match random_key() {
                                                Ok(k) => set_edited.update(|m| { m.insert(fr.clone(), k); }),
                                                Err(e) => ctx.fail(e),
                                            }>"Rotate"</button>
                                        }
                                    })}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }}/>
    }
}
