//! HAProxy and Keepalived configuration of a host: the file as it is, its
//! drift from what the gateway would write (a diff), and the tool's check.

use crate::api;
use crate::pane::{Ctx, Loader, Pane};
use leptos::prelude::*;
use vdi_console_view::{ConfigLine, config_line, diff_class};
use vdi_wire::console::ConfigPreview;

/// Light highlighting: comments, section headers, the first word of a line.
fn highlight(text: &str) -> AnyView {
    text.lines()
        .map(|l| {
            let line = match config_line(l) {
                ConfigLine::Comment => view! { <span class="c-comment">{l.to_string()}</span> }.into_any(),
                ConfigLine::Section => view! { <span class="c-section">{l.to_string()}</span> }.into_any(),
                ConfigLine::Setting(indent, word, rest) => view! {
                    {indent.to_string()}<span class="c-key">{word.to_string()}</span>{rest.to_string()}
                }
                .into_any(),
            };
            view! { {line}"\n" }
        })
        .collect_view()
        .into_any()
}

fn diff_lines(diff: &str) -> AnyView {
    diff.lines()
        .map(|l| view! { <span class=diff_class(l)>{l.to_string()}</span>"\n" })
        .collect_view()
        .into_any()
}

#[component]
pub fn ConfigView() -> impl IntoView {
    let selected = Ctx::get().selected;
    let (which, set_which) = signal("haproxy".to_string());
    let preview = Loader::<ConfigPreview>::new();
    let load = move || {
        if let Some(id) = selected.get_untracked() {
            let w = which.get_untracked();
            preview.load(async move { api::config_preview(id, &w).await }, |_| {});
        }
    };
    Effect::new(move |_| {
        if selected.get().is_some() {
            which.get();
            load();
        }
    });
    let retry = Callback::new(move |()| load());
    view! {
        <div class="toolbar">
            <select id="config-which" on:change=move |e| set_which.set(event_target_value(&e))>
                <option value="haproxy">"HAProxy"</option>
                <option value="keepalived">"Keepalived"</option>
            </select>
            <button class="plain" id="config-reload" on:click=move |_| load()>"Read again"</button>
        </div>
        <Pane state={preview.state} loading="Reading over SSH…" retry data={move |_, p: ConfigPreview| view! {
                <p class="summary" id="config-summary">
                    <code>{p.path.clone()}</code>" · "
                    {if !p.managed { view! { <span class="muted" id="config-drift">"not managed by the gateway (ha_managed is false); the diff shows what it would write"</span> }.into_any() }
                     else if p.drift { view! { <span class="error" id="config-drift">"differs from what the gateway would write (hand edit or drift)"</span> }.into_any() }
                     else { view! { <span id="config-drift">"as the gateway wrote it"</span> }.into_any() }}
                    " · "
                    {if p.check_ok { view! { <span id="config-check">"check passed"</span> }.into_any() }
                     else { view! { <span class="error" id="config-check">"check FAILED"</span> }.into_any() }}
                </p>
                {p.read_error.clone().map(|e| view! { <p class="error">{format!("cannot read the file: {e}")}</p> })}
                {p.render_error.clone().map(|e| view! { <p class="error">{format!("the gateway cannot render it: {e}")}</p> })}
                {(!p.check_ok || !p.check_output.trim().is_empty()).then(|| view! { <pre class="check" id="config-check-output">{p.check_output.clone()}</pre> })}
                {(!p.diff.is_empty()).then(|| view! { <h3>"Diff: rendered → on the host"</h3><pre class="code" id="config-diff">{diff_lines(&p.diff)}</pre> })}
                <h3>"On the host"</h3>
                <pre class="code" id="config-file">{highlight(p.on_host.as_deref().unwrap_or(""))}</pre>
            }}/>
    }
}
