//! Lays out the release binary's code so that a run touches few pages of it.
//!
//! Every container start runs miglock once, and nearly always for a no-op.
//! Such a run executes about 650 of the binary's 5,100 functions, which
//! lie scattered over its 4.8 MB of code; each page fault maps up to 64 kB
//! around it, so a no-op mapped 3.2 MB of the binary. `build/symbol-order.txt`
//! lists the functions a no-op (in each layout), a `status` and a small
//! `apply` execute, grouped by run in that order, and the linker puts them
//! first, side by side: the no-op maps 1.0 MB of code (see BENCHMARKS.md).
//!
//! Symbol names carry hashes of the toolchain and of the build's options
//! (the package's version among them), so the list holds only for the
//! x86_64 gnu release builds (`cargo build --release`, and the static one of
//! the release workflow) made by the rustc it names. Any other build links
//! exactly as it would without the list. `python3 bench/symbol_order.py`
//! writes the list again.

use std::env;
use std::path::Path;
use std::process::Command;

const LIST: &str = "build/symbol-order.txt";
/// The list's line naming the rustc it was written for.
const RUSTC_LINE: &str = "# rustc: ";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let target = env::var("TARGET").unwrap_or_default();
    let profile = env::var("PROFILE").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || profile != "release" {
        return;
    }
    // bench/symbol_order.py reads the functions' addresses from the
    // linker's map: the shipped binary has no symbols, and keeping them
    // would change the profile, and with it every symbol's name.
    println!("cargo::rerun-if-env-changed=MIGLOCK_LINK_MAP");
    if let Some(map) = env::var_os("MIGLOCK_LINK_MAP") {
        linker_arg(&format!("-Map={}", Path::new(&map).display()));
        linker_arg("--no-demangle");
    }
    println!("cargo::rerun-if-changed={LIST}");
    println!("cargo::rerun-if-env-changed=MIGLOCK_NO_SYMBOL_ORDER");
    if env::var_os("MIGLOCK_NO_SYMBOL_ORDER").is_some() {
        return;
    }
    let Ok(list) = std::fs::read_to_string(LIST) else {
        return;
    };
    if let Err(why) = linker_takes_the_list(&list) {
        // Said only with `cargo build -vv`: such a build is the same as
        // one without the list, only laid out as the linker chooses.
        println!("symbol order not used: {why}");
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let list = Path::new(&dir).join(LIST);
    linker_arg(&format!("--symbol-ordering-file={}", list.display()));
    // A function the list names may be gone since it was written (or
    // inlined): it is not an error, only a line the linker skips.
    linker_arg("--no-warn-symbol-ordering");
}

/// One argument for the linker itself, whole: `-Wl,` would split a path
/// at its commas.
fn linker_arg(arg: &str) {
    println!("cargo::rustc-link-arg-bins=-Xlinker");
    println!("cargo::rustc-link-arg-bins={arg}");
}

/// Whether this build links with rustc's own lld (the only linker here
/// that knows `--symbol-ordering-file`) and by the rustc the list was
/// written for (another's symbol names differ: the list would only move
/// `main` and the C library's functions about).
fn linker_takes_the_list(list: &str) -> Result<(), String> {
    if env::var_os("RUSTC_LINKER").is_some() {
        return Err("a linker is configured for the target".into());
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["linker", "link-self-contained", "fuse-ld"]
        .iter()
        .any(|word| flags.contains(word))
    {
        return Err("RUSTFLAGS choose the linker".into());
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let ask = |arg: &str| -> Result<String, String> {
        let out = Command::new(&rustc)
            .arg(arg)
            .output()
            .map_err(|e| format!("{rustc} {arg}: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let version = ask("--version")?;
    let written_for = list
        .lines()
        .find_map(|line| line.strip_prefix(RUSTC_LINE))
        .unwrap_or_default()
        .trim();
    if version != written_for {
        return Err(format!(
            "the list is for {written_for:?}, this is {version:?}"
        ));
    }
    let sysroot = ask("--print=sysroot")?;
    let lld = Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld");
    if !lld.exists() {
        return Err(format!("{} is missing", lld.display()));
    }
    Ok(())
}
