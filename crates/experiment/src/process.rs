//! The facts of this process that a run record keeps: the checkout's git state, versions, host,
//! libtorch threads and peak memory.

use std::process::Command;

use records::{GitState, Host, RunRecord, Versions};

/// Fills in what this process knows about itself.
pub fn stamp(record: &mut RunRecord, cell_id: &str) {
    record.cell_id = cell_id.to_string();
    record.git = git_state();
    record.versions = Versions {
        detox: env!("CARGO_PKG_VERSION").to_string(),
        libtorch: env!("DETOX_LIBTORCH_VERSION").to_string(),
    };
    record.host = Host {
        name: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
    };
    record.threads = tch::get_num_threads();
}

/// Resets the kernel's peak-RSS mark of this process (Linux; elsewhere a no-op), so the next
/// reading covers only what follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The project checkout's commit and whether tracked files differ from it.
fn git_state() -> GitState {
    let root = paths::project_root();
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    GitState {
        commit: git(&["rev-parse", "HEAD"]),
        dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_versions_and_memory() {
        let mut record = records::RunRecord::default();
        super::stamp(&mut record, "abc");
        assert_eq!(record.cell_id, "abc");
        assert_eq!(record.versions.detox, env!("CARGO_PKG_VERSION"));
        assert!(super::peak_rss_bytes().unwrap() > 1 << 20);
    }
}
