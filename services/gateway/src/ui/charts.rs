//! Charts drawn on the server as SVG: the heatmap of score over the
//! (fast, slow) grid, line charts of daily metrics and stacked columns of
//! counts per day. Each is an image with a title and a description for
//! screen readers; the numbers are also in tables beside.

use std::fmt::Write as _;

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

/// Colours for series, each at least 3:1 against white (WCAG's non-text
/// contrast), told apart by their legend's names as well.
const PALETTE: [&str; 4] = ["#0b5cad", "#b3541e", "#2e7d32", "#6a3d9a"];

/// A named line or stack of a chart; `None` is a day without a value.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// A round number at or above `high` for the top of an axis.
fn axis_top(high: f64) -> f64 {
    if !high.is_finite() || high <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(high.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|top| *top >= high)
        .unwrap_or(10.0 * magnitude)
}

/// The top of an axis of counts: at least 4, so that its gridlines fall
/// on whole numbers.
fn count_axis_top(high: f64) -> f64 {
    axis_top(high).max(4.0)
}

fn number_label(value: f64, percent: bool) -> String {
    if percent {
        format!("{:.0} %", value * 100.0)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// The frame shared by the charts over days: the SVG's head with its
/// accessible name, the legend, the value axis and the day labels. Returns
/// the SVG so far and how to place a value and a day.
struct DayFrame {
    svg: String,
    top: f64,
    plot_height: f64,
    left: f64,
    step: f64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 280.0;

impl DayFrame {
    fn new(
        id: &str,
        title: &str,
        description: &str,
        days: &[String],
        series: &[Series],
        top_value: f64,
        percent: bool,
    ) -> Self {
        let (left, top, bottom) = (56.0, 36.0, 40.0);
        let plot_height = HEIGHT - top - bottom;
        let step = (WIDTH - left - 16.0) / days.len().max(1) as f64;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" id="{id}" role="img" aria-labelledby="{id}-title {id}-desc" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
            escape(title),
            escape(description)
        );
        let mut x = left;
        for (index, one) in series.iter().enumerate() {
            let colour = PALETTE[index % PALETTE.len()];
            let _ = write!(
                svg,
                r#"<rect x="{x}" y="8" width="12" height="12" fill="{colour}"/><text x="{}" y="18" class="legend">{}</text>"#,
                x + 16.0,
                escape(&one.name)
            );
            x += 28.0 + 7.5 * one.name.chars().count() as f64;
        }
        // Gridlines at whole steps: quarters of 4, 20, 100 or 1 (100 %),
        // fifths of 5, 10, 25 or 50.
        let ticks = if percent || (top_value / 4.0).fract() == 0.0 {
            4
        } else {
            5
        };
        for tick in 0..=ticks {
            let value = top_value * f64::from(tick) / f64::from(ticks);
            let y = top + plot_height * (1.0 - f64::from(tick) / f64::from(ticks));
            let _ = write!(
                svg,
                r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#d0d0d0"/><text x="{}" y="{}" text-anchor="end" class="axis">{}</text>"##,
                WIDTH - 16.0,
                left - 6.0,
                y + 4.0,
                number_label(value, percent)
            );
        }
        // Label about eight days, whatever the range.
        let every = days.len().div_ceil(8).max(1);
        for (index, day) in days.iter().enumerate().filter(|(i, _)| i % every == 0) {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle" class="axis">{}</text>"#,
                left + step * (index as f64 + 0.5),
                HEIGHT - bottom + 18.0,
                escape(day.get(5..).unwrap_or(day))
            );
        }
        Self {
            svg,
            top,
            plot_height,
            left,
            step,
        }
    }

    fn y(&self, value: f64, top_value: f64) -> f64 {
        self.top + self.plot_height * (1.0 - (value / top_value).clamp(0.0, 1.0))
    }

    fn x(&self, index: usize) -> f64 {
        self.left + self.step * (index as f64 + 0.5)
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

/// Lines of daily values (`days` are `YYYY-MM-DD`), one per series, with
/// a point per day that has a value; `percent` shows 0..1 as percentages.
pub fn line_chart(
    id: &str,
    title: &str,
    days: &[String],
    series: &[Series],
    percent: bool,
) -> String {
    let high = series
        .iter()
        .flat_map(|one| one.values.iter().flatten())
        .fold(0.0f64, |high, value| high.max(*value));
    let top_value = if percent { 1.0 } else { count_axis_top(high) };
    let description = format!(
        "{} over {} days from {} to {}.",
        series
            .iter()
            .map(|one| one.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        days.len(),
        days.first().map_or("", String::as_str),
        days.last().map_or("", String::as_str)
    );
    let mut frame = DayFrame::new(id, title, &description, days, series, top_value, percent);
    for (index, one) in series.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let points: Vec<(usize, f64)> = one
            .values
            .iter()
            .enumerate()
            .filter_map(|(day, value)| value.map(|value| (day, value)))
            .collect();
        let path = points
            .iter()
            .map(|(day, value)| format!("{:.1},{:.1}", frame.x(*day), frame.y(*value, top_value)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            frame.svg,
            r#"<g class="series" data-series="{}"><polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            escape(&one.name)
        );
        for (day, value) in &points {
            let _ = write!(
                frame.svg,
                r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {} {}</title></circle>"#,
                frame.x(*day),
                frame.y(*value, top_value),
                escape(&days[*day]),
                escape(&one.name),
                number_label(*value, percent)
            );
        }
        frame.svg.push_str("</g>");
    }
    frame.finish()
}

/// Columns of daily counts, one stacked part per series.
pub fn stacked_columns(id: &str, title: &str, days: &[String], series: &[Series]) -> String {
    let high = (0..days.len())
        .map(|day| {
            series
                .iter()
                .filter_map(|one| one.values.get(day).copied().flatten())
                .sum::<f64>()
        })
        .fold(0.0f64, f64::max);
    let top_value = count_axis_top(high);
    let description = format!(
        "{} per day from {} to {}; in all {}.",
        series
            .iter()
            .map(|one| one.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        days.first().map_or("", String::as_str),
        days.last().map_or("", String::as_str),
        series
            .iter()
            .map(|one| format!(
                "{} {}",
                one.name,
                number_label(one.values.iter().flatten().sum(), false)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut frame = DayFrame::new(id, title, &description, days, series, top_value, false);
    let width = (frame.step * 0.7).max(2.0);
    for (day, label) in days.iter().enumerate() {
        let mut base = 0.0;
        for (index, one) in series.iter().enumerate() {
            let Some(value) = one.values.get(day).copied().flatten().filter(|v| *v > 0.0) else {
                continue;
            };
            let (y_top, y_bottom) = (frame.y(base + value, top_value), frame.y(base, top_value));
            let _ = write!(
                frame.svg,
                r#"<rect class="bar" data-series="{}" data-day="{}" data-value="{value}" x="{:.1}" y="{y_top:.1}" width="{width:.1}" height="{:.1}" fill="{}"><title>{}: {} {}</title></rect>"#,
                escape(&one.name),
                escape(label),
                frame.x(day) - width / 2.0,
                y_bottom - y_top,
                PALETTE[index % PALETTE.len()],
                escape(label),
                escape(&one.name),
                number_label(value, false)
            );
            base += value;
        }
    }
    frame.finish()
}

/// Text made safe inside SVG markup.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

    fn days(n: usize) -> Vec<String> {
        (1..=n).map(|day| format!("2026-01-{day:02}")).collect()
    }

    #[test]
    fn a_line_has_a_point_per_day_with_a_value() {
        let series = [
            Series {
                name: "Check-ins".into(),
                values: vec![Some(1.0), None, Some(3.0)],
            },
            Series {
                name: "A <b> & c".into(),
                values: vec![Some(0.0), Some(2.0), Some(7.0)],
            },
        ];
        let svg = line_chart("m", "Metrics", &days(3), &series, false);
        assert_eq!(svg.matches(r#"class="point""#).count(), 5);
        assert!(svg.contains("A &lt;b&gt; &amp; c"));
        assert!(!svg.contains("<b>"));
        // The axis tops out at a round number above the highest value,
        // with gridlines on whole numbers.
        assert!(svg.contains(">10<"), "{svg}");
        assert!(svg.contains(">2<") && !svg.contains(">2.5<"), "{svg}");
    }

    #[test]
    fn columns_stack_each_days_parts_and_skip_zeroes() {
        let series = [
            Series {
                name: "github".into(),
                values: vec![Some(2.0), Some(0.0)],
            },
            Series {
                name: "jenkins".into(),
                values: vec![Some(1.0), None],
            },
        ];
        let svg = stacked_columns("ci", "Failures", &days(2), &series);
        assert_eq!(svg.matches(r#"class="bar""#).count(), 2);
        assert!(svg.contains("in all github 2, jenkins 1"));
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(axis_top(0.0), 1.0);
        assert_eq!(axis_top(7.0), 10.0);
        assert_eq!(axis_top(18.0), 20.0);
        assert_eq!(axis_top(230.0), 250.0);
        assert_eq!(axis_top(1000.0), 1000.0);
        assert_eq!(count_axis_top(1.0), 4.0);
    }
}
