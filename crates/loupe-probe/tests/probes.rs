//! The probe pipeline on small stores written here: a planted feature neuron found by every
//! ranking, token features, the files `loupe probe train` writes (and resumes from), and the
//! errors for bad input.

use std::path::Path;

use loupe_data::reader::Store;
use loupe_model::{HookPoint, Tokenizer};
use loupe_probe::dataset::{build_dataset, load_examples};
use loupe_probe::features::{resolve_features, token_labels, FeatureSpec, Level};
use loupe_probe::rank::{rank, RankOptions, Ranking};
use loupe_probe::sweep::{sweep, ExactOptions, SweepOptions};
use loupe_probe::testing::{planted, write_store};
use loupe_probe::train::{sweep_dir, ProbeObserver};
use loupe_probe::{train, Metrics, Probe, ProbeConfig};
use loupe_util::NoProgress;

const PLANTED: usize = 7;
const WIDTH: usize = 24;

fn hook() -> HookPoint {
    "blocks.1.mlp.hook_post".parse().unwrap()
}

fn tokenizer(dir: &Path) -> Tokenizer {
    loupe_model::testing::write_tiny_hf_dir(dir, 0).unwrap();
    Tokenizer::from_file(&dir.join("tokenizer.json"), None, None).unwrap()
}

fn label_feature(value: Option<&str>) -> FeatureSpec {
    FeatureSpec::Label {
        field: "lang".into(),
        value: value.map(String::from),
        level: Level::Token,
        name: None,
    }
}

#[test]
fn every_ranking_and_the_exact_search_find_the_planted_neuron() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    write_store(&store_dir, hook(), &planted(WIDTH, 60, 50, PLANTED, 1), "tiny").unwrap();
    let store = Store::open(&store_dir).unwrap();
    let tok = tokenizer(&tmp.path().join("model"));
    let features = resolve_features(&[label_feature(Some("a"))], &store).unwrap();
    let examples = load_examples(&store, hook(), None, &mut NoProgress).unwrap();
    let labels = token_labels(&features[0], &examples.tokens, &tok);
    let data = build_dataset(&features[0], &labels, &examples.tokens, None, 0.25, 3, &store_dir).unwrap();
    let b = data.balance();
    assert_eq!(b.train_positive + b.held_out_positive, 20 * 50);
    assert!(b.held_out_positive > 0 && b.train_negative > 0);

    for standardize in [false, true] {
        let s = standardize.then(|| {
            examples
                .x
                .class_moments(&data.train, &data.train_labels)
                .standardization()
        });
        for method in Ranking::ALL {
            let ranked = rank(
                method,
                &examples.x,
                &data.train,
                &data.train_labels,
                s.as_ref(),
                &RankOptions::default(),
            );
            assert_eq!(
                ranked[0].0,
                PLANTED,
                "{method:?} (standardize {standardize}) ranked {:?}",
                &ranked[..3]
            );
        }
    }

    let options = SweepOptions {
        ks: vec![1, 2, 4, 24],
        rankings: Ranking::ALL.to_vec(),
        standardize: true,
        c: 1.0,
        rank: RankOptions::default(),
        exact: ExactOptions {
            max_k: 3,
            top: 8,
            rows: 1000,
            refit: 3,
        },
    };
    let fits = sweep(&examples.x, &data, &options).unwrap();
    assert_eq!(fits.len(), 4 * 4 + 3);
    for fit in fits.iter().filter(|f| f.k == 1) {
        assert_eq!(fit.neurons, vec![PLANTED], "{}", fit.method);
        // A 2.5σ shift: about 90% of each class falls on its side of the midpoint.
        assert!(
            fit.held_out.f1 > 0.8 && fit.held_out.roc_auc > 0.95,
            "{}: {:?}",
            fit.method,
            fit.held_out
        );
    }
    // The exact search never does worse on the training loss than the greedy top-k.
    let exact3 = fits.iter().find(|f| f.method == "exact" && f.k == 3).unwrap();
    assert!(exact3.neurons.contains(&PLANTED));
    assert!(
        exact3.losses.last()
            <= fits
                .iter()
                .find(|f| f.method == "mean_diff" && f.k == 1)
                .unwrap()
                .losses
                .last()
    );
}

#[test]
fn token_features_digits_quotations_and_compounds() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(&tmp.path().join("model"));
    // The tiny tokenizer is byte level with one merge (" t"): one token per character otherwise.
    let text = "He said \"go 12 now\" twice";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids.len(), text.len() - 1);
    let tokens = loupe_probe::dataset::Tokens {
        doc_ids: vec![0; ids.len()],
        context_ids: vec![0; ids.len()],
        positions: (1..=ids.len() as u32).collect(),
        labels: vec![],
        token_ids: ids,
    };
    let store_dir = tmp.path().join("store");
    write_store(&store_dir, hook(), &planted(4, 3, 4, 0, 0), "tiny").unwrap();
    let store = Store::open(&store_dir).unwrap();
    let features = resolve_features(
        &[
            FeatureSpec::Digit { name: None },
            FeatureSpec::Quoted { name: None },
        ],
        &store,
    )
    .unwrap();
    let marks = |labels: Vec<Option<bool>>| -> String {
        labels
            .iter()
            .map(|l| if l.unwrap() { '^' } else { ' ' })
            .collect()
    };
    assert_eq!(
        marks(token_labels(&features[0], &tokens, &tok)),
        "            ^^          "
    );
    assert_eq!(
        marks(token_labels(&features[1], &tokens, &tok)),
        "         ^^^^^^^^^      "
    );

    // "a t" as a compound: only where both are whole words.
    let compound = resolve_features(
        &[FeatureSpec::Compound {
            words: Some(vec!["a t".into()]),
            name: None,
        }],
        &store,
    )
    .unwrap();
    let ids = tok.encode("a t. xa t. a tt. a t").unwrap();
    let tokens = loupe_probe::dataset::Tokens {
        doc_ids: vec![0; ids.len()],
        token_ids: ids,
        ..Default::default()
    };
    let hits: Vec<usize> = token_labels(&compound[0], &tokens, &tok)
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.unwrap().then_some(i))
        .collect();
    assert_eq!(hits, vec![1, 15]);
}

#[derive(Default)]
struct Counting {
    swept: usize,
    notes: Vec<String>,
}
impl loupe_util::Progress for Counting {
    fn note(&mut self, message: &str) {
        self.notes.push(message.to_string());
    }
}
impl ProbeObserver for Counting {
    fn swept(
        &mut self,
        _: HookPoint,
        _: &str,
        _: &loupe_probe::dataset::ClassBalance,
        _: &[loupe_probe::sweep::ProbeFit],
    ) {
        self.swept += 1;
    }
}

fn config(store: &Path, output: &Path, extra: &str) -> ProbeConfig {
    let text = format!(
        "stores = [{store:?}]\noutput = {output:?}\nks = [1, 2, 3]\nrankings = [\"mean_diff\", \"l1\"]\n{extra}\n[exact]\nmax_k = 2\ntop = 6\nrows = 1000\n\n[[feature]]\nkind = \"label\"\nfield = \"lang\"\n"
    );
    ProbeConfig::from_toml(&text, "test.toml", &[]).unwrap()
}

#[test]
fn train_writes_probes_and_summaries_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    write_store(&store_dir, hook(), &planted(WIDTH, 45, 40, PLANTED, 2), "tiny").unwrap();
    let tok = tokenizer(&tmp.path().join("model"));
    let output = tmp.path().join("probes");
    let cfg = config(&store_dir, &output, "");
    let mut observer = Counting::default();
    let outcome = train(&cfg, &tok, &mut observer).unwrap();
    // Two features (lang=a, lang=b), each 2 rankings × 3 k + exact k = 1, 2.
    assert_eq!(observer.swept, 2);
    assert_eq!(outcome.rows.len(), 2 * (2 * 3 + 2));
    let csv = std::fs::read_to_string(output.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + outcome.rows.len());
    let md = std::fs::read_to_string(output.join("summary.md")).unwrap();
    assert!(md.contains("| lang=a | blocks.1.mlp.hook_post | 7 |"), "{md}");

    // A saved probe scores held-out examples as the sweep did: its metrics come back.
    let probe = Probe::load(&sweep_dir(&output, "lang=a", hook()).join("mean_diff-k1.safetensors")).unwrap();
    assert_eq!(probe.neurons, vec![PLANTED as u32]);
    assert_eq!(
        (probe.info.width, probe.info.model_name.as_str()),
        (WIDTH, "tiny")
    );
    let store = Store::open(&store_dir).unwrap();
    let examples = load_examples(&store, hook(), None, &mut NoProgress).unwrap();
    let features = resolve_features(&cfg.features, &store).unwrap();
    let labels = token_labels(&features[0], &examples.tokens, &tok);
    let data = build_dataset(
        &features[0],
        &labels,
        &examples.tokens,
        None,
        cfg.held_out,
        cfg.seed,
        &store_dir,
    )
    .unwrap();
    let scores: Vec<f64> = data
        .held_out
        .iter()
        .map(|&r| probe.score(examples.x.row(r)))
        .collect();
    let again = Metrics::compute(&data.held_out_labels, &scores);
    assert!(
        (again.f1 - probe.info.held_out.f1).abs() < 1e-9
            && (again.roc_auc - probe.info.held_out.roc_auc).abs() < 1e-6
    );

    // A second run finds both sweeps done and redoes nothing.
    let mut second = Counting::default();
    let outcome2 = train(&cfg, &tok, &mut second).unwrap();
    assert_eq!(second.swept, 0);
    assert_eq!(outcome2.rows, outcome.rows);
    assert!(second.notes.iter().any(|n| n.contains("done by an earlier run")));
    // A changed setting redoes them.
    let mut third = Counting::default();
    train(&config(&store_dir, &output, "c = 0.5"), &tok, &mut third).unwrap();
    assert_eq!(third.swept, 2);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(&tmp.path().join("model"));
    let store_dir = tmp.path().join("store");
    write_store(&store_dir, hook(), &planted(WIDTH, 12, 10, PLANTED, 3), "tiny").unwrap();
    let output = tmp.path().join("out");
    let error = |cfg: ProbeConfig| {
        train(&cfg, &tok, &mut loupe_probe::NoObserver)
            .err()
            .expect("an error")
            .to_string()
    };

    // k larger than the width.
    let mut cfg = config(&store_dir, &output, "");
    cfg.ks = Some(vec![1, 100]);
    let e = error(cfg);
    assert!(e.contains("k = 100") && e.contains("24 neurons"), "{e}");

    // A label the store does not carry.
    let mut cfg = config(&store_dir, &output, "");
    if let FeatureSpec::Label { field, .. } = &mut cfg.features[0] {
        *field = "topic".into();
    }
    let e = error(cfg);
    assert!(
        e.contains("carries no label 'topic'") && e.contains("lang") && e.contains("store"),
        "{e}"
    );

    // A value no token has.
    let mut cfg = config(&store_dir, &output, "");
    if let FeatureSpec::Label { value, .. } = &mut cfg.features[0] {
        *value = Some("fr".into());
    }
    let e = error(cfg);
    assert!(e.contains("lang = 'fr'") && e.contains("a, b"), "{e}");

    // One class only in the training split.
    let mut rows = planted(WIDTH, 12, 10, PLANTED, 3);
    rows.values.iter_mut().for_each(|v| *v = "a".into());
    let one_class = tmp.path().join("one-class");
    write_store(&one_class, hook(), &rows, "tiny").unwrap();
    let e = error(config(&one_class, &output, ""));
    assert!(
        e.contains("lang=a") && e.contains("0 negative") && e.contains("both classes"),
        "{e}"
    );

    // A document-level digit feature, and an unknown field.
    let text = format!(
        "stores = [{store_dir:?}]\noutput = \"x\"\n[[feature]]\nkind = \"digit\"\nlevel = \"document\"\n"
    );
    let e = ProbeConfig::from_toml(&text, "t.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown field `level`") && e.contains("`level` belongs to kind label"),
        "{e}"
    );
    let e = ProbeConfig::from_toml(
        "stores = []\noutput = \"x\"\nkk = 3\n[[feature]]\nkind = \"digit\"\n",
        "t.toml",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("t.toml") && e.contains("kk"), "{e}");
}

/// SAEBench's sparse probing on the planted store: an SAE with one latent that reads the planted
/// neuron (and others reading noise) finds it at k = 1, and does as well as the neuron itself; an
/// SAE of another width is refused.
#[test]
fn sparse_probing_finds_the_latent_that_reads_the_planted_neuron() {
    use loupe_probe::sae_probing::sparse_probing;
    use loupe_sae::{Activation, Params, Sae, SaeMetadata};
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    write_store(&store_dir, hook(), &planted(WIDTH, 45, 40, PLANTED, 3), "tiny").unwrap();
    let tok = tokenizer(&tmp.path().join("tok"));
    let (d_sae, reader) = (48, 30);
    let mut params = Params::zeros(WIDTH, d_sae, false);
    for latent in 0..d_sae {
        // Every other latent reads one noise neuron; `reader` reads the planted one.
        let neuron = if latent == reader {
            PLANTED
        } else {
            (latent * 5 + 1) % WIDTH
        };
        if neuron != PLANTED || latent == reader {
            params.enc[latent * WIDTH + neuron] = 1.0;
        }
        params.b_enc[latent] = -1.25;
        params.dec[latent * WIDTH + neuron] = 1.0;
    }
    let sae = Sae::from_params(&params, Activation::Relu, false, 1.0, SaeMetadata::default()).unwrap();
    let mut config = config(&store_dir, &tmp.path().join("out"), "held_out = 0.3");
    config.ks = None; // SAEBench's 1, 2 and 5
    let rows = sparse_probing(&config, &sae, hook(), &tok, &mut NoProgress).unwrap();
    let ks: Vec<usize> = rows
        .iter()
        .filter(|r| r.feature == rows[0].feature)
        .map(|r| r.k)
        .collect();
    assert_eq!(ks, [1, 2, 5]);
    for row in rows.iter().filter(|r| r.k == 1) {
        assert_eq!(row.neurons, [PLANTED], "{row:?}");
        assert_eq!(row.latents, [reader], "{row:?}");
        assert!(
            row.latents_f1 > 0.8 && (row.latents_f1 - row.neurons_f1).abs() < 0.1,
            "{row:?}"
        );
    }

    let narrow = Sae::from_params(
        &Params::zeros(WIDTH - 1, 8, false),
        Activation::Relu,
        false,
        1.0,
        SaeMetadata::default(),
    )
    .unwrap();
    let e = sparse_probing(&config, &narrow, hook(), &tok, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("24 wide") && e.contains("23 values"), "{e}");
}
