//! What the end-to-end tests share: running the binary, reading what it printed, and a tiny
//! model with a corpus to capture.
#![allow(dead_code)] // each test file uses its own part

use std::process::{Command, Output};

use loupe_model::testing::write_tiny_hf_dir;

pub fn loupe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(args)
        .output()
        .expect("the loupe binary runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failed command: exit code 1 and an `error:` line, never a panic.
pub fn assert_clear_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error:") && !err.contains("panicked"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
}

/// A tiny model and a corpus of `docs` documents in a temp dir, and a capture config for them.
pub fn tiny_capture_setup(docs: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(&dir.path().join("model"), 3).unwrap();
    let corpus: String = (0..docs)
        .map(|i| {
            format!(
                "{{\"text\": \"doc {i} says t{} and tt {}\", \"lang\": \"en\"}}\n",
                i % 7,
                i * 3
            )
        })
        .collect();
    std::fs::write(dir.path().join("corpus.jsonl"), corpus).unwrap();
    let config = dir.path().join("capture.toml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "model = \"{d}/model\"\nhooks = [\"blocks.1.hook_resid_post\"]\noutput = \"{d}/store\"\n\
             context_length = 16\nbatch_size = 1\nshard_contexts = 2\n\n[[corpus]]\npath = \"{d}/corpus.jsonl\"\nlabels = [\"lang\"]\n"
        ),
    )
    .unwrap();
    (dir, config)
}
