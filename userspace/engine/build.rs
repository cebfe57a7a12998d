//! Builds the XDP program (`ebpf/`) for `bpfel-unknown-none` with the nightly toolchain
//! and bpf-linker, so the engine can embed it (`include_bytes_aligned!`).
//!
//! `XRUDP_BUILD_EBPF` chooses (aya-template's `AYA_BUILD_EBPF`, with an automatic middle):
//! - `1`: build the XDP program; fail if the toolchain is missing.
//! - `0`: embed an empty stub object; the loader refuses to attach with it
//!   (`loader::LoadError::NoXdpProgram`), everything host-only builds and tests.
//! - unset: build it when bpf-linker is on PATH, otherwise embed the stub and say so
//!   with a `cargo:warning`.

use std::process::Command;

use anyhow::{Context as _, bail};

/// The environment switch; documented at the top of this file.
const SWITCH: &str = "XRUDP_BUILD_EBPF";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../../common/src");
    println!("cargo:rerun-if-changed=../../ebpf/src");
    println!("cargo:rerun-if-env-changed={SWITCH}");
    // Under `cargo miri test` only the pure-Rust ring and frame-pool logic runs (no
    // kernel, no XDP program), and aya-build cannot drive cargo through miri's rustc
    // wrapper: embed the stub. Loading it would fail; miri never does.
    if std::env::var_os("CARGO_CFG_MIRI").is_some() {
        return write_stub();
    }
    match std::env::var(SWITCH).as_deref() {
        Ok("0") => return write_stub(),
        Ok("1") => {}
        Ok(other) => bail!("{SWITCH}={other:?}: set it to 1 (build the XDP program) or 0 (stub)"),
        Err(_) => {
            if which_bpf_linker().is_err() {
                // Installing bpf-linker changes PATH's contents, not this script's inputs:
                // re-run when PATH changes, so a fresh shell after setup picks it up.
                println!("cargo:rerun-if-env-changed=PATH");
                println!(
                    "cargo:warning=bpf-linker is not on PATH: embedding a stub XDP object; \
                     `xrudp attach` will refuse to run. Run scripts/setup.sh (or set \
                     {SWITCH}=1 to make this an error, {SWITCH}=0 to silence it)"
                );
                return write_stub();
            }
        }
    }
    check_llvm_majors()?;
    let package = aya_build::Package {
        name: "xrudp-ebpf",
        root_dir: "../../ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building the XDP program (ebpf/) failed; run scripts/setup.sh to install the toolchain",
    )
}

/// bpf-linker must link the same LLVM major as nightly rustc, or the object it writes is
/// unreadable or subtly wrong. Say so plainly instead of failing deep inside the link.
fn check_llvm_majors() -> anyhow::Result<()> {
    let rustc = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version", "--verbose"])
        .output()
        .context("running `rustup run nightly rustc -vV` (is the nightly toolchain installed?)")?;
    let rustc = String::from_utf8_lossy(&rustc.stdout);
    let Some(rustc_llvm) = rustc
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .map(str::to_owned)
    else {
        bail!("cannot read the LLVM version of the nightly toolchain; run scripts/setup.sh");
    };
    let linker = which_bpf_linker()?;
    let ldd = Command::new("ldd")
        .arg(&linker)
        .output()
        .context("running ldd on bpf-linker")?;
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let linker_llvm = ldd.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("libLLVM")?;
        let digits: String = rest
            .trim_start_matches(['.', '-'])
            .trim_start_matches("so.")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!digits.is_empty()).then_some(digits)
    });
    match linker_llvm {
        Some(v) if v == rustc_llvm => Ok(()),
        Some(v) => bail!(
            "bpf-linker ({}) links LLVM {v} but nightly rustc uses LLVM {rustc_llvm}; \
             reinstall it with scripts/setup.sh",
            linker.display()
        ),
        // Statically linked LLVM: nothing to compare, trust the install recipe.
        None => Ok(()),
    }
}

fn which_bpf_linker() -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
        .context("bpf-linker is not on PATH; run scripts/setup.sh")
}

/// Writes the empty stub object where the real one would go. The loader recognises it by
/// its length (`loader::Program::load`) and refuses with a message saying how to rebuild.
fn write_stub() -> anyhow::Result<()> {
    let out = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    let object = std::path::Path::new(&out).join("xrudp");
    std::fs::write(&object, []).with_context(|| format!("writing {}", object.display()))
}
