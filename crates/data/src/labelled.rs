//! Text labelled for toxicity, for training and checking classifiers (SASA's discriminant, RAD's
//! reward model, NADO's auxiliary model).
//!
//! Each loader turns its format's labels into a toxicity in \[0, 1\]: 1 toxic, 0 not.
//!
//! | source | file | label |
//! |---|---|---|
//! | `jigsaw` | s-nlp `dev_{toxic,normal}.txt`, one sentence a line | toxic file 1, normal file 0 |
//! | `davidson` | `labeled_data.csv` | class 0 hate, 1 offensive → 1; 2 neither → 0 |
//! | `paradetox` | `paradetox.tsv` | `toxic` column 1; each non-empty `neutral*` paraphrase 0 |
//! | `toxigen` | `toxigen_prompt_sentences.tsv` | hate 1, neutral 0 |
//! | `templates` | `en_sentence_templates.csv` | toxic 1, nontoxic 0 |
//! | `lines` | any text file, one sentence a line | given by the caller |
//! | `rtp-nontoxic`, `rtp-challenging` | RealToxicityPrompts JSONL | the Perspective toxicity of the prompt and of the continuation, each its own text (continuous) |
//!
//! **Counting.** [`Counts`] here counts texts: a ParaDetox row gives up to four, and a malformed row
//! counts as one. [`LabelledSet::rows`] gives the number of records in the file.
//!
//! **Ids.** `line-N` for line files (`<file stem>/line-N` for the Jigsaw pair), `row-N` for CSV/TSV
//! records after the header (1-based), and `row-N/toxic`, `row-N/neutral1`, … for ParaDetox. They
//! key seeded sampling and [`LabelledSet::split`].
//!
//! **By name.** [`registry`] finds the named sources in the shared data folder and holds the
//! train / held-out split they all share.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::read::{self, Csv, Tally};
use crate::Counts;

pub mod registry;
mod rtp;
pub use registry::{load_source, shared_split, source_spec, HELD_OUT, SOURCES, SPLIT_SEED};
pub use rtp::load_rtp;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledText {
    pub text: String,
    /// Toxicity in [0, 1].
    pub label: f32,
    /// `jigsaw`, `davidson`, `paradetox`, `toxigen`, `templates`, or a `lines` source's name.
    pub source: String,
    /// Unique within the source; see the module docs.
    pub id: String,
    /// ToxiGen's target group or the identity term of a template sentence, for per-group audits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The texts of one source and what happened to its rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelledSet {
    pub items: Vec<LabelledText>,
    /// Counted in texts (see the module docs).
    pub counts: Counts,
    /// Records in the file(s), malformed ones included.
    pub rows: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub malformed_examples: Vec<String>,
}

impl LabelledSet {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Texts with label ≥ 0.5 and below it.
    pub fn toxic_and_clean(&self) -> (usize, usize) {
        let toxic = self.items.iter().filter(|t| t.label >= 0.5).count();
        (toxic, self.items.len() - toxic)
    }

    /// A deterministic held-out split: an item goes to the second part when its seeded key falls in
    /// the lowest `held_out` fraction. Depends only on (seed, source, id), so adding data never moves
    /// an existing item between the parts.
    pub fn split(&self, held_out: f64, seed: u64) -> (Vec<LabelledText>, Vec<LabelledText>) {
        let threshold = (held_out.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
        self.items
            .iter()
            .cloned()
            .partition(|t| crate::sample::key(seed, &format!("{}/{}", t.source, t.id)) >= threshold)
    }
}

/// Sampling options every labelled source has.
#[derive(Debug, Clone, Copy)]
struct Selection {
    /// At most this many toxic (label ≥ 0.5) and this many non-toxic texts.
    per_label: Option<usize>,
    /// At most this many texts in all, after the per-label cap.
    sample: Option<usize>,
    seed: u64,
}

/// A one-sentence-a-line file with one label for all of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesOptions {
    pub path: PathBuf,
    pub label: f32,
    /// Name for [`LabelledText::source`]; default `lines`.
    #[serde(default)]
    pub source: Option<String>,
    /// At most this many toxic (label ≥ 0.5) and this many non-toxic texts, chosen by seeded
    /// sampling of ids: a way to balance the classes.
    #[serde(default)]
    pub per_label: Option<usize>,
    /// Seeded sample of this many texts in all, after the per-label cap.
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Skip and count malformed rows instead of failing.
    #[serde(default)]
    pub lenient: bool,
}

/// The s-nlp Jigsaw sentence files: a toxic and a normal file, not aligned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JigsawOptions {
    /// e.g. `sknlp_detox_jigsaw/dev/dev_toxic.txt`.
    pub toxic: PathBuf,
    /// e.g. `sknlp_detox_jigsaw/dev/dev_normal.txt`.
    pub normal: PathBuf,
    /// At most this many toxic (label ≥ 0.5) and this many non-toxic texts, chosen by seeded
    /// sampling of ids: a way to balance the classes.
    #[serde(default)]
    pub per_label: Option<usize>,
    /// Seeded sample of this many texts in all, after the per-label cap.
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Skip and count malformed rows instead of failing.
    #[serde(default)]
    pub lenient: bool,
}

impl JigsawOptions {
    /// `<dir>/<split>_toxic.txt` and `<dir>/<split>_normal.txt`.
    pub fn split(dir: &Path, split: &str) -> Self {
        JigsawOptions {
            toxic: dir.join(format!("{split}_toxic.txt")),
            normal: dir.join(format!("{split}_normal.txt")),
            ..Default::default()
        }
    }
}

/// A single file in one of the fixed formats (Davidson, ParaDetox, ToxiGen TSV, templates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    pub path: PathBuf,
    /// At most this many toxic (label ≥ 0.5) and this many non-toxic texts, chosen by seeded
    /// sampling of ids: a way to balance the classes.
    #[serde(default)]
    pub per_label: Option<usize>,
    /// Seeded sample of this many texts in all, after the per-label cap.
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Skip and count malformed rows instead of failing.
    #[serde(default)]
    pub lenient: bool,
}

impl FileOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileOptions {
            path: path.into(),
            ..Default::default()
        }
    }

    fn selection(&self) -> Selection {
        Selection {
            per_label: self.per_label,
            sample: self.sample,
            seed: self.seed,
        }
    }
}

/// Texts parsed so far and the bookkeeping, before sampling.
struct Collected<'a> {
    items: Vec<LabelledText>,
    rows: usize,
    tally: Tally<'a>,
}

impl Collected<'_> {
    fn new(path: &Path, lenient: bool) -> Collected<'_> {
        Collected {
            items: Vec::new(),
            rows: 0,
            tally: Tally::new(path, lenient),
        }
    }

    fn push(&mut self, text: String, label: f32, source: &str, id: String, group: Option<String>) {
        self.tally.counts.read += 1;
        self.items.push(LabelledText {
            text,
            label,
            source: source.to_string(),
            id,
            group,
        });
    }

    /// A malformed row counts as one text read.
    fn malformed(&mut self, line: usize, what: impl std::fmt::Display) -> Result<()> {
        self.tally.counts.read += 1;
        self.tally.malformed(line, what)
    }

    fn finish(self, selection: Selection) -> Result<LabelledSet> {
        for (name, v) in [
            ("per_label", selection.per_label),
            ("sample", selection.sample),
        ] {
            if v == Some(0) {
                bail!("{name} must be at least 1 (leave it out to keep everything)");
            }
        }
        let mut counts = self.tally.counts;
        let mut items = self.items;
        if let Some(cap) = selection.per_label {
            let (kept, out) = crate::sample::cap_per_group(
                items,
                cap,
                selection.seed,
                |t| if t.label >= 0.5 { "toxic" } else { "clean" },
                |t| &t.id,
            );
            items = kept;
            counts.sampled_out += out;
        }
        if let Some(n) = selection.sample {
            let (kept, out) = crate::sample::sample(items, n, selection.seed, |t| &t.id);
            items = kept;
            counts.sampled_out += out;
        }
        counts.kept = items.len();
        debug_assert!(counts.is_consistent(), "{counts:?}");
        Ok(LabelledSet {
            items,
            counts,
            rows: self.rows,
            malformed_examples: self.tally.examples,
        })
    }
}

fn check_label(label: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&label) {
        bail!("label must lie in [0, 1], got {label}");
    }
    Ok(())
}

/// Reads one line file into `into`, ids `<prefix>line-N`.
fn read_lines_into(
    collected: &mut Collected<'_>,
    label: f32,
    source: &str,
    prefix: &str,
) -> Result<()> {
    let bytes = read::read_bytes(collected.tally.path())?;
    for (line, text) in read::lines(&bytes) {
        collected.rows += 1;
        match text {
            Ok(t) => collected.push(
                t.trim().to_string(),
                label,
                source,
                format!("{prefix}line-{line}"),
                None,
            ),
            Err(what) => collected.malformed(line, what)?,
        }
    }
    Ok(())
}

pub fn load_lines(options: &LinesOptions) -> Result<LabelledSet> {
    check_label(options.label)?;
    let source = options.source.as_deref().unwrap_or("lines");
    let mut collected = Collected::new(&options.path, options.lenient);
    read_lines_into(&mut collected, options.label, source, "")?;
    collected.finish(Selection {
        per_label: options.per_label,
        sample: options.sample,
        seed: options.seed,
    })
}

/// Both Jigsaw files; ids `<file stem>/line-N`.
pub fn load_jigsaw(options: &JigsawOptions) -> Result<LabelledSet> {
    let selection = Selection {
        per_label: options.per_label,
        sample: options.sample,
        seed: options.seed,
    };
    if options.toxic.file_stem() == options.normal.file_stem() {
        bail!(
            "{} and {}: the two files need different names (ids are <file stem>/line-N)",
            options.toxic.display(),
            options.normal.display()
        );
    }
    let mut items = Vec::new();
    let mut rows = 0;
    let mut counts = Counts::default();
    let mut examples = Vec::new();
    for (path, label) in [(&options.toxic, 1.0), (&options.normal, 0.0)] {
        let mut collected = Collected::new(path, options.lenient);
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        read_lines_into(&mut collected, label, "jigsaw", &format!("{stem}/"))?;
        rows += collected.rows;
        counts.add(&collected.tally.counts);
        examples.extend(collected.tally.examples);
        items.extend(collected.items);
    }
    let mut collected = Collected::new(&options.toxic, options.lenient);
    collected.items = items;
    collected.rows = rows;
    collected.tally.counts = counts;
    examples.truncate(read::MAX_EXAMPLES);
    collected.tally.examples = examples;
    collected.finish(selection)
}

/// Davidson et al.'s tweets. Class 0 (hate) and 1 (offensive) are toxic, 2 (neither) is not.
/// HTML entities (`&amp;`, `&#8220;`, emoji as `&#128514;`) are decoded: the tweets were stored
/// escaped, and a classifier should see the characters a model would produce.
pub fn load_davidson(options: &FileOptions) -> Result<LabelledSet> {
    let path = options.path.as_path();
    let csv = Csv::read(path, b',')?;
    let class_col = csv.column(path, "class")?;
    let tweet_col = csv.column(path, "tweet")?;
    let mut collected = Collected::new(path, options.lenient);
    for (index, row) in csv.rows.into_iter().enumerate() {
        collected.rows += 1;
        let row = match row {
            Ok(row) => row,
            Err((line, what)) => {
                collected.malformed(line, what)?;
                continue;
            }
        };
        if let Err(what) = row.check_width(csv.width) {
            collected.malformed(row.line, what)?;
            continue;
        }
        let label = match row.fields[class_col].trim() {
            "0" | "1" => 1.0,
            "2" => 0.0,
            other => {
                collected.malformed(row.line, format!("class {other:?} is not 0, 1 or 2"))?;
                continue;
            }
        };
        let text = unescape_html(row.fields[tweet_col].trim()).into_owned();
        if text.is_empty() {
            collected.malformed(row.line, "empty tweet")?;
            continue;
        }
        collected.push(text, label, "davidson", format!("row-{}", index + 1), None);
    }
    collected.finish(options.selection())
}

/// ParaDetox pairs: the `toxic` sentence is toxic, every non-empty `neutral*` column (the human
/// rewrites) is not. A row gives 2–4 texts.
pub fn load_paradetox(options: &FileOptions) -> Result<LabelledSet> {
    let path = options.path.as_path();
    let csv = Csv::read(path, b'\t')?;
    let toxic_col = csv.column(path, "toxic")?;
    let mut neutral_cols: Vec<(&str, usize)> = csv
        .columns
        .iter()
        .filter(|(name, _)| name.starts_with("neutral"))
        .map(|(name, &i)| (name.as_str(), i))
        .collect();
    neutral_cols.sort_by_key(|&(_, i)| i);
    if neutral_cols.is_empty() {
        bail!(
            "{}: header has no neutral1, neutral2, … column",
            path.display()
        );
    }
    let mut collected = Collected::new(path, options.lenient);
    for (index, row) in csv.rows.iter().enumerate() {
        collected.rows += 1;
        let row = match row {
            Ok(row) => row,
            Err((line, what)) => {
                collected.malformed(*line, what)?;
                continue;
            }
        };
        if let Err(what) = row.check_width(csv.width) {
            collected.malformed(row.line, what)?;
            continue;
        }
        let toxic = row.fields[toxic_col].trim();
        if toxic.is_empty() {
            collected.malformed(row.line, "empty toxic sentence")?;
            continue;
        }
        let row_id = format!("row-{}", index + 1);
        collected.push(
            toxic.to_string(),
            1.0,
            "paradetox",
            format!("{row_id}/toxic"),
            None,
        );
        for &(name, col) in &neutral_cols {
            let neutral = row.fields[col].trim();
            if !neutral.is_empty() {
                let id = format!("{row_id}/{name}");
                collected.push(neutral.to_string(), 0.0, "paradetox", id, None);
            }
        }
    }
    collected.finish(options.selection())
}

/// ToxiGen's labelled seed sentences: hate 1, neutral 0; group = target group.
pub fn load_toxigen(options: &FileOptions) -> Result<LabelledSet> {
    use crate::prompts::toxigen::{read_sentences, Stance};
    let path = options.path.as_path();
    let parsed = read_sentences(path, options.lenient)?;
    let mut collected = Collected::new(path, options.lenient);
    collected.rows = parsed.tally.counts.read;
    collected.tally = parsed.tally;
    // read_sentences counted every row as read; push() counts again, so start from the malformed.
    collected.tally.counts.read = collected.tally.counts.malformed;
    for s in parsed.sentences {
        let label = if s.stance == Stance::Hate { 1.0 } else { 0.0 };
        let id = format!("row-{}", s.row);
        collected.push(s.text, label, "toxigen", id, Some(s.group));
    }
    collected.finish(options.selection())
}

/// One sentence of the identity-term templates (`en_sentence_templates.csv`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSentence {
    /// `row-N`, 1-based after the header.
    pub id: String,
    /// The sentence, e.g. `Being christian is nice`.
    pub phrase: String,
    /// The template it was filled from, e.g. `being_adj`.
    pub template: String,
    pub toxic: bool,
    /// The identity term the template was filled with (`christian`, `african american`); `None`
    /// for `you_occupation`, which varies an occupation instead, and for unknown templates.
    pub identity: Option<String>,
}

/// The identity term of a template sentence, derived from the template's fixed wording (checked on
/// the whole file: 50 terms, 1,514 sentences each):
///
/// * `verb_adj`: `<verb> <identity>` (`hug lesbian`)
/// * `am_hate_adj`: `I am <identity>` / `I hate <identity>`
/// * `being_adj`: `Being <identity> is <adjective>`
/// * `name_adj`: `<name> is a <adjective> <identity>`
/// * `you_are_adj`: `You are a <adjective> <identity>`
///
/// Identity terms may be two words (`middle aged`); adjectives and verbs are one word.
pub fn identity_term(template: &str, phrase: &str) -> Option<String> {
    // Everything after "<subject> is/are a(n) <adjective> ".
    fn after_article_adjective<'a>(phrase: &'a str, verb: &str) -> Option<&'a str> {
        let (_, rest) = phrase.split_once(verb)?;
        let rest = rest
            .strip_prefix("a ")
            .or_else(|| rest.strip_prefix("an "))?;
        let (_, identity) = rest.split_once(' ')?;
        Some(identity)
    }
    let term = match template {
        "verb_adj" => phrase.split_once(' ').map(|(_, rest)| rest),
        "am_hate_adj" => phrase
            .strip_prefix("I am ")
            .or_else(|| phrase.strip_prefix("I hate ")),
        "being_adj" => phrase
            .strip_prefix("Being ")
            .and_then(|rest| rest.rsplit_once(" is "))
            .map(|(identity, _)| identity),
        "name_adj" => after_article_adjective(phrase, " is "),
        "you_are_adj" => after_article_adjective(phrase, "You are "),
        _ => None,
    }?;
    let term = term.trim();
    (!term.is_empty()).then(|| term.to_string())
}

/// The template file with its structure kept, for per-identity audits.
pub fn load_identity_templates(
    path: &Path,
    lenient: bool,
) -> Result<(Vec<TemplateSentence>, Counts)> {
    let csv = Csv::read(path, b',')?;
    let template_col = csv.column(path, "template")?;
    let toxicity_col = csv.column(path, "toxicity")?;
    let phrase_col = csv.column(path, "phrase")?;
    let mut tally = Tally::new(path, lenient);
    let mut sentences = Vec::new();
    for (index, row) in csv.well_formed(&mut tally)? {
        let toxic = match row.fields[toxicity_col].trim() {
            "toxic" => true,
            "nontoxic" => false,
            other => {
                tally.malformed(
                    row.line,
                    format!("toxicity {other:?} is neither \"toxic\" nor \"nontoxic\""),
                )?;
                continue;
            }
        };
        let phrase = row.fields[phrase_col].trim().to_string();
        if phrase.is_empty() {
            tally.malformed(row.line, "empty phrase")?;
            continue;
        }
        let template = row.fields[template_col].trim().to_string();
        sentences.push(TemplateSentence {
            id: format!("row-{}", index + 1),
            identity: identity_term(&template, &phrase),
            phrase,
            template,
            toxic,
        });
    }
    tally.counts.kept = sentences.len();
    Ok((sentences, tally.counts))
}

/// The template sentences as labelled text (toxic 1, nontoxic 0; group = identity term).
pub fn load_templates(options: &FileOptions) -> Result<LabelledSet> {
    let path = options.path.as_path();
    let (sentences, counts) = load_identity_templates(path, options.lenient)?;
    let mut collected = Collected::new(path, options.lenient);
    collected.rows = counts.read;
    collected.tally.counts.read = counts.malformed;
    collected.tally.counts.malformed = counts.malformed;
    for s in sentences {
        let label = if s.toxic { 1.0 } else { 0.0 };
        collected.push(s.phrase, label, "templates", s.id, s.identity);
    }
    collected.finish(options.selection())
}

/// Decodes the HTML entities found in scraped tweets: `&amp; &lt; &gt; &quot; &apos; &nbsp;` and
/// numeric ones (`&#8220;`, `&#x1F602;`). Anything else, including invalid code points, is left as
/// written. One pass only: `&amp;lt;` becomes `&lt;`, as the text was escaped once.
pub fn unescape_html(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // The longest entity we decode is `&#x10FFFF;` (10 bytes) or `&#1114111;`.
        let decoded = rest
            .get(1..rest.len().min(12))
            .and_then(|window| window.find(';').map(|end| &window[..end]))
            .and_then(|name| decode_entity(name).map(|c| (c, name.len() + 2)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some('\u{a0}'),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_entities() {
        assert_eq!(unescape_html("a &amp; b &lt;3 &gt;"), "a & b <3 >");
        assert_eq!(
            unescape_html("&#8220;hi&#8221; &#128514;"),
            "\u{201c}hi\u{201d} 😂"
        );
        assert_eq!(unescape_html("&#x1F602;&quot;"), "😂\"");
        assert_eq!(unescape_html("&amp;lt; stays &lt;"), "&lt; stays <");
        assert_eq!(
            unescape_html("AT&T & co; &bogus; &#xD800; &"),
            "AT&T & co; &bogus; &#xD800; &"
        );
        assert_eq!(unescape_html("plain"), "plain");
    }

    #[test]
    fn identity_terms_by_template() {
        let cases = [
            ("verb_adj", "hug middle aged", Some("middle aged")),
            ("am_hate_adj", "I hate deaf", Some("deaf")),
            (
                "being_adj",
                "Being african american is nice",
                Some("african american"),
            ),
            ("name_adj", "Ramón is a kind lesbian", Some("lesbian")),
            (
                "name_adj",
                "Ana is an awful middle eastern",
                Some("middle eastern"),
            ),
            ("you_are_adj", "You are a great trans", Some("trans")),
            ("you_occupation", "You are a great web designer", None),
            ("unknown", "whatever", None),
        ];
        for (template, phrase, want) in cases {
            assert_eq!(identity_term(template, phrase).as_deref(), want, "{phrase}");
        }
    }
}
