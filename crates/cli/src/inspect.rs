//! `detox inspect-data`: loads every prompt source and labelled source in the shared data folder
//! and prints what each yields, so a user sees at once that the data is complete and readable.

use anyhow::Result;
use clap::Args;
use data::prompts::{bold, rtp, toxigen};
use data::{labelled, Counts};

#[derive(Args, Debug)]
pub struct InspectDataArgs {
    /// Skip and count malformed rows instead of stopping at the first.
    #[arg(long)]
    pub lenient: bool,
}

pub fn run(args: &InspectDataArgs) -> Result<()> {
    let require = |d: &str| {
        paths::require(&paths::data_dir(d), &format!("data folder {d}")).map_err(anyhow::Error::msg)
    };
    println!("shared data: {}\n", paths::data_dir("").display());
    println!("| source | rows read | malformed | filtered | kept | groups |\n|---|---:|---:|---:|---:|---|");
    let row = |name: &str, c: &Counts, groups: String| {
        println!(
            "| {name} | {} | {} | {} | {} | {groups} |",
            c.read, c.malformed, c.filtered, c.kept
        )
    };
    let rtp_dir = require("realtoxicityprompts")?.join("decodingtrust");
    for file in ["toxic.jsonl", "nontoxic.jsonl"] {
        let set = rtp::load(&rtp::RtpOptions {
            lenient: args.lenient,
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
            lenient: args.lenient,
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
        lenient: args.lenient,
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
    Ok(())
}
