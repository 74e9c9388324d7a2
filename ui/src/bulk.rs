//! Changes over the gateways chosen in the fleet table (or a tag): a settings
//! change previewed with its diff per host, then applied one host at a time
//! (what was previewed is what is applied; a host changed since is refused);
//! drain, upgrade and undrain rolled the same way. The first failure stops a
//! run and the hosts after it are left as they were.

use crate::api;
use crate::pane::Ctx;
use leptos::prelude::*;
use leptos::task::spawn_local;
use vdi_core::settings as rules;
use vdi_wire::console::{BulkChange, BulkOutcome, FleetRow, HostPlan, Planned, RollingOp};
use vdi_wire::{SECRET_FIELDS, SETTINGS_FIELDS};

/// The change the form describes, or what is wrong with it.
fn change_of(field: &str, value: &str, rotate: &[String]) -> Result<BulkChange, String> {
    let mut set = serde_json::Map::new();
    if !field.is_empty() {
        let text = if value.trim().is_empty() {
            "null"
        } else {
            value.trim()
        };
        let (k, v) =
            rules::parse_assignment(&format!("{field}={text}")).map_err(|e| e.to_string())?;
        set.insert(k, v);
    }
    Ok(BulkChange {
        set,
        rotate: rotate.to_vec(),
    })
}

#[component]
pub fn BulkPanel(chosen: RwSignal<Vec<i64>>, rows: ReadSignal<Vec<FleetRow>>) -> impl IntoView {
    let ctx = Ctx::get();
    let hosts = move || vdi_console_view::tables::bulk_hosts(&rows.get(), &chosen.get(), None);
    let name_of = move |id: i64| {
        rows.with_untracked(|r| r.iter().find(|r| r.id == id).map(|r| r.name.clone()))
            .unwrap_or_else(|| id.to_string())
    };
    let (field, set_field) = signal(String::new());
    let (value, set_value) = signal(String::new());
    let (rotate, set_rotate) = signal(Vec::<String>::new());
    let (plan, set_plan) = signal(None::<(BulkChange, Vec<HostPlan>)>);
    let (results, set_results) = signal(Vec::<BulkOutcome>::new());
    let (busy, set_busy) = signal(false);
    let preview = move |_| {
        let change = match change_of(
            &field.get_untracked(),
            &value.get_untracked(),
            &rotate.get_untracked(),
        ) {
            Ok(c) => c,
            Err(m) => {
                ctx.fail(vdi_wire::console::ConsoleError {
                    code: "invalid_input".into(),
                    message: m,
                    fields: vec![],
                    detail: None,
                });
                return;
            }
        };
        let ids = hosts();
        set_results.set(vec![]);
        spawn_local(async move {
            match api::plan_bulk_change(&ids, &change).await {
                Ok(p) => set_plan.set(Some((change, p))),
                Err(e) => ctx.fail(e),
            }
        });
    };
    let applicable = move || {
        plan.with(|p| {
            p.as_ref()
                .is_some_and(|(_, hs)| !hs.is_empty() && hs.iter().all(|h| h.error.is_none()))
        }) && !busy.get()
    };
    let finish = move |r: Result<Vec<BulkOutcome>, vdi_wire::console::ConsoleError>, what: &str| {
        set_busy.set(false);
        match r {
            Ok(out) => match out.iter().find(|o| !o.ok) {
                None => ctx.say(Ok(format!("{what}: {} host(s) done", out.len()))),
                Some(f) => ctx.say(Ok(format!(
                    "{what} stopped at {}: the hosts after it were not touched",
                    f.host
                ))),
            },
            Err(e) => ctx.fail(e),
        }
    };
    let apply = move |_| {
        let Some((change, hs)) = plan.get_untracked() else {
            return;
        };
        let planned: Vec<Planned> = hs.iter().map(HostPlan::planned).collect();
        set_results.set(vec![]);
        set_busy.set(true);
        spawn_local(async move {
            let r = api::apply_bulk_change(&change, &planned, move |o| {
                set_results.update(|v| v.push(o))
            })
            .await;
            set_plan.set(None);
            finish(r, "Settings change");
        });
    };
    let roll = move |op: RollingOp| {
        let ids = hosts();
        let words = match op {
            RollingOp::Drain => "Drain",
            RollingOp::Undrain => "Undrain",
            RollingOp::Upgrade => "Upgrade (drain, install the bundled package, undrain)",
        };
        let names: Vec<String> = ids.iter().map(|&id| name_of(id)).collect();
        if !window()
            .confirm_with_message(&format!(
                "{words} {} host(s), one after the other: {}?",
                ids.len(),
                names.join(", ")
            ))
            .unwrap_or(false)
        {
            return;
        }
        set_results.set(vec![]);
        set_busy.set(true);
        spawn_local(async move {
            let r = api::rolling_maintenance(&ids, op, move |o| set_results.update(|v| v.push(o)))
                .await;
            finish(r, words);
        });
    };
    let toggle_rotate = move |f: &'static str, on: bool| {
        set_rotate.update(|r| {
            r.retain(|x| x != f);
            if on {
                r.push(f.to_string());
            }
        })
    };
    view! {
        <section id="bulk" class="bulk" aria-label="bulk actions">
            <h2>{move || format!("{} gateway(s) chosen, in this order: ", hosts().len())}
                <span class="muted" id="bulk-hosts">{move || hosts().into_iter().map(name_of).collect::<Vec<_>>().join(", ")}</span>
            </h2>
            <div class="toolbar wrap">
                <select id="bulk-field" aria-label="field" on:change=move |e| { set_field.set(event_target_value(&e)); set_plan.set(None) }>
                    <option value="">"(no field)"</option>
                    {SETTINGS_FIELDS.iter().filter(|f| !SECRET_FIELDS.contains(f)).map(|f| view! { <option value=*f>{*f}</option> }).collect_view()}
                </select>
                <input id="bulk-value" placeholder="value (empty: default)" aria-label="value"
                    on:input=move |e| { set_value.set(event_target_value(&e)); set_plan.set(None) }/>
                {SECRET_FIELDS.iter().map(|&f| view! {
                    <label><input type="checkbox" id=format!("bulk-rotate-{f}")
                        on:change=move |e| { toggle_rotate(f, event_target_checked(&e)); set_plan.set(None) }/>
                        {format!("rotate {f} (a new key per host)")}</label>
                }).collect_view()}
                <button class="plain" id="bulk-preview" on:click=preview disabled=move || busy.get()>"Preview"</button>
                <button class="action" id="bulk-apply" on:click=apply disabled=move || !applicable()>"Apply, one host at a time"</button>
            </div>
            {move || plan.get().map(|(_, hs)| view! {
                <div class="table-wrap">
                <table id="bulk-plan">
                    <thead><tr><th>"Gateway"</th><th>"Field"</th><th>"Now"</th><th>"After"</th></tr></thead>
                    <tbody>
                        {hs.into_iter().map(|h| {
                            let host = h.host.clone();
                            match (h.error, h.diff.is_empty()) {
                                (Some(e), _) => view! {
                                    <tr class="plan-host error" data-host=host.clone()><td>{host.clone()}</td><td colspan="3">{e.message}</td></tr>
                                }.into_any(),
                                (None, true) => view! {
                                    <tr class="plan-host" data-host=host.clone()><td>{host.clone()}</td><td colspan="3" class="muted">"nothing to change"</td></tr>
                                }.into_any(),
                                (None, false) => h.diff.into_iter().map(|d| view! {
                                    <tr class="plan-host" data-host=host.clone()><td>{host.clone()}</td><td>{d.field}</td><td>{d.before}</td><td>{d.after}</td></tr>
                                }).collect_view().into_any(),
                            }
                        }).collect_view()}
                    </tbody>
                </table>
                </div>
            })}
            <div class="toolbar">
                <span class="muted">"Maintenance, one host at a time:"</span>
                <button class="plain" id="bulk-drain" disabled=move || busy.get() on:click=move |_| roll(RollingOp::Drain)>"Drain"</button>
                <button class="plain" id="bulk-upgrade" disabled=move || busy.get() on:click=move |_| roll(RollingOp::Upgrade)
                    title="drain, install the bundled gateway package (streams stay up), wait until healthy, undrain; a host that fails stays drained">"Upgrade"</button>
                <button class="plain" id="bulk-undrain" disabled=move || busy.get() on:click=move |_| roll(RollingOp::Undrain)>"Undrain"</button>
                <button class="plain" id="bulk-clear" on:click=move |_| { chosen.set(vec![]); set_plan.set(None); set_results.set(vec![]) }>"Clear choice"</button>
            </div>
            <ul id="bulk-results">
                {move || results.get().into_iter().map(|o| view! {
                    <li class=if o.ok { "bulk-ok" } else { "bulk-failed error" } data-host=o.host.clone()>
                        {format!("{}: {} ({} ms)", o.host, o.summary, o.took_ms)}
                    </li>
                }).collect_view()}
            </ul>
        </section>
    }
}
