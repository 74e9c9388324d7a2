//! The host of a gateway over SSH: its units with one-click actions, a
//! rolling action over several hosts, deploying the bundled gateway package,
//! and the host key prompt every SSH view shares.

use crate::api;
use crate::pane::{Ctx, Loader, Pane, error_line};
use leptos::prelude::*;
use leptos::task::spawn_local;
use vdi_wire::console::{
    ActionOutcome, ConsoleError, DeployProgress, DeployReport, GatewayEntry, ServiceAction, UNITS,
    UnitStatus,
};

/// An SSH error in words; for an unknown or changed host key, the prompt to
/// trust (or explicitly replace) it. `retry` runs once the key is trusted.
#[component]
pub fn SshError(e: ConsoleError, id: i64, retry: Callback<()>) -> impl IntoView {
    let (host, port, fp) = e
        .detail
        .as_deref()
        .map(|d| (d.host.clone(), d.port, d.fingerprint.clone()))
        .unwrap_or_else(|| (String::new(), 22, String::new()));
    let (failed, set_failed) = signal(None::<String>);
    let trust = {
        let (fp, host) = (fp.clone(), host.clone());
        move |question: String| {
            if !window().confirm_with_message(&question).unwrap_or(false) {
                return;
            }
            let (fp, host) = (fp.clone(), host.clone());
            spawn_local(async move {
                match api::trust_host_key(id, &host, port, &fp).await {
                    Ok(()) => retry.run(()),
                    Err(e) => set_failed.set(Some(e.message)),
                }
            });
        }
    };
    match e.code.as_str() {
        "host_key_unknown" => {
            let q = format!("Trust the host key {fp} of {host}:{port}?");
            view! {
                <div class="warning" id="host-key-prompt" role="alertdialog">
                    <p><strong>"First connection to "{host.clone()}</strong>". The host presents this key:"</p>
                    <p><code id="host-key-fingerprint">{fp.clone()}</code></p>
                    <p class="muted">{e.message.clone()}</p>
                    <button class="action" id="trust-host-key" on:click=move |_| trust(q.clone())>"Trust this key"</button>
                    {move || failed.get().map(|m| view! { <p class="error">{m}</p> })}
                </div>
            }
            .into_any()
        }
        "host_key_changed" => {
            let q = format!(
                "Replace the recorded key of {host}:{port} by {fp}? Do this only after checking the key on the host itself."
            );
            view! {
                <div class="error-box" id="host-key-changed" role="alert">
                    <p><strong>"The host key has changed. The console refuses to connect."</strong></p>
                    <p>{e.message.clone()}</p>
                    <button class="plain" id="replace-host-key" on:click=move |_| trust(q.clone())>"Replace the recorded key (I checked it)"</button>
                    {move || failed.get().map(|m| view! { <p class="error">{m}</p> })}
                </div>
            }
            .into_any()
        }
        _ => error_line(&e).into_any(),
    }
}

fn since(ts: Option<i64>) -> String {
    ts.map(|ts| {
        format!(
            "{} ago",
            vdi_console_view::age(js_sys::Date::now() as i64 / 1000 - ts)
        )
    })
    .unwrap_or_default()
}

#[component]
pub fn ServicesView() -> impl IntoView {
    let ctx = Ctx::get();
    let selected = ctx.selected;
    let units = Loader::<Vec<UnitStatus>>::new();
    // The unit an action is running on, and the last outcome.
    let (busy, set_busy) = signal(None::<String>);
    let (outcome, set_outcome) = signal(None::<ActionOutcome>);
    let (reconnects, set_reconnects) = signal(0u32);
    let load = move || {
        if let Some(id) = selected.get_untracked() {
            let answer = async move {
                let r = api::services(id).await;
                // A dropped connection is re-established on use; say so.
                set_reconnects.set(api::ssh_reconnects(id).await.unwrap_or(0));
                r
            };
            units.load(answer, |_| {});
        }
    };
    Effect::new(move |_| {
        if selected.get().is_some() {
            load();
        }
    });
    let retry = Callback::new(move |()| load());
    let act = move |unit: String, action: ServiceAction| {
        let Some(id) = selected.get_untracked() else {
            return;
        };
        if !window()
            .confirm_with_message(&format!("{} {unit}?", action.verb()))
            .unwrap_or(false)
        {
            return;
        }
        set_busy.set(Some(unit.clone()));
        set_outcome.set(None);
        spawn_local(async move {
            let r = api::service_action(id, &unit, action).await;
            set_busy.set(None);
            match r {
                Ok(o) => {
                    ctx.say(Ok(format!("{unit}: {}", o.summary)));
                    set_outcome.set(Some(o));
                }
                Err(e) => ctx.fail(e),
            }
            load();
        });
    };
    // Where the view logs in (a resource: an older answer never overwrites a newer one).
    let host = LocalResource::new(move || {
        let id = selected.get();
        async move {
            let g = crate::inventory::entry(id?).await?;
            Some(format!(
                "{} · {}@{}:{}{}",
                g.name,
                g.ssh_user,
                g.ssh_host.unwrap_or_else(|| "(no SSH host)".into()),
                g.ssh_port,
                g.ssh_jump.map(|j| format!(" via {j}")).unwrap_or_default()
            ))
        }
    });
    view! {
        <div class="toolbar">
            <strong id="services-host">{move || host.get().flatten()}</strong>
            {move || (reconnects.get() > 0).then(|| view! {
                <span class="muted" id="ssh-reconnects">{format!("SSH connection re-established {}×", reconnects.get())}</span>
            })}
            <button class="plain" id="services-refresh" on:click=move |_| load()>"Refresh"</button>
        </div>
        <Pane state={units.state} loading="Connecting over SSH…" retry data={move |_, list: Vec<UnitStatus>| view! {
                <table id="services-table">
                    <thead><tr><th>"Unit"</th><th>"State"</th><th>"Since"</th><th>"PID"</th><th>"Memory"</th><th>"Restarts"</th><th></th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|u| {
                            let name = u.unit.clone();
                            let state = format!("{} ({})", u.active_state, u.sub_state);
                            let ok = u.active_state == "active";
                            let buttons = [ServiceAction::Restart, ServiceAction::Reload, ServiceAction::Start, ServiceAction::Stop]
                                .into_iter()
                                .map(|a| {
                                    let n = name.clone();
                                    view! {
                                        <button class="plain" data-unit=name.clone() data-action=a.verb()
                                            disabled=move || busy.get().is_some()
                                            on:click=move |_| act(n.clone(), a)>{a.verb()}</button>
                                    }
                                })
                                .collect_view();
                            let n2 = name.clone();
                            view! {
                                <tr class="unit-row" data-unit=name.clone() data-state=u.active_state.clone()>
                                    <td>{name.clone()}</td>
                                    <td class="unit-state">
                                        <span class=if ok { "dot up" } else { "dot down" }></span>
                                        {move || if busy.get().as_deref() == Some(n2.as_str()) { "working…".to_string() } else { state.clone() }}
                                        {(u.condition_met == Some(false)).then(|| view! { <span class="muted">" (start condition not met)"</span> })}
                                    </td>
                                    <td>{since(u.since)}</td>
                                    <td>{u.main_pid.map(|p| p.to_string())}</td>
                                    <td>{u.memory_bytes.map(vdi_console_view::bytes)}</td>
                                    <td>{u.restarts.map(|r| r.to_string())}</td>
                                    <td>{buttons}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }}/>
        {move || outcome.get().filter(|o| !o.ok).map(|o| view! {
            <div class="error-box" id="action-failure">
                <p><strong>{format!("{} {} on {}: {}", o.action.verb(), o.unit, o.host, o.summary)}</strong></p>
                <pre id="action-log">{o.log.join("\n")}</pre>
            </div>
        })}
        <Deploy/>
        <Rolling/>
    }
}

/// Installs or upgrades the gateway package shipped with the console.
#[component]
fn Deploy() -> impl IntoView {
    let ctx = Ctx::get();
    let selected = ctx.selected;
    let (steps, set_steps) = signal(Vec::<DeployProgress>::new());
    let (report, set_report) = signal(None::<DeployReport>);
    let (force, set_force) = signal(false);
    let (running, set_running) = signal(false);
    let run = move |_| {
        let Some(id) = selected.get_untracked() else {
            return;
        };
        if !window()
            .confirm_with_message(
                "Deploy the bundled gateway package to this host? The gateway restarts.",
            )
            .unwrap_or(false)
        {
            return;
        }
        set_steps.set(vec![]);
        set_report.set(None);
        set_running.set(true);
        spawn_local(async move {
            let r = api::deploy(id, force.get_untracked(), move |p| {
                set_steps.update(|s| {
                    // Upload progress replaces its previous line.
                    if s.last().is_some_and(|l| l.step == p.step) {
                        s.pop();
                    }
                    s.push(p);
                })
            })
            .await;
            set_running.set(false);
            match r {
                Ok(rep) => set_report.set(Some(rep)),
                Err(e) => ctx.fail(e),
            }
        });
    };
    view! {
        <h2>"Deploy"</h2>
        <div class="toolbar">
            <button class="action" id="deploy" disabled=move || running.get() on:click=run>"Deploy bundled gateway"</button>
            <label class="muted"><input type="checkbox" on:change=move |e| set_force.set(event_target_checked(&e))/>
                " even if the installed version cannot be rolled back"</label>
        </div>
        <ul id="deploy-steps" class="muted">
            {move || steps.get().into_iter().map(|p| view! {
                <li>{format!("{}: {}", p.step, p.detail)}
                    {p.fraction.map(|f| view! { <progress max="1" value=f.to_string()></progress> })}</li>
            }).collect_view()}
        </ul>
        {move || report.get().map(|r| {
            let ok = r.outcome.ok();
            view! {
                <div class=if ok { "summary" } else { "error-box" } id="deploy-report">
                    <p><strong>{format!("{}: {}", r.outcome, r.message)}</strong></p>
                    <p class="muted">{format!("before: {} · wanted: {} · now: {}",
                        r.before.clone().unwrap_or("none".into()), r.wanted, r.after.clone().unwrap_or("none".into()))}</p>
                    {(!r.log.is_empty()).then(|| view! { <pre>{r.log.join("\n")}</pre> })}
                </div>
            }
        })}
    }
}

/// One action over several hosts, one at a time, stopping at the first failure.
#[component]
fn Rolling() -> impl IntoView {
    let ctx = Ctx::get();
    // The hosts with SSH, once per showing of the view.
    let hosts = LocalResource::new(|| async {
        api::fleet_list()
            .await
            .map(|all| {
                all.into_iter()
                    .filter(|g| g.ssh_host.is_some())
                    .collect::<Vec<GatewayEntry>>()
            })
            .unwrap_or_default()
    });
    let (chosen, set_chosen) = signal(Vec::<i64>::new());
    let (unit, set_unit) = signal("vdi-gateway".to_string());
    let (action, set_action) = signal(ServiceAction::Restart);
    let (results, set_results) = signal(Vec::<ActionOutcome>::new());
    let run = move |_| {
        let ids = chosen.get_untracked();
        if ids.is_empty() {
            return;
        }
        let (u, a) = (unit.get_untracked(), action.get_untracked());
        if !window()
            .confirm_with_message(&format!(
                "{} {u} on {} host(s), one after the other?",
                a.verb(),
                ids.len()
            ))
            .unwrap_or(false)
        {
            return;
        }
        set_results.set(vec![]);
        spawn_local(async move {
            let r =
                api::rolling_action(&ids, &u, a, move |o| set_results.update(|v| v.push(o))).await;
            if let Err(e) = r {
                ctx.fail(e);
            }
        });
    };
    view! {
        <h2>"Rolling action"</h2>
        <div class="toolbar">
            {move || hosts.get().unwrap_or_default().into_iter().map(|g| {
                let id = g.id;
                view! { <label><input type="checkbox" class="rolling-host" on:change=move |e| {
                    let on = event_target_checked(&e);
                    set_chosen.update(|c| { c.retain(|x| *x != id); if on { c.push(id) } });
                }/>{g.name}</label> }
            }).collect_view()}
        </div>
        <div class="toolbar">
            <select id="rolling-unit" on:change=move |e| set_unit.set(event_target_value(&e))>
                {UNITS.iter().map(|u| view! { <option value=*u>{*u}</option> }).collect_view()}
            </select>
            <select id="rolling-action" on:change=move |e| set_action.set(
                ServiceAction::from_verb(&event_target_value(&e)).unwrap_or(ServiceAction::Restart))>
                <option value="restart">"restart"</option><option value="reload">"reload"</option>
                <option value="start">"start"</option><option value="stop">"stop"</option>
            </select>
            <button class="plain" id="rolling-run" on:click=run>"Run, one host at a time"</button>
        </div>
        <ul id="rolling-results">
            {move || results.get().into_iter().map(|o| view! {
                <li class=if o.ok { "" } else { "error" }>{format!("{}: {}", o.host, o.summary)}</li>
            }).collect_view()}
        </ul>
    }
}
