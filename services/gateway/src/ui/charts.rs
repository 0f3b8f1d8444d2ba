//! Charts drawn on the server as SVG: a heatmap of score over the (fast,
//! slow) grid, line charts, bar charts. Each is an image with a title and
//! a description for screen readers; the numbers are also in tables beside.

use std::fmt::Write as _;

/// Escapes text for SVG/HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A colour from light (low) to dark blue (high) for `t` in 0..=1.
fn shade(t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let mix = |low: f64, high: f64| (low + (high - low) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(222.0, 8.0),
        mix(235.0, 48.0),
        mix(247.0, 107.0)
    )
}

/// One cell of the heatmap.
#[derive(Debug, Clone, Copy)]
pub struct ScoreCell {
    pub fast: u32,
    pub slow: u32,
    pub score: f64,
}

/// Score over the (fast, slow) grid: a filled cell per result, an empty one
/// per combination without a result yet.
pub fn heatmap(fast_periods: &[u32], slow_periods: &[u32], cells: &[ScoreCell]) -> String {
    const CELL: usize = 44;
    const LEFT: usize = 56;
    const TOP: usize = 12;
    const BOTTOM: usize = 44;
    let width = LEFT + CELL * fast_periods.len().max(1) + 12;
    let height = TOP + CELL * slow_periods.len().max(1) + BOTTOM;
    let (low, high) = cells.iter().fold((f64::MAX, f64::MIN), |(lo, hi), cell| {
        (lo.min(cell.score), hi.max(cell.score))
    });
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart heatmap" role="img" aria-labelledby="heatmap-title heatmap-desc" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title id="heatmap-title">Score by fast and slow period</title><desc id="heatmap-desc">{} of {} combinations have a score; darker is better.</desc>"#,
        cells.len(),
        fast_periods
            .iter()
            .map(|fast| slow_periods.iter().filter(|slow| fast < slow).count())
            .sum::<usize>()
    );
    for (row, slow) in slow_periods.iter().rev().enumerate() {
        let y = TOP + row * CELL;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" class="axis">{slow}</text>"#,
            LEFT - 6,
            y + CELL / 2 + 4
        );
        for (column, fast) in fast_periods.iter().enumerate() {
            if fast >= slow {
                continue;
            }
            let x = LEFT + column * CELL;
            match cells.iter().find(|c| c.fast == *fast && c.slow == *slow) {
                Some(cell) => {
                    let t = if high > low {
                        (cell.score - low) / (high - low)
                    } else {
                        1.0
                    };
                    let _ = write!(
                        svg,
                        r#"<rect class="cell filled" data-fast="{fast}" data-slow="{slow}" x="{x}" y="{y}" width="{}" height="{}" fill="{}"><title>fast {fast}, slow {slow}: score {:.3}</title></rect>"#,
                        CELL - 2,
                        CELL - 2,
                        shade(t),
                        cell.score
                    );
                }
                None => {
                    let _ = write!(
                        svg,
                        r##"<rect class="cell empty" data-fast="{fast}" data-slow="{slow}" x="{x}" y="{y}" width="{}" height="{}" fill="#f4f4f4" stroke="#767676"><title>fast {fast}, slow {slow}: no result</title></rect>"##,
                        CELL - 2,
                        CELL - 2
                    );
                }
            }
        }
    }
    let axis_y = TOP + CELL * slow_periods.len() + 16;
    for (column, fast) in fast_periods.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{axis_y}" text-anchor="middle" class="axis">{fast}</text>"#,
            LEFT + column * CELL + CELL / 2
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" class="axis-label">fast period →</text><text x="12" y="{}" class="axis-label" transform="rotate(-90 12 {})" text-anchor="middle">slow period →</text></svg>"#,
        LEFT + CELL * fast_periods.len() / 2,
        axis_y + 22,
        TOP + CELL * slow_periods.len() / 2,
        TOP + CELL * slow_periods.len() / 2
    );
    svg
}

/// Colours of the series of a chart, distinguishable and dark enough.
const SERIES: &[&str] = &["#1f5fa8", "#b23a00", "#2e7d32", "#6a3d9a", "#8a6d00"];

/// A line chart of several series over the same `labels` (x axis).
pub fn lines(title: &str, labels: &[String], series: &[(String, Vec<f64>)]) -> String {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 260.0;
    const LEFT: f64 = 48.0;
    const TOP: f64 = 16.0;
    const BOTTOM: f64 = 56.0;
    let plot_w = WIDTH - LEFT - 16.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let high = series
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let x = |i: usize| {
        if labels.len() <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (labels.len() - 1) as f64
        }
    };
    let y = |v: f64| TOP + plot_h - plot_h * v / high;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart lines" role="img" aria-label="{}" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        escape(title),
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#595959"/><text x="{}" y="{}" text-anchor="end" class="axis">{high:.0}</text><text x="{}" y="{}" text-anchor="end" class="axis">0</text>"##,
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h,
        LEFT - 6.0,
        TOP + 4.0,
        LEFT - 6.0,
        TOP + plot_h + 4.0
    );
    let every = labels.len().div_ceil(6).max(1);
    for (i, label) in labels.iter().enumerate().step_by(every) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" class="axis">{}</text>"#,
            x(i),
            TOP + plot_h + 16.0,
            escape(label)
        );
    }
    for (index, (name, values)) in series.iter().enumerate() {
        let colour = SERIES[index % SERIES.len()];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            escape(name),
            points.join(" ")
        );
        for (i, v) in values.iter().enumerate() {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {v}</title></circle>"#,
                x(i),
                y(*v),
                escape(name)
            );
        }
        let legend_x = LEFT + (index as f64) * 150.0;
        let _ = write!(
            svg,
            r#"<rect x="{legend_x}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}" class="legend">{}</text>"#,
            HEIGHT - 18.0,
            legend_x + 16.0,
            HEIGHT - 8.0,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A horizontal bar chart of `(label, value)`.
pub fn bars(title: &str, bars: &[(String, u64)]) -> String {
    const WIDTH: f64 = 480.0;
    const ROW: f64 = 28.0;
    const LEFT: f64 = 110.0;
    let height = ROW * bars.len().max(1) as f64 + 8.0;
    let high = bars.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart bars" role="img" aria-label="{}" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        escape(title),
        escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let width = (WIDTH - LEFT - 50.0) * (*value as f64) / high;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" class="axis">{}</text><rect class="bar" data-label="{}" x="{LEFT}" y="{y}" width="{width:.1}" height="{}" fill="{}"><title>{}: {value}</title></rect><text x="{:.1}" y="{}" class="axis">{value}</text>"#,
            LEFT - 8.0,
            y + ROW / 2.0 + 2.0,
            escape(label),
            escape(label),
            ROW - 8.0,
            SERIES[0],
            escape(label),
            LEFT + width + 6.0,
            y + ROW / 2.0 + 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heatmap_fills_one_cell_per_result_and_leaves_the_rest_empty() {
        let cells = [
            ScoreCell {
                fast: 10,
                slow: 20,
                score: 1.0,
            },
            ScoreCell {
                fast: 15,
                slow: 20,
                score: 2.0,
            },
        ];
        let svg = heatmap(&[10, 15, 20], &[20, 25], &cells);
        assert_eq!(svg.matches("cell filled").count(), 2);
        // (10,25), (15,25), (20,25); (20,20) is not a combination.
        assert_eq!(svg.matches("cell empty").count(), 3);
    }

    #[test]
    fn labels_are_escaped() {
        let svg = bars("<b>", &[("a<script>".into(), 3)]);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("a&lt;script&gt;"));
    }
}
