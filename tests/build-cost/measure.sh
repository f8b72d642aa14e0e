#!/usr/bin/env bash
# What `#[idempotent]` costs at build time: builds a crate of N annotated async functions and
# the same crate with the attribute removed, in debug and release, several times each, and
# prints the median build time and binary size of both and the difference per function.
#
#   tests/build-cost/measure.sh            # N = 50, 3 runs per build
#   FUNCTIONS=20 RUNS=5 tests/build-cost/measure.sh
#
# Each run cleans only the generated crate (`cargo clean -p`), so dependencies are built once
# and the time measured is the generated crate's own compile and link.
set -euo pipefail

functions="${FUNCTIONS:-50}"
runs="${RUNS:-3}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/idempotent-build-cost.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="$work/target"

# One crate: `annotated` decides whether each function carries the attribute.
generate() { # name, annotated (1 or 0)
    local name="$1" annotated="$2" dir="$work/$1"
    mkdir -p "$dir/src"
    cat >"$dir/Cargo.toml" <<EOF
[package]
name = "$name"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
idempotent-core = { path = "$root/idempotent-core" }
serde = { version = "1", features = ["derive"] }
tokio = { version = "1", features = ["rt", "macros"] }

[workspace]
EOF
    {
        echo 'use idempotent_core::Error;'
        echo '#[derive(serde::Serialize, serde::Deserialize)]'
        echo 'pub struct Receipt { pub id: u64, pub note: String }'
        for i in $(seq 1 "$functions"); do
            if [[ "$annotated" == 1 ]]; then
                echo "#[idempotent_core::idempotent(key = \"order_id\", scope = \"f$i\")]"
            fi
            echo "pub async fn f$i(order_id: u64, amount: u64) -> Result<Receipt, Error> {"
            echo "    Ok(Receipt { id: order_id + $i, note: format!(\"{amount}\") })"
            echo '}'
        done
        echo '#[tokio::main(flavor = "current_thread")]'
        echo 'async fn main() -> Result<(), Error> {'
        echo '    let mut total = 0;'
        for i in $(seq 1 "$functions"); do
            echo "    total += f$i($i, 1).await?.id;"
        done
        echo '    println!("{total}");'
        echo '    Ok(())'
        echo '}'
    } >"$dir/src/main.rs"
}

generate annotated 1
generate plain 0

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

measure() { # crate, profile flag ("" or --release) -> "seconds bytes"
    local name="$1" profile="$2" dir="$work/$1" times=() bin
    (cd "$dir" && cargo build -q $profile >/dev/null 2>&1) # dependencies, once
    for _ in $(seq 1 "$runs"); do
        (cd "$dir" && cargo clean -q -p "$name" $profile >/dev/null 2>&1)
        local start end
        start=$(date +%s.%N)
        (cd "$dir" && cargo build -q $profile)
        end=$(date +%s.%N)
        times+=("$(echo "$end - $start" | bc)")
    done
    bin="$CARGO_TARGET_DIR/$([[ -n "$profile" ]] && echo release || echo debug)/$name"
    echo "$(printf '%s\n' "${times[@]}" | median) $(stat -c %s "$bin")"
}

printf '%-8s %-10s %10s %12s\n' profile crate "build (s)" "binary (B)"
for profile in "" --release; do
    label="${profile:+release}"
    label="${label:-debug}"
    read -r annotated_s annotated_b < <(measure annotated "$profile")
    read -r plain_s plain_b < <(measure plain "$profile")
    printf '%-8s %-10s %10.2f %12d\n' "$label" annotated "$annotated_s" "$annotated_b"
    printf '%-8s %-10s %10.2f %12d\n' "$label" plain "$plain_s" "$plain_b"
    printf '%-8s per annotated function: %.3f s, %d bytes\n' "$label" \
        "$(echo "($annotated_s - $plain_s) / $functions" | bc -l)" \
        "$(( (annotated_b - plain_b) / functions ))"
done
