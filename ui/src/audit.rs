//! The console's local audit log: every admin action, filterable, exportable.

use crate::api;
use leptos::prelude::*;
use leptos::task::spawn_local;
use vdi_wire::console::{AuditFilter, AuditFormat, AuditRecord};

#[component]
pub fn AuditView() -> impl IntoView {
    let ctx = crate::pane::Ctx::get();
    let (records, set_records) = signal(Vec::<AuditRecord>::new());
    let (host, set_host) = signal(String::new());
    let (action, set_action) = signal(String::new());
    let (text, set_text) = signal(String::new());
    let filter = move || {
        let opt = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        AuditFilter {
            host: opt(host.get_untracked()),
            action: opt(action.get_untracked()),
            text: opt(text.get_untracked()),
            limit: Some(1000),
        }
    };
    let load = move || {
        let f = filter();
        spawn_local(async move {
            match api::audit_list(&f).await {
                Ok(r) => set_records.set(r),
                Err(e) => ctx.fail(e),
            }
        });
    };
    load();
    let export = move |format: AuditFormat| {
        let f = filter();
        let (ext, mime) = match format {
            AuditFormat::Json => ("json", "application/json"),
            AuditFormat::Csv => ("csv", "text/csv"),
        };
        spawn_local(async move {
            match api::audit_export(&f, format).await {
                Ok(text) => crate::save_file(&format!("vdi-console-audit.{ext}"), mime, &text),
                Err(e) => ctx.fail(e),
            }
        });
    };
    view! {
        <div class="toolbar">
            <input id="audit-host" placeholder="host" on:change=move |e| { set_host.set(event_target_value(&e)); load() }/>
            <select id="audit-action" on:change=move |e| { set_action.set(event_target_value(&e)); load() }>
                <option value="">"any action"</option>
                {["change_settings", "disconnect", "service", "deploy", "trust_host_key", "inventory_add", "inventory_edit", "inventory_remove"].iter()
                    .map(|a| view! { <option value=*a>{*a}</option> }).collect_view()}
            </select>
            <input id="audit-text" placeholder="text in parameters or result" on:change=move |e| { set_text.set(event_target_value(&e)); load() }/>
            <button class="plain" id="audit-refresh" on:click=move |_| load()>"Refresh"</button>
            <button class="plain" id="audit-csv" on:click=move |_| export(AuditFormat::Csv)>"Export CSV"</button>
            <button class="plain" id="audit-json" on:click=move |_| export(AuditFormat::Json)>"Export JSON"</button>
        </div>
        <table id="audit-table">
            <thead><tr><th>"Time (UTC)"</th><th>"User"</th><th>"Host"</th><th>"Action"</th><th>"Parameters"</th><th>"Result"</th><th>"Detail"</th></tr></thead>
            <tbody>
                {move || records.get().into_iter().map(|r| view! {
                    <tr class="audit-row" data-action=r.action.clone()>
                        <td>{r.at.clone()}</td><td>{r.os_user.clone()}</td><td>{r.host.clone()}</td><td>{r.action.clone()}</td>
                        <td class="wrap"><code>{r.params.clone()}</code></td>
                        <td class=if r.result == "ok" { "" } else { "error" }>{r.result.clone()}</td>
                        <td class="wrap">{r.detail.clone()}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}
