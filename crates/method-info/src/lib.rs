//! What a detoxification method declares to experiment specs, and the registry specs are checked
//! against.
//!
//! A method crate owns a parameter struct (serde, `deny_unknown_fields`, with a `Default` that
//! holds every default) and describes it once with [`ParamDoc`]s; [`derive_params`] turns the two
//! into the [`ParamInfo`] list a spec is validated with, so names and defaults are read from the
//! struct, never written a second time. The crate is plain data (no libtorch), so `spec` checks a
//! whole sweep before any model is loaded; the factory that builds a method's decoder lives beside
//! its struct in the method crate (`decode::Method`).

use serde::Serialize;
use serde_json::Value;

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

/// A parameter's default.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamDefault {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

/// An inclusive numeric range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

impl Range {
    pub const fn new(min: f64, max: f64) -> Self {
        Range { min, max }
    }

    pub fn contains(&self, x: f64) -> bool {
        x >= self.min && x <= self.max
    }
}

/// One parameter of a method.
#[derive(Debug, Clone, PartialEq)]
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
    /// Set away from its default, the parameter shows in the entry's default label
    /// (`word_filter[text_rule=true]`): a variant that is a different method in tables.
    pub labelled: bool,
}

/// A method's sweep axis: the strength (β, λ, …) the spec may give as a list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrengthInfo {
    pub range: Range,
    /// Used when the spec gives no strength.
    pub default: f64,
}

impl StrengthInfo {
    /// A strength in `[min, max]`, `default` when the spec gives none.
    pub const fn new(min: f64, max: f64, default: f64) -> Self {
        StrengthInfo {
            range: Range::new(min, max),
            default,
        }
    }
}

/// A detoxification method as the spec sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub params: Vec<ParamInfo>,
    /// `None`: the method takes no strength, and giving one is an error.
    pub strength: Option<StrengthInfo>,
    /// The method picks its candidates from the full distribution, as its paper does (RAD's top
    /// k of all logits): its cells run with top-p off unless the method entry sets `top_p`.
    pub full_distribution: bool,
}

impl MethodInfo {
    pub fn param(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// What a method crate writes about one field of its parameter struct: everything the struct
/// itself cannot say. The name must be a field of the struct; the default and (unless `path`)
/// the kind come from the struct's `Default`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamDoc {
    pub name: &'static str,
    pub description: &'static str,
    pub range: Option<Range>,
    pub choices: Option<&'static [&'static str]>,
    /// The field is a file or folder (resolved against the spec's folder and checked to exist).
    pub path: bool,
    /// See [`ParamInfo::labelled`].
    pub labelled: bool,
}

impl ParamDoc {
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        ParamDoc {
            name,
            description,
            range: None,
            choices: None,
            path: false,
            labelled: false,
        }
    }

    pub const fn range(mut self, min: f64, max: f64) -> Self {
        self.range = Some(Range::new(min, max));
        self
    }

    pub const fn choices(mut self, choices: &'static [&'static str]) -> Self {
        self.choices = Some(choices);
        self
    }

    pub const fn path(mut self) -> Self {
        self.path = true;
        self
    }

    /// Away from its default, the parameter names the variant in default labels.
    pub const fn labelled(mut self) -> Self {
        self.labelled = true;
        self
    }
}

/// The parameters of a method whose parameter struct is `P`, in the order of `docs`: each name,
/// kind and default from `P::default()` serialized (a `null` default makes the parameter
/// required), the rest from its doc.
///
/// # Panics
/// When a field of `P` has no doc or a doc names no field of `P`, or a default is of a type a
/// spec cannot write (a list, a map). Each method crate has a test that builds its info, so this
/// fails in CI, never in a user's run.
pub fn derive_params<P: Serialize + Default>(docs: &[ParamDoc]) -> Vec<ParamInfo> {
    let defaults = match serde_json::to_value(P::default()) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) if docs.is_empty() => serde_json::Map::new(),
        other => panic!("a parameter struct must serialize to a map, got {other:?}"),
    };
    for field in defaults.keys() {
        assert!(
            docs.iter().any(|d| d.name == field),
            "parameter {field:?} has no ParamDoc"
        );
    }
    docs.iter()
        .map(|doc| {
            let value = defaults
                .get(doc.name)
                .unwrap_or_else(|| panic!("ParamDoc {:?} names no field", doc.name));
            let (kind, default) = match value {
                Value::Null => (ParamKind::String, None),
                Value::Bool(b) => (ParamKind::Bool, Some(ParamDefault::Bool(*b))),
                Value::Number(n) if n.is_i64() || n.is_u64() => (
                    ParamKind::Int,
                    Some(ParamDefault::Int(n.as_i64().expect("fits i64"))),
                ),
                Value::Number(n) => (
                    ParamKind::Float,
                    Some(ParamDefault::Float(n.as_f64().expect("finite"))),
                ),
                Value::String(s) => (ParamKind::String, Some(ParamDefault::Str(s.clone()))),
                other => panic!("parameter {:?}: unsupported default {other}", doc.name),
            };
            ParamInfo {
                name: doc.name,
                kind: if doc.path { ParamKind::Path } else { kind },
                default,
                range: doc.range,
                choices: doc.choices,
                description: doc.description,
                labelled: doc.labelled,
            }
        })
        .collect()
}

/// `none`: plain sampling, the baseline every registry holds.
pub fn none_info() -> MethodInfo {
    MethodInfo {
        name: "none",
        description: "plain sampling, no steering (the baseline)",
        params: Vec::new(),
        strength: None,
        full_distribution: false,
    }
}

/// Known methods. Names are unique; registering a name twice replaces the earlier entry.
#[derive(Debug, Clone)]
pub struct Registry {
    methods: Vec<MethodInfo>,
}

impl Registry {
    /// Only `none`. The full list is assembled where the method crates are linked
    /// (`experiment::registry`).
    pub fn builtin() -> Self {
        Registry {
            methods: vec![none_info()],
        }
    }

    /// `none` and `methods`.
    pub fn with(methods: impl IntoIterator<Item = MethodInfo>) -> Self {
        let mut registry = Self::builtin();
        for m in methods {
            registry.register(m);
        }
        registry
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Example {
        lists: String,
        retries: u64,
        weight: f64,
        on: bool,
        model: Option<std::path::PathBuf>,
    }

    impl Default for Example {
        fn default() -> Self {
            Example {
                lists: "rtp".into(),
                retries: 10,
                weight: 0.5,
                on: true,
                model: None,
            }
        }
    }

    const DOCS: &[ParamDoc] = &[
        ParamDoc::new("lists", "word lists").choices(&["rtp", "ldnoobw"]),
        ParamDoc::new("retries", "redraws").range(0.0, 100.0),
        ParamDoc::new("weight", "a weight"),
        ParamDoc::new("on", "a switch"),
        ParamDoc::new("model", "a folder").path(),
    ];

    #[test]
    fn kinds_and_defaults_come_from_the_struct() {
        let params = derive_params::<Example>(DOCS);
        let kinds: Vec<_> = params.iter().map(|p| (p.name, p.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                ("lists", ParamKind::String),
                ("retries", ParamKind::Int),
                ("weight", ParamKind::Float),
                ("on", ParamKind::Bool),
                ("model", ParamKind::Path),
            ]
        );
        assert_eq!(params[0].default, Some(ParamDefault::Str("rtp".into())));
        assert_eq!(params[1].default, Some(ParamDefault::Int(10)));
        assert_eq!(params[2].default, Some(ParamDefault::Float(0.5)));
        assert_eq!(params[4].default, None, "a None default is required");
        assert_eq!(params[1].range, Some(Range::new(0.0, 100.0)));
    }

    #[test]
    #[should_panic(expected = "has no ParamDoc")]
    fn a_field_without_a_doc_is_caught() {
        derive_params::<Example>(&DOCS[..4]);
    }

    #[test]
    #[should_panic(expected = "names no field")]
    fn a_doc_without_a_field_is_caught() {
        let mut docs = DOCS.to_vec();
        docs.push(ParamDoc::new("ghost", "no such field"));
        derive_params::<Example>(&docs);
    }
}
