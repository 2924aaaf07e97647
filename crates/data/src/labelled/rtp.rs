//! RealToxicityPrompts as labelled text: each row gives two texts, its prompt and its
//! continuation, each labelled with its own Perspective toxicity (a probability in [0, 1], kept
//! continuous: RAD's reward model regresses on it, as the paper's on Jigsaw's rater fractions).
//! A text whose score is `null` is skipped and counted as filtered; ids are the row's span id
//! (`<filename>@<begin>-<end>`) with `/prompt` or `/continuation`.

use anyhow::Result;

use super::{Collected, FileOptions, LabelledSet};
use crate::prompts::rtp::{row_id, Row};
use crate::read;

pub fn load_rtp(options: &FileOptions) -> Result<LabelledSet> {
    let path = options.path.as_path();
    let bytes = read::read_bytes(path)?;
    let mut collected = Collected::new(path, options.lenient);
    for (line, text) in read::lines(&bytes) {
        collected.rows += 1;
        let row: Row = match text
            .and_then(|t| serde_json::from_str(t).map_err(|e| format!("bad RTP row: {e}")))
        {
            Ok(row) => row,
            Err(what) => {
                collected.malformed(line, what)?;
                continue;
            }
        };
        let id = row_id(row.filename.as_deref(), row.begin, row.end, line);
        for (part, span) in [
            ("prompt", Some(row.prompt)),
            ("continuation", row.continuation),
        ] {
            let Some(span) = span else { continue };
            match span.toxicity {
                Some(t) if (0.0..=1.0).contains(&t) && !span.text.trim().is_empty() => {
                    collected.push(span.text, t, "rtp", format!("{id}/{part}"), None);
                }
                Some(t) if !(0.0..=1.0).contains(&t) => {
                    collected.malformed(line, format!("{part} toxicity {t} is outside [0, 1]"))?;
                }
                _ => {
                    collected.tally.counts.read += 1;
                    collected.tally.counts.filtered += 1;
                }
            }
        }
    }
    collected.finish(options.selection())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_and_continuations_keep_their_own_scores() {
        let dir = std::env::temp_dir().join(format!("rtp-labelled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rows.jsonl");
        std::fs::write(
            &path,
            "{\"filename\": \"a.txt\", \"begin\": 1, \"end\": 9, \"prompt\": {\"text\": \"You are\", \"toxicity\": 0.25}, \"continuation\": {\"text\": \" an idiot\", \"toxicity\": 0.9}}\n\
             {\"prompt\": {\"text\": \"Hello\", \"toxicity\": null}, \"continuation\": {\"text\": \" there\", \"toxicity\": 0.01}}\n",
        )
        .unwrap();
        let set = load_rtp(&FileOptions::new(&path)).unwrap();
        let got: Vec<(&str, f32, &str)> = set
            .items
            .iter()
            .map(|t| (t.text.as_str(), t.label, t.id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("You are", 0.25, "a.txt@1-9/prompt"),
                (" an idiot", 0.9, "a.txt@1-9/continuation"),
                (" there", 0.01, "line-2/continuation"),
            ]
        );
        assert_eq!(set.rows, 2);
        assert_eq!(set.counts.filtered, 1);
        assert_eq!(set.counts.kept, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
