//! `interpreted.svg`: the fraction of source prompts interpreted against layer, one line per
//! amplifier family.

use std::fmt::Write as _;

use loupe_util::html::escape;

use super::{family, Summary};

/// Fraction interpreted against layer, one line per amplifier family, as a standalone SVG.
pub fn plot_svg(summary: &Summary) -> String {
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
         <text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">interpreted (score &gt; {})</text>",
        left + plot_w / 2.0,
        height - 5.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        summary.threshold
    );
    for (i, family_name) in summary.families.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = summary
            .layers
            .iter()
            .filter_map(|&l| {
                summary
                    .fraction_interpreted(l, |r| &family(r) == family_name)
                    .map(|f| (x(l), y(f)))
            })
            .collect();
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
