//! Charts drawn on the server as SVG: the heatmap of score over the
//! (fast, slow) grid. Each is an image with a title and
//! a description for screen readers; the numbers are also in tables beside.

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
}
