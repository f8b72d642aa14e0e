//! Compile-fail and compile-pass tests for `#[idempotent]` and `#[derive(KeyPart)]`: one file
//! per rule in `ui/fail/`, each with the exact diagnostic it must produce, and every supported
//! form in `ui/pass/`.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite` and review every one of them.
//!
//! trybuild always builds with `CARGO_INCREMENTAL=0`, and the compiler reports some unmet
//! bounds more than once in an incremental build (the default of `cargo build` and of IDEs), so
//! the cases whose one error depends on that are also built incrementally, below.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}

/// The cases of `ui/fail/` whose single error is an unmet bound that the expansion needs in
/// more than one place: on the return type, and on the store of `transaction`.
const SINGLE_ERROR_CASES: &[(&str, &str)] = &[
    (
        "output_not_serializable",
        "`Receipt` cannot be stored for replay",
    ),
    (
        "error_without_from",
        "the error type `ChargeError` must implement `From<idempotent_core::Error>`",
    ),
    (
        "return_type_not_result",
        "an `#[idempotent]` function must return `Result<T, E>`, not `Option<u32>`",
    ),
    (
        "cache_errors_error_not_serializable",
        "cannot be stored for replay",
    ),
    (
        "transaction_not_postgres",
        "`transaction = ...` runs the body in a PostgreSQL transaction",
    ),
];

/// How long one build of the fixture may take: the first one compiles the dependencies.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Each such case is one error in an incremental build and in a non-incremental one,
/// counted in cargo's JSON messages (which, unlike the rendered output, keep an error that
/// repeats another one word for word).
#[test]
fn bound_errors_are_reported_once_in_incremental_builds_too() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("the workspace root");
    let fixture = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("incremental-errors");
    std::fs::create_dir_all(&fixture).expect("create the fixture directory");
    let mut manifest = format!(
        "[package]\nname = \"incremental-errors\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\nidempotent-core = {{ path = {:?} }}\n\n",
        workspace.join("idempotent-core")
    );
    for (case, _) in SINGLE_ERROR_CASES {
        manifest.push_str(&format!(
            "[[bin]]\nname = \"{case}\"\npath = {:?}\n\n",
            manifest_dir.join("ui/fail").join(format!("{case}.rs"))
        ));
    }
    manifest.push_str("[workspace]\n");
    std::fs::write(fixture.join("Cargo.toml"), manifest).expect("write the fixture manifest");
    // The workspace's versions of every dependency, and no network.
    std::fs::copy(workspace.join("Cargo.lock"), fixture.join("Cargo.lock"))
        .expect("copy Cargo.lock");

    for incremental in ["1", "0"] {
        let errors = build(&fixture, incremental);
        for (case, message) in SINGLE_ERROR_CASES {
            let case_errors: Vec<&String> = errors
                .iter()
                .filter(|(target, _)| target == case)
                .map(|(_, message)| message)
                .collect();
            assert_eq!(
                case_errors.len(),
                1,
                "`{case}` with CARGO_INCREMENTAL={incremental}: expected one error, got {case_errors:#?}"
            );
            assert!(
                case_errors[0].contains(message),
                "`{case}` with CARGO_INCREMENTAL={incremental}: {}",
                case_errors[0]
            );
        }
    }
}

/// Builds every bin of the fixture with `CARGO_INCREMENTAL=<incremental>`, each mode in a
/// target directory of its own (so that neither rebuilds the other's dependencies), and
/// returns each error as (bin, message).
fn build(fixture: &Path, incremental: &str) -> Vec<(String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--bins",
            "--keep-going",
            "--offline",
            "--message-format=json",
        ])
        .current_dir(fixture)
        .env("CARGO_INCREMENTAL", incremental)
        .env(
            "CARGO_TARGET_DIR",
            fixture.join(format!("target-incremental-{incremental}")),
        )
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let err_reader = std::thread::spawn(move || std::io::read_to_string(stderr));
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        if child.try_wait().expect("wait for cargo").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the fixture build took longer than {BUILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stdout = reader.join().expect("reader").expect("cargo's output");
    let stderr = err_reader.join().expect("reader").unwrap_or_default();
    let errors: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-message")
        .filter(|message| message["message"]["level"] == "error")
        .map(|message| {
            (
                message["target"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                message["message"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert!(
        !errors.is_empty(),
        "the fixture reported no errors; cargo said:\n{stderr}"
    );
    errors
}
