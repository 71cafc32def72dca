#!/bin/sh
# Build pcscf's .deb: the release binary, the man pages rendered from its clap command line
# (the hidden `pcscf manpage DIR`, gzipped into target/release/man/, where the Cargo.toml's
# [package.metadata.deb] assets take them), then cargo-deb on what was built. Needs cargo-deb
# (`cargo install cargo-deb`). Arguments go to `cargo deb` (e.g. --output DIR).
set -eu
cd "$(dirname "$0")/.."

# the target directory cargo uses (CARGO_TARGET_DIR, .cargo/config.toml or ./target)
target=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || { echo "build-deb.sh: no target directory from cargo metadata" >&2; exit 1; }

cargo build --release --locked --bin pcscf

man="$target/release/man"
rm -rf "$man"
"$target/release/pcscf" manpage "$man"
gzip -9n "$man"/*.1

cargo deb --no-build "$@"
