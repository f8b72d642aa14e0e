//! For the benchmarks that are plain `main`s (`harness = false`, no criterion): running one,
//! and the CPU time each operation cost.

use std::time::Duration;

use idempotent_core::Error;

/// Runs a benchmark's body on a multi-threaded tokio runtime. A failure is printed, named
/// after the benchmark, and ends the process with status 1; a runtime that cannot start is
/// printed and the benchmark does nothing.
pub fn main(name: &str, body: impl Future<Output = Result<(), Error>>) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: no tokio runtime: {error}");
            return;
        }
    };
    if let Err(error) = runtime.block_on(body) {
        eprintln!("{name} failed: {error} ({error:?})");
        std::process::exit(1);
    }
}

/// CPU time of every thread of this process so far (`/proc/self/task/*/schedstat`, in ns);
/// zero where that is not available.
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

/// `cpu` spread over `ops` operations, in microseconds each (over one operation at least).
pub fn micros_per_op(cpu: Duration, ops: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / ops.max(1) as f64
}
