//! What a spec may name: methods (with their parameters and strength range) and scorers.
//!
//! Methods are plain data ([`MethodInfo`]) in the static slice [`BUILTIN_METHODS`]; a method crate
//! added later appends its entry there (the spec crate stays free of libtorch because an entry is
//! only metadata). Code that wants extra methods without editing this crate (tests, an out-of-tree
//! binary) builds a [`Registry`] with [`Registry::builtin`] and calls [`Registry::register`], then
//! validates with [`crate::load_with`].

/// The type of a method parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Float,
    Int,
    Bool,
    String,
    /// A file or folder; resolved like every other relative path in the spec and required to exist.
    Path,
}

/// A parameter's default, in a form a `static` can hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamDefault {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(&'static str),
}

/// An inclusive numeric range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

impl Range {
    pub fn contains(&self, x: f64) -> bool {
        x >= self.min && x <= self.max
    }
}

/// One parameter of a method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamInfo {
    pub name: &'static str,
    pub kind: ParamKind,
    /// `None`: the parameter is required.
    pub default: Option<ParamDefault>,
    /// Valid range for `Float` and `Int` parameters.
    pub range: Option<Range>,
    /// The values a `String` parameter may take (`None`: any string).
    pub choices: Option<&'static [&'static str]>,
    pub description: &'static str,
}

/// A method's sweep axis: the strength (β, λ, …) the spec may give as a list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrengthInfo {
    pub range: Range,
    /// Used when the spec gives no strength.
    pub default: f64,
}

/// A detoxification method as the spec sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub params: &'static [ParamInfo],
    /// `None`: the method takes no strength, and giving one is an error.
    pub strength: Option<StrengthInfo>,
}

impl MethodInfo {
    pub fn param(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// Methods every build knows. Later method crates add their entry here.
pub static BUILTIN_METHODS: &[MethodInfo] = &[
    MethodInfo {
        name: "none",
        description: "plain sampling, no steering (the baseline)",
        params: &[],
        strength: None,
    },
    MethodInfo {
        name: "word_filter",
        description: "ban listed words while decoding (multi-token aware) and/or redraw finished samples that contain one",
        params: &[
            ParamInfo {
                name: "mode",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("decode")),
                range: None,
                description: "decode: ban token sequences; posthoc: reject and redraw; both",
                choices: Some(&["decode", "posthoc", "both"]),
            },
            ParamInfo {
                name: "lists",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("rtp")),
                range: None,
                description: "comma-separated: rtp (RealToxicityPrompts' list), ldnoobw, or list files (absolute paths)",
                choices: None,
            },
            ParamInfo {
                name: "max_retries",
                kind: ParamKind::Int,
                default: Some(ParamDefault::Int(10)),
                range: Some(Range {
                    min: 0.0,
                    max: 1000.0,
                }),
                description: "post-hoc redraws per sample before the last draw is kept (flagged)",
                choices: None,
            },
            ParamInfo {
                name: "text_rule",
                kind: ParamKind::Bool,
                default: Some(ParamDefault::Bool(true)),
                range: None,
                description: "decode mode: also ban a token that would complete a listed word in the decoded text, however it is tokenized (false: token sequences of the listed spellings only, RealToxicityPrompts' baseline)",
                choices: None,
            },
        ],
        strength: None,
    },
    MethodInfo {
        name: "sasa",
        description: "self-disciplined autoregressive sampling: candidates re-weighted by a linear toxic/non-toxic margin of the model's own next hidden state; strength is beta",
        params: &[
            ParamInfo {
                name: "subspace",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("auto")),
                range: None,
                description: "the fitted discriminant (detox train sasa); auto: configs/sasa/<model folder>.json",
                choices: None,
            },
            ParamInfo {
                name: "margin_transform",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("softmax")),
                range: None,
                description: "bonus per candidate: softmax of the row's margins (paper's closed form) or the raw margin",
                choices: Some(&["softmax", "raw"]),
            },
            ParamInfo {
                name: "max_candidates",
                kind: ParamKind::Int,
                default: Some(ParamDefault::Int(0)),
                range: Some(Range {
                    min: 0.0,
                    max: 100_000.0,
                }),
                description: "score at most this many top candidates per row (0: all that top-k/top-p leave)",
                choices: None,
            },
        ],
        strength: Some(StrengthInfo {
            range: Range {
                min: 0.0,
                max: 100_000.0,
            },
            default: 10.0,
        }),
    },
    MethodInfo {
        name: "rad",
        description: "reward-augmented decoding: the top-k candidates re-weighted by a unidirectional reward model (the LM's first N layers + a linear head) scoring each continuation; strength is beta",
        params: &[
            ParamInfo {
                name: "reward",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("auto")),
                range: None,
                description: "the fitted reward head (detox train rad-reward); auto: configs/rad/<model folder>.json",
                choices: None,
            },
            ParamInfo {
                name: "backbone",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("auto")),
                range: None,
                description: "the reward model's backbone folder (checked against the head's fingerprint); auto: the decoding model's own folder",
                choices: None,
            },
            ParamInfo {
                name: "top_k",
                kind: ParamKind::Int,
                default: Some(ParamDefault::Int(20)),
                range: Some(Range {
                    min: 1.0,
                    max: 1_000_000.0,
                }),
                description: "candidates scored per row, the highest logits among those top-k/top-p left; the rest are removed",
                choices: None,
            },
        ],
        strength: Some(StrengthInfo {
            range: Range {
                min: 0.0,
                max: 100_000.0,
            },
            default: 10.0,
        }),
    },
    MethodInfo {
        name: "calibration_fusion",
        description: "calibration-model output-layer fusion: a compact LM trained on non-toxic text, its final hidden state mapped into the target's (LN(h_cal A)) and mixed in before the head; strength is alpha",
        params: &[
            ParamInfo {
                name: "calibration",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("auto")),
                range: None,
                description: "the calibration model folder (detox train calibration); auto: .detox/calibration/<model folder>",
                choices: None,
            },
            ParamInfo {
                name: "align",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("auto")),
                range: None,
                description: "the alignment map (detox train align); auto: <calibration folder>/align-<model folder>.json",
                choices: None,
            },
        ],
        strength: Some(StrengthInfo {
            range: Range { min: 0.0, max: 1.0 },
            default: 0.1,
        }),
    },
    MethodInfo {
        name: "dexperts",
        description: "DExperts: logits plus alpha times (expert logits minus anti-expert logits), both experts reading the whole text; strength is alpha",
        params: &[
            ParamInfo {
                name: "expert",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("auto")),
                range: None,
                description: "the expert model folder; auto: .detox/calibration/<model folder> (trained on non-toxic text)",
                choices: None,
            },
            ParamInfo {
                name: "anti_expert",
                kind: ParamKind::String,
                default: Some(ParamDefault::Str("auto")),
                range: None,
                description: "the anti-expert model folder; auto: .detox/calibration/<model folder>-toxic (detox train calibration --toxic)",
                choices: None,
            },
        ],
        strength: Some(StrengthInfo {
            range: Range {
                min: 0.0,
                max: 100.0,
            },
            default: 2.0,
        }),
    },
    MethodInfo {
        name: "nado",
        description: "NADO decoding: logits plus alpha times log R from an auxiliary model (detox train finetune, objective nado), no fine-tuning; alpha 1 is NADO's posterior q ∝ p·R",
        params: &[ParamInfo {
            name: "auxiliary",
            kind: ParamKind::Path,
            default: None,
            range: None,
            description: "the auxiliary model folder a fine-tuning run wrote (<output>/auxiliary-1 is trained on the base model's own samples)",
            choices: None,
        }],
        strength: Some(StrengthInfo {
            range: Range {
                min: 0.0,
                max: 100.0,
            },
            default: 1.0,
        }),
    },
    MethodInfo {
        name: "finetuned",
        description: "decode with a fine-tuned variant of the cell's model (detox train finetune) instead of the model itself; the strength is the variant's lambda and only labels the cell (the cell's model stays the judge)",
        params: &[ParamInfo {
            name: "checkpoint",
            kind: ParamKind::Path,
            default: None,
            range: None,
            description: "the fine-tuned model folder (<output>/policy-N)",
            choices: None,
        }],
        strength: Some(StrengthInfo {
            range: Range {
                min: 0.0,
                max: 1000.0,
            },
            default: 0.0,
        }),
    },
];

/// Scorer names the spec accepts; `hf:DIR[#label]` takes a classifier folder and an optional
/// label to read (default: the classifier's toxic label).
pub static SCORER_NAMES: &[&str] = &["minilm", "profanity", "perspective", "hf:DIR[#label]"];

/// Known methods. Names are unique; registering a name twice replaces the earlier entry.
#[derive(Debug, Clone)]
pub struct Registry {
    methods: Vec<MethodInfo>,
}

impl Registry {
    /// [`BUILTIN_METHODS`].
    pub fn builtin() -> Self {
        Registry {
            methods: BUILTIN_METHODS.to_vec(),
        }
    }

    pub fn register(&mut self, info: MethodInfo) -> &mut Self {
        self.methods.retain(|m| m.name != info.name);
        self.methods.push(info);
        self
    }

    pub fn method(&self, name: &str) -> Option<&MethodInfo> {
        self.methods.iter().find(|m| m.name == name)
    }

    pub fn methods(&self) -> &[MethodInfo] {
        &self.methods
    }

    pub fn method_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.methods.iter().map(|m| m.name)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}
