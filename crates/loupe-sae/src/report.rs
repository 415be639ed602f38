//! A static, browsable HTML view of a [`TopReport`]: an index of every latent (frequency, maximum,
//! its strongest token) linking into pages of 128 latents each, where every example is shown in
//! context with each token shaded by the latent's activation on it.

use std::fmt::Write;

use crate::top::{LatentSummary, TopReport};

/// Latents per page.
pub const PAGE: usize = 128;

const STYLE: &str = "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}\
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}td.l,th.l{text-align:left}\
.ex{font-family:monospace;white-space:pre-wrap;margin:2px 0;padding:2px;border-bottom:1px solid #eee}\
.t{border-radius:2px}.h{outline:1px solid #c33}.latent{margin:1.5em 0}.dim{color:#888}";

/// The page that latent `latent` is on.
pub fn page_file(latent: usize) -> String {
    format!("latents-{:05}.html", latent / PAGE * PAGE)
}

/// `(file name, contents)` of every page: `index.html` first.
pub fn render(report: &TopReport, title: &str) -> Vec<(String, String)> {
    let mut pages = vec![("index.html".to_string(), index(report, title))];
    for chunk in report.latents.chunks(PAGE) {
        let first = chunk[0].latent as usize;
        let mut html = head(&format!("{title}: latents {first}–{}", first + chunk.len() - 1));
        let _ = writeln!(html, "<p><a href=\"index.html\">all latents</a></p>");
        for latent in chunk {
            latent_section(&mut html, latent);
        }
        html.push_str("</body></html>\n");
        pages.push((page_file(first), html));
    }
    pages
}

/// The start of a page titled `title`, up to and with its heading (shared with `sweep.html`).
pub(crate) fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>{STYLE}</style></head><body><h1>{0}</h1>\n",
        escape(title)
    )
}

fn index(report: &TopReport, title: &str) -> String {
    let mut html = head(title);
    let dead = report.latents.iter().filter(|l| l.fired == 0).count();
    let _ = writeln!(
        html,
        "<p>{} latents over {} tokens; {} never fired. Each row links to the latent's examples.</p>",
        report.latents.len(),
        report.tokens,
        dead
    );
    html.push_str("<table><tr><th>latent</th><th>frequency</th><th>max</th><th>mean</th><th class=\"l\">top token</th></tr>\n");
    for l in &report.latents {
        let top = l
            .examples
            .first()
            .map(|e| escape(&e.tokens[e.highlight]))
            .unwrap_or_default();
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{}#l{}\">{}</a></td><td>{:.4}%</td><td>{:.2}</td><td>{:.2}</td><td class=\"l\"><code>{}</code></td></tr>",
            page_file(l.latent as usize),
            l.latent,
            l.latent,
            100.0 * l.frequency,
            l.max_activation,
            l.mean_activation,
            top
        );
    }
    html.push_str("</table></body></html>\n");
    html
}

fn latent_section(html: &mut String, l: &LatentSummary) {
    let _ = writeln!(
        html,
        "<div class=\"latent\" id=\"l{0}\"><h2>latent {0}</h2><p class=\"dim\">fires on {1:.4}% of tokens ({2}); max {3:.3}, mean {4:.3}</p>",
        l.latent,
        100.0 * l.frequency,
        l.fired,
        l.max_activation,
        l.mean_activation
    );
    for e in &l.examples {
        html.push_str("<div class=\"ex\">");
        let _ = write!(html, "<span class=\"dim\">{:>7.3} </span>", e.activation);
        for (i, (token, &a)) in e.tokens.iter().zip(&e.activations).enumerate() {
            let alpha = if l.max_activation > 0.0 {
                (a / l.max_activation).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let class = if i == e.highlight { "t h" } else { "t" };
            let _ = write!(
                html,
                "<span class=\"{class}\" style=\"background:rgba(255,120,0,{alpha:.2})\" title=\"{a:.3}\">{}</span>",
                escape(token)
            );
        }
        html.push_str("</div>\n");
    }
    html.push_str("</div>\n");
}

use loupe_util::html::escape;
