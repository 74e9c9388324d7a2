//! Charts as SVG drawn from the data: a sparkline's path and the area under
//! it, in a `w` × `h` box with y = 0 at the bottom. A gap in the data
//! (`None`: no poll answered) breaks the line rather than inventing values.

/// The scale's top: the largest value, at least 1 (an all-zero series lies
/// flat on the bottom, not in the middle).
pub fn top(values: &[Option<u64>]) -> u64 {
    values.iter().flatten().copied().max().unwrap_or(0).max(1)
}

fn points(values: &[Option<u64>], w: f64, h: f64, top: u64) -> Vec<Option<(f64, f64)>> {
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.map(|v| {
                let y = h - h * (v.min(top) as f64 / top as f64);
                (i as f64 * step, y)
            })
        })
        .collect()
}

/// The runs of consecutive points, split at the gaps.
fn runs(pts: &[Option<(f64, f64)>]) -> Vec<Vec<(f64, f64)>> {
    pts.split(Option::is_none)
        .filter(|r| !r.is_empty())
        .map(|r| r.iter().flatten().copied().collect())
        .collect()
}

/// The line (`<path d=…>`), one `M … L …` run per stretch without a gap; a
/// lone point is drawn as a short flat dash so it shows.
pub fn line(values: &[Option<u64>], w: f64, h: f64) -> String {
    let top = top(values);
    let mut d = String::new();
    for run in runs(&points(values, w, h, top)) {
        let (x0, y0) = run[0];
        d.push_str(&format!("M{x0:.1},{y0:.1}"));
        if run.len() == 1 {
            d.push_str(&format!(
                "h{:.1}",
                (w / values.len().max(1) as f64).max(1.0)
            ));
        }
        for (x, y) in &run[1..] {
            d.push_str(&format!("L{x:.1},{y:.1}"));
        }
    }
    d
}

/// The area under the line, closed down to the bottom, run by run.
pub fn area(values: &[Option<u64>], w: f64, h: f64) -> String {
    let top = top(values);
    let mut d = String::new();
    for run in runs(&points(values, w, h, top)) {
        if run.len() < 2 {
            continue;
        }
        let (x0, _) = run[0];
        let (xn, _) = run[run.len() - 1];
        d.push_str(&format!("M{x0:.1},{h:.1}"));
        for (x, y) in &run {
            d.push_str(&format!("L{x:.1},{y:.1}"));
        }
        d.push_str(&format!("L{xn:.1},{h:.1}Z"));
    }
    d
}

/// A rate in bytes per second, decimal units as network tools show them:
/// `0 B/s`, `850 B/s`, `12.5 kB/s`, `1.2 MB/s`, `3.4 GB/s`.
pub fn rate(bps: u64) -> String {
    const UNITS: [&str; 4] = ["kB/s", "MB/s", "GB/s", "TB/s"];
    if bps < 1000 {
        return format!("{bps} B/s");
    }
    let mut v = bps as f64 / 1000.0;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_scaled_to_its_top_and_broken_at_gaps() {
        let v = [Some(0), Some(5), Some(10), None, Some(10), Some(0)];
        assert_eq!(top(&v), 10);
        assert_eq!(
            line(&v, 50.0, 20.0),
            "M0.0,20.0L10.0,10.0L20.0,0.0M40.0,0.0L50.0,20.0"
        );
        assert_eq!(
            area(&v, 50.0, 20.0),
            "M0.0,20.0L0.0,20.0L10.0,10.0L20.0,0.0L20.0,20.0ZM40.0,20.0L40.0,0.0L50.0,20.0L50.0,20.0Z"
        );
    }

    #[test]
    fn flat_lone_and_empty_series() {
        // All zero: on the bottom, not a division by zero.
        assert_eq!(line(&[Some(0), Some(0)], 10.0, 4.0), "M0.0,4.0L10.0,4.0");
        // A lone point between gaps still shows, as a dash.
        assert_eq!(
            line(&[None, Some(3), None, None], 40.0, 4.0),
            "M13.3,0.0h10.0"
        );
        assert_eq!(area(&[None, Some(3), None], 40.0, 4.0), "");
        assert_eq!(line(&[None; 5], 40.0, 4.0), "");
        assert_eq!(line(&[], 40.0, 4.0), "");
    }

    #[test]
    fn rates_read_like_network_tools() {
        assert_eq!(rate(0), "0 B/s");
        assert_eq!(rate(999), "999 B/s");
        assert_eq!(rate(12_500), "12.5 kB/s");
        assert_eq!(rate(1_234_567), "1.2 MB/s");
        assert_eq!(rate(250_000_000), "250 MB/s");
        assert_eq!(rate(3_400_000_000), "3.4 GB/s");
    }
}
