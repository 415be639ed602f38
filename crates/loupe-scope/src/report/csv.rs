//! `results.csv`: one row per generation, for pandas.

use std::fmt::Write as _;

use crate::results::ScopeRecord;

pub(super) fn csv(records: &[ScopeRecord]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::from(
        "source_index,source,layer,target_layer,hook,amplifier,label,value,feature,null,generation,score,\
         concept_hits,source_next_token,patched_next_token,next_token_match,surprisal,fluency,norm,amplified_norm\n",
    );
    for r in records {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.source_index,
            quote(&r.source),
            r.layer,
            r.target_layer,
            r.hook,
            r.amplifier,
            quote(&r.label),
            r.value.map_or(String::new(), |v| v.to_string()),
            quote(r.feature.as_deref().unwrap_or("")),
            quote(r.null.as_deref().unwrap_or("")),
            quote(&r.generation),
            r.score,
            quote(&r.concept_hits.join(";")),
            quote(&r.source_next_token),
            quote(&r.patched_next_token),
            r.next_token_match,
            r.surprisal,
            r.fluency.map_or(String::new(), |f| f.to_string()),
            r.norm,
            r.amplified_norm
        );
    }
    out
}
