//! Progress bars and log lines that do not tear each other.
//!
//! `detox run` shows one bar for the cells and, under it, one for the stage in progress; every
//! stage makes its bar with [`bar`], which joins the run's [`MultiProgress`] when there is one.
//! Log lines go through [`note`], which prints above the bars on a terminal and plainly to stderr
//! otherwise (indicatif draws nothing, and would drop `println`s, when stderr is not a terminal).

use std::sync::OnceLock;

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
