use std::path::PathBuf;

/// Everything that can go wrong reading a GGUF file or writing the Hugging Face folder. Each
/// message is one line and starts with the file (or folder) it is about, so a CLI can print it as
/// is.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")", path.display())]
    BadMagic { path: PathBuf, found: [u8; 4] },

    #[error("{}: unsupported GGUF version {version} (supported: 2, 3)", path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },

    #[error(
        "{}: truncated file: {what} needs bytes {start}..{end} but the file has {len} bytes",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        start: u64,
        end: u64,
        len: u64,
    },

    #[error("{}: malformed GGUF: {what}", path.display())]
    Malformed { path: PathBuf, what: String },

    #[error("{}: unknown architecture {arch:?} (only \"llama\" is supported)", path.display())]
    UnknownArchitecture { path: PathBuf, arch: String },

    #[error(
        "{}: tensor {tensor:?} has type {ty}, which cannot be dequantized (supported: {})",
        path.display(),
        crate::quant::SUPPORTED_NAMES
    )]
    UnsupportedType {
        path: PathBuf,
        tensor: String,
        ty: String,
    },

    #[error("{}: missing metadata key {key:?}", path.display())]
    MissingKey { path: PathBuf, key: String },

    #[error("{}: metadata key {key:?} is {found}, expected {expected}", path.display())]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("{}: invalid metadata {key:?}: {what}", path.display())]
    BadMetadata {
        path: PathBuf,
        key: String,
        what: String,
    },

    #[error(
        "{}: unknown tokenizer pre-type {pre:?} (supported: smollm, gpt2, default, llama-bpe)",
        path.display()
    )]
    UnknownPreTokenizer { path: PathBuf, pre: String },

    #[error(
        "{}: unsupported tokenizer model {model:?} (only \"gpt2\", byte-level BPE, is supported)",
        path.display()
    )]
    UnsupportedTokenizer { path: PathBuf, model: String },

    #[error("{}: no tensor named {tensor:?}", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    #[error("{}: tensor {tensor:?} has no Hugging Face llama equivalent", path.display())]
    UnmappedTensor { path: PathBuf, tensor: String },

    #[error(
        "{}: tensor {tensor:?} has GGUF dims {found:?}, expected {expected:?}",
        path.display()
    )]
    BadShape {
        path: PathBuf,
        tensor: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },

    #[error("{}: output folder already exists and is not empty", path.display())]
    OutputNotEmpty { path: PathBuf },
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}
