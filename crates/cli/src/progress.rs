//! Progress bars and log lines that do not tear each other.
//!
//! `detox run` shows one bar for the cells and, under it, one for the stage in progress; every
//! stage makes its bar with [`bar`], which joins the run's [`MultiProgress`]. Log lines go through
//! [`note`], which prints above the bars on a terminal and plainly to stderr otherwise (indicatif
//! draws nothing, and would drop `println`s, when stderr is not a terminal). [`Bars`] is the
//! [`experiment::Monitor`] the library stages report through.

use std::sync::OnceLock;

use experiment::{Count, Monitor, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// The shared set of bars (created on first use).
pub fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(MultiProgress::new)
}

/// A bar of `len` steps; `template` is an indicatif template (e.g. `"{msg} [{bar:30}] {pos}/{len}"`).
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template(template)
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    multi().add(bar)
}

/// One log line, above the bars.
pub fn note(line: impl AsRef<str>) {
    let line = line.as_ref();
    let multi = multi();
    if multi.is_hidden() || multi.println(line).is_err() {
        eprintln!("{line}");
    }
}

/// `note!("…", args)`: [`note`] with `format!` arguments.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::progress::note(format!($($arg)*))
    };
}

/// The terminal's monitor: bars and notes.
pub struct Bars;

struct Bar(ProgressBar);

impl Progress for Bar {
    fn set_position(&self, position: u64) {
        self.0.set_position(position);
    }

    fn inc(&self, by: u64) {
        self.0.inc(by);
    }

    fn set_message(&self, message: String) {
        self.0.set_message(message);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Monitor for Bars {
    fn note(&self, line: &str) {
        note(line);
    }

    fn progress(&self, total: u64, count: Count) -> Box<dyn Progress> {
        let template = match count {
            Count::Cells => "cells [{bar:30}] {pos}/{len} {msg}",
            Count::Samples => "generating [{bar:30}] {pos}/{len} samples, {msg}, eta {eta}",
            Count::Texts => "{msg} [{bar:30}] {pos}/{len} texts, {per_sec}, eta {eta}",
            Count::Perplexity => "perplexity [{bar:30}] {pos}/{len} samples, {per_sec}, eta {eta}",
        };
        Box::new(Bar(bar(total, template)))
    }
}
