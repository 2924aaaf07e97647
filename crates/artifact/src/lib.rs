//! What every fitted artifact (SASA's subspace, RAD's reward head, fusion's calibration model and
//! alignment map, fine-tuning's outputs) shares, so the method crates need not depend on each
//! other for it: the identity of the model an artifact belongs to and the checkpoint fingerprint
//! that checks it ([`ModelIdentity`], [`checkpoint_fingerprint`]), the labelled texts an artifact
//! is fitted on and their counts ([`SourceTexts`], [`SourceCounts`]), the JSON layout of the
//! committed files ([`json`]) and where each artifact lives by default ([`locations`]).

pub mod identity;
pub mod json;
pub mod locations;
pub mod sources;

pub use identity::{checkpoint_fingerprint, ModelIdentity};
pub use sources::{SourceCounts, SourceTexts};
