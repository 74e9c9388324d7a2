//! The journal view's store: everything received (at most [`KEEP`] rows,
//! the oldest let go and counted), and the rows the filter lets through.

use std::collections::VecDeque;
use vdi_wire::console::JournalEntry;

/// Lines kept in memory.
pub const KEEP: usize = 100_000;

#[derive(Clone, Debug)]
pub enum Row {
    Entry(JournalEntry),
    /// A gap or a note, shown across the list.
    Mark(String),
}

/// Everything received, plus the indexes the filter lets through.
#[derive(Default)]
pub struct Store {
    pub rows: VecDeque<(u64, Row)>,
    pub next: u64,
    /// Sequence numbers of rows matching the filter, ascending.
    pub shown: VecDeque<u64>,
    pub evicted: u64,
    pub priority: u8,
    /// Lowercase.
    pub text: String,
}

impl Store {
    pub fn matches(&self, r: &Row) -> bool {
        match r {
            Row::Mark(_) => true,
            Row::Entry(e) => {
                e.priority <= self.priority
                    && (self.text.is_empty() || e.message.to_lowercase().contains(&self.text))
            }
        }
    }

    pub fn push(&mut self, r: Row) {
        let seq = self.next;
        self.next += 1;
        if self.matches(&r) {
            self.shown.push_back(seq);
        }
        self.rows.push_back((seq, r));
        while self.rows.len() > KEEP {
            let (gone, _) = self.rows.pop_front().expect("not empty");
            self.evicted += 1;
            while self.shown.front().is_some_and(|s| *s <= gone) {
                self.shown.pop_front();
            }
        }
    }

    /// Older entries go before everything there is.
    pub fn prepend(&mut self, older: Vec<JournalEntry>) {
        let first = self.rows.front().map(|r| r.0).unwrap_or(self.next);
        let n = older.len() as u64;
        // Older rows take the sequence numbers below the first (numbering
        // starts at 2^40, so there is room).
        let base = first.saturating_sub(n);
        for (i, e) in older.into_iter().enumerate().rev() {
            self.rows.push_front((base + i as u64, Row::Entry(e)));
        }
        self.refilter();
    }

    pub fn refilter(&mut self) {
        self.shown = self
            .rows
            .iter()
            .filter(|(_, r)| self.matches(r))
            .map(|(s, _)| *s)
            .collect();
    }

    pub fn row(&self, seq: u64) -> Option<&Row> {
        let first = self.rows.front()?.0;
        self.rows
            .get(seq.checked_sub(first)? as usize)
            .map(|(_, r)| r)
    }

    pub fn first_cursor(&self) -> Option<String> {
        self.rows.iter().find_map(|(_, r)| match r {
            Row::Entry(e) => Some(e.cursor.clone()),
            Row::Mark(_) => None,
        })
    }
}

impl Store {
    /// An empty store showing every priority; numbering starts at 2^40 so
    /// earlier entries can be put before the first.
    pub fn new() -> Self {
        Store {
            priority: 7,
            next: 1 << 40,
            ..Default::default()
        }
    }

    /// Forgets everything (a new stream).
    pub fn clear(&mut self) {
        self.rows.clear();
        self.shown.clear();
        self.evicted = 0;
    }

    /// The shown rows, in order.
    pub fn shown_rows(&self) -> impl Iterator<Item = &Row> {
        self.shown.iter().filter_map(|q| self.row(*q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64, priority: u8, message: &str) -> JournalEntry {
        JournalEntry {
            cursor: format!("c{n}"),
            ts_us: n as i64,
            priority,
            unit: "haproxy".into(),
            pid: None,
            message: message.into(),
        }
    }

    fn messages(s: &Store) -> Vec<String> {
        s.shown_rows()
            .map(|r| match r {
                Row::Entry(e) => e.message.clone(),
                Row::Mark(m) => format!("-- {m}"),
            })
            .collect()
    }

    #[test]
    fn filters_marks_and_earlier_entries() {
        let mut s = Store::new();
        s.push(Row::Entry(entry(1, 6, "Proxy started")));
        s.push(Row::Entry(entry(2, 3, "backend DOWN")));
        s.push(Row::Mark("reconnected".into()));
        s.priority = 4;
        s.refilter();
        assert_eq!(messages(&s), ["backend DOWN", "-- reconnected"]);
        s.priority = 7;
        s.text = "proxy".into();
        s.refilter();
        assert_eq!(messages(&s), ["Proxy started", "-- reconnected"]);
        s.push(Row::Entry(entry(3, 6, "proxy reloaded")));
        assert_eq!(messages(&s).len(), 3, "new rows are filtered as they come");
        s.text.clear();
        s.prepend(vec![entry(0, 6, "older"), entry(0, 6, "old")]);
        assert_eq!(messages(&s)[..3], ["older", "old", "Proxy started"]);
        assert_eq!(s.first_cursor().as_deref(), Some("c0"));
        s.clear();
        assert_eq!(
            (s.rows.len(), s.shown.len(), s.first_cursor()),
            (0, 0, None)
        );
    }

    #[test]
    fn the_oldest_go_past_the_limit_and_are_counted() {
        let mut s = Store::new();
        for n in 0..(KEEP as u64 + 5) {
            s.push(Row::Entry(entry(n, 6, "x")));
        }
        assert_eq!((s.rows.len(), s.shown.len(), s.evicted), (KEEP, KEEP, 5));
        assert_eq!(s.first_cursor().as_deref(), Some("c5"));
        assert!(
            matches!(s.row(*s.shown.front().unwrap()), Some(Row::Entry(e)) if e.cursor == "c5")
        );
    }
}
