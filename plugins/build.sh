#!/usr/bin/env bash
# Builds every provider crate under plugins/ (each directory with a Cargo.toml;
# the built-ins bitbucket-cloud and bitbucket-dc must be there) into
# plugins/dist/<dir-name>.wasm, a WebAssembly component of the
# `provider-plugin` world of the newest wit/v<major.minor>/provider.wit; and
# every test-fixture provider crate tests/fixtures/*-provider/ into
# tests/fixtures/dist/<dir-name>.wasm.
#
# The build is reproducible: the same toolchain gives byte-identical components
# whatever directory the checkout lives in (paths are remapped; the lock files
# are used with --locked).
#
#   plugins/build.sh            build and write plugins/dist/*.wasm and
#                               tests/fixtures/dist/*.wasm
#   plugins/build.sh --check    build into a temporary directory and exit 1 if
#                               any committed component differs
#
# Toolchain: if rustup's default toolchain has the wasm32-unknown-unknown
# target, it is used as is. Otherwise Debian's rustc-web/cargo-web/rust-web-src
# (rustc 1.96, /usr/bin) build std from source (-Zbuild-std), linked with
# rustup's rust-lld. Components are only comparable when built by the same one.
#
# A crate is checked against the newest world (the wit/v* directory of the
# highest version) unless its Cargo.toml names another WIT directory (relative
# to the crate) in `[package.metadata.reposafe] wit-dir = "..."` (test fixtures
# built for an older released world, or for a version the host does not
# implement, do).
#
# Every run also checks that no released world changed (wit/released.sha256)
# and that plugins/README.md shows tests/fixtures/example-provider/src/lib.rs
# as it is (that crate is built like the other fixtures).
set -euo pipefail

# Pinned: a different wasm-tools may encode the component differently.
WASM_TOOLS_VERSION="1.263.0"

die() {
    printf 'plugins/build.sh: error: %s\n' "$*" >&2
    exit 2
}
note() { printf 'plugins/build.sh: %s\n' "$*" >&2; }

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    -h | --help)
        sed -n '2,32s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *) die "unknown argument '$1' (use --check or nothing)" ;;
esac

plugins_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
checkout_dir=$(dirname "$plugins_dir")

# --- WIT worlds ---------------------------------------------------------------------
# One directory per released world version, wit/v<major.minor>/provider.wit. A
# released one is never changed: its hash is in wit/released.sha256.
newest_wit=$(cd "$checkout_dir/wit" && ls -d v*/ 2>/dev/null | sed 's:/$::' | sort -V | tail -n1)
[ -n "$newest_wit" ] && [ -f "$checkout_dir/wit/$newest_wit/provider.wit" ] ||
    die "no world version found: expected $checkout_dir/wit/v<major.minor>/provider.wit"
default_wit_dir="$checkout_dir/wit/$newest_wit"
(cd "$checkout_dir/wit" && sha256sum --quiet --check released.sha256) ||
    die "a released world in wit/ was changed (wit/released.sha256); a released version is never changed: put new exports into a new wit/v<major.minor>/ directory"

# --- The README's example -------------------------------------------------------------
# plugins/README.md shows the whole of tests/fixtures/example-provider/src/lib.rs
# in the fenced block after the line naming it; the file is built below.
example_rel=tests/fixtures/example-provider/src/lib.rs
readme_example=$(awk -v marker="<!-- $example_rel -->" '
    $0 == marker { found = 1; next }
    found == 1 && /^```/ { found = 2; next }
    found == 2 && /^```/ { exit }
    found == 2 { print }
' "$plugins_dir/README.md")
[ "$readme_example" = "$(cat "$checkout_dir/$example_rel")" ] ||
    die "plugins/README.md's example differs from $example_rel (the fenced block after the line <!-- $example_rel --> must be the file as it is)"

# --- wasm-tools -------------------------------------------------------------
# Only the subcommands used below (component new/targets/wit, validate) are
# needed: the `component` and `validate` features. That install takes about
# 3.5 min on 2 idle cores (6 CPU-min; all default features: 11 CPU-min) and
# encodes byte-identical components.
wasm_tools_hint="install it with: cargo install wasm-tools --version $WASM_TOOLS_VERSION --locked --no-default-features --features component,validate"
wasm_tools=$(command -v wasm-tools || true)
if [ -z "$wasm_tools" ] && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/wasm-tools" ]; then
    wasm_tools="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-tools"
fi
[ -n "$wasm_tools" ] || die "wasm-tools not found; $wasm_tools_hint"
have_version=$("$wasm_tools" --version | awk '{print $2}')
[ "$have_version" = "$WASM_TOOLS_VERSION" ] ||
    die "wasm-tools $have_version found at $wasm_tools, but $WASM_TOOLS_VERSION is pinned; $wasm_tools_hint"

# --- Rust toolchain -----------------------------------------------------------
debian_hint="install Debian's packages: apt-get install rustc-web cargo-web rust-web-src"
cargo_cmd=()
extra_args=()
if command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    toolchain="rustup default toolchain ($(rustc --version))"
    cargo_cmd=(cargo)
    rustc_bin=$(command -v rustc)
else
    rustc_bin=/usr/bin/rustc
    [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] ||
        die "no wasm32-unknown-unknown Rust toolchain: /usr/bin/rustc or /usr/bin/cargo is missing; $debian_hint"
    deb_sysroot=$(/usr/bin/rustc --print sysroot)
    [ -f "$deb_sysroot/lib/rustlib/src/rust/library/Cargo.lock" ] ||
        die "the Rust standard library source is missing under $deb_sysroot/lib/rustlib/src/rust; $debian_hint"
    # The linker: rustup's rust-lld (Debian's rustc-web does not ship one).
    linker="${REPOSAFE_WASM_LINKER:-}"
    if [ -z "$linker" ] && command -v rustc >/dev/null 2>&1; then
        rup_sysroot=$(rustc --print sysroot 2>/dev/null || true)
        rup_host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')
        [ -x "$rup_sysroot/lib/rustlib/$rup_host/bin/rust-lld" ] &&
            linker="$rup_sysroot/lib/rustlib/$rup_host/bin/rust-lld"
    fi
    [ -n "$linker" ] && [ -x "$linker" ] ||
        die "rust-lld not found (looked in rustup's default toolchain); install rustup's stable toolchain or set REPOSAFE_WASM_LINKER"
    toolchain="Debian $(/usr/bin/rustc --version) with -Zbuild-std, linker $linker"
    export RUSTC_BOOTSTRAP=1
    export RUSTC=/usr/bin/rustc
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker"
    cargo_cmd=(/usr/bin/cargo)
    extra_args=(-Zbuild-std=std,panic_abort)
fi

# --- Build ----------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/reposafe-plugins.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Component sets: "<crate parent dir, relative to the checkout>:<crate glob>".
# Each set's components go to <parent>/dist/<crate dir name>.wasm.
sets=("plugins:*" "tests/fixtures:*-provider")

if [ "$check" = 1 ]; then
    out_root="$tmp/out"
    target_dir="${REPOSAFE_PLUGINS_TARGET_DIR:-$tmp/target}"
else
    out_root="$checkout_dir"
    target_dir="${REPOSAFE_PLUGINS_TARGET_DIR:-$plugins_dir/target}"
fi
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd -P)

cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" 2>/dev/null && pwd -P || echo "${CARGO_HOME:-$HOME/.cargo}")
sysroot=$("$rustc_bin" --print sysroot)

# Nothing from the caller's environment may change the code generated.
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS CARGO_PROFILE_RELEASE_DEBUG \
    CARGO_BUILD_TARGET CARGO_BUILD_TARGET_DIR
export CARGO_INCREMENTAL=0

# Crates, as paths relative to the checkout (e.g. plugins/bitbucket-cloud).
crates=()
for set in "${sets[@]}"; do
    parent=${set%%:*}
    pattern=${set#*:}
    for manifest in "$checkout_dir/$parent"/$pattern/Cargo.toml; do
        [ -f "$manifest" ] && crates+=("$parent/$(basename "$(dirname "$manifest")")")
    done
done
printf '%s\n' "${crates[@]}" | grep -q '^plugins/' ||
    die "no plugin crates (plugins/*/Cargo.toml) found"
# The built-in providers the host embeds (src/providers/wasm/mod.rs, BUILTIN) must all be built.
for builtin in bitbucket-cloud bitbucket-dc; do
    printf '%s\n' "${crates[@]}" | grep -qx "plugins/$builtin" ||
        die "the built-in provider crate plugins/$builtin is missing"
done

note "toolchain: $toolchain; wasm-tools $have_version"
for rel in "${crates[@]}"; do
    name=$(basename "$rel")
    crate_dir="$checkout_dir/$rel"
    dist_rel="$(dirname "$rel")/dist"
    [ -f "$crate_dir/Cargo.lock" ] || die "$rel: Cargo.lock is missing (it must be committed)"
    # The WIT the component must conform to, and the interface version it must export.
    wit_dir="$default_wit_dir"
    wit_meta=$(sed -n 's/^wit-dir *= *"\(.*\)"/\1/p' "$crate_dir/Cargo.toml" | head -n1)
    [ -z "$wit_meta" ] || wit_dir=$(cd "$crate_dir/$wit_meta" 2>/dev/null && pwd -P) ||
        die "$rel: wit-dir \"$wit_meta\" of its Cargo.toml is not a directory"
    wit_version=$(sed -n 's/^package reposafe:provider@\([^;]*\);.*/\1/p' "$wit_dir"/*.wit | head -n1)
    [ -n "$wit_version" ] || die "$rel: no 'package reposafe:provider@<version>;' in $wit_dir/*.wit"
    # Remap every absolute path that can end up in the binary (panic
    # locations): the checkout (which contains the crate), the target
    # directory, the cargo registry sources and the standard library sources.
    # When several prefixes match, rustc uses the last one given. The flags
    # are the same for every crate, so the -Zbuild-std standard library is
    # built once and shared through the target directory.
    flags=(
        "--remap-path-prefix=$checkout_dir=/reposafe"
        "--remap-path-prefix=$target_dir=/reposafe/target"
        "--remap-path-prefix=$cargo_home/registry/src=/cargo/registry/src"
        "--remap-path-prefix=$cargo_home/git/checkouts=/cargo/git/checkouts"
        "--remap-path-prefix=$sysroot/lib/rustlib/src/rust=/rustc/src"
    )
    encoded=$(printf '%s\x1f' "${flags[@]}")
    export CARGO_ENCODED_RUSTFLAGS="${encoded%$'\x1f'}"

    note "building $rel"
    (cd "$crate_dir" && "${cargo_cmd[@]}" build --quiet --locked --release \
        --target wasm32-unknown-unknown --target-dir "$target_dir" "${extra_args[@]}") ||
        die "$rel: cargo build failed"

    lib_name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$crate_dir/Cargo.toml" | head -n1 | tr - _)
    core="$target_dir/wasm32-unknown-unknown/release/$lib_name.wasm"
    [ -f "$core" ] || die "$rel: expected core module $core was not produced"

    "$wasm_tools" component new "$core" -o "$tmp/$name.component.wasm" ||
        die "$rel: wasm-tools component new failed"
    "$wasm_tools" validate --features component-model "$tmp/$name.component.wasm" ||
        die "$rel: the component does not validate"
    # Imports nothing beyond the world's (no WASI) and exports the provider.
    "$wasm_tools" component targets --world provider-plugin "$wit_dir" \
        "$tmp/$name.component.wasm" ||
        die "$rel: the component does not conform to world provider-plugin of $wit_dir"
    wit_text=$("$wasm_tools" component wit "$tmp/$name.component.wasm") ||
        die "$rel: wasm-tools component wit failed"
    grep -q "export reposafe:provider/provider@$wit_version;" <<<"$wit_text" ||
        die "$rel: the component does not export reposafe:provider/provider@$wit_version"
    mkdir -p "$out_root/$dist_rel"
    mv "$tmp/$name.component.wasm" "$out_root/$dist_rel/$name.wasm"
    note "built $dist_rel/$name.wasm: $(wc -c <"$out_root/$dist_rel/$name.wasm") bytes"
done

if [ "$check" = 1 ]; then
    failed=0
    for rel in "${crates[@]}"; do
        name=$(basename "$rel")
        dist_rel="$(dirname "$rel")/dist"
        committed="$checkout_dir/$dist_rel/$name.wasm"
        built="$out_root/$dist_rel/$name.wasm"
        if [ ! -f "$committed" ]; then
            note "MISMATCH: $dist_rel/$name.wasm is missing; run plugins/build.sh and commit it"
            failed=1
        elif ! cmp -s "$committed" "$built"; then
            note "MISMATCH: $dist_rel/$name.wasm differs from a fresh build (sha256 committed $(sha256sum <"$committed" | cut -c1-16), built $(sha256sum <"$built" | cut -c1-16)); run plugins/build.sh and commit it (toolchain: $toolchain)"
            failed=1
        fi
    done
    for set in "${sets[@]}"; do
        parent=${set%%:*}
        for committed in "$checkout_dir/$parent"/dist/*.wasm; do
            [ -f "$committed" ] || continue
            name=$(basename "$committed" .wasm)
            printf '%s\n' "${crates[@]}" | grep -qxF "$parent/$name" || {
                note "MISMATCH: $parent/dist/$name.wasm has no $parent/$name crate"
                failed=1
            }
        done
    done
    [ "$failed" = 0 ] || exit 1
    note "check passed: plugins/dist and tests/fixtures/dist match a fresh build"
fi
