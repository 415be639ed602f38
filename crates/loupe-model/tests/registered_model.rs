//! A registered model's file is checked against its known sha256 when it is resolved, and the
//! verdict is cached beside it. These tests point LOUPE_HOME at a temporary directory; environment
//! variables are process-wide, so this file holds a single test (its own test binary).

use std::path::Path;

use candle_core::Device;
use loupe_model::testing::write_tiny_gguf;
use loupe_model::{Model, ModelSource};

const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn error_of(name: &str) -> String {
    match Model::load(name, &Device::Cpu) {
        Ok(_) => panic!("{name} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn registered_models_are_checked_against_their_sha256() {
    let home = tempfile::tempdir().unwrap();
    let models = home.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::env::set_var("LOUPE_HOME", home.path());

    // A damaged copy: a valid GGUF file, but not the registered one.
    let damaged = models.join(SMOLLM2_FILE);
    write_tiny_gguf(&damaged, 3).unwrap();
    let message = error_of("smollm2");
    let expected_tail = format!(
        ", expected {SMOLLM2_SHA256} for registered model smollm2; the file is damaged: delete it \
         and fetch it again with `scripts/fetch-models smollm2`"
    );
    assert!(
        message.starts_with(&format!("{}: sha256 is ", damaged.display())),
        "{message}"
    );
    assert!(message.ends_with(&expected_tail), "{message}");
    // The verdict was cached, and the cached verdict is an error too.
    let sidecar = models.join(format!("{SMOLLM2_FILE}.verified"));
    assert!(sidecar.is_file());
    assert_eq!(error_of("smollm2"), message);
    // Named by its path, the registered file is checked as well.
    assert_eq!(error_of(damaged.to_str().unwrap()), message);

    // A file damaged after it was verified is hashed again: its size and time changed.
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes.push(0);
    std::fs::write(&damaged, &bytes).unwrap();
    assert_ne!(error_of("smollm2"), message);

    // The real model, when it has been fetched, passes; the check is cached beside the link.
    let real = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cache/loupe/models").join(SMOLLM2_FILE))
        .filter(|p| p.is_file());
    #[cfg(unix)]
    if let Some(real) = real {
        std::fs::remove_file(&damaged).unwrap();
        std::fs::remove_file(&sidecar).unwrap();
        std::os::unix::fs::symlink(&real, &damaged).unwrap();
        let source = ModelSource::resolve("smollm2").unwrap();
        let verified: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
        assert_eq!(verified["sha256"], SMOLLM2_SHA256);
        assert_eq!(verified["size"], std::fs::metadata(&real).unwrap().len());
        // The fingerprint is the same hash, read from the cache.
        assert_eq!(source.fingerprint().unwrap(), SMOLLM2_SHA256);
        ModelSource::resolve("smollm2").unwrap();
    } else {
        eprintln!("the real smollm2 is not fetched; only the damaged copy was checked");
    }
}
