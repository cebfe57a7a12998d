//! Writes the man pages and shell completions of `xrudp`, generated from its clap
//! definitions, so that what the package installs can never drift from `--help`.
//!
//! ```text
//! cargo run -p xrudp --example gen-docs -- OUT_DIR
//! ```
//! Writes `OUT_DIR/man/xrudp.1` and one page per subcommand (`xrudp-attach.1`, …), and
//! `OUT_DIR/completions/{xrudp.bash,_xrudp,xrudp.fish}`. scripts/package.sh runs it before
//! building the Debian package.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: gen-docs OUT_DIR");
    };
    let out = PathBuf::from(out);
    let mut cmd = xrudp::cli::Cli::command();
    cmd.build();
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    write_pages(&cmd, &man)?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "xrudp", &completions)
            .with_context(|| format!("writing the {shell} completions"))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// One page for `cmd`, named by its display name (`xrudp`, `xrudp-attach`,
/// `xrudp-token-issue`: clap sets them when the command is built), then one for each of
/// its visible subcommands.
fn write_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .with_context(|| format!("rendering {name}.1"))?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() != "help" {
            write_pages(sub, dir)?;
        }
    }
    Ok(())
}
