//! The `detox` binary end to end on the tiny fixtures: bad input gives one-line errors naming
//! the file, `generate` resumes without duplicates, `forward` writes the reference tensors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn detox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detox"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("runs detox")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("detox-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> PathBuf {
    paths::require(&paths::fixture_dir(name), name).unwrap_or_else(|e| panic!("{e}"))
}

/// A failed run: exit code 1 and exactly one stderr line, `error: ...`, which is returned.
fn one_line_error(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line expected, got:\n{stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Copies a fixture model folder so a test can break one file of it.
fn copy_model(from: &Path, to: &Path) {
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[test]
fn bad_models_give_one_line_errors_naming_the_file() {
    let tiny = fixture("tiny-llama");
    let dir = scratch("bad-models");
    let forward = |model: &Path| {
        detox(&[
            "forward",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            "1,2",
            "--out",
            "/dev/null",
        ])
    };

    let err = one_line_error(&forward(&dir.join("missing")));
    assert!(
        err.contains("missing") && err.contains("does not exist"),
        "{err}"
    );

    let unknown = dir.join("unknown");
    std::fs::create_dir(&unknown).unwrap();
    copy_model(&tiny, &unknown);
    std::fs::write(unknown.join("config.json"), r#"{"model_type":"mamba"}"#).unwrap();
    let err = one_line_error(&forward(&unknown));
    assert!(
        err.contains("unknown/config.json") && err.contains("mamba"),
        "{err}"
    );

    let corrupt = dir.join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    copy_model(&tiny, &corrupt);
    let bytes = std::fs::read(tiny.join("model.safetensors")).unwrap();
    std::fs::write(corrupt.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = one_line_error(&forward(&corrupt));
    assert!(
        err.contains("corrupt/model.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );

    let small_vocab = dir.join("small-vocab");
    std::fs::create_dir(&small_vocab).unwrap();
    copy_model(&tiny, &small_vocab);
    let config = std::fs::read_to_string(tiny.join("config.json"))
        .unwrap()
        .replace("\"vocab_size\": 1000", "\"vocab_size\": 500");
    std::fs::write(small_vocab.join("config.json"), config).unwrap();
    let err = one_line_error(&forward(&small_vocab));
    assert!(
        err.contains("tokenizer.json") && err.contains("1000 tokens") && err.contains("500"),
        "{err}"
    );

    let err = one_line_error(&detox(&[
        "forward",
        "--model",
        tiny.to_str().unwrap(),
        "--ids",
        "1,1000",
        "--out",
        "/dev/null",
    ]));
    assert!(
        err.contains("token id 1000 is outside the vocabulary"),
        "{err}"
    );

    // Malformed arguments are clap's to report (exit code 2, with usage).
    let bad_dtype = detox(&[
        "forward",
        "--model",
        tiny.to_str().unwrap(),
        "--ids",
        "1",
        "--out",
        "/dev/null",
        "--dtype",
        "int4",
    ]);
    assert_eq!(bad_dtype.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_dtype.stderr).contains("unknown dtype \"int4\""));
}

#[test]
fn bad_gguf_is_a_clear_error() {
    let dir = scratch("bad-gguf");
    let not_gguf = dir.join("weights.gguf");
    std::fs::write(&not_gguf, b"definitely not a gguf file").unwrap();
    let out = dir.join("out");
    let err = one_line_error(&detox(&[
        "import-gguf",
        not_gguf.to_str().unwrap(),
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("weights.gguf"), "{err}");
    assert!(
        !out.join("model.safetensors").exists(),
        "nothing written for a bad file"
    );
}

#[test]
fn forward_writes_the_reference_logits() {
    let tiny = fixture("tiny-llama");
    let dir = scratch("forward");
    let out = dir.join("out.safetensors");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("expected.json")).unwrap())
            .unwrap();
    let ids: Vec<String> = expected["ids"][2]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let result = detox(&[
        "forward",
        "--model",
        tiny.to_str().unwrap(),
        "--ids",
        &ids.join(","),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let written: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(&out)
            .unwrap()
            .into_iter()
            .collect();
    let reference: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(tiny.join("expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    for (ours, theirs) in [
        ("logits", "seq2.logits"),
        ("last_hidden", "seq2.last_hidden"),
    ] {
        let diff = (&written[ours] - &reference[theirs])
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff <= 1e-4, "{ours} differs by {diff}");
    }
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn generate_resumes_after_a_kill_without_duplicates() {
    let tiny = fixture("tiny-llama");
    let dir = scratch("resume");
    let prompts = dir.join("prompts.txt");
    std::fs::write(
        &prompts,
        "The quick brown fox\nShe said that\n\nIn 1998, the team\n",
    )
    .unwrap();
    let generate = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            tiny.to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
            "--n",
            "4",
            "--max-new-tokens",
            "8",
            "--seed",
            "3",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        detox(&args)
    };
    let full = dir.join("full.jsonl");
    assert!(generate(&full, &["--batch-size", "5"]).status.success());
    let reference = read_lines(&full);
    assert_eq!(reference.len(), 12);
    assert_eq!(
        reference[8]["prompt_id"], "line-4",
        "blank lines keep line-number ids"
    );

    // A run killed after five records, in the middle of writing the sixth.
    let partial = dir.join("partial.jsonl");
    let text = std::fs::read_to_string(&full).unwrap();
    let cut: usize = text.lines().take(5).map(|l| l.len() + 1).sum::<usize>() + 17;
    std::fs::write(&partial, &text[..cut]).unwrap();
    let resumed = generate(&partial, &["--batch-size", "3"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let mut got = read_lines(&partial);
    let mut want = reference.clone();
    let key = |v: &serde_json::Value| {
        (
            v["prompt_id"].as_str().unwrap().to_string(),
            v["sample_index"].as_u64().unwrap(),
        )
    };
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want, "resumed file equals an uninterrupted run");

    // A finished file is left alone; other settings are refused rather than mixed in.
    let before = std::fs::read(&full).unwrap();
    assert!(generate(&full, &[]).status.success());
    assert_eq!(std::fs::read(&full).unwrap(), before);
    let err = one_line_error(&generate(&full, &["--top-p", "0.5"]));
    assert!(
        err.contains("full.jsonl:1") && err.contains("other model or decoding settings"),
        "{err}"
    );
}

/// The binary finds its project (presets, configs) from any working directory, and a binary
/// installed away from its checkout takes the project folder from `DETOX_HOME`.
#[test]
fn runs_from_any_directory_and_reads_detox_home() {
    let elsewhere = scratch("elsewhere");
    let output = Command::new(env!("CARGO_BIN_EXE_detox"))
        .current_dir(&elsewhere)
        .arg("list")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("smollm2-135m"), "{text}");
    assert!(
        text.contains("logit_bias"),
        "every registered method is listed: {text}"
    );

    let home = elsewhere.join("no-project-here");
    let output = Command::new(env!("CARGO_BIN_EXE_detox"))
        .current_dir(&elsewhere)
        .env_remove("RUST_BACKTRACE")
        .env("DETOX_HOME", &home)
        .arg("list")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = one_line_error(&output);
    assert!(
        error.contains(&home.join("configs").display().to_string()),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&elsewhere);
}
