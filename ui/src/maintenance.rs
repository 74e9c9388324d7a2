//! The connections view's maintenance line: "reboot when empty or after T"
//! on the chosen gateway's host (over SSH), its state, and its cancel. The
//! plan runs on the host (`vdi-gateway-maintenance`), so closing the console
//! does not stop it.

use crate::api;
use crate::pane::Ctx;
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::time::Duration;
use vdi_wire::console::{ConsoleError, REBOOT_AFTER_MAX_SECS, RebootPlan};

fn now_secs() -> i64 {
    (js_sys::Date::now() / 1000.0) as i64
}

fn invalid(message: String) -> ConsoleError {
    ConsoleError {
        code: "invalid_input".into(),
        message,
        fields: vec![],
        detail: None,
    }
}

#[component]
pub fn RebootBar() -> impl IntoView {
    let ctx = Ctx::get();
    let plan = RwSignal::new(None::<Result<RebootPlan, ConsoleError>>);
    let refresh = move || {
        let Some(id) = ctx.selected.get_untracked() else {
            return;
        };
        spawn_local(async move {
            let r = api::reboot_plan(id).await;
            if ctx.selected.get_untracked() == Some(id) {
                plan.set(Some(r));
            }
        });
    };
    Effect::new(move |_| {
        ctx.selected.track();
        plan.set(None);
        refresh();
    });
    // A waiting plan is read again every 5 s (its last line is the drain's
    // count of what is still open).
    if let Ok(h) = set_interval_with_handle(
        move || {
            if matches!(plan.get_untracked(), Some(Ok(ref p)) if p.scheduled) {
                refresh();
            }
        },
        Duration::from_secs(5),
    ) {
        on_cleanup(move || h.clear());
    }
    let schedule = move |_| {
        let Some(id) = ctx.selected.get_untracked() else {
            return;
        };
        let max_min = REBOOT_AFTER_MAX_SECS / 60;
        let Ok(Some(answer)) = window().prompt_with_message_and_default(
            &format!(
                "Drain this gateway and reboot its host once no stream is left, or after how many minutes at the latest (0 to {max_min})? Running streams end at the reboot."
            ),
            "60",
        ) else {
            return;
        };
        let secs = match answer.trim().parse::<u64>() {
            Ok(m) if m <= max_min => m * 60,
            _ => {
                ctx.fail(invalid(format!(
                    "{answer:?}: give a number of minutes from 0 to {max_min}"
                )));
                return;
            }
        };
        spawn_local(async move {
            let r = api::plan_reboot(id, secs).await;
            ctx.say(
                r.as_ref()
                    .map(|p| vdi_console_view::reboot_plan_line(p, now_secs()))
                    .map_err(Clone::clone),
            );
            plan.set(Some(r));
        });
    };
    let cancel = move |_| {
        let Some(id) = ctx.selected.get_untracked() else {
            return;
        };
        spawn_local(async move {
            let r = api::cancel_reboot(id).await;
            ctx.say(
                r.as_ref()
                    .map(|_| {
                        "Reboot cancelled; the gateway stays drained until undrained".to_string()
                    })
                    .map_err(Clone::clone),
            );
            plan.set(Some(r));
        });
    };
    move || {
        ctx.selected.get().map(|_| view! {
        <div class="toolbar" id="maintenance">
            <button class="plain" id="plan-reboot"
                title="Drain, then reboot the host when no stream is left or at a bound you set"
                on:click=schedule>"Reboot when empty…"</button>
            {move || match plan.get() {
                None => view! { <span class="muted" id="reboot-plan">"Reboot plan: reading…"</span> }.into_any(),
                Some(Err(e)) => view! {
                    <span class="muted" id="reboot-plan">{format!("Reboot plan: {} ({})", e.message, e.code)}</span>
                }.into_any(),
                Some(Ok(p)) => {
                    let waiting = p.scheduled;
                    view! {
                        <span id="reboot-plan" class:warning=waiting>{vdi_console_view::reboot_plan_line(&p, now_secs())}</span>
                        {waiting.then(|| view! {
                            <button class="plain" id="cancel-reboot" on:click=cancel>"Cancel reboot"</button>
                        })}
                    }.into_any()
                }
            }}
        </div>
    })
    }
}
