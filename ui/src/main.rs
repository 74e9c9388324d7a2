//! The console's UI: a fleet overview, live connections of a gateway, and the
//! embedded gateway's demo tunnel. Data arrives through Tauri Channels pushed
//! by the backend; the page never polls.

mod api;
mod audit;
mod bulk;
mod charts;
mod cluster;
mod config;
mod hosts;
mod inventory;
mod journal;
mod maintenance;
mod pane;
mod settings;

use leptos::prelude::*;
use leptos::task::spawn_local;
use pane::{Ctx, Pane};
use vdi_console_view::tables::{self, FleetOrder};
use vdi_wire::console::{ConsoleError, FleetRow, FleetSummary, Rates, Trend};
use vdi_wire::{Connections, Disconnect, StreamInfo, TunnelInfo};

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum View {
    Fleet,
    Connections,
    Settings,
    Services,
    Journal,
    Config,
    Audit,
}

/// The views in the navigation bar, in order (Alt+1 ... Alt+7).
const VIEWS: [(View, &str, &str); 7] = [
    (View::Fleet, "nav-fleet", "Fleet"),
    (View::Connections, "nav-connections", "Connections"),
    (View::Settings, "nav-settings", "Settings"),
    (View::Services, "nav-services", "Services"),
    (View::Journal, "nav-journal", "Journal"),
    (View::Config, "nav-config", "Config"),
    (View::Audit, "nav-audit", "Audit"),
];

/// Saves `text` as a file through the webview's download.
pub fn save_file(name: &str, mime: &str, text: &str) {
    use wasm_bindgen::JsCast;
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(text));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts) else {
        return;
    };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else {
        return;
    };
    if let Ok(a) = document().create_element("a") {
        let a: web_sys::HtmlElement = a.unchecked_into();
        let _ = a.set_attribute("href", &url);
        let _ = a.set_attribute("download", name);
        a.click();
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}

/// Waits `ms` milliseconds (a timer of the page).
pub async fn sleep_ms(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(p).await;
}

#[component]
fn App() -> impl IntoView {
    let ctx = Ctx {
        selected: RwSignal::new(None),
        view: RwSignal::new(View::Fleet),
        notice: RwSignal::new(None),
    };
    provide_context(ctx);
    let (view, notice) = (ctx.view, ctx.notice);
    // The view and gateway of the last run (kept by the console, per data
    // directory), then every change saved; the saved choice holds if that
    // gateway is still there, else the only gateway is the choice. The
    // embedded gateway is being added as the app starts: wait for it
    // (bounded) while the list is empty.
    let restored = RwSignal::new(false);
    spawn_local(async move {
        if let Ok(s) = api::ui_state().await {
            if let Some(v) = s
                .view
                .and_then(|v| VIEWS.iter().find(|(_, id, _)| *id == v).map(|(v, _, _)| *v))
            {
                view.set(v);
            }
            ctx.selected.set(s.selected);
        }
        restored.set(true);
        for _ in 0..40 {
            match api::fleet_list().await {
                Ok(list) if !list.is_empty() => {
                    ctx.keep_or_pick(&list.iter().map(|g| g.id).collect::<Vec<_>>());
                    return;
                }
                Ok(_) => sleep_ms(250).await,
                Err(_) => return,
            }
        }
    });
    Effect::new(move |_| {
        let (v, selected) = (view.get(), ctx.selected.get());
        if !restored.get() {
            return;
        }
        let view = VIEWS
            .iter()
            .find(|(x, _, _)| *x == v)
            .map(|(_, id, _)| id.to_string());
        spawn_local(async move {
            let _ = api::save_ui_state(&api::UiState { view, selected }).await;
        });
    });
    let (info, set_info) = signal(None::<api::AppInfo>);
    spawn_local(async move {
        if let Ok(i) = api::app_info().await {
            set_info.set(Some(i));
        }
    });
    // Alt+1 ... Alt+7 switch views (keyboard navigation besides Tab and Enter).
    let _ = window_event_listener(leptos::ev::keydown, move |e| {
        if e.alt_key()
            && let Some(n) = e
                .key()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=VIEWS.len()).contains(n))
        {
            view.set(VIEWS[n - 1].0);
        }
    });
    view! {
        <header>
            <h1>"Space Gateway console"</h1>
            <nav aria-label="views">
                {VIEWS.iter().map(|&(v, id, label)| view! {
                    <button id=id aria-current=move || (view.get() == v).then_some("page")
                        on:click=move |_| view.set(v)>{label}</button>
                }).collect_view()}
            </nav>
            <span style="flex:1"></span>
            <ThemePicker/>
            <span class="muted" title=move || info.get().map(|i| format!("data: {}", i.data_dir))>
                {move || info.get().map(|i| format!("v{}", i.version))}
            </span>
        </header>
        <main>
            {move || info.get().and_then(|i| i.secrets_warning).map(|w| view! { <div class="warning" role="alert">{w}</div> })}
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <div class="summary" id="notice">{m}</div> }.into_any(),
                Err(e) => view! { <div class="error" role="alert" id="notice">{format!("{} ({})", e.message, e.code)}</div> }.into_any(),
            })}
            // Kept mounted while another view shows: coming back is a redraw,
            // not a new table waiting for its first push.
            <div id="fleet-view" style:display=move || if view.get() == View::Fleet { "" } else { "none" }>
                <Fleet/>
            </div>
            <Show when=move || view.get() == View::Connections>
                <ConnectionsView/>
            </Show>
            <Show when=move || view.get() == View::Settings>
                <settings::SettingsView/>
            </Show>
            <Show when=move || view.get() == View::Services>
                <hosts::ServicesView/>
            </Show>
            <Show when=move || view.get() == View::Journal>
                <journal::JournalView/>
            </Show>
            <Show when=move || view.get() == View::Config>
                <config::ConfigView/>
            </Show>
            <Show when=move || view.get() == View::Audit>
                <audit::AuditView/>
            </Show>
        </main>
    }
}

#[component]
fn ThemePicker() -> impl IntoView {
    let set_theme = |theme: String| {
        if let Some(root) = document().document_element() {
            if theme == "system" {
                let _ = root.remove_attribute("data-theme");
            } else {
                let _ = root.set_attribute("data-theme", &theme);
            }
        }
    };
    view! {
        <label class="muted">"Theme "
            <select id="theme" on:change=move |e| set_theme(event_target_value(&e))>
                <option value="system">"system"</option>
                <option value="light">"light"</option>
                <option value="dark">"dark"</option>
            </select>
        </label>
    }
}

#[component]
fn Fleet() -> impl IntoView {
    let ctx = Ctx::get();
    let (rows, set_rows) = signal(Vec::<FleetRow>::new());
    let (summary, set_summary) = signal(None::<FleetSummary>);
    let (filter, set_filter) = signal(String::new());
    let (sort, set_sort) = signal(FleetOrder::Name);
    let (throughput, set_throughput) = signal(Vec::<Option<u64>>::new());
    let (demo_state, set_demo) = signal(api::DemoState::default());
    // The gateways ticked for a bulk change or a rolling operation.
    let chosen = RwSignal::new(Vec::<i64>::new());
    let (cluster_state, set_cluster) = signal(api::ClusterState::default());
    let refresh_demo = move || {
        spawn_local(async move {
            if let Ok(d) = api::demo_state().await {
                set_demo.set(d);
            }
            if let Ok(c) = api::cluster_state().await {
                set_cluster.set(c);
            }
        })
    };
    api::watch_fleet(
        2000,
        move |u| {
            ctx.keep_or_pick(&u.rows.iter().map(|r| r.id).collect::<Vec<_>>());
            set_rows.set(u.rows);
            set_summary.set(Some(u.summary));
            set_throughput.set(u.throughput);
            refresh_demo();
        },
        move |e| ctx.fail(e),
    );
    // The table's rows are places in the window, recycled: a filter, a sort
    // or a scroll changes which gateway a place shows, a push the cells
    // whose values differ; no row is created unless the window grows (a
    // filter that re-created ~35 rows took ~115 ms in WebKit, now ~10).
    let by_id = Memo::new(move |_| {
        rows.with(|v| {
            v.iter()
                .map(|r| (r.id, r.clone()))
                .collect::<std::collections::HashMap<_, _>>()
        })
    });
    let order = Memo::new(move |_| rows.with(|v| tables::fleet_order(v, "", sort.get())));
    let matching = Memo::new(move |_| {
        rows.with(|v| tables::fleet_order(v, &filter.get(), FleetOrder::Name))
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
    });
    // The rows shown, in order (what "choose every gateway shown" takes).
    let shown = Memo::new(move |_| {
        matching.with(|m| {
            order
                .get()
                .into_iter()
                .filter(|id| m.contains(id))
                .collect::<Vec<_>>()
        })
    });
    // Only the rows in view (and some around them) are in the page: with 200
    // gateways, filtering, sorting and a push touch ~35 rows, not 200.
    let wrap = NodeRef::<leptos::html::Div>::new();
    let (scroll_top, set_scroll_top) = signal(0.0f64);
    let (viewport, set_viewport) = signal(600.0f64);
    let row_h = RwSignal::new(44.0f64);
    let window = Memo::new(move |_| {
        shown.with(|ids| {
            let r =
                tables::visible_range(ids.len(), scroll_top.get(), viewport.get(), row_h.get(), 10);
            (r.start, ids.len() - r.end, ids[r].to_vec())
        })
    });
    // A row's real height (fonts, zoom), measured once rows are there.
    Effect::new(move |_| {
        window.track();
        if let Some(el) = wrap.get() {
            set_viewport.set(el.client_height() as f64);
            if let Ok(Some(r)) = el.query_selector(".fleet-row") {
                let h = r.client_height() as f64;
                if h > 0.0 && (h - row_h.get_untracked()).abs() > 0.5 {
                    row_h.set(h);
                }
            }
        }
    });
    // None: no form; Some(None): adding; Some(Some(entry)): editing.
    let (form, set_form) = signal(None::<Option<vdi_wire::console::GatewayEntry>>);
    let done = Callback::new(move |saved: Option<String>| {
        set_form.set(None);
        if let Some(m) = saved {
            ctx.say(Ok(m));
        }
    });
    let edit = Callback::new(move |id: i64| {
        spawn_local(async move {
            if let Some(e) = inventory::entry(id).await {
                set_form.set(Some(Some(e)));
            }
        });
    });
    let demo = move |_| {
        spawn_local(async move {
            let n = api::demo_tunnel().await.map(|o| {
                format!(
                    "Demo tunnel {} open with demo traffic: connect to {}:{} too",
                    &o.id[..8],
                    o.address,
                    o.port
                )
            });
            ctx.say(n);
            refresh_demo();
        });
    };
    let stop_demo = move |_| {
        spawn_local(async move {
            ctx.say(
                api::stop_demo()
                    .await
                    .map(|_| "Demo traffic stopped".to_string()),
            );
            refresh_demo();
        });
    };
    view! {
        <div class="summary" id="fleet-summary">{move || summary.get().map(|s| format!(
            "{} gateways, {} reachable, {} disabled, {} draining · {} tunnels, {} streams · {} ports free · {} units not active",
            s.gateways, s.reachable, s.disabled, s.draining, s.tunnels, s.streams, s.ports_free, s.units_not_active))}</div>
        {move || {
            let t = throughput.get();
            t.iter().any(Option::is_some).then(|| view! {
                <charts::Chart id="fleet-chart" title="Fleet throughput" span="last 15 min" values=t/>
            })
        }}
        <cluster::ClusterBar state=cluster_state set=set_cluster/>
        <div class="toolbar">
            <input id="fleet-filter" placeholder="Filter by name or tag" aria-label="filter"
                on:input=move |e| set_filter.set(event_target_value(&e))/>
            {move || if demo_state.get().streams > 0 {
                view! {
                    <button class="plain" id="demo-stop" on:click=stop_demo>
                        {format!("Stop demo traffic ({} streams)", demo_state.get().streams)}
                    </button>
                }.into_any()
            } else {
                view! {
                    <button class="action" id="demo-tunnel" title="A tunnel to a demo desktop on the embedded gateway, with streams moving bytes"
                        on:click=demo>"Start demo traffic"</button>
                }.into_any()
            }}
            <select id="bulk-tag" aria-label="choose by tag" on:change=move |e| {
                let tag = event_target_value(&e);
                if !tag.is_empty() {
                    chosen.set(rows.with_untracked(|r| tables::bulk_hosts(r, &[], Some(&tag))));
                }
            }>
                <option value="">"Choose by tag…"</option>
                {move || tables::fleet_tags(&rows.get()).into_iter().map(|t| view! { <option value=t.clone()>{t.clone()}</option> }).collect_view()}
            </select>
            <button class="plain" id="add-gateway" on:click=move |_| set_form.set(Some(None))>"Add gateway"</button>
        </div>
        {move || form.get().map(|editing| view! { <inventory::GatewayForm editing on_done=done/> })}
        <Show when=move || !chosen.with(Vec::is_empty)>
            <bulk::BulkPanel chosen rows/>
        </Show>
        <div class="table-wrap fleet-wrap" node_ref=wrap on:scroll=move |_| {
            if let Some(el) = wrap.get() {
                set_scroll_top.set(el.scroll_top() as f64);
                set_viewport.set(el.client_height() as f64);
            }
        }>
        <table id="fleet-table" data-shown=move || shown.with(Vec::len)>
            <thead><tr>
                <th class="pick"><input type="checkbox" id="bulk-all" aria-label="choose every gateway shown"
                    prop:checked=move || shown.with(|s| !s.is_empty() && chosen.with(|c| s.iter().all(|id| c.contains(id))))
                    on:change=move |e| chosen.set(if event_target_checked(&e) { shown.get() } else { vec![] })/></th>
                <th on:click=move |_| set_sort.set(FleetOrder::Name)>"Gateway"</th>
                <th on:click=move |_| set_sort.set(FleetOrder::Status)>"Status"</th>
                <th>"Version"</th>
                <th>"Enabled"</th>
                <th on:click=move |_| set_sort.set(FleetOrder::Tunnels)>"Tunnels / streams"</th>
                <th>"Ports used / free"</th>
                <th title="vdi-gateway, haproxy, keepalived">"Units"</th>
                <th title="holds the virtual IP">"VIP"</th>
                <th title="streams and throughput over the last 15 minutes">"Last 15 min"</th>
                <th>"Latency"</th>
                <th class="actions"></th>
            </tr></thead>
            <tbody>
                <tr class="spacer" aria-hidden="true"><td colspan="12" style=move || format!("height:{}px", window.with(|w| w.0) as f64 * row_h.get())></td></tr>
                <For each=move || 0..window.with(|w| w.2.len()) key=|i| *i let:i>
                    <FleetLine place=i window by_id edit chosen/>
                </For>
                <tr class="spacer" aria-hidden="true"><td colspan="12" style=move || format!("height:{}px", window.with(|w| w.1) as f64 * row_h.get())></td></tr>
            </tbody>
        </table>
        </div>
    }
}

/// Row `place` of the fleet table's window (`window.2[place]` is the
/// gateway it shows).
#[component]
fn FleetLine(
    place: usize,
    window: Memo<(usize, usize, Vec<i64>)>,
    by_id: Memo<std::collections::HashMap<i64, FleetRow>>,
    edit: Callback<i64>,
    chosen: RwSignal<Vec<i64>>,
) -> impl IntoView {
    let ctx = Ctx::get();
    let selected = ctx.selected;
    // The gateway this row shows (0: none, while the row goes away).
    let id = Memo::new(move |_| window.with(|w| w.2.get(place).copied().unwrap_or(0)));
    // One memo per part of the row: a push, or another gateway in this
    // place, re-renders only what changed.
    fn part<T>(
        m: Memo<std::collections::HashMap<i64, FleetRow>>,
        id: Memo<i64>,
        f: impl FnOnce(&FleetRow) -> T,
    ) -> Option<T> {
        let id = id.get();
        m.with(|m| m.get(&id).map(f))
    }
    let name = Memo::new(move |_| part(by_id, id, |r| r.name.clone()).unwrap_or_default());
    let tags = Memo::new(move |_| part(by_id, id, |r| r.tags.join(" ")).unwrap_or_default());
    let state = Memo::new(move |_| {
        part(by_id, id, |r| {
            let down = !(r.reachable && r.error.is_none());
            let why = r.error.as_ref().map(|e| e.message.clone());
            (down, why, r.problems.clone())
        })
    });
    let health = Memo::new(move |_| part(by_id, id, |r| r.health.clone()).flatten());
    let trend = Memo::new(move |_| part(by_id, id, |r| r.trend.clone()).flatten());
    // The parts that build elements, apart: a push that changes a counter
    // (or another gateway in this place) rebuilds neither the unit badges
    // nor the sparklines' elements.
    let has_trend = Memo::new(move |_| trend.with(Option::is_some));
    let units = Memo::new(move |_| {
        health.with(|h| {
            h.as_ref().map(|h| {
                [
                    ("vdi-gateway", h.units.vdi_gateway.clone()),
                    ("haproxy", h.units.haproxy.clone()),
                    ("keepalived", h.units.keepalived.clone()),
                ]
            })
        })
    });
    let latency = Memo::new(move |_| {
        part(by_id, id, |r| match r.pending_ms {
            // Its last answer is shown; say that a call is overdue.
            Some(ms) if ms >= 1000 => Some(format!("waiting {:.1} s", ms as f64 / 1000.0)),
            _ => r.latency_ms.map(|ms| format!("{ms} ms")),
        })
        .flatten()
    });
    let problem = move || state.with(|s| s.as_ref().is_some_and(|(_, _, p)| !p.is_empty()));
    let status = move || match state.get() {
        Some((false, _, problems)) => {
            let title = problems.join("; ");
            view! {
                <span title=title><span class=if problems.is_empty() { "dot up" } else { "dot warn" }></span>"online"
                    {problems.iter().map(|p| view! { <span class="badge problem">{p.clone()}</span> }).collect_view()}
                </span>
            }.into_any()
        }
        Some((true, why, _)) => {
            let why = why.unwrap_or_default();
            let title = why.clone();
            view! { <span class="error" title=title><span class="dot down"></span>{why}</span> }
                .into_any()
        }
        None => ().into_any(),
    };
    let open = move || {
        ctx.selected.set(Some(id.get_untracked()));
        ctx.view.set(View::Connections);
    };
    view! {
        <tr tabindex="0" class=move || if problem() { "fleet-row problem" } else { "fleet-row" }
            data-name=move || name.get() aria-selected=move || (selected.get() == Some(id.get())).to_string()
            on:click=move |_| open() on:keydown=move |e| if e.key() == "Enter" { open() }>
            <td class="pick" on:click=|e| e.stop_propagation()>
                <input type="checkbox" class="bulk-pick" aria-label=move || format!("choose {}", name.get())
                    prop:checked=move || { let id = id.get(); chosen.with(|c| c.contains(&id)) }
                    on:change=move |e| {
                        let on = event_target_checked(&e);
                        let id = id.get_untracked();
                        chosen.update(|c| { c.retain(|x| *x != id); if on { c.push(id) } });
                    }/>
            </td>
            <td>{move || name.get()}" "<span class="muted tags" title=move || tags.get()>{move || tags.get()}</span></td>
            <td class="status">{status}</td>
            <td>{move || health.with(|h| h.as_ref().map(|h| h.version.clone()))}</td>
            <td class="enabled">{move || health.with(|h| h.as_ref().map(|h| match (h.is_enabled, h.draining) {
                (false, _) => "no",
                (true, true) => "drained",
                (true, false) => "yes",
            }))}</td>
            <td>{move || health.with(|h| h.as_ref().map(|h| format!("{} / {}", h.tunnels, h.streams)))}</td>
            <td>{move || health.with(|h| h.as_ref().map(|h| format!("{} / {}", h.ports_in_use, h.ports_free)))}</td>
            <td class="units">{move || units.get().map(|u| u.into_iter().map(|(unit, state)| view! {
                    <span class=format!("unit {}", vdi_console_view::unit_class(&state)) title=format!("{unit}: {state}")
                        data-unit=unit data-state=state.clone()>{vdi_console_view::unit_letter(unit)}</span>
                }).collect_view())}</td>
            <td class="vip">{move || health.with(|h| h.as_ref().filter(|h| h.holds_vip).map(|_| "VIP"))}</td>
            <td class="trend">{move || has_trend.get().then(|| {
                let streams = Signal::derive(move || trend.with(|t| t.as_ref().map(|t| t.streams.clone()).unwrap_or_default()));
                let throughput = Signal::derive(move || trend.with(|t| t.as_ref().map(|t| t.throughput.clone()).unwrap_or_default()));
                view! {
                    <charts::Spark values=streams label="streams, last 15 min".to_string() w=72.0 h=20.0 class="streams"/>
                    <charts::Spark values=throughput label="throughput, last 15 min".to_string() w=72.0 h=20.0 class="throughput"/>
                    <span class="rate">{move || trend.with(|t| t.as_ref().and_then(|t| t.rate).map(|[a, b]| vdi_console_view::charts::rate(a + b)))}</span>
                }
            })}</td>
            <td class="latency">{move || latency.get()}</td>
            <td class="actions">
                <button class="plain edit-gateway" on:click=move |e| { e.stop_propagation(); edit.run(id.get_untracked()) }>"Edit"</button>
                <button class="plain remove-gateway" on:click=move |e| {
                    e.stop_propagation();
                    inventory::remove(id.get_untracked(), name.get_untracked())
                }>"Remove"</button>
            </td>
        </tr>
    }
}

#[component]
fn ConnectionsView() -> impl IntoView {
    let ctx = Ctx::get();
    let selected = ctx.selected;
    let (conns, set_conns) = signal(None::<Result<Connections, ConsoleError>>);
    let (rates, set_rates) = signal(Rates::default());
    let (live, set_live) = signal(Vec::<u64>::new());
    let (trend, set_trend) = signal(None::<Trend>);
    Effect::new(move |_| {
        // Ended when the selection changes or the view goes.
        if let Some(id) = selected.get() {
            set_live.set(Vec::new());
            set_rates.set(Rates::default());
            api::watch_connections(
                id,
                1000,
                move |u| {
                    if Some(u.id) == selected.get_untracked() {
                        set_rates.set(u.rates);
                        set_live.set(u.live);
                        set_trend.set(u.trend);
                        set_conns.set(Some(u.result));
                    }
                },
                move |e| ctx.fail(e),
            );
        }
    });
    let disconnect = move |what: Disconnect, label: String| {
        let Some(id) = selected.get_untracked() else {
            return;
        };
        if !window()
            .confirm_with_message(&format!("Disconnect {label}?"))
            .unwrap_or(false)
        {
            return;
        }
        spawn_local(async move {
            let n = api::disconnect(id, &what).await.map(|d| {
                format!(
                    "Closed {} tunnel(s) and {} stream(s)",
                    d.tunnels.len(),
                    d.streams.len()
                )
            });
            ctx.say(n);
        });
    };
    // Drain: no new tunnels on this node; its streams go on (the count
    // below falls as they end) and the VIP moves to another node.
    let drain = move |on: bool| {
        let Some(id) = selected.get_untracked() else {
            return;
        };
        if on
            && !window()
                .confirm_with_message(
                    "Drain this gateway? It takes no new tunnels until undrained; running streams go on and the VIP moves to another node.",
                )
                .unwrap_or(false)
        {
            return;
        }
        spawn_local(async move {
            let n = api::set_draining(id, on).await.map(|d| {
                if d.draining {
                    format!(
                        "Drained: {} tunnel(s), {} stream(s) still open; new tunnels go to other nodes",
                        d.tunnels, d.streams
                    )
                } else {
                    "Undrained: taking new tunnels again".to_string()
                }
            });
            ctx.say(n);
        });
    };
    let (filter, set_filter) = signal(String::new());
    let (sort, set_sort) = signal("newest".to_string());
    view! {
        <div class="toolbar">
            <input id="connections-filter" placeholder="Filter: client, VM, target, id" aria-label="filter connections"
                on:input=move |e| set_filter.set(event_target_value(&e))/>
            <label class="muted">"Sort "
                <select id="connections-sort" on:change=move |e| set_sort.set(event_target_value(&e))>
                    <option value="newest">"newest first"</option>
                    <option value="port">"port"</option>
                    <option value="traffic">"traffic"</option>
                </select>
            </label>
        </div>
        <maintenance::RebootBar/>
        <Pane state={conns} loading="Loading…" data={move |_, c: Connections| view! {
            <div class="toolbar">
                <span class="summary" id="connections-summary">{format!("{} tunnels, {} streams", c.tunnels.len(),
                    c.tunnels.iter().map(|t| t.streams.len()).sum::<usize>())}</span>
                <button class="plain" id="disconnect-all" on:click=move |_| disconnect(
                    Disconnect { all: Some(true), ..Default::default() }, "every tunnel".into())>"Disconnect all"</button>
                <button class="plain" id="drain" title="No new tunnels here; running streams go on" on:click=move |_| drain(true)>"Drain"</button>
                <button class="plain" id="undrain" on:click=move |_| drain(false)>"Undrain"</button>
            </div>
            <div class="charts">
                {move || {
                    // A line needs two points: the second push after the view opened.
                    let values: Vec<Option<u64>> = live.get().into_iter().map(Some).collect();
                    (values.len() >= 2).then(|| view! {
                        <charts::Chart id="live-chart" title="Open streams" span="last 2 min" values/>
                    })
                }}
                {move || trend.get().map(|t| view! {
                    <charts::Chart id="trend-chart" title="Gateway throughput" span="last 15 min" values=t.throughput/>
                })}
            </div>
            <div class="table-wrap">
            <table id="connections-table">
                <thead><tr><th>"Tunnel / stream"</th><th>"Port"</th><th>"Target"</th><th>"VM"</th><th>"State"</th>
                    <th>"Client"</th><th>"To target"</th><th>"To client"</th>
                    <th title="bytes per second since the last refresh: to target ↑, to client ↓">"Rate"</th>
                    <th>"Age"</th><th class="actions"></th></tr></thead>
                <tbody>
                    {move || {
                        let r = rates.get();
                        tables::tunnels(c.tunnels.clone(), &filter.get(), &sort.get()).into_iter()
                            .map(|t| {
                                let tunnel = r.tunnels.get(&t.id).copied();
                                let streams = t.streams.iter().map(|s| r.streams.get(&s.id).copied()).collect();
                                tunnel_rows(t, tunnel, streams, disconnect)
                            }).collect::<Vec<_>>()
                    }}
                </tbody>
            </table>
            </div>
        }}/>
    }
}

/// `↑ to target · ↓ to client`, per second.
fn rate_cell(r: Option<[u64; 2]>) -> Option<String> {
    use vdi_console_view::charts::rate;
    r.map(|[t, c]| format!("↑ {} · ↓ {}", rate(t), rate(c)))
}

/// A tunnel's row and its streams' rows, with their rates (bytes/s).
fn tunnel_rows(
    t: TunnelInfo,
    tunnel_rate: Option<[u64; 2]>,
    stream_rates: Vec<Option<[u64; 2]>>,
    disconnect: impl Fn(Disconnect, String) + Copy + 'static,
) -> impl IntoView {
    let tid = t.id.clone();
    let tunnel_rate = rate_cell(tunnel_rate);
    let stream_rates: Vec<Option<String>> = stream_rates.into_iter().map(rate_cell).collect();
    let short = t.id[..8.min(t.id.len())].to_string();
    let streams: Vec<StreamInfo> = t.streams.clone();
    view! {
        <tr class="tunnel-row" data-tunnel=t.id.clone()>
            <td>{short.clone()}</td>
            <td>{t.port}</td>
            <td>{format!("{}:{}", t.target_host, t.target_port)}</td>
            <td>{t.vm_id.clone().unwrap_or_default()}</td>
            <td>{format!("{:?}", t.state).to_lowercase()}</td>
            <td></td><td></td><td></td>
            <td class="rate tunnel-rate">{tunnel_rate}</td>
            <td>{human_age(t.created_at)}</td>
            <td class="actions"><button class="plain disconnect-tunnel" on:click=move |_| disconnect(
                Disconnect { tunnel_id: Some(tid.clone()), ..Default::default() }, format!("tunnel {short}"))>"Disconnect"</button></td>
        </tr>
        {streams.into_iter().zip(stream_rates).map(|(s, rate)| {
            let sid = s.id.clone();
            view! {
                <tr class="stream-row">
                    <td class="muted">{format!("  └ {}", s.id)}</td><td></td><td></td><td></td>
                    <td>{format!("{:?}", s.via).to_lowercase()}</td>
                    <td>{s.client_addr.clone()}</td>
                    <td>{vdi_console_view::bytes(s.bytes_to_target)}</td>
                    <td>{vdi_console_view::bytes(s.bytes_to_client)}</td>
                    <td class="rate stream-rate">{rate}</td>
                    <td>{human_age(s.started_at)}</td>
                    <td class="actions"><button class="plain" on:click=move |_| disconnect(
                        Disconnect { stream_id: Some(sid.clone()), ..Default::default() }, format!("stream {}", sid))>"Close"</button></td>
                </tr>
            }
        }).collect_view()}
    }
}

/// How long ago `since` was.
fn human_age(since: chrono::DateTime<chrono::Utc>) -> String {
    vdi_console_view::age(((js_sys::Date::now() as i64) - since.timestamp_millis()) / 1000)
}
