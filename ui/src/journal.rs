//! A unit's journal, followed live through a Channel into a virtualised list:
//! only the rows in sight are in the DOM, so 100 000 kept lines and 10 000
//! new lines a second stay cheap. Follow/pause, priority filter, search with
//! highlight, since/until, load earlier, copy and export. Lines are never
//! dropped silently: past the limit the oldest go, and the view says how many.

use crate::api;
use crate::hosts::SshError;
use crate::pane::Ctx;
use leptos::prelude::*;
use leptos::task::spawn_local;
use vdi_console_view::journal::{KEEP, Row, Store};
use vdi_console_view::split_matches;
use vdi_wire::console::{ConsoleError, JournalEntry, JournalEvent, JournalRequest, UNITS};

const ROW_H: f64 = 20.0;

fn time_of(us: i64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(us as f64 / 1000.0));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        d.get_full_year(),
        d.get_month() + 1,
        d.get_date(),
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds(),
        d.get_milliseconds()
    )
}

const PRIORITY: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

fn line_text(r: &Row) -> String {
    match r {
        Row::Entry(e) => format!(
            "{} {} [{}] {}",
            time_of(e.ts_us),
            PRIORITY.get(e.priority as usize).unwrap_or(&"?"),
            e.pid.map(|p| p.to_string()).unwrap_or_default(),
            e.message
        ),
        Row::Mark(m) => format!("-- {m} --"),
    }
}

/// The message with every match of `needle` in a `<mark>`.
fn highlighted(message: &str, needle: &str) -> AnyView {
    split_matches(message, needle)
        .into_iter()
        .map(|(part, hit)| {
            if hit {
                view! { <mark>{part.to_string()}</mark> }.into_any()
            } else {
                part.to_string().into_any()
            }
        })
        .collect_view()
        .into_any()
}

#[component]
pub fn JournalView() -> impl IntoView {
    let ctx = Ctx::get();
    let selected = ctx.selected;
    let store = StoredValue::new(Store::new());
    // Bumped on every change of the store: the list re-renders its window.
    let (version, set_version) = signal(0u64);
    let (unit, set_unit) = signal("vdi-gateway".to_string());
    let (priority, set_priority) = signal(7u8);
    let (search, set_search) = signal(String::new());
    let (since, set_since) = signal(String::new());
    let (until, set_until) = signal(String::new());
    let (follow, set_follow) = signal(true);
    let (state, set_state) = signal(String::new());
    let (error, set_error) = signal(None::<ConsoleError>);
    let (scroll_top, set_scroll_top) = signal(0.0f64);
    let (height, set_height) = signal(480.0f64);
    let list = NodeRef::<leptos::html::Div>::new();

    // Bumped to follow again (unit, times, retry); the effect below owns
    // the watch, so it ends when it runs again or the view goes.
    let (restart, set_restart) = signal(0u32);
    let start = move || set_restart.update(|n| *n += 1);
    Effect::new(move |_| {
        restart.track();
        let Some(id) = selected.get() else {
            return;
        };
        store.update_value(Store::clear);
        set_version.update(|v| *v += 1);
        set_error.set(None);
        set_state.set("connecting…".into());
        let request = JournalRequest {
            unit: unit.get_untracked(),
            lines: 1000,
            priority: None,
            since: Some(since.get_untracked()),
            until: Some(until.get_untracked()),
        };
        let on = move |e| {
            match e {
                JournalEvent::Entries { entries } => {
                    set_state.set("following".into());
                    store.update_value(|s| entries.into_iter().for_each(|e| s.push(Row::Entry(e))));
                }
                JournalEvent::Gap { at_us, reason } => {
                    set_state.set(format!("reconnecting ({reason})"));
                    store.update_value(|s| {
                        s.push(Row::Mark(format!(
                            "{}: {reason}; lines written meanwhile follow once reconnected",
                            time_of(at_us)
                        )))
                    });
                }
                JournalEvent::Resumed { reconnects } => {
                    set_state.set(format!("following (reconnected {reconnects}×)"));
                    store.update_value(|s| s.push(Row::Mark("reconnected".into())));
                }
                JournalEvent::Ended { reason } => {
                    set_state.set(format!("stopped: {reason}"));
                    store.update_value(|s| s.push(Row::Mark(format!("stopped: {reason}"))));
                }
            }
            set_version.update(|v| *v += 1);
        };
        api::watch_journal(id, &request, on, move |e| {
            set_state.set(String::new());
            set_error.set(Some(e));
        });
    });
    // Filters apply to what is kept, at once.
    Effect::new(move |_| {
        let (p, t) = (priority.get(), search.get().to_lowercase());
        store.update_value(|s| {
            s.priority = p;
            s.text = t;
            s.refilter();
        });
        set_version.update(|v| *v += 1);
    });
    // Following: keep the newest line in sight.
    Effect::new(move |_| {
        version.get();
        if follow.get_untracked()
            && let Some(el) = list.get()
        {
            el.set_scroll_top(el.scroll_height());
        }
    });
    let shown_len = move || {
        version.get();
        store.with_value(|s| s.shown.len())
    };
    let window_rows = move || {
        version.get();
        let top = scroll_top.get();
        let h = height.get();
        store.with_value(|s| {
            let first = (top / ROW_H).floor().max(0.0) as usize;
            let count = (h / ROW_H).ceil() as usize + 2;
            let needle = s.text.clone();
            (first..(first + count).min(s.shown.len()))
                .filter_map(|i| {
                    let seq = s.shown[i];
                    s.row(seq).cloned().map(|r| (i, r))
                })
                .map(|(i, r)| {
                    let top = format!("top:{}px", i as f64 * ROW_H);
                    match r {
                        Row::Entry(e) => view! {
                            <div class="jrow" style=top data-priority=e.priority>
                                <span class="jtime">{time_of(e.ts_us)}</span>
                                <span class=format!("jprio p{}", e.priority)>{PRIORITY.get(e.priority as usize).copied().unwrap_or("?")}</span>
                                <span class="jmsg">{highlighted(&e.message, &needle)}</span>
                            </div>
                        }.into_any(),
                        Row::Mark(m) => view! { <div class="jrow jmark" style=top>{format!("— {m} —")}</div> }.into_any(),
                    }
                })
                .collect_view()
        })
    };
    let visible_text = move || {
        store.with_value(|s| {
            s.shown
                .iter()
                .filter_map(|q| s.row(*q))
                .map(line_text)
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    let copy = move |_| {
        let text = visible_text();
        let n = text.lines().count();
        let _ = window().navigator().clipboard().write_text(&text);
        ctx.say(Ok(format!("Copied {n} lines")));
    };
    let export = move |_| {
        let json = store.with_value(|s| {
            let entries: Vec<&JournalEntry> = s
                .shown
                .iter()
                .filter_map(|q| match s.row(*q) {
                    Some(Row::Entry(e)) => Some(e),
                    _ => None,
                })
                .collect();
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        });
        crate::save_file(
            &format!("{}-journal.json", unit.get_untracked()),
            "application/json",
            &json,
        );
    };
    let earlier = move |_| {
        let (Some(id), Some(cursor)) = (
            selected.get_untracked(),
            store.with_value(|s| s.first_cursor()),
        ) else {
            return;
        };
        let u = unit.get_untracked();
        spawn_local(async move {
            match api::journal_earlier(id, &u, &cursor, 1000).await {
                Ok(older) => {
                    let n = older.len();
                    store.update_value(|s| s.prepend(older));
                    set_follow.set(false);
                    set_version.update(|v| *v += 1);
                    ctx.say(Ok(format!("Loaded {n} earlier lines")));
                }
                Err(e) => ctx.fail(e),
            }
        });
    };
    let retry = Callback::new(move |()| start());
    view! {
        <div class="toolbar">
            <select id="journal-unit" aria-label="unit" on:change=move |e| { set_unit.set(event_target_value(&e)); start(); }>
                {UNITS.iter().map(|u| view! { <option value=*u>{*u}</option> }).collect_view()}
            </select>
            <select id="journal-priority" aria-label="priority" on:change=move |e| set_priority.set(event_target_value(&e).parse().unwrap_or(7))>
                {(0..8u8).rev().map(|p| view! { <option value=p.to_string()>{format!("≤ {}", PRIORITY[p as usize])}</option> }).collect_view()}
            </select>
            <input id="journal-search" placeholder="Search" aria-label="search" on:input=move |e| set_search.set(event_target_value(&e))/>
            <input id="journal-since" placeholder="since (e.g. -1h)" size="14" on:change=move |e| set_since.set(event_target_value(&e))/>
            <input id="journal-until" placeholder="until" size="14" on:change=move |e| set_until.set(event_target_value(&e))/>
            <button class="plain" id="journal-apply" on:click=move |_| start()>"Apply"</button>
            <button class="plain" id="journal-follow" aria-pressed=move || follow.get().to_string()
                on:click=move |_| set_follow.update(|f| *f = !*f)>{move || if follow.get() { "Pause" } else { "Follow" }}</button>
            <button class="plain" id="journal-earlier" on:click=earlier>"Load earlier"</button>
            <button class="plain" id="journal-copy" on:click=copy>"Copy"</button>
            <button class="plain" id="journal-export" on:click=export>"Export"</button>
        </div>
        <div class="summary" id="journal-status">{move || {
            let n = shown_len();
            let (all, evicted) = store.with_value(|s| (s.rows.len(), s.evicted));
            let dropped = if evicted > 0 { format!(" · {evicted} older lines let go (the view keeps {KEEP})") } else { String::new() };
            format!("{} · {n} of {all} lines shown{dropped}", state.get())
        }}</div>
        {move || error.get().map(|e| selected.get().map(|id| view! { <SshError e id retry/> }))}
        <div class="jlist" id="journal-list" node_ref=list
            on:scroll=move |_| {
                if let Some(el) = list.get() {
                    set_scroll_top.set(el.scroll_top() as f64);
                    set_height.set(el.client_height() as f64);
                    // Scrolling up pauses following; back at the bottom resumes it.
                    let at_bottom = el.scroll_top() + el.client_height() >= el.scroll_height() - 2;
                    if follow.get_untracked() != at_bottom {
                        set_follow.set(at_bottom);
                    }
                }
            }>
            <div class="jspace" style=move || format!("height:{}px", shown_len() as f64 * ROW_H)>
                {window_rows}
            </div>
        </div>
    }
}
