//! End-to-end tests of the `loupe` binary: what a user types and what they see.

use std::process::{Command, Output};

use loupe_model::testing::write_tiny_hf_dir;

fn loupe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(args)
        .output()
        .expect("the loupe binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failed command: exit code 1 and an `error:` line, never a panic.
fn assert_clear_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error:") && !err.contains("panicked"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
}

#[test]
fn help_explains_each_command() {
    let out = loupe(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for command in ["generate", "inspect", "hooks"] {
        assert!(help.contains(command), "{help}");
    }
    let out = loupe(&["inspect", "--help"]);
    assert!(stdout(&out).contains("--hook"));
}

#[test]
fn bad_model_names_and_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let out = loupe(&["generate", "--model", missing.to_str().unwrap(), "--prompt", "hi"]);
    assert_clear_error(&out, &["missing.gguf", "not found", "smollm2"]);

    let corrupt = dir.path().join("broken.gguf");
    std::fs::write(&corrupt, vec![7u8; 1000]).unwrap();
    let out = loupe(&["generate", "--model", corrupt.to_str().unwrap(), "--prompt", "hi"]);
    assert_clear_error(&out, &["broken.gguf", "GGUF"]);
}

#[test]
fn hook_and_prompt_errors_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 3).unwrap();
    let model = dir.path().to_str().unwrap();

    let out = loupe(&[
        "inspect",
        "--model",
        model,
        "--prompt",
        "hi",
        "--hook",
        "blocks.1.resid_post",
    ]);
    assert_clear_error(
        &out,
        &["blocks.1.resid_post", "blocks.L.hook_resid_post", "hook_embed"],
    );

    let out = loupe(&[
        "inspect",
        "--model",
        model,
        "--prompt",
        "hi",
        "--hook",
        "blocks.7.hook_resid_post",
    ]);
    assert_clear_error(&out, &["3 layers", "0 to 2"]);

    let long = "word ".repeat(100);
    let out = loupe(&[
        "inspect",
        "--model",
        model,
        "--prompt",
        &long,
        "--hook",
        "blocks.1.hook_resid_post",
    ]);
    assert_clear_error(&out, &["context of 64 tokens"]);

    let out = loupe(&["generate", "--model", model, "--prompt", "", "--max-tokens", "3"]);
    assert_clear_error(&out, &["empty"]);

    let out = loupe(&["hooks", "--model", model]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("blocks.2.mlp.hook_post\t48"));
}

#[test]
fn generate_and_inspect_the_default_model() {
    let out = loupe(&[
        "generate",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}\n(the default model comes from scripts/fetch-models)",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim_end(), "The capital of France is Paris.");
    assert!(stderr(&out).contains("tokens/s"));

    let out = loupe(&[
        "inspect",
        "--prompt",
        "The capital of France is",
        "--hook",
        "blocks.29.hook_resid_post",
        "--top",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("shape [1, 5, 576]"), "{text}");
    // The logit lens at the last layer reads the model's own next token.
    let last = text.lines().last().unwrap();
    assert!(last.contains("\" is\"") && last.contains("\" Paris\""), "{text}");
}
