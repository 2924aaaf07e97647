//! What the pipeline tells a person while it works: log lines and progress. The library reports
//! through a [`Monitor`]; the `detox` binary draws bars, tests pass [`Quiet`].

/// Which count a progress bar follows (the binary picks its layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Cells,
    Samples,
    Texts,
    Perplexity,
}

/// A running count.
pub trait Progress {
    fn set_position(&self, position: u64);
    fn inc(&self, by: u64);
    fn set_message(&self, message: String);
    fn finish(&self);
}

/// Receives the pipeline's log lines and makes its progress counts.
pub trait Monitor {
    fn note(&self, line: &str);
    fn progress(&self, total: u64, count: Count) -> Box<dyn Progress>;
}

/// Says nothing: for tests and library callers that log themselves.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn set_position(&self, _: u64) {}
    fn inc(&self, _: u64) {}
    fn set_message(&self, _: String) {}
    fn finish(&self) {}
}

impl Monitor for Quiet {
    fn note(&self, _line: &str) {}

    fn progress(&self, _total: u64, _count: Count) -> Box<dyn Progress> {
        Box::new(Quiet)
    }
}
