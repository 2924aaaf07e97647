//! `cargo run --release -p gguf --example import -- MODEL.gguf OUT_DIR`
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [gguf_path, out_dir] = args.as_slice() else {
        eprintln!("usage: import MODEL.gguf OUT_DIR");
        return ExitCode::from(2);
    };
    match gguf::import_to_hf_folder(gguf_path, out_dir) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
