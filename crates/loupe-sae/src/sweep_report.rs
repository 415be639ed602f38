//! `sweep.html` and its charts: FVU, and CE loss recovered, against L0, one labelled point per run
//! with the Pareto-optimal runs filled and joined; then a table of every run.

use std::fmt::Write as _;

use loupe_util::html::escape;
use loupe_util::svg::{scatter, Axis, Point};

use crate::sweep::{RunResult, SweepReport, CE_CHART, FVU_CHART};

const L0_TITLE: &str = "L0 (active latents per token)";
const LEGEND: [&str; 2] = ["Pareto-optimal", "dominated"];

/// FVU against L0 (lower left is better).
pub(crate) fn fvu_chart(report: &SweepReport) -> String {
    chart(
        report,
        "FVU (fraction of variance unexplained)",
        &|r| Some(r.reconstruction.fvu),
        &|r| r.pareto_fvu,
    )
}

/// CE loss recovered against L0 (upper left is better), over the runs it was measured for; `None`
/// when it was measured for none.
pub(crate) fn ce_chart(report: &SweepReport) -> Option<String> {
    if report.runs.iter().all(|r| r.ce_loss_recovered().is_none()) {
        return None;
    }
    Some(chart(
        report,
        "CE loss recovered",
        &|r| r.ce_loss_recovered(),
        &|r| r.pareto_ce == Some(true),
    ))
}

fn chart(
    report: &SweepReport,
    y_title: &str,
    y: &dyn Fn(&RunResult) -> Option<f64>,
    optimal: &dyn Fn(&RunResult) -> bool,
) -> String {
    let points: Vec<Point> = report
        .runs
        .iter()
        .filter_map(|r| {
            Some(Point {
                x: r.reconstruction.l0,
                y: y(r)?,
                label: r.name.clone(),
                marked: optimal(r),
            })
        })
        .collect();
    let x_axis = Axis::spanning(L0_TITLE, points.iter().map(|p| p.x));
    let y_axis = Axis::spanning(y_title, points.iter().map(|p| p.y));
    scatter(&x_axis, &y_axis, &points, LEGEND)
}

/// The page: what was measured and how, both charts, and the table.
pub(crate) fn page(report: &SweepReport, fvu_chart: &str, ce_chart: Option<&str>) -> String {
    let mut html = crate::report::head(&format!("SAE sweep: {} runs", report.runs.len()));
    let ce_note = match &report.model {
        Some(model) => format!(
            "CE loss recovered and KL with each SAE spliced into {} over {} held-out contexts.",
            escape(model),
            report.contexts
        ),
        None => "CE loss was not measured (no model, or --contexts 0).".to_string(),
    };
    let _ = writeln!(
        html,
        "<p>Trained together on one read of <code>{}</code> at <code>{}</code>; measured on its held-out \
         documents (held_out {}, seed {}), {} activations. {ce_note}</p>",
        escape(&report.store),
        escape(&report.hook),
        report.held_out,
        report.split_seed,
        report.runs.first().map_or(0, |r| r.reconstruction.tokens),
    );
    let _ = writeln!(
        html,
        "<h2>FVU against L0</h2><p class=\"dim\">Lower left is better. A run is Pareto-optimal (filled) when no \
         other run has an L0 and an FVU at least as low, one of them lower. <a href=\"{FVU_CHART}\">SVG</a></p>\n{fvu_chart}"
    );
    match ce_chart {
        Some(svg) => {
            let _ = writeln!(
                html,
                "<h2>CE loss recovered against L0</h2><p class=\"dim\">Upper left is better: 1 is the clean model's \
                 loss, 0 the loss with the activation zero-ablated. <a href=\"{CE_CHART}\">SVG</a></p>\n{svg}"
            );
        }
        None => html.push_str("<h2>CE loss recovered against L0</h2><p class=\"dim\">Not measured.</p>\n"),
    }
    html.push_str(
        "<h2>Runs</h2><table><tr><th class=\"l\">run</th><th class=\"l\">architecture</th><th>d_sae</th>\
         <th class=\"l\">its settings</th><th>steps</th><th>L0</th><th>FVU</th><th>explained variance</th>\
         <th>dead</th><th>CE loss recovered</th><th>KL(clean ‖ SAE)</th><th>Pareto: FVU</th><th>Pareto: CE</th></tr>\n",
    );
    for run in &report.runs {
        let m = &run.reconstruction;
        let settings: Vec<String> = run.settings.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let mark = |on: bool| if on { "●" } else { "" };
        let _ = writeln!(
            html,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\"><code>{}</code></td>\
             <td>{}</td><td>{:.1}</td><td>{:.4}</td><td>{:.4}</td><td>{:.1}%</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&run.name),
            run.architecture,
            run.d_sae,
            escape(&settings.join(", ")),
            run.steps,
            m.l0,
            m.fvu,
            m.explained_variance,
            100.0 * m.dead_fraction,
            run.ce_loss_recovered().map_or("–".into(), |r| format!("{r:.4}")),
            run.spliced.as_ref().map_or("–".into(), |s| format!("{:.4}", s.kl_sae)),
            mark(run.pareto_fvu),
            run.pareto_ce.map_or("–", mark),
        );
    }
    html.push_str("</table></body></html>\n");
    html
}
