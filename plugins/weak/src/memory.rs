//! Where the weak cache learns how much memory is left.
//!
//! - [`Cgroup2`]: inside a cgroup v2 container with a memory limit, the
//!   limit is `memory.max` and the memory in use is `anon` of `memory.stat`
//!   (anonymous pages: heaps and stacks, what cannot be dropped; page cache
//!   is left out because the kernel reclaims it before it OOM-kills). What
//!   is left is the limit minus that, and never more than the host has
//!   available.
//! - [`MemInfo`]: otherwise, the host's `MemTotal` and `MemAvailable` from
//!   `/proc/meminfo` (the kernel's own estimate of what can be allocated
//!   without swapping).
//!
//! [`detect`] picks the first that applies. Tests inject their own source
//! (any [`MemorySource`]), or point the config at files they write.

use std::io;
use std::path::{Path, PathBuf};

/// Memory the cache lives in: how much there is, how much is left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Bytes the host or container may use in all.
    pub total: u64,
    /// Bytes still available.
    pub available: u64,
}

/// A reading of the memory left.
pub trait MemorySource: Send + Sync + 'static {
    /// The memory now.
    fn read(&self) -> io::Result<Memory>;

    /// What is read, for logs (`cgroup v2 /sys/fs/cgroup/...`).
    fn describe(&self) -> String;
}

/// The host's memory from `/proc/meminfo` (or a file in its format).
#[derive(Clone, Debug)]
pub struct MemInfo {
    /// The file.
    pub path: PathBuf,
}

impl MemInfo {
    /// The host's `/proc/meminfo`.
    pub fn host() -> Self {
        MemInfo { path: "/proc/meminfo".into() }
    }
}

/// The value of `key` in a `key value [unit]` listing (`/proc/meminfo` with
/// `kB`, `memory.stat` without).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.next()?.trim_end_matches(':');
        if name != key {
            return None;
        }
        let n: u64 = words.next()?.parse().ok()?;
        Some(match words.next() {
            Some("kB") => n * 1024,
            _ => n,
        })
    })
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: no {what}", path.display()))
}

impl MemorySource for MemInfo {
    fn read(&self) -> io::Result<Memory> {
        let text = std::fs::read_to_string(&self.path)?;
        let total = field(&text, "MemTotal").ok_or_else(|| invalid(&self.path, "MemTotal"))?;
        let available = field(&text, "MemAvailable").ok_or_else(|| invalid(&self.path, "MemAvailable"))?;
        Ok(Memory { total, available: available.min(total) })
    }

    fn describe(&self) -> String {
        format!("MemAvailable of {}", self.path.display())
    }
}

/// A cgroup v2 directory's limit and anonymous memory, bounded by the host.
#[derive(Clone, Debug)]
pub struct Cgroup2 {
    /// The cgroup's directory (`/sys/fs/cgroup/<path>`).
    pub dir: PathBuf,
    /// The host, for a cgroup without a limit (`max`) and as an upper bound.
    pub host: MemInfo,
}

impl MemorySource for Cgroup2 {
    fn read(&self) -> io::Result<Memory> {
        let host = self.host.read()?;
        let max_path = self.dir.join("memory.max");
        let max = std::fs::read_to_string(&max_path)?;
        let limit = match max.trim() {
            "max" => host.total,
            n => n.parse::<u64>().map_err(|_| invalid(&max_path, "byte count"))?.min(host.total),
        };
        let stat_path = self.dir.join("memory.stat");
        let anon = field(&std::fs::read_to_string(&stat_path)?, "anon").ok_or_else(|| invalid(&stat_path, "anon"))?;
        Ok(Memory { total: limit, available: limit.saturating_sub(anon).min(host.available) })
    }

    fn describe(&self) -> String {
        format!("cgroup v2 {} (memory.max, memory.stat anon)", self.dir.display())
    }
}

/// The cgroup v2 directory of this process: the `0::/path` line of
/// `/proc/self/cgroup` under `root` (`/sys/fs/cgroup`), if it has a
/// `memory.max` with a limit. A cgroup without a limit tells nothing the
/// host does not.
pub fn own_cgroup(root: &Path, self_cgroup: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(self_cgroup).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = root.join(path.trim().trim_start_matches('/'));
    let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
    (max.trim() != "max" && dir.join("memory.stat").exists()).then_some(dir)
}

/// The source for this process: its cgroup v2 if it has a memory limit,
/// else the host's `meminfo`.
pub fn detect(meminfo: &Path) -> Box<dyn MemorySource> {
    let host = MemInfo { path: meminfo.to_path_buf() };
    match own_cgroup(Path::new("/sys/fs/cgroup"), Path::new("/proc/self/cgroup")) {
        Some(dir) => Box::new(Cgroup2 { dir, host }),
        None => Box::new(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       16384 kB\nMemFree:         1024 kB\nMemAvailable:    4096 kB\n";

    #[test]
    fn meminfo_total_and_available() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("meminfo");
        std::fs::write(&path, MEMINFO).unwrap();
        let m = MemInfo { path: path.clone() }.read().unwrap();
        assert_eq!(m, Memory { total: 16384 * 1024, available: 4096 * 1024 });
        std::fs::write(&path, "MemTotal: 1 kB\n").unwrap();
        let e = MemInfo { path }.read().unwrap_err();
        assert!(e.to_string().contains("MemAvailable"), "{e}");
    }

    #[test]
    fn the_real_host_reads() {
        let m = MemInfo::host().read().unwrap();
        assert!(m.total > 0 && m.available <= m.total);
    }

    #[test]
    fn cgroup_limit_against_anon_bounded_by_the_host() {
        let d = tempfile::tempdir().unwrap();
        let host = MemInfo { path: d.path().join("meminfo") };
        std::fs::write(&host.path, MEMINFO).unwrap();
        let cg = d.path().join("cg");
        std::fs::create_dir(&cg).unwrap();
        std::fs::write(cg.join("memory.max"), "2097152\n").unwrap();
        std::fs::write(cg.join("memory.stat"), "anon 524288\nfile 999999999\n").unwrap();
        let src = Cgroup2 { dir: cg.clone(), host: host.clone() };
        // Page cache ("file") is not counted as used.
        assert_eq!(src.read().unwrap(), Memory { total: 2097152, available: 2097152 - 524288 });
        // No limit: the host's total; never more available than the host has.
        std::fs::write(cg.join("memory.max"), "max\n").unwrap();
        std::fs::write(cg.join("memory.stat"), "anon 1024\n").unwrap();
        assert_eq!(src.read().unwrap(), Memory { total: 16384 * 1024, available: 4096 * 1024 });
        std::fs::write(cg.join("memory.max"), "lots\n").unwrap();
        assert!(src.read().is_err());
    }

    #[test]
    fn own_cgroup_needs_a_limit() {
        let d = tempfile::tempdir().unwrap();
        let cg = d.path().join("system.slice/gerdu.service");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("memory.stat"), "anon 1\n").unwrap();
        std::fs::write(cg.join("memory.max"), "1048576\n").unwrap();
        let self_cgroup = d.path().join("cgroup");
        std::fs::write(&self_cgroup, "0::/system.slice/gerdu.service\n").unwrap();
        assert_eq!(own_cgroup(d.path(), &self_cgroup), Some(cg.clone()));
        std::fs::write(cg.join("memory.max"), "max\n").unwrap();
        assert_eq!(own_cgroup(d.path(), &self_cgroup), None);
        // cgroup v1 only: no "0::" line.
        std::fs::write(&self_cgroup, "4:memory:/x\n").unwrap();
        assert_eq!(own_cgroup(d.path(), &self_cgroup), None);
    }
}
