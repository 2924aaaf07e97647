//! `detox train sasa` end to end on the tiny Llama fixture and a little real labelled data: it
//! prints held-out metrics, writes a subspace that loads for that model, reuses its embedding
//! cache, and refuses a source named both for fitting and for measuring only.

use std::process::Output;

mod common;

fn detox(args: &[&str]) -> Output {
    common::detox(&std::env::temp_dir(), args)
}

fn scratch(name: &str) -> std::path::PathBuf {
    common::scratch("train-sasa", name)
}

#[test]
fn train_sasa_writes_a_subspace_with_held_out_metrics() {
    let model = paths::require(&paths::fixture_dir("tiny-llama"), "tiny-llama")
        .unwrap_or_else(|e| panic!("{e}"));
    let model = model.to_str().unwrap();
    let dir = scratch("fit");
    let out = dir.join("tiny.json");
    let cache = dir.join("cache");
    let args = [
        "train",
        "sasa",
        "--model",
        model,
        "--device",
        "cpu",
        "--data",
        "toxigen",
        "--evaluate",
        "jigsaw",
        "--per-label",
        "40",
        "--out",
        out.to_str().unwrap(),
        "--embedding-cache",
        cache.to_str().unwrap(),
    ];
    let first = detox(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    for line in [
        "held-out toxigen: accuracy",
        "held-out jigsaw: accuracy",
        "held-out, sources fitted on:",
        "held-out, every source:",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }

    let subspace = sasa::Subspace::load_for_model(&out, std::path::Path::new(model))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(subspace.model.hidden_size, 64);
    assert_eq!(subspace.model.folder, "tiny-llama");
    let fit = &subspace.fit;
    assert!(fit.sources["toxigen"].train > 0);
    assert_eq!(fit.sources["jigsaw"].train, 0, "jigsaw is only measured");
    assert!(fit.sources["jigsaw"].held_out > 0);
    let held_out = fit.held_out.as_ref().expect("held-out metrics");
    assert_eq!(held_out.texts, fit.sources["toxigen"].held_out);
    assert_eq!(fit.eigenvalues_total, 64);
    assert!(fit.eigenvalues_kept >= 1 && fit.eigenvalues_kept <= 64);

    // The second run embeds nothing: every part comes from the cache, and the fit is the same.
    let second = detox(&args);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(!stderr.contains("embedded"), "{stderr}");
    assert_eq!(stderr.matches(" texts from ").count(), 3, "{stderr}");
    let again = sasa::Subspace::load(&out).unwrap();
    assert_eq!(again.w, subspace.w);

    let both = detox(&[
        "train",
        "sasa",
        "--model",
        model,
        "--data",
        "toxigen",
        "--evaluate",
        "toxigen",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert_eq!(both.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("both --data and --evaluate"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
