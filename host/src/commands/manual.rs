//! `tensor-wasm completions SHELL` and `tensor-wasm man DIR`: shell
//! completions and man pages, generated from the clap definitions so they
//! never drift from `--help`.

use super::args::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::Path;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) {
    let mut cli = Cli::command();
    clap_complete::generate(shell, &mut cli, "tensor-wasm", &mut std::io::stdout());
}

/// Writes `tensor-wasm.1` and one page per subcommand
/// (`tensor-wasm-serve.1`, `tensor-wasm-key-generate.1`, …) into `dir`.
pub fn man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cli = Cli::command();
    cli.build();
    let mut count = 0;
    write_pages(&cli, "tensor-wasm", dir, &mut count)?;
    println!("wrote {count} man pages to {}", dir.display());
    Ok(())
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, count: &mut usize) -> Result<()> {
    let page = cmd.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    *count += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, count)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_gets_a_page_and_completions_name_them() {
        let dir = std::env::temp_dir().join(format!("tw-man-{}", std::process::id()));
        super::man(&dir).unwrap();
        for page in [
            "tensor-wasm.1",
            "tensor-wasm-serve.1",
            "tensor-wasm-kernel-publish.1",
        ] {
            let text = std::fs::read_to_string(dir.join(page)).unwrap();
            assert!(text.contains(".TH"), "{page}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
