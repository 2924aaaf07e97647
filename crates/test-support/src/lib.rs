//! What the crates' tests share instead of each keeping a copy: where the tiny fixture models are
//! ([`tiny_llama`], [`tiny_gpt2`]), the default model ([`default_model`]) and a fresh scratch
//! folder per test ([`scratch_dir`]). A missing model fails the test with one message that says
//! how to get it: a test that cannot run must not pass silently.
//!
//! Only paths, no loading: the crate stays free of libtorch, so every crate's tests can use it.

use std::path::PathBuf;

/// `shared/fixtures/<name>`; panics, saying where it looked and how to get it, when it is missing.
pub fn fixture(name: &str) -> PathBuf {
    paths::require(&paths::fixture_dir(name), &format!("fixture folder {name}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The tiny Llama fixture model.
pub fn tiny_llama() -> PathBuf {
    fixture("tiny-llama")
}

/// The tiny GPT-2 fixture model.
pub fn tiny_gpt2() -> PathBuf {
    fixture("tiny-gpt2")
}

/// The default model's folder (SmolLM2-135M-Instruct as set-up imported it); panics when it is not
/// imported, so a test that needs it fails instead of passing without running.
pub fn default_model() -> PathBuf {
    let dir = paths::default_model_dir();
    if !dir.is_dir() {
        panic!(
            "the default model is not imported at {}: run scripts/setup.sh",
            dir.display()
        );
    }
    dir
}

/// A fresh, empty folder for one test's files: `<temp>/<name>-<process id>`, emptied first when an
/// earlier run left it. Tests that run at once need different names.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| panic!("{}: cannot empty: {e}", dir.display()));
    }
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("{}: cannot create: {e}", dir.display()));
    dir
}
