//! `interpreted.svg` (the fraction of source prompts interpreted against layer, one line per
//! amplifier family) and `held_out.svg` (the held-out fractions with their 95% intervals as bars).

use std::fmt::Write as _;

use loupe_util::html::escape;

use super::study::Study;
use super::{family, Summary};

/// Fraction interpreted against layer, one line per amplifier family, as a standalone SVG.
pub fn plot_svg(summary: &Summary) -> String {
    plot_lines(summary, "interpreted", &|family_name, layer| {
        let fraction = summary.fraction_interpreted(layer, |r| family(r) == family_name)?;
        Some((fraction, None))
    })
}

/// The held-out fraction against layer, one line per family, each point with its 95% bootstrap
/// interval as a vertical bar (families side by side, a few pixels apart, so that bars do not
/// hide one another).
pub fn held_out_svg(summary: &Summary, study: &Study) -> String {
    plot_lines(summary, "interpreted, held out", &|family_name, layer| {
        let f = study.figure(family_name, layer)?;
        Some((f.fraction, Some(f.interval)))
    })
}

/// One line per family of `point(family, layer)`: a fraction, and optionally an interval drawn
/// as a bar around it.
type Point<'a> = dyn Fn(&str, usize) -> Option<(f64, Option<(f64, f64)>)> + 'a;

fn plot_lines(summary: &Summary, y_label: &str, point: &Point) -> String {
    const COLORS: [&str; 8] = [
        "#555", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2",
    ];
    let (width, height, left, right, top, bottom) = (640.0, 360.0, 50.0, 170.0, 20.0, 40.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let (first, last) = match (summary.layers.first(), summary.layers.last()) {
        (Some(&a), Some(&b)) => (a as f64, b as f64),
        _ => (0.0, 1.0),
    };
    let x = |layer: usize| {
        left + plot_w
            * if last > first {
                (layer as f64 - first) / (last - first)
            } else {
                0.5
            }
    };
    let y = |fraction: f64| top + plot_h * (1.0 - fraction);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    for tick in 0..=4 {
        let f = tick as f64 / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0}\" y2=\"{y0}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}%</text>",
            left + plot_w,
            left - 5.0,
            y(f) + 4.0,
            100.0 * f,
            y0 = y(f)
        );
    }
    for &layer in &summary.layers {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{layer}</text>",
            x(layer),
            top + plot_h + 15.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">source layer</text>\
         <text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">{y_label} ({})</text>",
        left + plot_w / 2.0,
        height - 5.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        loupe_util::html::escape(&summary.criterion())
    );
    let families = summary.families.len() as f64;
    for (i, family_name) in summary.families.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let shift = 4.0 * (i as f64 - (families - 1.0) / 2.0);
        let mut points: Vec<(f64, f64)> = Vec::new();
        for &layer in &summary.layers {
            let Some((fraction, interval)) = point(family_name, layer) else {
                continue;
            };
            let px = x(layer) + shift;
            if let Some((lo, hi)) = interval {
                let _ = write!(
                    svg,
                    "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-opacity=\"0.6\"/>",
                    y(lo),
                    y(hi)
                );
            }
            points.push((px, y(fraction)));
        }
        let path: Vec<String> = points.iter().map(|(px, py)| format!("{px:.1},{py:.1}")).collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (px, py) in &points {
            let _ = write!(
                svg,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{color}\"/>"
            );
        }
        let ly = top + 10.0 + 16.0 * i as f64;
        let lx = left + plot_w + 15.0;
        let _ = write!(
            svg,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>",
            lx + 20.0,
            lx + 25.0,
            ly + 4.0,
            escape(family_name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}
