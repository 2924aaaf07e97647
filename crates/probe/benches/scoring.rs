//! Scoring benchmark: a command that prints a table, not a timed test.
//!
//! ```text
//! cargo bench -p probe --bench scoring [-- --threads N]
//! ```
//!
//! Throughput of the offline scorers (`minilm`, `profanity`) on 1,000 twenty-token continuations,
//! and of judge-LM conditional perplexity (the default SmolLM2 as judge, f32, CPU) on the same
//! continuations after a short prompt. The continuations are the first 20 SmolLM2 tokens of
//! ParaDetox sentences, toxic originals and neutral paraphrases (the mix a detox run scores).

use std::time::Instant;

use anyhow::{Context, Result};
use lm::likelihood::continuation_nll;
use lm::{DeviceChoice, DtypeChoice, LoadedModel};
use score::ToxicityScorer;

const TEXTS: usize = 1000;
const TOKENS: usize = 20;

fn main() -> Result<()> {
    let threads: i32 = std::env::args()
        .skip_while(|a| a != "--threads")
        .nth(1)
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let judge = LoadedModel::load(
        &paths::default_model_dir(),
        DeviceChoice::Cpu,
        DtypeChoice::F32,
    )?;
    let paradetox = paths::data_dir("paradetox").join("paradetox.tsv");
    let file =
        std::fs::read_to_string(&paradetox).with_context(|| format!("{}", paradetox.display()))?;
    let mut continuations: Vec<(Vec<i64>, String)> = Vec::new();
    // Both the toxic originals and their neutral paraphrases: the mix a detox run produces.
    for sentence in file
        .lines()
        .skip(1)
        .flat_map(|line| line.split('\t').take(2))
    {
        let ids = judge.tokenizer.encode(&format!(" {}", sentence.trim()))?;
        if ids.len() >= TOKENS {
            let ids = ids[..TOKENS].to_vec();
            let text = judge.tokenizer.decode(&ids)?;
            continuations.push((ids, text));
        }
        if continuations.len() == TEXTS {
            break;
        }
    }
    let texts: Vec<&str> = continuations.iter().map(|(_, t)| t.as_str()).collect();
    println!("## Scoring benchmark\n");
    println!(
        "- machine: {} logical cores; intra-op threads {threads}",
        std::thread::available_parallelism()?.get()
    );
    println!(
        "- inputs: {} continuations of {TOKENS} SmolLM2 tokens from {}\n",
        texts.len(),
        paradetox.display()
    );
    println!("| what | items | seconds | items/s |\n|---|---:|---:|---:|");

    let mut profanity = score::profanity::ProfanityScorer::load_default()?;
    let started = Instant::now();
    let scored = profanity
        .score_batch(&texts)
        .iter()
        .filter(|r| r.is_ok())
        .count();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "| profanity scorer | {scored} texts | {seconds:.3} | {:.0} |",
        scored as f64 / seconds
    );

    let encoder = paths::require(&paths::minilm_dir(), "MiniLM").map_err(anyhow::Error::msg)?;
    let mut minilm = probe::MiniLmScorer::load(
        &encoder,
        &probe::MiniLmScorer::default_head(),
        DeviceChoice::Cpu,
    )?;
    minilm.score_batch(&texts[..64]);
    let started = Instant::now();
    let scored = minilm
        .score_batch(&texts)
        .iter()
        .filter(|r| r.is_ok())
        .count();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "| minilm scorer (batch 64) | {scored} texts | {seconds:.3} | {:.0} |",
        scored as f64 / seconds
    );

    let prompt = judge.tokenizer.encode("Here is what she said about it:")?;
    let pairs: Vec<(&[i64], &[i64])> = continuations
        .iter()
        .map(|(ids, _)| (prompt.as_slice(), ids.as_slice()))
        .collect();
    let started = Instant::now();
    let nll = continuation_nll(judge.model.as_ref(), &pairs, 32)?;
    let seconds = started.elapsed().as_secs_f64();
    let tokens: usize = nll.iter().map(|n| n.tokens).sum();
    println!(
        "| judge perplexity, SmolLM2 f32 (batch 32) | {} continuations, {tokens} scored tokens | {seconds:.3} | {:.0} continuations/s, {:.0} tokens/s |",
        nll.len(),
        nll.len() as f64 / seconds,
        tokens as f64 / seconds
    );
    Ok(())
}
