//! What the generation benchmarks measure about the process (Linux `/proc`), and the prompts they
//! share, in one place for every crate's `benches/`.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// `crates/decode/benches/prompts.txt`: one prompt a line, `#` lines and blank lines skipped.
pub fn bench_prompts() -> Result<Vec<String>> {
    let path: PathBuf = paths::project_root().join("crates/decode/benches/prompts.txt");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// The middle value (the mean of the two middle ones for an even count); NaN for none.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

/// A `kB` field of `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resident memory of this process now, in MiB.
pub fn resident_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

/// The highest resident memory since the last [`reset_peak_resident`] (or the start), in MiB.
pub fn peak_resident_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// Lowers the recorded peak to the current resident set, so the next peak is one call's
/// (Linux ≥ 4.0). False where the kernel does not allow it: peaks then span the whole process.
pub fn reset_peak_resident() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU seconds of this process, all threads, user and system (`/proc/self/stat`, in clock ticks
/// of 1/100 s). On a shared machine this counts this process's work only, unlike wall time.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis start with the
    // state (field 3), so utime and stime (fields 14 and 15) are the 12th and 13th after it.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The 1, 5 and 15 minute load averages, as the kernel prints them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn process_figures_are_readable_on_linux() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        assert!(resident_mib().unwrap() > 0.0);
        assert!(peak_resident_mib().unwrap() >= resident_mib().unwrap() - 1.0);
        assert!(cpu_seconds().unwrap() >= 0.0);
        assert!(!bench_prompts().unwrap().is_empty());
    }
}
