//! Sparklines and charts: SVG paths from `vdi_console_view::charts`, drawn
//! from the history the console keeps (the page never polls for it).

use leptos::prelude::*;
use vdi_console_view::charts;

/// A small line over its area; `label` is its accessible name and tooltip.
/// The values are a signal: a new sample (or, in a recycled table row,
/// another gateway) changes the paths, not the elements.
#[component]
pub fn Spark(
    #[prop(into)] values: Signal<Vec<Option<u64>>>,
    label: String,
    #[prop(default = 120.0)] w: f64,
    #[prop(default = 22.0)] h: f64,
    #[prop(default = "")] class: &'static str,
) -> impl IntoView {
    let line = move || values.with(|v| charts::line(v, w, h));
    let area = move || values.with(|v| charts::area(v, w, h));
    let points = move || values.with(|v| v.iter().flatten().count());
    let title = label.clone();
    view! {
        <svg class=format!("spark {class}") width=w height=h viewBox=format!("0 0 {w} {h}")
            role="img" aria-label=label data-points=points>
            <title>{title}</title>
            <path class="area" d=area></path>
            <path class="line" d=line></path>
        </svg>
    }
}

/// A wider chart with its title, the latest value and the peak.
#[component]
pub fn Chart(
    id: &'static str,
    title: &'static str,
    values: Vec<Option<u64>>,
    #[prop(default = "")] span: &'static str,
) -> impl IntoView {
    let now = values.iter().rev().flatten().next().copied();
    let peak = values.iter().flatten().max().copied();
    let label = format!(
        "{title}: now {}, peak {}",
        now.map(charts::rate).unwrap_or_else(|| "–".into()),
        peak.map(charts::rate).unwrap_or_else(|| "–".into())
    );
    view! {
        <figure class="chart" id=id>
            <figcaption>
                <span>{title}</span>
                <span class="muted">{span}</span>
                <span class="chart-now">{now.map(charts::rate)}</span>
                <span class="muted">{peak.map(|p| format!("peak {}", charts::rate(p)))}</span>
            </figcaption>
            <Spark values label w=560.0 h=64.0 class="wide"/>
        </figure>
    }
}
