//! tracing output: one line per event. Under systemd (stderr connected to the
//! journal) each line starts with a `<N>` syslog priority, so
//! `journalctl -p warning -u vdi-gateway` works, and the timestamp is left to
//! journald.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct Priority<F>(F);

/// The syslog priority journald files an event under.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(w, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, w, event)
    }
}

pub fn init() {
    let filter =
        EnvFilter::try_from_env("VDI_GATEWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journald);
    if journald {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false);
        builder.event_format(Priority(format)).init();
    } else {
        builder.init();
    }
}
