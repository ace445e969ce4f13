//! The node's disk and memory, reported in every heartbeat so the control plane can call a
//! node degraded before it runs out of either.

use std::path::Path;

use wedge_proto::messages::Resources;

/// Samples the file system holding `data_dir` and the system's memory. What cannot be read
/// is reported as 0 (unknown).
pub fn sample(data_dir: &Path) -> Resources {
    let (memory_available_bytes, memory_total_bytes) = memory().unwrap_or((0, 0));
    Resources {
        disk_free_bytes: fs2::available_space(data_dir).unwrap_or(0),
        disk_total_bytes: fs2::total_space(data_dir).unwrap_or(0),
        memory_available_bytes,
        memory_total_bytes,
    }
}

/// (available, total) bytes from `/proc/meminfo` (Linux).
fn memory() -> Option<(u64, u64)> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses() {
        let text = "MemTotal:       24684084 kB\nMemFree:  1 kB\nMemAvailable:   20209092 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some((20209092 * 1024, 24684084 * 1024))
        );
        assert_eq!(parse_meminfo("nonsense"), None);
    }

    #[test]
    fn samples_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let r = sample(dir.path());
        assert!(r.disk_total_bytes > 0 && r.disk_free_bytes <= r.disk_total_bytes);
    }
}
