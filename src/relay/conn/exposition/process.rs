//! The standard `process_*` families, read from `/proc/self` and `getrlimit`.

use super::Exposition;

/// What `/proc` tells about this process.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
}

/// Reads `/proc/self/stat` (fields after the command name, whose parentheses
/// may hold spaces) and the boot time of `/proc/stat`.
fn read_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    parse_stats(
        &stat,
        &boot,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
    )
}

fn parse_stats(stat: &str, boot: &str, ticks: u64, page: u64) -> Option<ProcessStats> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // Field 3 (state) is the first after the name: utime is field 14.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = ticks.max(1) as f64;
    let boot_time: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
    })
}

/// Open descriptors: the entries of `/proc/self/fd`, less the one the
/// listing itself holds open.
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

/// The soft `RLIMIT_NOFILE` (the one `open` fails past); `None` when unlimited.
fn max_fds() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Writes the families whose source could be read; one that cannot is left
/// out rather than shown as 0.
pub(super) fn write(x: &mut Exposition) {
    if let Some(stats) = read_stats() {
        let families: [(&str, &str, &str, f64); 4] = [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                stats.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                stats.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                stats.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                stats.start_time_seconds,
            ),
        ];
        for (name, kind, help, value) in families {
            x.family(name, kind, help);
            x.sample(name, "", value);
        }
    }
    if let Some(open) = open_fds() {
        x.family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        x.sample("process_open_fds", "", open);
    }
    if let Some(max) = max_fds() {
        x.family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        x.sample("process_max_fds", "", max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        // A real line's shape: pid, (comm), state, then fields 4.. ; utime=250
        // and stime=50 ticks, starttime=1000 ticks, vsize, rss=10 pages.
        let stat = "42 (jet (relay) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 10 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        let stats = parse_stats(stat, boot, 100, 4096).unwrap();
        assert_eq!(
            stats,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 40960,
                virtual_bytes: 123456789,
                start_time_seconds: 1_700_000_010.0,
            }
        );
        assert_eq!(parse_stats("garbage", boot, 100, 4096), None);
        assert_eq!(parse_stats(stat, "no boot time", 100, 4096), None);
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let stats = read_stats().expect("/proc/self/stat and /proc/stat are readable on Linux");
        assert!(stats.resident_bytes > 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            stats.start_time_seconds <= now + 1.0
                && stats.start_time_seconds > now - 86_400.0 * 365.0
        );
        // This test's own listing is not counted, stdin/stdout/stderr are.
        assert!(open_fds().unwrap() >= 3);
    }
}
