//! CPU time, for benchmarks that report the CPU each operation cost.

use std::time::Duration;

/// CPU time of every thread of this process so far (`/proc/self/task/*/schedstat`, in ns);
/// zero where that is not available. For benchmarks that report CPU per operation.
pub fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}
