//! What is sampled from the running processes: resident memory and open
//! file descriptors from `/proc`, and the size of a directory tree.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One process at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessSample {
    /// Resident set size, bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// Open file descriptors (entries of `/proc/<pid>/fd`).
    pub fds: u64,
}

/// Samples process `pid`; `None` once it has exited.
pub fn process(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_bytes = rss_of_status(&status)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcessSample { rss_bytes, fds })
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
fn rss_of_status(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// Bytes of the regular files under `dir` (allocated size is not what is
/// asked: sled preallocates), split into those named `split` (less the
/// zeros at their ends: the audit log keeps zeros written ahead of its
/// records) and the rest.
pub fn dir_size(dir: &Path, split: &str) -> std::io::Result<(u64, u64)> {
    let (mut named, mut rest) = (0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                // A file removed between the listing and here is not an error.
                let Ok(meta) = entry.metadata() else { continue };
                match entry.file_name() == split {
                    // Cut meanwhile (the log was reopened): its length will do.
                    true => named += len_without_zero_tail(&entry.path()).unwrap_or(meta.len()),
                    false => rest += meta.len(),
                }
            }
        }
    }
    Ok((named, rest))
}

/// The length of `path` up to its last byte that is not zero.
fn len_without_zero_tail(path: &Path) -> std::io::Result<u64> {
    let file = File::open(path)?;
    let mut end = file.metadata()?.len();
    let mut block = vec![0; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(last) = chunk.iter().rposition(|&b| b != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_status_text() {
        let status = "Name:\tlanyard\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(rss_of_status(status), Some(2048 * 1024));
        assert_eq!(rss_of_status("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_memory_and_descriptors_and_a_dead_one_has_none() {
        let me = process(std::process::id()).unwrap();
        assert!(me.rss_bytes > 1024 * 1024 && me.fds >= 3, "{me:?}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(process(pid), None, "a reaped process is gone");
    }

    #[test]
    fn a_directory_tree_is_summed_with_the_named_file_apart() {
        let dir = tempfile::tempdir().unwrap();
        // Two records, then zeros written ahead: more than one block of them.
        let mut log = b"{\"a\":1}\n{\"b\":2}\n".to_vec();
        log.resize(log.len() + 100_000, 0);
        std::fs::write(dir.path().join("audit.log"), log).unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db").join("conf"), [0u8; 30]).unwrap();
        std::fs::write(dir.path().join("snap"), [0u8; 12]).unwrap();
        assert_eq!(dir_size(dir.path(), "audit.log").unwrap(), (16, 42));
        std::fs::write(dir.path().join("audit.log"), [0u8; 70_000]).unwrap();
        assert_eq!(dir_size(dir.path(), "audit.log").unwrap(), (0, 42), "zeros only: no records");
    }
}
