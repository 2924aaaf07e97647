//! What a spec can name — model presets, methods with their parameters, scorers and prompt
//! sources — as the text `detox list` prints.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use spec::{ParamDefault, ParamKind, Registry, SCORER_NAMES};

/// The catalogue of everything `registry` and this build know.
pub fn render(registry: &Registry) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "MODEL PRESETS (configs/models/; a spec may also give a path)"
    )?;
    let dir = spec::validate::presets_dir();
    let mut presets: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    presets.sort();
    for path in presets {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let preset: serde_yaml::Value =
            serde_yaml::from_str(&text).with_context(|| format!("{}: not YAML", path.display()))?;
        let field = |k: &str| preset.get(k).and_then(|v| v.as_str()).unwrap_or("-");
        let target = path.parent().unwrap_or(&dir).join(field("path"));
        let present = if target.exists() {
            "present"
        } else {
            "missing"
        };
        writeln!(
            out,
            "  {:<20} {} {} ({present})",
            field("name"),
            field("format"),
            spec::cell::normalize(&target).display()
        )?;
    }

    writeln!(
        out,
        "\nMETHODS (methods: - name: …; stack several with `stack:`)"
    )?;
    for m in registry.methods() {
        writeln!(out, "  {:<20} {}", m.name, m.description)?;
        if let Some(s) = m.strength {
            writeln!(
                out,
                "  {:<20}   strength in [{}, {}], default {}",
                "", s.range.min, s.range.max, s.default
            )?;
        }
        for p in &m.params {
            let default = match &p.default {
                None => "required".to_string(),
                Some(ParamDefault::Float(x)) => format!("default {x}"),
                Some(ParamDefault::Int(x)) => format!("default {x}"),
                Some(ParamDefault::Bool(x)) => format!("default {x}"),
                Some(ParamDefault::Str(s)) => format!("default {s}"),
            };
            let domain = match (p.range, p.choices) {
                (Some(r), _) => format!(" in [{}, {}]", r.min, r.max),
                (None, Some(c)) => format!(" one of {}", c.join("|")),
                (None, None) => String::new(),
            };
            let kind = match p.kind {
                ParamKind::Float => "float",
                ParamKind::Int => "int",
                ParamKind::Bool => "bool",
                ParamKind::String => "string",
                ParamKind::Path => "path",
            };
            writeln!(
                out,
                "  {:<20}   {}: {kind}{domain}, {default} — {}",
                "", p.name, p.description
            )?;
        }
    }

    writeln!(out, "\nSCORERS (scorers: [...])")?;
    for name in SCORER_NAMES {
        let what = match *name {
            "minilm" => "MiniLM encoder + the harness's trained head (offline)",
            "profanity" => "alt-profanity-check's linear model (offline)",
            "perspective" => "Perspective API (needs PERSPECTIVE_API_KEY)",
            _ => "a Hugging Face sequence classifier folder, optionally #label",
        };
        writeln!(out, "  {name:<20} {what}")?;
    }

    writeln!(out, "\nPROMPT SOURCES (prompts: - kind: …, path: …)")?;
    for (kind, what) in data::PROMPT_SOURCE_KINDS {
        writeln!(out, "  {kind:<20} {what}")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_registered_method_scorer_and_source() {
        let registry = crate::registry::spec_registry();
        let text = render(&registry).unwrap();
        for m in registry.methods() {
            assert!(
                text.contains(&format!("  {:<20} {}", m.name, m.description)),
                "{text}"
            );
            for p in &m.params {
                assert!(
                    text.contains(&format!("{}: ", p.name)),
                    "{}: {text}",
                    p.name
                );
            }
        }
        for s in SCORER_NAMES {
            assert!(text.contains(s), "{text}");
        }
        for (kind, _) in data::PROMPT_SOURCE_KINDS {
            assert!(text.contains(kind), "{text}");
        }
        assert!(text.contains("smollm2-135m"), "{text}");
    }
}
