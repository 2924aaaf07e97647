//! Builds a Hugging Face `tokenizer.json` from GGUF tokenizer metadata.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is handled. The pre-tokenizer follows
//! `tokenizer.ggml.pre`, i.e. what llama.cpp does for that model, which is also what the model's
//! original `tokenizer.json` did (transformers' own GGUF import ignores `pre` and always uses plain
//! ByteLevel, which differs for Llama-3).

use crate::error::GgufError;
use crate::reader::GgufFile;
use serde_json::{json, Map, Value};

/// ggml token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i128 = 3;
const TOKEN_TYPE_USER_DEFINED: i128 = 4;

/// Llama 3's split pattern, as in its tokenizer.json and llama.cpp's LLAMA3 pre-type.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Special token ids from `tokenizer.ggml.*_token_id`, shared with config.json.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u64>,
    pub eos: Option<u64>,
    pub pad: Option<u64>,
    pub unk: Option<u64>,
}

impl SpecialIds {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, GgufError> {
        Ok(SpecialIds {
            bos: gguf.get_u64_opt("tokenizer.ggml.bos_token_id")?,
            eos: gguf.get_u64_opt("tokenizer.ggml.eos_token_id")?,
            pad: gguf.get_u64_opt("tokenizer.ggml.padding_token_id")?,
            unk: gguf.get_u64_opt("tokenizer.ggml.unknown_token_id")?,
        })
    }
}

/// Everything that goes into `tokenizer.json` and `tokenizer_config.json`.
#[derive(Debug)]
pub struct TokenizerFiles {
    pub tokenizer_json: Value,
    pub tokenizer_config: Value,
    pub vocab_size: usize,
}

pub fn build(gguf: &GgufFile) -> Result<TokenizerFiles, GgufError> {
    let path = gguf.path().to_path_buf();
    let model = gguf.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(GgufError::UnsupportedTokenizer {
            path,
            model: model.to_string(),
        });
    }
    // llama.cpp treats a missing pre-type as "default".
    let pre = match gguf.get("tokenizer.ggml.pre") {
        None => "default",
        Some(_) => gguf.get_str("tokenizer.ggml.pre")?,
    };
    let add_prefix_space = gguf
        .get_bool_opt("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(false);
    let byte_level = |use_regex: bool| {
        json!({
            "type": "ByteLevel",
            "add_prefix_space": add_prefix_space,
            "trim_offsets": true,
            "use_regex": use_regex,
        })
    };
    let (pre_tokenizer, ignore_merges) = match pre {
        // GPT-2's regex, which ByteLevel applies itself.
        "gpt2" | "default" => (byte_level(true), false),
        // SmolLM's tokenizer.json (and llama.cpp): digits split one by one, then GPT-2's regex.
        "smollm" => (
            json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": true},
                    byte_level(true),
                ],
            }),
            false,
        ),
        // Llama 3 looks a whole pre-token up in the vocabulary before merging (llama.cpp sets
        // ignore_merges for this pre-type too).
        "llama-bpe" => (
            json!({
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": LLAMA3_PATTERN},
                        "behavior": "Isolated",
                        "invert": false,
                    },
                    byte_level(false),
                ],
            }),
            true,
        ),
        other => {
            return Err(GgufError::UnknownPreTokenizer {
                path,
                pre: other.to_string(),
            })
        }
    };

    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let types = match gguf.get("tokenizer.ggml.token_type") {
        Some(_) => gguf.get_int_array("tokenizer.ggml.token_type")?,
        None => Vec::new(),
    };
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(GgufError::BadMetadata {
            path,
            key: "tokenizer.ggml.token_type".into(),
            what: format!("{} types for {} tokens", types.len(), tokens.len()),
        });
    }
    let merges = gguf
        .get_str_array("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| GgufError::BadMetadata {
                    path: path.clone(),
                    key: "tokenizer.ggml.merges".into(),
                    what: format!("merge {m:?} is not two tokens separated by a space"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let ids = SpecialIds::from_gguf(gguf)?;
    for (key, id) in [
        ("bos_token_id", ids.bos),
        ("eos_token_id", ids.eos),
        ("padding_token_id", ids.pad),
        ("unknown_token_id", ids.unk),
    ] {
        if id.is_some_and(|id| id >= tokens.len() as u64) {
            return Err(GgufError::BadMetadata {
                path,
                key: format!("tokenizer.ggml.{key}"),
                what: format!(
                    "id {} is outside the {} tokens",
                    id.unwrap_or_default(),
                    tokens.len()
                ),
            });
        }
    }
    let token = |id: Option<u64>| id.map(|id| tokens[id as usize]);

    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, &t)| (t.to_string(), json!(id)))
        .collect();

    // Control tokens (chat markers, <|endoftext|>) must never be split by BPE; user-defined ones
    // are stored pre-normalized by convert_hf_to_gguf, so neither goes through the normalizer.
    let added_tokens: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, &t)| {
            json!({
                "id": id,
                "content": tokens[id],
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": t == TOKEN_TYPE_CONTROL,
            })
        })
        .collect();

    let add_bos = gguf
        .get_bool_opt("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false);
    let add_eos = gguf
        .get_bool_opt("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let post_processor = template_processing(
        token(ids.bos).filter(|_| add_bos).zip(ids.bos),
        token(ids.eos).filter(|_| add_eos).zip(ids.eos),
    );

    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": true,
            "use_regex": true,
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    });

    let mut tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": false,
        "bos_token": token(ids.bos),
        "eos_token": token(ids.eos),
        "pad_token": token(ids.pad),
        "unk_token": token(ids.unk),
    });
    if let Some(template) = gguf.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        tokenizer_config["chat_template"] = json!(template);
    }
    if let Some(n) = gguf.get("llama.context_length").and_then(|v| v.as_i128()) {
        tokenizer_config["model_max_length"] = json!(n);
    }

    Ok(TokenizerFiles {
        tokenizer_json,
        tokenizer_config,
        vocab_size: tokens.len(),
    })
}

/// `TemplateProcessing` that adds BOS/EOS around each sequence when the GGUF asks for them, the way
/// Llama-3's tokenizer.json does; with neither it just passes the sequences through.
fn template_processing(bos: Option<(&str, u64)>, eos: Option<(&str, u64)>) -> Value {
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let sequence = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (seq, type_id) in [("A", 0), ("B", 1)] {
        let mut part = Vec::new();
        if let Some((t, _)) = bos {
            part.push(special(t));
        }
        part.push(sequence(seq, type_id));
        if let Some((t, _)) = eos {
            part.push(special(t));
        }
        if seq == "A" {
            single = part.clone();
        }
        pair.extend(part);
    }
    // SpecialToken entries carry type_id 0 in the template; the pair's second BOS/EOS belong to B.
    for item in pair.iter_mut().skip(single.len()) {
        if let Some(st) = item.get_mut("SpecialToken") {
            st["type_id"] = json!(1);
        }
    }
    let mut special_tokens = Map::new();
    for (t, id) in bos.into_iter().chain(eos) {
        special_tokens.insert(t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": special_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{GgufWriter, TempDir};

    const TOKENS: [&str; 14] = [
        "<|endoftext|>",
        "a",
        "b",
        "ab",
        "Ġ",
        "Ġa",
        "1",
        "2",
        "3",
        "4",
        "12",
        "123",
        "34",
        "<|im_start|>",
    ];

    fn tokenizer_for(
        pre: Option<&str>,
        edit: impl Fn(&mut GgufWriter),
    ) -> Result<tokenizers::Tokenizer, GgufError> {
        let dir = TempDir::new("tok");
        let mut w = GgufWriter::new();
        w.kv_str("tokenizer.ggml.model", "gpt2");
        if let Some(pre) = pre {
            w.kv_str("tokenizer.ggml.pre", pre);
        }
        w.kv_str_array("tokenizer.ggml.tokens", &TOKENS);
        let mut types = vec![1; TOKENS.len()];
        types[0] = 3;
        types[13] = 3;
        w.kv_i32_array("tokenizer.ggml.token_type", &types);
        w.kv_str_array(
            "tokenizer.ggml.merges",
            &["a b", "Ġ a", "1 2", "12 3", "3 4"],
        );
        w.kv_u32("tokenizer.ggml.bos_token_id", 13);
        w.kv_u32("tokenizer.ggml.eos_token_id", 0);
        edit(&mut w);
        let path = dir.path().join("tok.gguf");
        w.write(&path);
        let files = build(&GgufFile::open(&path)?)?;
        Ok(files
            .tokenizer_json
            .to_string()
            .parse::<tokenizers::Tokenizer>()
            .unwrap())
    }

    fn ids(tok: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
        tok.encode(text, false).unwrap().get_ids().to_vec()
    }

    #[test]
    fn pre_types_split_digits_like_llama_cpp() {
        // "3412": GPT-2 merges the whole number (34, 12); SmolLM splits every digit; Llama 3
        // splits into runs of three ("341", "2") before merging.
        let gpt2 = tokenizer_for(Some("gpt2"), |_| {}).unwrap();
        assert_eq!(ids(&gpt2, "3412"), [12, 10]);
        assert_eq!(ids(&tokenizer_for(None, |_| {}).unwrap(), "3412"), [12, 10]);
        assert_eq!(
            ids(&tokenizer_for(Some("smollm"), |_| {}).unwrap(), "3412"),
            [8, 9, 6, 7]
        );
        let llama3 = tokenizer_for(Some("llama-bpe"), |_| {}).unwrap();
        assert_eq!(ids(&llama3, "3412"), [12, 6, 7]);

        for tok in [&gpt2, &llama3] {
            assert_eq!(ids(tok, "ab a"), [3, 5]);
            // Control tokens stay whole and are not merged with their neighbours.
            assert_eq!(ids(tok, "<|endoftext|>ab<|im_start|>"), [0, 3, 13]);
            assert_eq!(tok.decode(&[0, 3, 5], false).unwrap(), "<|endoftext|>ab a");
            assert_eq!(tok.decode(&[0, 3, 5], true).unwrap(), "ab a");
        }
    }

    #[test]
    fn bos_is_added_only_when_the_gguf_asks() {
        let plain = tokenizer_for(Some("gpt2"), |_| {}).unwrap();
        assert_eq!(plain.encode("ab", true).unwrap().get_ids(), [3]);
        let with_bos = tokenizer_for(Some("gpt2"), |w| {
            w.kv_bool("tokenizer.ggml.add_bos_token", true)
        })
        .unwrap();
        assert_eq!(with_bos.encode("ab", true).unwrap().get_ids(), [13, 3]);
        assert_eq!(
            with_bos.encode(("ab", "a"), true).unwrap().get_ids(),
            [13, 3, 13, 1]
        );
    }

    #[test]
    fn bad_tokenizer_metadata_is_an_error() {
        let err = tokenizer_for(Some("qwen2"), |_| {}).unwrap_err();
        assert!(
            matches!(&err, GgufError::UnknownPreTokenizer { pre, .. } if pre == "qwen2"),
            "{err}"
        );
        let err = tokenizer_for(None, |w| w.kv_str("tokenizer.ggml.model", "llama")).unwrap_err();
        assert!(
            matches!(err, GgufError::UnsupportedTokenizer { .. }),
            "{err}"
        );
        let err = tokenizer_for(None, |w| w.kv_u32("tokenizer.ggml.eos_token_id", 99)).unwrap_err();
        assert!(matches!(err, GgufError::BadMetadata { .. }), "{err}");
        let err =
            tokenizer_for(None, |w| w.kv_str_array("tokenizer.ggml.merges", &["ab"])).unwrap_err();
        assert!(matches!(err, GgufError::BadMetadata { .. }), "{err}");
        let err = tokenizer_for(None, |w| w.remove_kv("tokenizer.ggml.tokens")).unwrap_err();
        assert!(
            matches!(&err, GgufError::MissingKey { key, .. } if key == "tokenizer.ggml.tokens"),
            "{err}"
        );
    }
}
