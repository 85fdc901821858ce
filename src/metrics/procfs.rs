//! This process's figures from `/proc` (Linux): resident memory, and the CPU time of the
//! process or of one of its threads.

/// Resident memory in bytes: `/proc/self/statm`'s second field, in pages.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// User and system CPU seconds from a `stat` file (`/proc/self/stat`,
/// `/proc/self/task/<tid>/stat`).
pub fn cpu_seconds(path: &str) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(path).ok()?, clock_ticks())
}

/// utime + stime (fields 14 and 15) of a `stat` line, in seconds. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses: fields are counted after the last `)`.
pub fn parse_cpu_seconds(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}
