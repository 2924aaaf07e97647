//! The text rule with the default model's tokenizer: words spelled with tokens the sequence
//! rule does not know are still banned when their last token would be drawn, and nothing is
//! banned inside longer words.

use filter::{banned_sequences, BanIndex, TextRule, WordList};
use lm::TextTokenizer;

fn tokenizer() -> TextTokenizer {
    let dir = test_support::default_model();
    TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap_or_else(|e| panic!("{e:#}"))
}

fn id(tokenizer: &TextTokenizer, token_text: &str) -> i64 {
    match tokenizer.encode(token_text).unwrap().as_slice() {
        [only] => *only,
        other => panic!("{token_text:?} is not one token: {other:?}"),
    }
}

/// Token ids whose decoded text is exactly each of `pieces`, in order (a chosen segmentation,
/// not necessarily the tokenizer's own).
fn spelled(tokenizer: &TextTokenizer, pieces: &[&str]) -> Vec<i64> {
    pieces.iter().map(|p| id(tokenizer, p)).collect()
}

fn banned(rule: &TextRule, generated: &[i64]) -> Vec<i64> {
    let mut out = rule.always_banned().to_vec();
    rule.banned_after(generated, &mut out).unwrap();
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn words_spelled_with_other_tokens_are_banned_at_their_last_token() {
    let tokenizer = tokenizer();
    let list = WordList::from_entries(["dick", "shit", "blue waffle"]).unwrap();
    let rule = TextRule::new(&list, &tokenizer).unwrap();
    let index = BanIndex::new(banned_sequences(&list, &tokenizer).unwrap()).unwrap();
    let ick = id(&tokenizer, "ick");
    let hit = id(&tokenizer, "hit");

    // After a line break (or at the start of a text), GPT-2-style pre-tokenization splits
    // `'dick` into the contraction "'d" and "ick": the sequence rule misses it, the text rule
    // does not.
    let quote_d = tokenizer.encode("\n'd").unwrap();
    assert_eq!(quote_d, spelled(&tokenizer, &["\n", "'d"]));
    assert!(!index.banned_set(&[], &quote_d).contains(&ick));
    assert!(banned(&rule, &quote_d).contains(&ick));

    // A segmentation the tokenizer never produces: " s" + "hit".
    let space_s = spelled(&tokenizer, &["He", " said", " s"]);
    assert!(!index.banned_set(&[], &space_s).contains(&hit));
    assert!(banned(&rule, &space_s).contains(&hit));
    // At the very start of the continuation the word starts at a boundary too.
    assert!(banned(&rule, &spelled(&tokenizer, &["s"])).contains(&hit));

    // Multi-word entries across any whitespace; " waffle" is three tokens, the last one banned.
    let le = id(&tokenizer, "le");
    let blue_waff = tokenizer.encode("a blue waff").unwrap();
    assert!(banned(&rule, &blue_waff).contains(&le));
    let blue_newline_waff = tokenizer.encode("a blue\nwaff").unwrap();
    assert!(!index.banned_set(&[], &blue_newline_waff).contains(&le));
    assert!(banned(&rule, &blue_newline_waff).contains(&le));

    // No ban inside a longer word: "s" in "has", "d" in "and", "blue" in "reblue".
    assert!(!banned(&rule, &tokenizer.encode("it has").unwrap()).contains(&hit));
    assert!(!banned(&rule, &spelled(&tokenizer, &["an", "d"])).contains(&ick));
    assert!(!banned(&rule, &tokenizer.encode("reblue waff").unwrap()).contains(&le));
    assert!(banned(&rule, &tokenizer.encode("re blue waff").unwrap()).contains(&le));
}

#[test]
fn the_window_reaches_back_far_enough() {
    let tokenizer = tokenizer();
    let list = WordList::from_entries(["two girls one cup"]).unwrap();
    let rule = TextRule::new(&list, &tokenizer).unwrap();
    let cup = id(&tokenizer, " cup");
    let long_context = tokenizer
        .encode("It was late, and after a long and tiring day, the video was called two girls one")
        .unwrap();
    assert!(banned(&rule, &long_context).contains(&cup));
    let other = tokenizer
        .encode("It was late, and after a long and tiring day, the video was called few girls one")
        .unwrap();
    assert!(!banned(&rule, &other).contains(&cup));
}
