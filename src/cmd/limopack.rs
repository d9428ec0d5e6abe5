//! `limopack`: the original limopack's flags, mapped onto declarations. It parses arguments
//! and calls the library; the work is in `limopack::admin::compat` and `limopack::admin::freeze`.

use std::process::ExitCode;

use clap::Parser;
use limopack::shown::escaped;
use limopack::admin::{compat, freeze};
use limopack::read::loaded;
use limopack::root::Root;

use crate::cli::limopack::Cli;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("limopack: error: {}", escaped(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: &Cli) -> anyhow::Result<()> {
    let root = Root::new(&cli.root)?;
    let change = if cli.list || cli.tree {
        let what = if cli.list { "--list" } else { "--tree" };
        let target = freeze::target(&root, cli.kernel.as_ref(), cli.from_host, what)?;
        let loaded = loaded::read_proc()?;
        let (paths, unknown) = compat::list(&target.index, &loaded);
        let warnings = unknown.iter().map(|name| format!("{name} is loaded but not in {}/modules.dep", target.shown.display())).collect();
        let lines = match cli.list {
            true => paths,
            false => compat::tree(&target.index, &loaded),
        };
        compat::Change { lines, warnings }
    } else if cli.install && cli.modules.is_empty() {
        let opts = freeze::Options { root: cli.root.clone(), kernel: cli.kernel.clone(), from_host: cli.from_host, dry_run: false };
        let outcome = freeze::freeze(&opts, &freeze::Paths::host(), std::time::SystemTime::now())?;
        let mut lines = outcome.lines;
        lines.push("limopack: this was `limopack-hook freeze`".into());
        compat::Change { lines, warnings: outcome.notes }
    } else if cli.install {
        compat::install(&root, &cli.modules, cli.r#static)?
    } else if cli.remove {
        compat::remove(&root, &cli.modules)?
    } else {
        compat::apply(&cli.root, cli.kernel.clone(), cli.pkname.clone())?
    };
    for warning in &change.warnings {
        eprintln!("limopack: warning: {}", escaped(warning));
    }
    for line in &change.lines {
        println!("{}", escaped(line));
    }
    Ok(())
}
