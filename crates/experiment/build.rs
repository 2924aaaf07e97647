//! Records which libtorch the binary links, for the run record: `$LIBTORCH/version.py` of the
//! PyTorch wheel (`scripts/setup.sh` points LIBTORCH there).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let version = std::env::var("LIBTORCH")
        .ok()
        .and_then(|dir| std::fs::read_to_string(format!("{dir}/version.py")).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DETOX_LIBTORCH_VERSION={version}");
}
