//! Builds the XDP program (`ebpf/`) for `bpfel-unknown-none` with the nightly toolchain
//! and bpf-linker, so the engine can embed it (`include_bytes_aligned!`).

use std::process::Command;

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../../common/src");
    println!("cargo:rerun-if-changed=../../ebpf/src");
    // Under `cargo miri test` only the pure-Rust ring and frame-pool logic runs (no
    // kernel, no XDP program), and aya-build cannot drive cargo through miri's rustc
    // wrapper: embed an empty object instead. Loading it would fail; miri never does.
    if std::env::var_os("CARGO_CFG_MIRI").is_some() {
        let out = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
        let object = std::path::Path::new(&out).join("xrudp");
        std::fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
        return Ok(());
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
