//! Spec loading, validation and expansion.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use spec::{
    load, load_with, MethodInfo, ParamDefault, ParamInfo, ParamKind, ParamValue, Range, Registry,
    SpecErrors, StrengthInfo,
};

/// A scratch folder with a fake HF model, two prompt files and a results parent; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "spec-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("model")).unwrap();
        std::fs::write(dir.join("model/config.json"), "{}").unwrap();
        std::fs::write(dir.join("small.gguf"), "GGUF").unwrap();
        std::fs::write(dir.join("a.jsonl"), "{\"id\": \"a1\", \"text\": \"Hi\"}\n").unwrap();
        std::fs::write(dir.join("b.txt"), "Hello there\n").unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BASE: &str = "\
output: out
models:
  - { name: m, path: model }
methods:
  - name: none
prompts:
  - { name: a, kind: user, path: a.jsonl }
  - { name: b, kind: user, path: b.txt }
scorers: [minilm, profanity]
";

/// A registry with a SASA-like method: a float parameter and a strength in [0, 10].
fn registry() -> Registry {
    static PARAMS: &[ParamInfo] = &[
        ParamInfo {
            name: "layer",
            kind: ParamKind::Int,
            default: Some(ParamDefault::Int(-1)),
            range: Some(Range {
                min: -100.0,
                max: 100.0,
            }),
            description: "hidden layer",
            choices: None,
            labelled: false,
        },
        ParamInfo {
            name: "margin",
            kind: ParamKind::Float,
            default: Some(ParamDefault::Float(0.0)),
            range: None,
            description: "margin",
            choices: None,
            labelled: false,
        },
    ];
    let mut r = Registry::builtin();
    r.register(MethodInfo {
        name: "sasa",
        description: "test stand-in",
        params: PARAMS.to_vec(),
        strength: Some(StrengthInfo {
            range: Range {
                min: 0.0,
                max: 10.0,
            },
            default: 1.0,
        }),
        full_distribution: false,
    });
    r
}

fn errors(r: Result<spec::Experiment, SpecErrors>) -> SpecErrors {
    match r {
        Ok(e) => panic!("expected an error, got {} cells:\n{e}", e.cells.len()),
        Err(e) => e,
    }
}

fn one_error(r: Result<spec::Experiment, SpecErrors>) -> spec::SpecError {
    let e = errors(r);
    assert_eq!(e.0.len(), 1, "expected one error, got: {e}");
    e.0[0].clone()
}

#[test]
fn valid_spec_expands_to_cells_in_order() {
    let s = Scratch::new();
    let text = format!("{BASE}generation: {{ seed: [1, 2] }}\n");
    let exp = load(s.write("exp.yaml", &text)).unwrap();
    assert_eq!(exp.name, "exp");
    assert_eq!(exp.output, s.0.join("out"));
    assert!(
        !exp.output.exists(),
        "validation must not create the output folder"
    );
    let labels: Vec<String> = exp.cells().iter().map(|c| c.label()).collect();
    assert_eq!(
        labels,
        [
            "m / none / a / seed 1",
            "m / none / a / seed 2",
            "m / none / b / seed 1",
            "m / none / b / seed 2",
        ]
    );
    let c = &exp.cells[0];
    assert_eq!(c.model.path, s.0.join("model"));
    assert_eq!(c.model.format, spec::ModelFormat::Hf);
    assert_eq!(c.judge, c.model);
    assert_eq!(c.generation.samples_per_prompt, 25);
    assert_eq!(c.generation.top_p, Some(0.9));
    assert_eq!(c.scorers, [spec::Scorer::Minilm, spec::Scorer::Profanity]);
    assert_eq!(c.prompts.source.path(), s.0.join("a.jsonl"));
    let ids: std::collections::BTreeSet<String> = exp.cells().iter().map(|c| c.cell_id()).collect();
    assert_eq!(ids.len(), 4);
    let table = exp.table();
    assert!(table.contains("4 cells"), "{table}");
    assert!(table.contains(&exp.cells[3].cell_id()), "{table}");
}

#[test]
fn strength_list_expands_and_is_range_checked() {
    let s = Scratch::new();
    let text = BASE.replace(
        "  - name: none\n",
        "  - name: none\n  - { name: sasa, strength: [0.5, 2], params: { margin: 0.25 } }\n",
    );
    let exp = load_with(&s.write("exp.yaml", &text), &registry()).unwrap();
    let labels: Vec<String> = exp.cells().iter().map(|c| c.label()).collect();
    assert_eq!(
        labels,
        [
            "m / none / a / seed 0",
            "m / none / b / seed 0",
            "m / sasa@0.5 / a / seed 0",
            "m / sasa@0.5 / b / seed 0",
            "m / sasa@2 / a / seed 0",
            "m / sasa@2 / b / seed 0",
        ]
    );
    let p = &exp.cells[2].method.steps[0].params;
    assert_eq!(p["margin"], ParamValue::Float(0.25));
    assert_eq!(p["layer"], ParamValue::Int(-1), "defaults are filled in");

    let bad = BASE.replace(
        "  - name: none\n",
        "  - { name: sasa, strength: [1, 11] }\n",
    );
    let e = one_error(load_with(&s.write("bad.yaml", &bad), &registry()));
    assert_eq!(e.path, "methods[0].strength[1]");
    assert!(e.reason.contains("outside the valid range [0, 10]"), "{e}");

    let none_strength = BASE.replace("  - name: none\n", "  - { name: none, strength: 1 }\n");
    let e = one_error(load(s.write("ns.yaml", &none_strength)));
    assert_eq!(e.path, "methods[0].strength");
    assert!(e.reason.contains("takes no strength"), "{e}");
}

#[test]
fn unknown_method_suggests_closest() {
    let s = Scratch::new();
    let text = BASE.replace("  - name: none\n", "  - name: none\n  - name: sasaa\n");
    let file = s.write("exp.yaml", &text);
    let e = one_error(load_with(&file, &registry()));
    assert_eq!(e.path, "methods[1].name");
    assert_eq!(e.suggestion.as_deref(), Some("sasa"));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: methods[1].name: unknown method \"sasaa\"; did you mean \"sasa\"?",
            file.display()
        )
    );
    // With the built-in registry only `none` is known.
    let e = one_error(load(
        s.write("b.yaml", &BASE.replace("name: none", "name: nnoe")),
    ));
    assert_eq!(e.suggestion.as_deref(), Some("none"));
}

#[test]
fn unknown_param_and_wrong_param_type() {
    let s = Scratch::new();
    let text = BASE.replace(
        "  - name: none\n",
        "  - { name: sasa, params: { margn: 1.0, layer: 2.5 } }\n",
    );
    let e = errors(load_with(&s.write("exp.yaml", &text), &registry()));
    assert_eq!(e.0.len(), 2, "{e}");
    let unknown =
        e.0.iter()
            .find(|x| x.path == "methods[0].params.margn")
            .unwrap();
    assert_eq!(unknown.suggestion.as_deref(), Some("margin"));
    let wrong =
        e.0.iter()
            .find(|x| x.path == "methods[0].params.layer")
            .unwrap();
    assert!(wrong.reason.contains("expected Int"), "{wrong}");
}

#[test]
fn unknown_key_names_path_and_suggests() {
    let s = Scratch::new();
    let text = format!("{BASE}generation: {{ max_new_tokns: 5 }}\n");
    let file = s.write("exp.yaml", &text);
    let e = one_error(load(&file));
    assert_eq!(e.file, file);
    assert_eq!(e.path, "generation.max_new_tokns");
    assert_eq!(e.suggestion.as_deref(), Some("max_new_tokens"));
    assert!(e.location.is_some());

    let top = format!("{BASE}scorer: [minilm]\n");
    let e = one_error(load(s.write("top.yaml", &top)));
    assert_eq!(e.path, "scorer");
    assert_eq!(e.suggestion.as_deref(), Some("scorers"));

    // Inside a prompt source's options (the data crate denies them).
    let p = BASE.replace("path: b.txt }", "path: b.txt, sampel: 3 }");
    let e = one_error(load(s.write("p.yaml", &p)));
    assert!(e.path.starts_with("prompts[1]"), "{e}");
    assert_eq!(e.suggestion.as_deref(), Some("sample"), "{e}");
}

#[test]
fn wrong_type_names_field_and_line() {
    let s = Scratch::new();
    let text = format!("{BASE}generation:\n  top_p: lots\n");
    let e = one_error(load(s.write("exp.yaml", &text)));
    assert_eq!(e.path, "generation.top_p");
    assert!(e.reason.contains("invalid type"), "{e}");
    let line = BASE.lines().count() + 2;
    assert_eq!(e.location.map(|l| l.0), Some(line), "{e}");
}

#[test]
fn malformed_yaml_has_line_and_column() {
    let s = Scratch::new();
    let file = s.write(
        "bad.yaml",
        "models:\n  - { name: m, path: model\nmethods: []\n",
    );
    let e = one_error(load(&file));
    assert_eq!(e.file, file);
    let (line, col) = e.location.expect("syntax errors carry a location");
    assert!(line >= 2, "{e}");
    assert!(col >= 1);
    assert!(e
        .to_string()
        .starts_with(&format!("{}:{line}:{col}: ", file.display())));
}

#[test]
fn unknown_scorer_and_hf_scorer() {
    let s = Scratch::new();
    let text = BASE.replace(
        "[minilm, profanity]",
        "[minilm, profanty, \"hf:model#toxic\"]",
    );
    let e = one_error(load(s.write("exp.yaml", &text)));
    assert_eq!(e.path, "scorers[1]");
    assert_eq!(e.suggestion.as_deref(), Some("profanity"));

    let ok = BASE.replace("[minilm, profanity]", "[\"hf:model#toxic\"]");
    let exp = load(s.write("ok.yaml", &ok)).unwrap();
    assert_eq!(
        exp.cells[0].scorers,
        [spec::Scorer::Hf {
            dir: s.0.join("model"),
            label: Some("toxic".into())
        }]
    );
    let missing = BASE.replace("[minilm, profanity]", "[\"hf:nowhere\"]");
    let e = one_error(load(s.write("m.yaml", &missing)));
    assert!(e.reason.contains("not found"), "{e}");
}

#[test]
fn include_merges_with_including_file_winning() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.0.join("frag")).unwrap();
    // The fragment's relative paths resolve against its own folder.
    s.write(
        "frag/common.yaml",
        "prompts:\n  - { name: a, kind: user, path: ../a.jsonl }\n\
         generation: { samples_per_prompt: 3, max_new_tokens: 7 }\n\
         scorers: [perspective]\n",
    );
    s.write("frag/second.yaml", "generation: { temperature: 0.7 }\n");
    let text = "include: [frag/common.yaml, frag/second.yaml]\n\
                output: out\n\
                models: [{ name: m, path: model }]\n\
                methods: [{ name: none }]\n\
                generation: { samples_per_prompt: 5 }\n\
                scorers: [minilm]\n";
    let exp = load(s.write("exp.yaml", text)).unwrap();
    assert_eq!(exp.cells.len(), 1);
    let c = &exp.cells[0];
    let g = &c.generation;
    assert_eq!(g.samples_per_prompt, 5, "the including file wins");
    assert_eq!(g.max_new_tokens, 7, "maps merge recursively");
    assert_eq!(g.temperature, 0.7, "later fragments add keys");
    assert_eq!(
        c.scorers,
        [spec::Scorer::Minilm],
        "lists are replaced whole"
    );
    assert_eq!(c.prompts.source.path(), s.0.join("a.jsonl"));

    // An error under a key a fragment set names the fragment.
    s.write("frag/bad.yaml", "generation: { top_k: 0 }\n");
    let bad = BASE.to_string() + "include: [frag/bad.yaml]\n";
    let e = one_error(load(s.write("bad.yaml", &bad)));
    assert_eq!(e.file, s.0.join("frag/bad.yaml"));
    assert_eq!(e.path, "generation.top_k");

    let missing = BASE.to_string() + "include: [frag/nope.yaml]\n";
    let e = one_error(load(s.write("missing.yaml", &missing)));
    assert_eq!(e.path, "include[0]");
}

#[test]
fn include_cycle_is_an_error() {
    let s = Scratch::new();
    s.write("x.yaml", "include: [y.yaml]\n");
    s.write("y.yaml", "include: [x.yaml]\n");
    let text = BASE.to_string() + "include: [x.yaml]\n";
    let e = one_error(load(s.write("exp.yaml", &text)));
    assert!(e.reason.starts_with("include cycle:"), "{e}");
    assert!(
        e.reason.contains("x.yaml -> ") && e.reason.contains("y.yaml"),
        "{e}"
    );

    let selfref = BASE.to_string() + "include: [self.yaml]\n";
    let e = one_error(load(s.write("self.yaml", &selfref)));
    assert!(e.reason.starts_with("include cycle:"), "{e}");
}

#[test]
fn only_and_exclude_filter_cells() {
    let s = Scratch::new();
    let text = format!(
        "{}generation: {{ seed: [1, 2] }}\nonly:\n  - {{ prompts: a }}\n  - {{ seed: 2 }}\nexclude:\n  - {{ prompts: b, seed: 2 }}\n",
        BASE.replace("  - { name: m, path: model }\n", "  - { name: m, path: model }\n  - small.gguf\n")
    );
    let exp = load(s.write("exp.yaml", &text)).unwrap();
    let labels: Vec<String> = exp.cells().iter().map(|c| c.label()).collect();
    assert_eq!(
        labels,
        [
            "m / none / a / seed 1",
            "m / none / a / seed 2",
            "small / none / a / seed 1",
            "small / none / a / seed 2",
        ]
    );
    assert_eq!(exp.cells[2].model.format, spec::ModelFormat::Gguf);

    let typo = format!("{BASE}only: [{{ prompts: aa }}]\n");
    let e = one_error(load(s.write("typo.yaml", &typo)));
    assert_eq!(e.path, "only[0].prompts");
    assert_eq!(e.suggestion.as_deref(), Some("a"));

    let nothing = format!("{BASE}exclude: [{{ prompts: a, seed: 9 }}]\n");
    let e = one_error(load(s.write("nothing.yaml", &nothing)));
    assert_eq!(e.path, "exclude[0]");
    assert!(e.reason.contains("matches no cell"), "{e}");

    let all = format!("{BASE}exclude: [{{ method: none }}]\n");
    let e = one_error(load(s.write("all.yaml", &all)));
    assert!(e.reason.contains("leave no cells"), "{e}");
}

#[test]
fn cell_id_is_stable_across_key_order_and_differs_for_params() {
    let s = Scratch::new();
    let a = "output: out\nmodels: [{ name: m, path: model }]\n\
             methods: [{ name: sasa, strength: 2, params: { margin: 0.5, layer: 3 } }]\n\
             prompts: [{ name: a, kind: user, path: a.jsonl }]\n\
             generation: { top_p: 0.8, max_new_tokens: 9 }\nscorers: [minilm, profanity]\n";
    // Same config: keys reordered, a different display name and label, a path spelt differently,
    // a different batch size and output folder.
    let b = "scorers: [minilm, profanity]\n\
             generation: { batch_size: 3, max_new_tokens: 9, top_p: 0.8 }\n\
             prompts: [{ path: ./sub/../a.jsonl, kind: user, name: other }]\n\
             methods: [{ params: { layer: 3, margin: 0.5 }, strength: 2.0, name: sasa, label: x }]\n\
             models: [{ path: model/, name: renamed }]\noutput: elsewhere\n";
    std::fs::create_dir_all(s.0.join("sub")).unwrap();
    let ea = load_with(&s.write("a.yaml", a), &registry()).unwrap();
    let eb = load_with(&s.write("b.yaml", b), &registry()).unwrap();
    let (ca, cb) = (&ea.cells[0], &eb.cells[0]);
    assert_eq!(ca.canonical_json(), cb.canonical_json());
    assert_eq!(ca.cell_id(), cb.cell_id());
    assert_eq!(ca.cell_id().len(), 16);
    // Canonical JSON has sorted keys and project-relative or absolute paths.
    let json = ca.canonical_json();
    assert!(json.starts_with("{\"generation\":"), "{json}");

    for change in [
        a.replace("margin: 0.5", "margin: 0.6"),
        a.replace("strength: 2", "strength: 3"),
        a.replace("max_new_tokens: 9", "max_new_tokens: 10"),
        a.replace("[minilm, profanity]", "[minilm]"),
        a.replace("scorers:", "policy: { toxic_threshold: 0.6 }\nscorers:"),
        a.replace("scorers:", "judge: small.gguf\nscorers:"),
    ] {
        let ec = load_with(&s.write("c.yaml", &change), &registry()).unwrap();
        assert_ne!(ec.cells[0].cell_id(), ca.cell_id(), "{change}");
    }
    // A golden value: the hash must not drift between builds or platforms.
    let golden =
        spec::canonical_json(&serde_json::json!({"b": [1, {"d": null, "c": 0.5}], "a": "x"}));
    assert_eq!(golden, r#"{"a":"x","b":[1,{"c":0.5,"d":null}]}"#);
}

#[test]
fn missing_paths_are_errors() {
    let s = Scratch::new();
    let text = BASE
        .replace("path: model }", "path: nomodel/ }")
        .replace("path: b.txt", "path: nothere.txt")
        .replace("output: out", "output: b.txt/out");
    let e = errors(load(s.write("exp.yaml", &text)));
    let paths: Vec<&str> = e.0.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(
        paths,
        ["output", "models[0].path", "prompts[1].path"],
        "{e}"
    );
    assert!(e.0[0].reason.contains("not a folder"), "{e}");
    assert!(e.0[1].reason.contains("not found"), "{e}");

    let preset = BASE.replace("{ name: m, path: model }", "smollm2-13m");
    let e = one_error(load(s.write("preset.yaml", &preset)));
    assert_eq!(e.path, "models[0]");
    assert_eq!(e.suggestion.as_deref(), Some("smollm2-135m"), "{e}");

    let not_hf = BASE.replace("path: model }", "path: a.jsonl, format: hf }");
    let e = one_error(load(s.write("nothf.yaml", &not_hf)));
    assert!(e.reason.contains("config.json"), "{e}");
}

#[cfg(unix)]
#[test]
fn unwritable_output_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let ro = s.0.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores permissions; the check is only meaningful when the probe really fails.
    let probe_fails = std::fs::write(ro.join("x"), "").is_err();
    let text = BASE.replace("output: out", "output: ro/out");
    let r = load(s.write("exp.yaml", &text));
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    if probe_fails {
        let e = one_error(r);
        assert_eq!(e.path, "output");
        assert!(e.reason.contains("not writable"), "{e}");
    } else {
        assert!(r.is_ok());
    }
    assert!(!ro.join("out").exists());
}

#[test]
fn several_errors_are_reported_together() {
    let s = Scratch::new();
    let text = format!(
        "{}generation: {{ samples_per_prompt: 0, device: cuad }}\n",
        BASE.replace("name: none", "name: nope")
    );
    let e = errors(load(s.write("exp.yaml", &text)));
    let paths: Vec<&str> = e.0.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "methods[0].name",
            "generation.samples_per_prompt",
            "generation.device"
        ],
        "{e}"
    );
    assert_eq!(e.0[2].suggestion.as_deref(), Some("cuda"));
    assert!(e.to_string().starts_with("3 problems in the spec:"));
}

#[test]
fn quickstart_validates() {
    let root = paths::project_root();
    let file = root.join("experiments/quickstart.yaml");
    // The preset points at the model set-up imports: without it this must fail, not skip.
    paths::require(
        &paths::default_model_dir().join("config.json"),
        "the imported default model",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let exp = load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exp.name, "quickstart");
    assert_eq!(exp.output, root.join("results/quickstart"));
    let labels: Vec<String> = exp.cells().iter().map(|c| c.label()).collect();
    assert_eq!(
        labels,
        [
            "smollm2-135m / none / rtp-style / seed 0",
            "smollm2-135m / none / bold-gender / seed 0",
        ]
    );
    let c = &exp.cells[0];
    assert_eq!(
        c.model.path,
        root.join(".detox/models/smollm2-135m-instruct")
    );
    assert_eq!(c.model.preset.as_deref(), Some("smollm2-135m"));
    assert_eq!(c.judge, c.model);
    assert_eq!(c.generation.samples_per_prompt, 25);
    assert_eq!(c.generation.max_new_tokens, 20);
    // Inside the checkout, the identity uses project-relative paths.
    let json = c.canonical_json();
    assert!(
        json.contains("\"path\":\".detox/models/smollm2-135m-instruct\""),
        "{json}"
    );
    assert!(
        json.contains("\"path\":\"configs/prompts/rtp-style.jsonl\""),
        "{json}"
    );
    println!("{exp}");
}

/// The test registry plus a word-filter-like method with a choice parameter and no strength.
fn registry_with_filter() -> Registry {
    let filter_params = vec![ParamInfo {
        name: "mode",
        kind: ParamKind::String,
        default: Some(ParamDefault::Str("decode".into())),
        range: None,
        description: "when to filter",
        choices: Some(&["decode", "posthoc", "both"]),
        labelled: false,
    }];
    let mut r = registry();
    r.register(MethodInfo {
        name: "ban",
        description: "test stand-in",
        params: filter_params,
        strength: None,
        full_distribution: false,
    });
    r
}

#[test]
fn a_stack_applies_methods_in_order_and_expands_its_strengths() {
    let s = Scratch::new();
    let text = BASE.replace(
        "  - name: none\n",
        "  - name: sasa\n    strength: 2\n  - stack:\n      - { name: ban, params: { mode: both } }\n      - { name: sasa, strength: [1, 3], params: { margin: 0.5 } }\n",
    );
    let exp = load_with(&s.write("stack.yaml", &text), &registry_with_filter()).unwrap();
    let labels: Vec<String> = exp
        .cells()
        .iter()
        .filter(|c| c.prompts.name == "a")
        .map(|c| c.label())
        .collect();
    assert_eq!(
        labels,
        [
            "m / sasa@2 / a / seed 0",
            "m / ban+sasa@1 / a / seed 0",
            "m / ban+sasa@3 / a / seed 0",
        ]
    );
    let stacked = &exp.cells[2].method;
    assert_eq!(stacked.name(), "ban+sasa");
    let names: Vec<&str> = stacked.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ban", "sasa"]);
    assert_eq!(stacked.steps[0].strength, None);
    assert_eq!(
        stacked.flat_params()["ban.mode"],
        ParamValue::String("both".into())
    );
    assert_eq!(stacked.flat_params()["sasa.margin"], ParamValue::Float(0.5));
    // A plain method keeps its identity shape; a stack's differs from each of its steps.
    let plain = exp.cells[0].identity();
    assert_eq!(plain["method"]["name"], "sasa");
    assert!(exp.cells[2].identity()["method"]["stack"].is_array());
    // cell.json shows the flat fields and the steps.
    let resolved: serde_json::Value = serde_json::from_str(&exp.cells[2].resolved_json()).unwrap();
    assert_eq!(resolved["method"]["name"], "ban+sasa");
    assert_eq!(resolved["method"]["strength"], 1.0);
    assert_eq!(resolved["method"]["steps"][1]["name"], "sasa");

    // Bad stacks: a wrong choice (with a suggestion), one step only, name and stack together.
    let bad = BASE.replace(
        "  - name: none\n",
        "  - stack:\n      - { name: ban, params: { mode: posthok } }\n      - { name: sasa }\n",
    );
    let e = one_error(load_with(
        &s.write("bad1.yaml", &bad),
        &registry_with_filter(),
    ));
    assert_eq!(e.path, "methods[0].stack[0].params.mode", "{e}");
    assert_eq!(e.suggestion.as_deref(), Some("posthoc"), "{e}");
    let bad = BASE.replace("  - name: none\n", "  - stack: [{ name: sasa }]\n");
    let e = one_error(load_with(
        &s.write("bad2.yaml", &bad),
        &registry_with_filter(),
    ));
    assert_eq!(e.path, "methods[0].stack", "{e}");
    let bad = BASE.replace(
        "  - name: none\n",
        "  - { name: sasa, stack: [{ name: ban }, { name: sasa }] }\n",
    );
    let e = one_error(load_with(
        &s.write("bad3.yaml", &bad),
        &registry_with_filter(),
    ));
    assert_eq!(e.path, "methods[0]", "{e}");
}

#[test]
fn optional_models_and_prompt_sets_that_are_missing_drop_their_cells() {
    let s = Scratch::new();
    let text = "output: out\n\
                models:\n  - { name: m, path: model }\n  - { name: big, path: no-such-model, optional: true }\n\
                methods: [{ name: none }]\n\
                prompts:\n  - { name: a, kind: user, path: a.jsonl }\n  - { name: gone, kind: user, path: gone.jsonl, optional: true }\n\
                judge: { path: no-such-judge, optional: true }\n\
                scorers: [profanity]\n";
    let exp = load(s.write("opt.yaml", text)).unwrap();
    assert_eq!(exp.cells.len(), 1);
    assert_eq!(exp.cells[0].model.name, "m");
    assert_eq!(exp.cells[0].judge, exp.cells[0].model);
    assert_eq!(exp.skipped.len(), 3, "{:?}", exp.skipped);
    let table = exp.table();
    assert!(table.contains("no-such-model"), "{table}");
    assert!(table.contains("own model judges"), "{table}");
    // Without `optional`, a missing model is still an error naming the field.
    let e = one_error(load(s.write(
        "req.yaml",
        &text.replace("path: no-such-model, optional: true", "path: no-such-model"),
    )));
    assert_eq!(e.path, "models[1].path", "{e}");
    // All optional and all missing: an error, not an empty experiment.
    let none = text.replace("  - { name: m, path: model }\n", "");
    let e = one_error(load(s.write("none.yaml", &none)));
    assert_eq!(e.path, "models", "{e}");
}

/// A registry whose `rad` stand-in draws from the full distribution and whose `ban` has a
/// labelled flag.
fn fairness_registry() -> Registry {
    static BAN: &[ParamInfo] = &[ParamInfo {
        name: "text_rule",
        kind: ParamKind::Bool,
        default: Some(ParamDefault::Bool(false)),
        range: None,
        description: "extra rule",
        choices: None,
        labelled: true,
    }];
    let mut r = registry();
    r.register(MethodInfo {
        name: "rad",
        description: "test stand-in",
        params: Vec::new(),
        strength: None,
        full_distribution: true,
    });
    r.register(MethodInfo {
        name: "ban",
        description: "test stand-in",
        params: BAN.to_vec(),
        strength: None,
        full_distribution: false,
    });
    r
}

#[test]
fn min_new_tokens_is_recorded_and_checked() {
    let s = Scratch::new();
    let text = format!("{BASE}generation: {{ max_new_tokens: 20, min_new_tokens: 20 }}\n");
    let exp = load(s.write("fixed.yaml", &text)).unwrap();
    let cell = &exp.cells[0];
    assert_eq!(cell.generation.min_new_tokens, 20);
    let record = cell.record();
    assert_eq!(record.generation.unwrap().min_new_tokens, Some(20));
    // Unset, it leaves the identity (and so the cell ids of older specs) as it was.
    let free = load(s.write("free.yaml", BASE)).unwrap();
    assert!(!free.cells[0].canonical_json().contains("min_new_tokens"));
    assert_ne!(free.cells[0].cell_id(), cell.cell_id());

    let bad = format!("{BASE}generation: {{ max_new_tokens: 10, min_new_tokens: 11 }}\n");
    let file = s.write("bad.yaml", &bad);
    let e = one_error(load(&file));
    assert_eq!(e.file, file);
    assert_eq!(e.path, "generation.min_new_tokens");
    assert!(e.reason.contains("above max_new_tokens"), "{e}");
}

#[test]
fn baselines_default_to_none_and_must_name_an_entry() {
    let s = Scratch::new();
    let text = BASE.replace(
        "  - name: none\n",
        "  - name: none\n  - { name: sasa, strength: 1 }\n  - { name: ban, baseline: sasa }\n",
    );
    let exp = load_with(&s.write("exp.yaml", &text), &fairness_registry()).unwrap();
    let baseline_of = |label: &str| {
        exp.cells
            .iter()
            .find(|c| c.method.label == label)
            .unwrap()
            .record()
            .method
            .baseline
    };
    assert_eq!(baseline_of("none"), None);
    assert_eq!(baseline_of("sasa").as_deref(), Some("none"));
    assert_eq!(baseline_of("ban").as_deref(), Some("sasa"));

    let bad = BASE.replace(
        "  - name: none\n",
        "  - name: none\n  - { name: sasa, baseline: nnoe }\n",
    );
    let file = s.write("bad.yaml", &bad);
    let e = one_error(load_with(&file, &fairness_registry()));
    assert_eq!(e.file, file);
    assert_eq!(e.path, "methods[1].baseline");
    assert_eq!(e.suggestion.as_deref(), Some("none"));
}

#[test]
fn full_distribution_methods_run_with_top_p_off_unless_the_entry_says() {
    let s = Scratch::new();
    let text = BASE.replace(
        "  - name: none\n",
        "  - name: none\n  - name: rad\n  - { name: rad, label: rad-nucleus, top_p: 0.9 }\n  - { name: sasa, top_p: 1 }\n",
    );
    let exp = load_with(&s.write("exp.yaml", &text), &fairness_registry()).unwrap();
    let top_p = |label: &str| {
        exp.cells
            .iter()
            .find(|c| c.method.label == label)
            .unwrap()
            .generation
            .top_p
    };
    assert_eq!(top_p("none"), Some(0.9));
    assert_eq!(top_p("rad"), None);
    assert_eq!(top_p("rad-nucleus"), Some(0.9));
    assert_eq!(top_p("sasa"), None);
    let bad = BASE.replace("  - name: none\n", "  - { name: none, top_p: 0 }\n");
    let e = one_error(load_with(&s.write("bad.yaml", &bad), &fairness_registry()));
    assert_eq!(e.path, "methods[0].top_p");
}

#[test]
fn a_labelled_parameter_away_from_its_default_names_the_variant() {
    let s = Scratch::new();
    let text = BASE.replace(
        "  - name: none\n",
        "  - name: ban\n  - { name: ban, params: { text_rule: true } }\n",
    );
    let exp = load_with(&s.write("exp.yaml", &text), &fairness_registry()).unwrap();
    let labels: std::collections::BTreeSet<&str> =
        exp.cells.iter().map(|c| c.method.label.as_str()).collect();
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        ["ban", "ban[text_rule=true]"]
    );
}

/// The decoding protocols a spec can include (configs/protocols/): the fusion paper's
/// (greedy, 10 new tokens, one sample) and RealToxicityPrompts' (the defaults), each overridable
/// by the including spec.
#[test]
fn decoding_protocols_are_includable_presets() {
    let protocols = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/protocols");
    let s = Scratch::new();
    let with = |protocol: &str, extra: &str| {
        let text = format!(
            "include: [{}]\n{BASE}{extra}",
            protocols.join(protocol).display()
        );
        let exp = load(s.write("protocol.yaml", &text)).unwrap_or_else(|e| panic!("{e}"));
        exp.cells[0].generation.clone()
    };
    let fusion = with("fusion-paper.yaml", "");
    assert_eq!(fusion.temperature, 0.0, "greedy");
    assert_eq!(fusion.max_new_tokens, 10);
    assert_eq!(fusion.samples_per_prompt, 1);
    let rtp = with("rtp.yaml", "");
    assert_eq!(
        (
            rtp.samples_per_prompt,
            rtp.max_new_tokens,
            rtp.temperature,
            rtp.top_p
        ),
        (25, 20, 1.0, Some(0.9))
    );
    let defaults = load(s.write("plain.yaml", BASE)).unwrap().cells[0]
        .generation
        .clone();
    assert_eq!(rtp, defaults, "the RTP protocol is the default");
    let longer = with("fusion-paper.yaml", "generation: { max_new_tokens: 20 }\n");
    assert_eq!((longer.max_new_tokens, longer.temperature), (20, 0.0));
}
