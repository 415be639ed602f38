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

/// A run directory as `sae train` leaves it: the SAELens files, the trainer checkpoint, and one
/// TensorBoard event file.
pub fn assert_run_directory(run: &std::path::Path) {
    for file in ["cfg.json", "sae_weights.safetensors", "trainer_state.safetensors"] {
        assert!(run.join(file).exists(), "{}: {file}", run.display());
    }
    let events = std::fs::read_dir(run)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents")
        })
        .count();
    assert_eq!(events, 1, "{}: one TensorBoard event file", run.display());
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

/// Runs of every kind, made by the binary on a tiny model, for `loupe serve` to serve: under
/// `runs/` a store (`runs/store`), a TopK SAE with its top contexts (`runs/sae`), a probe run
/// (`runs/probes`) and a scope run (`runs/scope`). The tiny model is `model/`.
pub fn serve_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write_tiny_hf_dir(&dir.path().join("model"), 3).unwrap();
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    // Two "languages" the tiny model reads differently, with a multi-byte character in each.
    let corpus: String = (0..60)
        .map(|i| match i % 2 {
            0 => format!("{{\"text\": \"tt t {i} café ttt t tt\", \"lang\": \"a\"}}\n"),
            _ => format!("{{\"text\": \"xq zq {i} qqz ñ zz xz\", \"lang\": \"b\"}}\n"),
        })
        .collect();
    std::fs::write(dir.path().join("corpus.jsonl"), corpus).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let run = |args: &[&str]| {
        let out = loupe(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    let capture = write(
        "capture.toml",
        format!(
            "model = \"{d}/model\"\nhooks = [\"blocks.1.hook_resid_post\", \"blocks.1.mlp.hook_post\"]\n\
             output = \"{d}/runs/store\"\ncontext_length = 16\nbatch_size = 4\nshard_contexts = 8\n\n\
             [[corpus]]\npath = \"{d}/corpus.jsonl\"\nlabels = [\"lang\"]\n"
        ),
    );
    run(&["capture", "--config", &capture]);
    let sae = write(
        "sae.toml",
        format!(
            "store = \"{d}/runs/store\"\nhook = \"blocks.1.hook_resid_post\"\noutput = \"{d}/runs/sae\"\n\
             architecture = \"topk\"\nexpansion = 2\nk = 4\ntrain_tokens = 2048\nbatch_size = 64\nheld_out = 0.2\n"
        ),
    );
    run(&["sae", "train", "--config", &sae]);
    run(&[
        "sae",
        "top",
        "--sae",
        &format!("{d}/runs/sae"),
        "--store",
        &format!("{d}/runs/store"),
        "--examples",
        "3",
    ]);
    let probe = write(
        "probe.toml",
        format!(
            "stores = [\"{d}/runs/store\"]\nhooks = [\"blocks.1.mlp.hook_post\"]\noutput = \"{d}/runs/probes\"\n\
             held_out = 0.3\nks = [1, 2, 4]\nrankings = [\"mean_diff\", \"f_stat\"]\n[exact]\nmax_k = 0\n\n\
             [[feature]]\nkind = \"label\"\nfield = \"lang\"\nvalue = \"a\"\n"
        ),
    );
    run(&["probe", "train", "--config", &probe]);
    let scope = write(
        "scope.toml",
        format!(
            "model = \"{d}/model\"\nout = \"{d}/runs/scope\"\n[source]\nprompts = [\"the dog\", \"hello\"]\n\
             layers = [0, 1]\n[target]\nprompt = \"the cat sat on the mat\"\n[generate]\nmax_new_tokens = 4\n\
             [[amplifier]]\nkind = \"none\"\n[[amplifier]]\nkind = \"scale\"\nvalues = [3]\n"
        ),
    );
    run(&["scope", "--config", &scope]);
    let steer = write(
        "steer.toml",
        format!(
            "model = \"{d}/model\"\nout = \"{d}/runs/steer\"\ninstructions = [\"the dog\", \"hello\", \"a tree\", \"the cat\"]\n\
             chat = false\nlayer = 1\n[null]\nthe = \"the\"\n[generate]\nmax_new_tokens = 4\n\
             [[concept]]\nname = \"animals\"\ndescription = \"a dog or a cat\"\nprompts = [\"the dog\"]\n\
             [[concept.method]]\nkind = \"cfg\"\nnull = \"the\"\nvalues = [1]\n"
        ),
    );
    run(&["steer", "--config", &steer]);
    dir
}

/// A `loupe serve` process on a free loopback port, stopped when dropped.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The first line it printed (with the token, when it has one).
    pub banner: String,
}

impl Server {
    /// Starts `loupe serve --port 0` with `args` and waits for the address it prints.
    pub fn start(args: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("loupe serve starts");
        let mut banner = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut banner)
            .unwrap();
        assert!(banner.starts_with("loupe serve: http://"), "{banner:?}");
        let address = banner["loupe serve: ".len()..].split_whitespace().next().unwrap();
        let port = address
            .trim_start_matches("http://")
            .split(['/', ':'])
            .nth(1)
            .unwrap();
        Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            banner,
        }
    }

    /// Stops the server and returns what it wrote to stderr.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
