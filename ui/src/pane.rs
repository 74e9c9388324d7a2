//! What every view shares: the app context (the chosen gateway, the view,
//! the notice line), loading a view's data so that only the newest answer
//! counts, and the one pane for "no gateway / loading / error / data".

use crate::View;
use crate::hosts::SshError;
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::future::Future;
use vdi_wire::console::ConsoleError;

/// Provided once by the app; every view takes it with [`Ctx::get`].
#[derive(Clone, Copy)]
pub struct Ctx {
    /// The gateway the views show.
    pub selected: RwSignal<Option<i64>>,
    pub view: RwSignal<View>,
    /// The last action's result, in one line.
    pub notice: RwSignal<Option<Result<String, ConsoleError>>>,
}

impl Ctx {
    pub fn get() -> Ctx {
        expect_context()
    }

    pub fn say(&self, n: Result<String, ConsoleError>) {
        self.notice.set(Some(n));
    }

    pub fn fail(&self, e: ConsoleError) {
        self.say(Err(e));
    }

    /// With the fleet's gateways `ids`: a choice no longer in it is dropped,
    /// and with exactly one gateway, it is the choice.
    pub fn keep_or_pick(&self, ids: &[i64]) {
        let sel = self.selected.get_untracked();
        if sel.is_some_and(|id| !ids.contains(&id)) {
            self.selected.set(None);
        }
        if self.selected.get_untracked().is_none() && ids.len() == 1 {
            self.selected.set(Some(ids[0]));
        }
    }
}

/// A view's data: `None` while loading. Each load supersedes the previous
/// one: an answer that arrives after a newer load began (a quick switch of
/// gateway) is dropped, never shown.
pub struct Loader<T: Send + Sync + 'static> {
    pub state: RwSignal<Option<Result<T, ConsoleError>>>,
    generation: StoredValue<u64>,
}

impl<T: Send + Sync + 'static> Clone for Loader<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Send + Sync + 'static> Copy for Loader<T> {}

impl<T: Send + Sync + 'static> Loader<T> {
    pub fn new() -> Self {
        Self {
            state: RwSignal::new(None),
            generation: StoredValue::new(0),
        }
    }

    /// Shows "loading" and loads `answer`; `then` sees it first, if it is
    /// still the newest.
    pub fn load(
        &self,
        answer: impl Future<Output = Result<T, ConsoleError>> + 'static,
        then: impl FnOnce(&Result<T, ConsoleError>) + 'static,
    ) {
        self.generation.update_value(|g| *g += 1);
        let mine = self.generation.get_value();
        let (state, generation) = (self.state, self.generation);
        state.set(None);
        spawn_local(async move {
            let r = answer.await;
            if generation.get_value() == mine {
                then(&r);
                state.set(Some(r));
            }
        });
    }
}

/// The pane of a view about the chosen gateway: a hint without one,
/// `loading` until `state` is there, the error (with the host key prompt
/// when `retry` is given: an SSH view), else `data(id, value)`.
#[component]
pub fn Pane<T, V, F>(
    #[prop(into)] state: Signal<Option<Result<T, ConsoleError>>>,
    loading: &'static str,
    #[prop(optional)] retry: Option<Callback<()>>,
    data: F,
) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    V: IntoView + 'static,
    F: Fn(i64, T) -> V + Send + Sync + 'static,
{
    let ctx = Ctx::get();
    move || match (ctx.selected.get(), state.get()) {
        (None, _) => {
            view! { <p class="muted">"Choose a gateway in the fleet view."</p> }.into_any()
        }
        (Some(_), None) => view! { <p class="muted">{loading}</p> }.into_any(),
        (Some(id), Some(Err(e))) => match retry {
            Some(retry) => view! { <SshError e id retry/> }.into_any(),
            None => error_line(&e).into_any(),
        },
        (Some(id), Some(Ok(v))) => data(id, v).into_any(),
    }
}

/// An error in one line: its sentence and its code.
pub fn error_line(e: &ConsoleError) -> impl IntoView + use<> {
    view! { <p class="error" role="alert">{format!("{} ({})", e.message, e.code)}</p> }
}
