//! Lays out the release binary's code so that a run touches few pages of it.
//!
//! Every container start runs miglock once, and nearly always for a no-op.
//! Such a run executes about 700 of the binary's 5,000 functions, which
//! lie scattered over its 4.8 MB of code; each page fault maps up to 64 kB
//! around it, so a no-op mapped 3 MB of the binary. `build/symbol-order.txt`
//! lists the functions a no-op, a `status` and a small `apply` execute, in
//! that order, and the linker puts them first, side by side: the no-op maps
//! about 0.9 MB of code (see BENCHMARKS.md).
//!
//! The list holds the symbols of the x86_64 gnu builds made with the Rust
//! version it names (`cargo build --release`, and the static one the release
//! workflow makes). Symbol names carry hashes of the toolchain and of the
//! build's options, so another toolchain's names are not found: the linker
//! skips them and lays the binary out as it would without the list.
//! `python3 bench/symbol_order.py` writes the list again.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let list = Path::new("build/symbol-order.txt");
    // Only where the linker is known to take the list: rustc links the
    // x86_64 gnu target with its own lld, and a release build is the one
    // that is shipped and measured. Debug builds and tests link as before.
    let target = env::var("TARGET").unwrap_or_default();
    let profile = env::var("PROFILE").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || profile != "release" || !list.exists() {
        return;
    }
    println!("cargo::rerun-if-changed={}", list.display());
    // An opt-out for a build whose linker is not lld (a `-C linker` of
    // GNU ld's own, which does not know the option).
    println!("cargo::rerun-if-env-changed=MIGLOCK_NO_SYMBOL_ORDER");
    if env::var_os("MIGLOCK_NO_SYMBOL_ORDER").is_some() {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let list = Path::new(&dir).join(list);
    println!(
        "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    // Names of another toolchain's build are expected not to be found.
    println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    // bench/symbol_order.py reads the functions' addresses from the
    // linker's map: the shipped binary has no symbols, and keeping them
    // would change the profile, and with it every symbol's name.
    println!("cargo::rerun-if-env-changed=MIGLOCK_LINK_MAP");
    if let Some(map) = env::var_os("MIGLOCK_LINK_MAP") {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,-Map={}",
            Path::new(&map).display()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,--no-demangle");
    }
}
