//! Line charts drawn on the board as inline SVG: no script, no library, a few KiB a chart,
//! readable on a phone over a slow village Wi-Fi.

use std::fmt::Write;

/// Chart size in SVG user units (scaled by the page to its width).
pub const WIDTH: u32 = 600;
/// Chart height.
pub const HEIGHT: u32 = 150;
/// Points drawn at most per line: a second's samples over an hour are thinned to this many, so
/// a chart stays a few KiB whatever the window.
pub const POINTS_MAX: usize = 600;

/// A horizontal guide line (a limit) at `value`, labelled.
pub struct Guide<'a> {
    /// Where, in the chart's unit.
    pub value: f64,
    /// Its label.
    pub label: &'a str,
}

/// One line of a chart: its label (in the legend), colour and points (time ms, value).
pub struct Line<'a> {
    /// Shown in the legend when a chart has more than one line.
    pub label: &'a str,
    /// An SVG colour.
    pub color: &'a str,
    /// (time ms, value), oldest first.
    pub series: &'a [(u64, f64)],
}

/// Draws `series` (time ms, value) as a polyline between `y_min` and `y_max` (values outside
/// are clamped to the edge), with guide lines and the unit's label. Returns the `<svg>`.
pub fn line_chart(
    title: &str,
    unit: &str,
    series: &[(u64, f64)],
    y_min: f64,
    y_max: f64,
    guides: &[Guide<'_>],
) -> String {
    let line = Line {
        label: title,
        color: "#1d5fa8",
        series,
    };
    lines_chart(title, unit, &[line], y_min, y_max, guides, POINTS_MAX)
}

/// As [`line_chart`], several lines on one time axis (the first line's), each thinned to
/// `points_max` points, with a legend when there is more than one.
pub fn lines_chart(
    title: &str,
    unit: &str,
    lines: &[Line<'_>],
    y_min: f64,
    y_max: f64,
    guides: &[Guide<'_>],
    points_max: usize,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = super::html::escape(title)
    );
    let _ = write!(
        out,
        r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="#fbfbf8" stroke="#ccc"/>"##
    );
    let span = (y_max - y_min).max(f64::EPSILON);
    let y = |v: f64| {
        let v = v.clamp(y_min, y_max);
        f64::from(HEIGHT) - (v - y_min) / span * f64::from(HEIGHT)
    };
    for g in guides {
        let gy = y(g.value);
        let _ = write!(
            out,
            r##"<line x1="0" x2="{WIDTH}" y1="{gy:.1}" y2="{gy:.1}" stroke="#c44" stroke-dasharray="4 3"/><text x="4" y="{ty:.1}" font-size="10" fill="#c44">{l}</text>"##,
            ty = (gy - 2.0).max(10.0),
            l = super::html::escape(g.label)
        );
    }
    let _ = write!(
        out,
        r##"<text x="{x}" y="12" font-size="10" fill="#555" text-anchor="end">{u}</text>"##,
        x = WIDTH - 4,
        u = super::html::escape(unit)
    );
    let axis = lines
        .first()
        .and_then(|l| Some((l.series.first()?.0, l.series.last()?.0)));
    match axis {
        Some((t0, t1)) => {
            let dt = t1.saturating_sub(t0).max(1) as f64;
            for l in lines {
                let Some(last) = l.series.last() else {
                    continue;
                };
                let step = l.series.len().div_ceil(points_max.max(1)).max(1);
                let _ = write!(
                    out,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points=""#,
                    super::html::escape(l.color)
                );
                for (t, v) in l.series.iter().step_by(step).chain(std::iter::once(last)) {
                    let x = t.saturating_sub(t0) as f64 / dt * f64::from(WIDTH);
                    let _ = write!(out, "{x:.1},{:.1} ", y(*v));
                }
                out.push_str(r#""/>"#);
            }
            if lines.len() > 1 {
                for (i, l) in lines.iter().enumerate() {
                    let _ = write!(
                        out,
                        r#"<text x="{x}" y="12" font-size="10" fill="{c}">{t}</text>"#,
                        x = 4 + i * 90,
                        c = super::html::escape(l.color),
                        t = super::html::escape(l.label)
                    );
                }
            }
        }
        None => {
            let _ = write!(
                out,
                r##"<text x="{x}" y="{y}" font-size="12" fill="#777" text-anchor="middle">no data yet</text>"##,
                x = WIDTH / 2,
                y = HEIGHT / 2
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_thinned_clamped_and_says_when_it_has_no_data() {
        let series: Vec<(u64, f64)> = (0..3_600).map(|i| (i * 1_000, 50.0)).collect();
        let svg = line_chart("Frequency", "Hz", &series, 48.0, 52.0, &[]);
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(points.split_whitespace().count() <= POINTS_MAX + 1);
        assert!(svg.len() < 16 * 1024, "{} bytes", svg.len());
        // Out of range values sit on the edge, not off the chart.
        let svg = line_chart("f", "Hz", &[(0, 99.0), (1, -5.0)], 48.0, 52.0, &[]);
        assert!(
            svg.contains("0.0,0.0 ") && svg.contains("600.0,150.0 "),
            "{svg}"
        );
        assert!(line_chart("<x>", "Hz", &[], 0.0, 1.0, &[]).contains("no data yet"));
        assert!(!line_chart("<x>", "Hz", &[], 0.0, 1.0, &[]).contains("<x>"));
    }
}
