//! The demo cluster's bar in the fleet view: where it is (the step while it
//! comes up) and the one button that fits (start, or stop).

use crate::api;
use crate::pane::Ctx;
use leptos::prelude::*;
use leptos::task::spawn_local;
use vdi_console_view::{ClusterAction, cluster_line};
use vdi_wire::console::{ClusterPhase, ClusterState};

fn phase_name(p: ClusterPhase) -> &'static str {
    match p {
        ClusterPhase::Off => "off",
        ClusterPhase::Starting => "starting",
        ClusterPhase::Up => "up",
        ClusterPhase::Stopping => "stopping",
        ClusterPhase::Failed => "failed",
    }
}

#[component]
pub fn ClusterBar(
    state: ReadSignal<ClusterState>,
    set: WriteSignal<ClusterState>,
) -> impl IntoView {
    let ctx = Ctx::get();
    let act = move |a: ClusterAction| {
        if a == ClusterAction::Stop
            && !window()
                .confirm_with_message(
                    "Take the demo cluster down? Its hosts, their fleet entries and the demo traffic go.",
                )
                .unwrap_or(false)
        {
            return;
        }
        spawn_local(async move {
            let r = match a {
                ClusterAction::Start => api::start_cluster().await,
                ClusterAction::Stop => {
                    set.update(|s| {
                        s.phase = ClusterPhase::Stopping;
                        s.detail = "taking the test bed down".into();
                    });
                    api::stop_cluster().await
                }
            };
            match r {
                Ok(s) => {
                    if a == ClusterAction::Stop {
                        ctx.say(Ok("Demo cluster stopped".into()));
                    }
                    set.set(s);
                }
                Err(e) => ctx.fail(e),
            }
        });
    };
    view! {
        <div class="cluster-bar" id="cluster" data-phase=move || phase_name(state.get().phase)>
            <strong>"Demo cluster "</strong>
            <span id="cluster-detail" class="muted">{move || cluster_line(&state.get()).0}</span>
            {move || cluster_line(&state.get()).1.map(|a| match a {
                ClusterAction::Start => view! {
                    <button class="action" id="cluster-start" on:click=move |_| act(a)>"Start demo cluster"</button>
                }.into_any(),
                ClusterAction::Stop => view! {
                    <button class="plain" id="cluster-stop" on:click=move |_| act(a)>"Stop"</button>
                }.into_any(),
            })}
        </div>
    }
}
