//! Sampling and the decoder loop. Sampling is kept apart from the loop so steering methods can
//! re-weight the candidate set between truncation and the draw.

pub mod follow;
pub mod generate;
pub mod measure;
pub mod method;
pub mod sampler;
pub mod steer;

pub use follow::{Follower, ReadAlong};
pub use generate::{
    generate, generate_all, generate_steered, prefill, FinishReason, Generation, GenerationStats,
    Prefill, Request, Settings,
};
pub use method::{
    auto_path, load_beside, FilterOutcome, FilteredSample, LoopInputs, Method, MethodParts,
    NoMethod, SampleFilter, StepParams,
};
pub use sampler::{candidates, Candidates, SampleRng, SamplingParams};
pub use steer::{Lookahead, Row, Steering, Step};
