//! Standalone SVG charts for the HTML reports, written as text: a scatter of labelled points on
//! linear axes with round-numbered ticks.

use std::fmt::Write as _;

use crate::html::escape;

/// One axis of a chart: its title and the span of values it shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The title, with units.
    pub title: String,
    /// The lowest value shown.
    pub min: f64,
    /// The highest value shown.
    pub max: f64,
}

impl Axis {
    /// An axis spanning the finite `values`, with 5% of their range to spare on each side so that
    /// no point sits on the frame (a single value gets ±5% of itself; none gets [0, 1]).
    pub fn spanning(title: &str, values: impl IntoIterator<Item = f64>) -> Axis {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
        }
        let (min, max) = if min > max {
            (0.0, 1.0)
        } else {
            let spare = if max > min {
                0.05 * (max - min)
            } else {
                (0.05 * min.abs()).max(1e-9)
            };
            (min - spare, max + spare)
        };
        Axis {
            title: title.to_string(),
            min,
            max,
        }
    }

    /// Round values inside the axis to mark: about five, a step of 1, 2 or 5 times a power of ten
    /// apart.
    pub fn ticks(&self) -> Vec<f64> {
        let step = self.tick_step();
        let first = (self.min / step).ceil() as i64;
        let last = (self.max / step).floor() as i64;
        (first..=last).map(|i| i as f64 * step).collect()
    }

    fn tick_step(&self) -> f64 {
        let rough = (self.max - self.min) / 5.0;
        let power = 10f64.powf(rough.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * power)
            .find(|&step| step >= rough)
            .unwrap_or(10.0 * power)
    }

    /// A tick value as text, with as many decimals as the tick step needs.
    fn label(&self, value: f64) -> String {
        let decimals = (-self.tick_step().log10().floor()).max(0.0) as usize;
        format!("{value:.decimals$}")
    }

    /// Where `value` falls between `from` (at `min`) and `to` (at `max`), in pixels.
    fn pixel(&self, value: f64, from: f64, to: f64) -> f64 {
        from + (to - from) * (value - self.min) / (self.max - self.min)
    }
}

/// A labelled point of a [`scatter`] chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Its coordinates, in the axes' units.
    pub x: f64,
    /// The vertical coordinate.
    pub y: f64,
    /// Written beside the point.
    pub label: String,
    /// Marked points are drawn filled and joined by a line in order of x (a Pareto front, say);
    /// the others hollow.
    pub marked: bool,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
const COLOR: &str = "#1f77b4";
/// About the width of a character at the charts' font size, to keep labels inside the chart.
const LETTER_WIDTH: f64 = 6.5;

/// A scatter chart of `points` on the axes `x` and `y`, as a standalone SVG document: grid lines
/// at the ticks, each point labelled, the marked ones filled and joined. `legend` names the
/// marked points and the others. Points with a coordinate that is not finite are left out.
pub fn scatter(x: &Axis, y: &Axis, points: &[Point], legend: [&str; 2]) -> String {
    let (plot_left, plot_right) = (LEFT, WIDTH - RIGHT);
    let (plot_top, plot_bottom) = (TOP, HEIGHT - BOTTOM);
    let px = |v: f64| x.pixel(v, plot_left, plot_right);
    let py = |v: f64| y.pixel(v, plot_bottom, plot_top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"11\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    for tick in x.ticks() {
        let at = px(tick);
        let _ = write!(
            svg,
            "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{plot_top}\" y2=\"{plot_bottom}\" stroke=\"#ddd\"/>\
             <text x=\"{at:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            plot_bottom + 15.0,
            x.label(tick)
        );
    }
    for tick in y.ticks() {
        let at = py(tick);
        let _ = write!(
            svg,
            "<line x1=\"{plot_left}\" x2=\"{plot_right}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            plot_left - 5.0,
            at + 4.0,
            y.label(tick)
        );
    }
    let middle_y = (plot_top + plot_bottom) / 2.0;
    let _ = write!(
        svg,
        "<rect x=\"{plot_left}\" y=\"{plot_top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{middle_y}\" transform=\"rotate(-90 14 {middle_y})\" text-anchor=\"middle\">{}</text>",
        plot_right - plot_left,
        plot_bottom - plot_top,
        (plot_left + plot_right) / 2.0,
        HEIGHT - 8.0,
        escape(&x.title),
        escape(&y.title)
    );

    let shown: Vec<&Point> = points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    let mut marked: Vec<&Point> = shown.iter().copied().filter(|p| p.marked).collect();
    marked.sort_by(|a, b| a.x.total_cmp(&b.x));
    let line: Vec<String> = marked
        .iter()
        .map(|p| format!("{:.1},{:.1}", px(p.x), py(p.y)))
        .collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"{COLOR}\" stroke-width=\"1.5\" points=\"{}\"/>",
        line.join(" ")
    );
    for p in &shown {
        let fill = if p.marked { COLOR } else { "white" };
        let (cx, cy) = (px(p.x), py(p.y));
        // A label that would run off the right edge is written to the point's left.
        let (label_x, anchor) = if cx + 6.0 + LETTER_WIDTH * p.label.chars().count() as f64 > WIDTH {
            (cx - 6.0, "end")
        } else {
            (cx + 6.0, "start")
        };
        let _ = write!(
            svg,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"{COLOR}\" stroke-width=\"1.5\"/>\
             <text x=\"{label_x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            cy - 6.0,
            escape(&p.label)
        );
    }
    let legend_y = TOP / 2.0 + 4.0;
    let _ = write!(
        svg,
        "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"{COLOR}\"/><text x=\"{}\" y=\"{legend_y}\">{}</text>\
         <circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"white\" stroke=\"{COLOR}\" stroke-width=\"1.5\"/><text x=\"{}\" y=\"{legend_y}\">{}</text>",
        plot_left + 4.0,
        legend_y - 4.0,
        plot_left + 12.0,
        escape(legend[0]),
        plot_left + 164.0,
        legend_y - 4.0,
        plot_left + 172.0,
        escape(legend[1])
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_axis() {
        let axis = Axis::spanning("L0", [12.3, 47.9]);
        let ticks = axis.ticks();
        assert_eq!(ticks, vec![20.0, 30.0, 40.0]);
        assert!(ticks.iter().all(|t| (axis.min..=axis.max).contains(t)));
        let fractions = Axis::spanning("FVU", [0.21, 0.37]);
        let labels: Vec<String> = fractions.ticks().iter().map(|t| fractions.label(*t)).collect();
        assert_eq!(labels, ["0.25", "0.30", "0.35"]);
        // One value, or none, still makes an axis with ticks.
        assert!(!Axis::spanning("x", [3.0]).ticks().is_empty());
        assert_eq!(Axis::spanning("x", [f64::NAN]).ticks().len(), 6);
    }

    #[test]
    fn a_scatter_labels_every_finite_point_and_joins_the_marked_in_order_of_x() {
        let point = |x, y, label: &str, marked| Point {
            x,
            y,
            label: label.into(),
            marked,
        };
        let points = [
            point(30.0, 0.2, "b<&>", true),
            point(10.0, 0.4, "a", true),
            point(20.0, 0.5, "c", false),
            point(f64::NAN, 0.1, "hidden", true),
        ];
        let x = Axis::spanning("L0", points.iter().map(|p| p.x));
        let y = Axis::spanning("FVU", points.iter().map(|p| p.y));
        let svg = scatter(&x, &y, &points, ["optimal", "other"]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        for label in [">b&lt;&amp;&gt;</text>", ">a</text>", ">c</text>"] {
            assert!(svg.contains(label), "{label}");
        }
        assert!(!svg.contains("hidden"));
        assert_eq!(
            svg.matches("<circle").count(),
            3 + 2,
            "three points and the legend's two"
        );
        // The line runs from a (x = 10, left) to b (x = 30, right).
        let line = svg.split("<polyline").nth(1).unwrap();
        let points_attr = line.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        let xs: Vec<f64> = points_attr
            .split(' ')
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(xs.len(), 2);
        assert!(xs[0] < xs[1]);
    }
}
