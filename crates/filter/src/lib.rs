//! Word filtering, the RealToxicityPrompts baseline (METHODS.md §1): listed words are banned
//! while decoding, rejected and redrawn after decoding, or both.
//!
//! # Building the filter
//!
//! ```no_run
//! use filter::{FilterMode, ListRef, WordFilterConfig};
//! # fn main() -> anyhow::Result<()> {
//! let model = lm::LoadedModel::load(
//!     &paths::default_model_dir(),
//!     lm::DeviceChoice::Cpu,
//!     lm::DtypeChoice::F32,
//! )?;
//! let config = WordFilterConfig {
//!     mode: FilterMode::Both,
//!     lists: vec![ListRef::Rtp, ListRef::parse("my-extra-words.txt")],
//!     max_retries: 10,
//!     text_rule: true,
//! };
//! let built = config.build(&model.tokenizer)?;
//! // built.decode: a `decode::Steering` to pass to `decode::generate_steered` (stack it with
//! // other methods in the same slice); built.posthoc: pass it to `filter::generate_posthoc`,
//! // which wraps `generate_steered` and takes the same steering slice.
//! # Ok(()) }
//! ```
//!
//! Piece by piece: [`WordList::from_files`] (or [`load_lists`] for named lists) reads the lists;
//! [`WordFilter::from_list`] with the model's [`lm::TextTokenizer`] expands each entry into
//! its spellings ([`spelling_variants`]) and their token sequences, indexes them, and builds the
//! text rule ([`WordFilter::sequences_only`] leaves the text rule out);
//! [`WordMatcher::new`] builds the text check ([`WordMatcher::contains_listed_word`]) that
//! post-hoc mode and reports use.
//!
//! # Decode time: two rules
//!
//! The multi-token rule (Hugging Face's `NoBadWords`, [`index`]): a banned sequence `s` of
//! length `L` bans its last token when a row's last `L-1` tokens (prompt included) equal
//! `s[..L-1]`; length-1 sequences are banned at every step. This is RealToxicityPrompts'
//! baseline. A spelling "as written" (no leading space) bans its tokens inside longer words too
//! ("ass" is also the end of "cl|ass"): the price of catching the word after punctuation or a
//! line break.
//!
//! The rule knows only the segmentations it was given, so a model that spells a word with
//! other tokens gets past it: "'d" + "ick" after a line break (GPT-2-style pre-tokenizers split
//! the contraction "'d" off), "s" + "hit", mixed case ("sHit"). The
//! text rule ([`text_rule`], on by default, off with [`WordFilterConfig::text_rule`]) closes that
//! gap: it bans any token that would make the continuation's text end with a listed word that
//! starts at a word boundary, whatever the tokens. Per row and step it decodes the last few
//! generated tokens and does a hash lookup per word start, so it costs little next to the model.
//!
//! Both rules set the logits of banned tokens to −∞ before truncation, in one indexed write per
//! step on the logits' device.
//!
//! # Post hoc: reject and redraw
//!
//! [`generate_posthoc`] checks each finished continuation's text (case-insensitive, whole words,
//! any whitespace inside multi-word entries) and redraws a rejected sample with
//! `Request::attempt` 1, 2, … (each attempt has its own seeded stream), up to `max_retries`;
//! it reports redraws per sample, samples rejected at their first draw, and samples still
//! matching at the cap (kept, flagged).
//!
//! # Lists
//!
//! `rtp` is RealToxicityPrompts' 378-entry list (Apache-2.0, allenai/real-toxicity-prompts) and
//! `ldnoobw` the 403-entry English "List of Dirty, Naughty, Obscene, and Otherwise Bad Words"
//! (CC-BY-4.0); both are read from `shared/data/badwords/`. Without `shared/`,
//! `scripts/setup.sh` fetches LDNOOBW into `.detox/wordlists/ldnoobw_en.txt` from the npm
//! package `naughty-words` 1.2.0 (its `en.json`, CC-BY-4.0; the same 403 entries) and writes a
//! README there naming source, version and license.

pub mod index;
pub mod list;
pub mod matcher;
pub mod method;
pub mod posthoc;
pub mod registration;
pub mod steering;
pub mod text_rule;
pub mod variants;

pub use index::BanIndex;
pub use list::{load_lists, ListRef, WordList, LDNOOBW_FILE, RTP_FILE};
pub use matcher::WordMatcher;
pub use method::{BuiltWordFilter, FilterMode, WordFilterConfig, DEFAULT_MAX_RETRIES};
pub use posthoc::{generate_posthoc, PosthocFilter, PosthocSample, PosthocTotals};
pub use registration::{WordFilterMethod, WordFilterParams};
pub use steering::{ban_in_place, WordFilter};
pub use text_rule::TextRule;
pub use variants::{banned_sequences, spelling_variants};
