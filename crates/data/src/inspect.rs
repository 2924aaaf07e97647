//! What the shared data folder holds: every prompt source and labelled source loaded, with what
//! each yields (rows read, malformed, filtered, kept, groups), as a Markdown table — so a user sees
//! at once that the data is complete and readable (`detox inspect-data`).

use anyhow::Result;

use crate::prompts::{bold, rtp, toxigen};
use crate::{labelled, Counts};

/// The table; `lenient` skips and counts malformed rows instead of stopping at the first.
pub fn shared_data_table(lenient: bool) -> Result<String> {
    let require = |d: &str| {
        paths::require(&paths::data_dir(d), &format!("data folder {d}")).map_err(anyhow::Error::msg)
    };
    let mut out = format!("shared data: {}\n\n", paths::data_dir("").display());
    out.push_str("| source | rows read | malformed | filtered | kept | groups |\n|---|---:|---:|---:|---:|---|\n");
    let mut row = |name: &str, c: &Counts, groups: String| {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {groups} |\n",
            c.read, c.malformed, c.filtered, c.kept
        ))
    };
    let rtp_dir = require("realtoxicityprompts")?.join("decodingtrust");
    for file in ["toxic.jsonl", "nontoxic.jsonl"] {
        let set = rtp::load(&rtp::RtpOptions {
            lenient,
            ..rtp::RtpOptions::new(rtp_dir.join(file))
        })?;
        let challenging = set
            .prompts
            .iter()
            .filter(|p| p.challenging == Some(true))
            .count();
        row(
            &format!("RealToxicityPrompts {file}"),
            &set.counts,
            format!("{challenging} challenging"),
        );
    }
    let bold_dir = require("bold")?;
    for domain in [
        "gender",
        "race",
        "profession",
        "religious_ideology",
        "political_ideology",
    ] {
        let set = bold::load(&bold::BoldOptions {
            lenient,
            ..bold::BoldOptions::new(bold::domain_file(&bold_dir, domain))
        })?;
        let groups: Vec<String> = set
            .group_sizes()
            .iter()
            .map(|(g, n)| format!("{} {n}", g.as_deref().unwrap_or("(none)")))
            .collect();
        let shown = if groups.len() > 4 {
            format!("{} groups", groups.len())
        } else {
            groups.join(", ")
        };
        row(&format!("BOLD {domain}"), &set.counts, shown);
    }
    let toxigen_dir = require("toxigen")?;
    let set = toxigen::load_prompts(&toxigen::ToxigenPromptOptions {
        lenient,
        ..toxigen::ToxigenPromptOptions::new(toxigen_dir.join("prompts"))
    })?;
    row(
        "ToxiGen prompt files",
        &set.counts,
        format!("{} target groups", set.group_sizes().len()),
    );
    for name in labelled::SOURCES {
        let set = labelled::load_source(name, None, 0)?;
        let (toxic, clean) = set.toxic_and_clean();
        row(
            &format!("labelled {name}"),
            &set.counts,
            format!("{toxic} toxic, {clean} non-toxic"),
        );
    }
    Ok(out)
}
