//! A unit's journal over SSH: `journalctl -o json` parsed entry by entry,
//! followed live, and resumed from the last cursor after a dropped connection
//! (the gap is marked, and the lines written meanwhile still arrive).

use crate::error::Error;
use crate::ssh::{Session, SshError, shell_quote};
use russh::ChannelMsg;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vdi_wire::console::{JournalEntry, JournalEvent, JournalRequest};

/// The fields the console shows (journalctl adds the cursor and timestamps):
/// a fifth of a full entry to send over SSH and to parse.
const FIELDS: &str = "PRIORITY,MESSAGE,_PID,UNIT,OBJECT_SYSTEMD_UNIT,_SYSTEMD_UNIT";

/// What to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// One of [`vdi_wire::console::UNITS`].
    pub unit: &'static str,
    /// How many recent entries to start with.
    pub lines: u32,
    /// `journalctl --since/--until` values: `2026-11-28 10:00:00`, `-1h`, `today`.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only entries at this priority or more urgent (0..=7).
    pub priority: Option<u8>,
    /// Go on after this entry (resuming a stream).
    pub after_cursor: Option<String>,
}

/// Checks a since/until value before it reaches a command (it is quoted too).
fn valid_time(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 40
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || " :-+@.".contains(c))
}

/// The most lines a view starts with, and loads at once going back.
pub const MAX_LINES: u32 = 100_000;
pub const MAX_EARLIER: u32 = 10_000;

/// The longest journal line (one entry as JSON) the console reads. Without
/// `--all`, journalctl prints a field over 4096 bytes as `null`, so a real
/// entry with our few fields stays well below (4096 bytes escaped at most
/// six times, plus the cursor and timestamps); longer is not journalctl.
pub const MAX_LINE: usize = 64 * 1024;

/// The most bytes one read (no follow) takes in: [`MAX_EARLIER`] entries
/// are a few MiB in practice.
pub const MAX_READ: usize = 64 * 1024 * 1024;

/// A line longer than [`MAX_LINE`] (or an unfinished one grown past it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a journal line longer than {} KiB: not journalctl's output; the console stopped reading", MAX_LINE / 1024)]
pub struct LineTooLong;

impl Query {
    /// The query of a view's request: a known unit, at most [`MAX_LINES`],
    /// blank times left out, checked.
    pub fn of(r: &JournalRequest) -> Result<Query, Error> {
        let given = |t: &Option<String>| t.clone().filter(|t| !t.trim().is_empty());
        let q = Query {
            unit: crate::unit(&r.unit)?,
            lines: r.lines.min(MAX_LINES),
            priority: r.priority,
            since: given(&r.since),
            until: given(&r.until),
            after_cursor: None,
        };
        q.validate().map_err(|m| Error::invalid("journal", m))?;
        Ok(q)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("since", &self.since), ("until", &self.until)] {
            if let Some(v) = v
                && !valid_time(v)
            {
                return Err(format!(
                    "{name}: {v:?} is not a time journalctl understands (e.g. 2026-11-28 10:00:00, -1h, today)"
                ));
            }
        }
        if self.priority.is_some_and(|p| p > 7) {
            return Err("priority: 0 (emerg) ... 7 (debug)".into());
        }
        Ok(())
    }

    pub fn command(&self, follow: bool) -> String {
        let mut c = format!(
            "LC_ALL=C journalctl -u {}.service -o json --output-fields={FIELDS} --no-pager",
            self.unit
        );
        match &self.after_cursor {
            Some(cur) => c.push_str(&format!(" --after-cursor={}", shell_quote(cur))),
            None => c.push_str(&format!(" --lines={}", self.lines)),
        }
        if let Some(s) = &self.since {
            c.push_str(&format!(" --since={}", shell_quote(s)));
        }
        if let Some(u) = &self.until {
            c.push_str(&format!(" --until={}", shell_quote(u)));
        }
        if let Some(p) = self.priority {
            c.push_str(&format!(" --priority=0..{p}"));
        }
        if follow {
            c.push_str(" --follow");
        }
        c
    }
}

fn field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// One line of `journalctl -o json`.
pub fn parse_line(line: &str) -> Result<JournalEntry, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not journal JSON: {e}"))?;
    let cursor = field(&v, "__CURSOR").ok_or("an entry without __CURSOR")?;
    let ts_us = field(&v, "__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse().ok())
        .ok_or("an entry without __REALTIME_TIMESTAMP")?;
    // MESSAGE is a string, or an array of bytes when it is not UTF-8.
    let message = match v.get("MESSAGE") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(bytes)) => String::from_utf8_lossy(
            &bytes
                .iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect::<Vec<_>>(),
        )
        .into_owned(),
        _ => String::new(),
    };
    Ok(JournalEntry {
        cursor: cursor.to_string(),
        ts_us,
        priority: field(&v, "PRIORITY")
            .and_then(|p| p.parse().ok())
            .unwrap_or(6),
        // The unit an entry is about: systemd's own lines about it carry
        // UNIT=, lines a privileged program attached to it OBJECT_SYSTEMD_UNIT=,
        // the unit's own output _SYSTEMD_UNIT=.
        unit: field(&v, "UNIT")
            .or_else(|| field(&v, "OBJECT_SYSTEMD_UNIT"))
            .or_else(|| field(&v, "_SYSTEMD_UNIT"))
            .unwrap_or_default()
            .trim_end_matches(".service")
            .to_string(),
        pid: field(&v, "_PID").and_then(|p| p.parse().ok()),
        message,
    })
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes; keeps the
/// unfinished tail (bounded too).
#[derive(Default)]
pub struct Lines {
    tail: Vec<u8>,
}

impl Lines {
    pub fn push(&mut self, data: &[u8], mut each: impl FnMut(&str)) -> Result<(), LineTooLong> {
        self.tail.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.tail[start..].iter().position(|b| *b == b'\n') {
            if pos > MAX_LINE {
                return Err(LineTooLong);
            }
            let line = String::from_utf8_lossy(&self.tail[start..start + pos]);
            if !line.trim().is_empty() {
                each(&line);
            }
            start += pos + 1;
        }
        self.tail.drain(..start);
        if self.tail.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(())
    }
}

/// Reads entries once (no follow): the recent ones, or those before
/// `before_cursor` ("load earlier").
pub async fn read(
    s: &Session,
    q: &Query,
    before_cursor: Option<&str>,
) -> Result<Vec<JournalEntry>, Error> {
    q.validate().map_err(|e| Error::invalid("journal", e))?;
    let cmd = match before_cursor {
        // Newest first from the cursor back, then put in order again.
        Some(c) => format!(
            "LC_ALL=C journalctl -u {}.service -o json --output-fields={FIELDS} --no-pager --reverse --cursor={} --lines={}",
            q.unit,
            shell_quote(c),
            q.lines + 1
        ),
        None => q.command(false),
    };
    let out = s
        .exec_bounded(&cmd, Duration::from_secs(30), MAX_READ)
        .await?;
    if !out.success() {
        return Err(SshError::Protocol(format!("journalctl: {}", out.stderr_text().trim())).into());
    }
    let mut entries = Vec::new();
    let mut bad: Option<String> = None;
    let mut each = |l: &str| match parse_line(l) {
        Ok(e) => entries.push(e),
        Err(e) => {
            bad.get_or_insert(e);
        }
    };
    // Line by line, each bounded; the last may lack its line end.
    let mut lines = Lines::default();
    lines
        .push(&out.stdout, &mut each)
        .and_then(|()| lines.push(b"\n", &mut each))
        .map_err(|e| SshError::Protocol(e.to_string()))?;
    if let Some(e) = bad {
        return Err(SshError::Protocol(e).into());
    }
    if before_cursor.is_some() {
        entries.retain(|e| Some(e.cursor.as_str()) != before_cursor);
        entries.reverse();
    }
    Ok(entries)
}

/// Follows the journal until `stop` is cancelled or `sink` returns false.
/// Entries go out in batches (at most every 50 ms, or 1000 entries). When the
/// connection drops, a [`JournalEvent::Gap`] is sent, the session is asked
/// for again (`connect` reconnects), and reading resumes after the last
/// cursor; [`JournalEvent::Resumed`] follows. Errors that retrying cannot
/// mend (host keys, login, a gateway without SSH settings) end the stream.
pub async fn follow<C, Fut>(
    connect: C,
    mut q: Query,
    stop: CancellationToken,
    mut sink: impl FnMut(JournalEvent) -> bool,
) where
    C: Fn() -> Fut,
    Fut: Future<Output = Result<Arc<Session>, Error>>,
{
    if let Err(e) = q.validate() {
        sink(JournalEvent::Ended { reason: e });
        return;
    }
    let mut reconnects = 0u32;
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = tokio::select! {
            _ = stop.cancelled() => return,
            s = connect() => s,
        };
        let ch = match session {
            Ok(s) => s.stream(&q.command(true)).await.map_err(Error::from),
            Err(e) => Err(e),
        };
        let mut ch = match ch {
            Ok(ch) => {
                if reconnects > 0 && !sink(JournalEvent::Resumed { reconnects }) {
                    return;
                }
                backoff = Duration::from_millis(200);
                ch
            }
            Err(e) if !transient(&e) => {
                // Retrying cannot help; the admin must act.
                sink(JournalEvent::Ended {
                    reason: e.to_string(),
                });
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "journal: reconnecting");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut lines = Lines::default();
        let mut batch: Vec<JournalEntry> = Vec::new();
        let mut bad: Option<String> = None;
        let mut last_flush = Instant::now();
        let reason = loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => { let _ = ch.close().await; return; }
                m = tokio::time::timeout(Duration::from_millis(50), ch.wait()) => m,
            };
            match msg {
                Ok(Some(ChannelMsg::Data { data })) => {
                    if let Err(e) = lines.push(&data, |l| match parse_line(l) {
                        Ok(e) => batch.push(e),
                        Err(e) => bad = Some(e),
                    }) {
                        bad = Some(e.to_string());
                    }
                }
                Ok(Some(ChannelMsg::ExitStatus { exit_status })) => {
                    break format!("journalctl ended with status {exit_status}");
                }
                Ok(Some(ChannelMsg::ExtendedData { data, .. })) => {
                    tracing::debug!(stderr = %String::from_utf8_lossy(&data), "journalctl");
                }
                Ok(Some(_)) => {}
                Ok(None) => break "the SSH connection dropped".to_string(),
                Err(_) => {} // a tick: flush below
            }
            if let Some(e) = bad.take() {
                // Say so rather than dropping it without a word.
                sink(JournalEvent::Ended {
                    reason: format!("unreadable journal output: {e}"),
                });
                return;
            }
            if !batch.is_empty()
                && (batch.len() >= 1000 || last_flush.elapsed() >= Duration::from_millis(50))
            {
                q.after_cursor = batch.last().map(|e| e.cursor.clone());
                if !sink(JournalEvent::Entries {
                    entries: std::mem::take(&mut batch),
                }) {
                    let _ = ch.close().await;
                    return;
                }
                last_flush = Instant::now();
            }
        };
        if !batch.is_empty() {
            q.after_cursor = batch.last().map(|e| e.cursor.clone());
            if !sink(JournalEvent::Entries { entries: batch }) {
                return;
            }
        }
        let now_us = chrono::Utc::now().timestamp_micros();
        if !sink(JournalEvent::Gap {
            at_us: now_us,
            reason,
        }) {
            return;
        }
        reconnects += 1;
    }
}

/// A dropped or slow connection, which a reconnect may mend.
fn transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Ssh(SshError::Connect(..) | SshError::Timeout(..) | SshError::Protocol(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_checked_queries() {
        let r = JournalRequest {
            unit: "haproxy".into(),
            lines: 1_000_000,
            priority: Some(3),
            since: Some("  ".into()),
            until: Some("-1h".into()),
        };
        let q = Query::of(&r).unwrap();
        assert_eq!(
            (q.unit, q.lines, q.since, q.until.as_deref()),
            ("haproxy", MAX_LINES, None, Some("-1h"))
        );
        let code = |r: &JournalRequest| crate::Error::code(&Query::of(r).unwrap_err()).to_string();
        let sshd = JournalRequest {
            unit: "sshd".into(),
            ..r.clone()
        };
        assert_eq!(code(&sshd), "invalid_input");
        let bad_time = JournalRequest {
            since: Some("x'; reboot".into()),
            ..r
        };
        assert_eq!(code(&bad_time), "invalid_input");
    }

    #[test]
    fn only_connection_trouble_is_retried() {
        assert!(transient(&Error::Ssh(SshError::Timeout("h".into(), 10))));
        assert!(!transient(&Error::Ssh(SshError::Auth(
            "h".into(),
            "no".into()
        ))));
        assert!(!transient(&Error::invalid(
            "ssh_host",
            "no SSH host is set"
        )));
        assert!(!transient(&Error::MissingKey("SSH password")));
    }

    #[test]
    fn parses_entries() {
        let l = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1764300000123456","PRIORITY":"3","_SYSTEMD_UNIT":"haproxy.service","_PID":"77","MESSAGE":"Proxy started."}"#;
        let e = parse_line(l).unwrap();
        assert_eq!(
            e,
            JournalEntry {
                cursor: "s=1;i=2".into(),
                ts_us: 1764300000123456,
                priority: 3,
                unit: "haproxy".into(),
                pid: Some(77),
                message: "Proxy started.".into()
            }
        );
        let bytes = r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","MESSAGE":[104,105,255]}"#;
        assert_eq!(parse_line(bytes).unwrap().message, "hi\u{fffd}");
        assert_eq!(parse_line(bytes).unwrap().priority, 6);
        assert!(parse_line("-- No entries --").is_err());
        assert!(parse_line(r#"{"MESSAGE":"x"}"#).is_err());
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut l = Lines::default();
        let mut got = vec![];
        l.push(b"one\ntw", |s| got.push(s.to_string())).unwrap();
        l.push(b"o\n\nthree", |s| got.push(s.to_string())).unwrap();
        assert_eq!(got, ["one", "two"]);
        l.push(b"\n", |s| got.push(s.to_string())).unwrap();
        assert_eq!(got, ["one", "two", "three"]);
    }

    #[test]
    fn lines_are_bounded() {
        let mut got = 0;
        let mut l = Lines::default();
        let line = vec![b'x'; MAX_LINE];
        l.push(&line, |_| got += 1).unwrap();
        l.push(b"\n", |_| got += 1).unwrap();
        assert_eq!(got, 1, "a line of exactly MAX_LINE bytes is read");
        // One byte more, in one piece or trickled without a line end.
        let mut l = Lines::default();
        let long = [vec![b'x'; MAX_LINE + 1], b"\n".to_vec()].concat();
        assert_eq!(l.push(&long, |_| got += 1), Err(LineTooLong));
        let mut l = Lines::default();
        let mut r = Ok(());
        for _ in 0..=MAX_LINE / 4096 {
            r = l.push(&[b'y'; 4096], |_| got += 1);
            if r.is_err() {
                break;
            }
        }
        assert_eq!(
            r,
            Err(LineTooLong),
            "an endless line is refused, not buffered"
        );
        assert!(l.tail.len() <= MAX_LINE + 4096);
        assert_eq!(got, 1);
        assert!(LineTooLong.to_string().contains("64 KiB"));
    }

    #[test]
    fn commands_are_quoted_and_checked() {
        let q = Query {
            unit: "haproxy",
            lines: 200,
            since: Some("2026-11-28 10:00:00".into()),
            priority: Some(4),
            ..Default::default()
        };
        assert_eq!(
            q.command(true),
            format!(
                "LC_ALL=C journalctl -u haproxy.service -o json --output-fields={FIELDS} --no-pager --lines=200 --since='2026-11-28 10:00:00' --priority=0..4 --follow"
            )
        );
        let resumed = Query {
            after_cursor: Some("s=a;i='1".into()),
            ..q.clone()
        };
        assert!(
            resumed
                .command(true)
                .contains(r"--after-cursor='s=a;i='\''1'")
        );
        assert!(!resumed.command(true).contains("--lines"));
        let bad = Query {
            since: Some("x'; reboot".into()),
            ..q
        };
        assert!(bad.validate().unwrap_err().starts_with("since:"));
    }
}
