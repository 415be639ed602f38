//! Training with no store (`source = "model"`): activations streamed from a tiny random-weight
//! model over a corpus. A stopped run resumes at its position in the corpus to exactly the run
//! that was never stopped, and a config that mixes up the two sources is refused.

use loupe_model::testing::write_tiny_hf_dir;
use loupe_sae::testing::StopAfter;
use loupe_sae::{saelens, train, Checkpoint, NoObserver, TrainConfig};

/// A tiny model and a corpus of about 1,900 tokens; returns the config text of a TopK SAE that
/// streams from them, 4 blocks of 256 rows a pass, over about two passes.
fn setup(dir: &std::path::Path) -> String {
    write_tiny_hf_dir(&dir.join("model"), 4).unwrap();
    let jsonl: String = (0..25)
        .map(|i| {
            let words: Vec<String> = (0..(5 + (i * 7) % 30))
                .map(|w| format!("d{i}w{}", w % 6))
                .collect();
            serde_json::json!({ "text": words.join(" ") }).to_string() + "\n"
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), jsonl).unwrap();
    format!(
        "source = \"model\"\nhook = \"blocks.1.hook_resid_post\"\noutput = {:?}\narchitecture = \"topk\"\nk = 4\n\
         expansion = 2\ntrain_tokens = 4096\nbatch_size = 64\nshuffle_buffer = 256\ninit_tokens = 256\n\
         eval_tokens = 128\neval_every = 10\ncheckpoint_every = 7\nheld_out = 0.1\n\n\
         [stream]\nmodel = {:?}\ncontext_length = 24\nbatch_size = 4\n\n[[stream.corpus]]\npath = {:?}\n",
        dir.join("sae"),
        dir.join("model"),
        dir.join("corpus.jsonl"),
    )
}

#[test]
fn a_streamed_run_resumes_at_its_position_in_the_corpus_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let whole = TrainConfig::from_toml(&setup(dir.path()), "test", &[]).unwrap();
    let outcome = train(&whole, &mut NoObserver).unwrap();
    assert_eq!(outcome.steps, 64);
    assert!(outcome.metrics.unwrap().explained_variance.is_finite());
    let uninterrupted = Checkpoint::load(&whole.output).unwrap().unwrap();
    assert!(
        uninterrupted.info.epoch >= 1,
        "more than one pass over the corpus: {:?}",
        uninterrupted.info.stream_position
    );
    let sae = saelens::load(&whole.output).unwrap();
    assert_eq!(
        sae.metadata.dataset_path, None,
        "no store to evaluate on by default"
    );
    assert_eq!(sae.metadata.context_size, Some(24));

    // Mid-block, and in the second pass.
    for stop_after in [5, 23, 40] {
        let mut stopped = whole.clone();
        stopped.output = dir.path().join(format!("stopped-{stop_after}"));
        let outcome = train(&stopped, &mut StopAfter::new(stop_after)).unwrap();
        assert!(outcome.stopped && outcome.steps == stop_after);
        let checkpoint = Checkpoint::load(&stopped.output).unwrap().unwrap();
        assert!(checkpoint.info.stream_position.is_some(), "{:?}", checkpoint.info);
        train(&stopped, &mut NoObserver).unwrap();
        let resumed = Checkpoint::load(&stopped.output).unwrap().unwrap();
        assert_eq!(resumed.params, uninterrupted.params, "stopped after {stop_after}");
        assert_eq!(resumed.adam, uninterrupted.adam);
        assert_eq!(resumed.info.epoch, uninterrupted.info.epoch);
        let weights = |d: &std::path::Path| std::fs::read(d.join("sae_weights.safetensors")).unwrap();
        assert_eq!(weights(&stopped.output), weights(&whole.output));
    }
}

/// A process that dies between checkpoints (here: a panic after step 17; the last periodic
/// checkpoint is step 14's) resumes from that checkpoint to the uninterrupted run: the position a
/// periodic checkpoint records is the batch after its step.
#[test]
fn a_streamed_run_killed_between_checkpoints_resumes_from_the_last_one() {
    struct DiesAfter(u64, u64);
    impl loupe_util::Progress for DiesAfter {
        fn advance(&mut self, _n: u64) {
            self.1 += 1;
            assert!(self.1 < self.0, "the process dies");
        }
    }
    impl loupe_sae::TrainObserver for DiesAfter {}

    let dir = tempfile::tempdir().unwrap();
    let whole = TrainConfig::from_toml(&setup(dir.path()), "test", &[]).unwrap();
    train(&whole, &mut NoObserver).unwrap();
    let uninterrupted = Checkpoint::load(&whole.output).unwrap().unwrap();

    let mut killed = whole.clone();
    killed.output = dir.path().join("killed");
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&killed, &mut DiesAfter(17, 0))
    }));
    assert!(died.is_err());
    let left = Checkpoint::load(&killed.output).unwrap().unwrap();
    assert_eq!(left.info.step, 14, "the last periodic checkpoint");
    train(&killed, &mut NoObserver).unwrap();
    let resumed = Checkpoint::load(&killed.output).unwrap().unwrap();
    assert_eq!(resumed.params, uninterrupted.params);
    assert_eq!(resumed.adam, uninterrupted.adam);
}

#[test]
fn a_config_that_mixes_up_the_sources_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = setup(dir.path());
    let parse = |text: &str| {
        TrainConfig::from_toml(text, "configs/x.toml", &[])
            .unwrap_err()
            .to_string()
    };

    let e = parse(&text.replace(
        "source = \"model\"\n",
        "source = \"model\"\nstore = \"activations/x\"\n",
    ));
    assert!(e.contains("store") && e.contains("remove `store`"), "{e}");
    let without_stream = &text[..text.find("[stream]").unwrap()];
    let e = parse(without_stream);
    assert!(e.contains("stream") && e.contains("[stream] table"), "{e}");
    let e = parse(&text.replace("source = \"model\"\n", "store = \"activations/x\"\n"));
    assert!(e.contains("stream") && e.contains("source = \"model\""), "{e}");
    let e = parse(&without_stream.replace("source = \"model\"\n", ""));
    assert!(e.contains("store") && e.contains("missing"), "{e}");
}
