//! `limopack-hook`: the command apt, dpkg and admins run. It parses arguments and calls the
//! library; the work is in `limopack::run`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use limopack::shown::escaped;
use limopack::{report, run};

use crate::cli::hook::{Cli, Command, Hook};

pub fn main() -> ExitCode {
    pad_heaps();
    let cli = Cli::parse();
    if let Some(option) = ignored_option(&cli) {
        let command = cli.command.as_ref().map(name_of).unwrap_or_default();
        <Cli as clap::CommandFactory>::command()
            .error(clap::error::ErrorKind::ArgumentConflict, format!("{option} means nothing to `{command}`; leave it out"))
            .exit();
    }
    let mut out = Vec::new();
    let result = execute(&cli, &mut out);
    // Written at once, and a closed pipe (`| head`) is not an error worth a panic.
    let text: String = out.iter().map(|line| format!("{line}\n")).collect();
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("limopack: error: {}", escaped(&format!("{e:#}")));
            match cli.called_by {
                None => ExitCode::FAILURE,
                Some(_) => {
                    eprintln!("limopack: the run stopped there and deleted nothing after it; fix it and run `limopack-hook`");
                    ExitCode::SUCCESS
                }
            }
        }
    }
}

/// The name of a command, as typed.
fn name_of(command: &Command) -> &'static str {
    match command {
        Command::Explain { .. } => "explain",
        Command::Status => "status",
        Command::Check { .. } => "check",
        Command::Freeze { .. } => "freeze",
        Command::Forget { .. } => "forget",
        Command::ImportActive { .. } => "import-active",
        Command::Restore { .. } => "restore",
        Command::Udev => "udev",
    }
}

/// An option given that the command would ignore: a usage error, as a silent option would
/// let a user believe it did something.
fn ignored_option(cli: &Cli) -> Option<&'static str> {
    let Some(command) = &cli.command else { return None };
    // What each command reads of the global options, besides --root.
    let (kernel, json, dry_run, verbose, wait) = match command {
        Command::Explain { .. } => (true, true, false, false, false),
        Command::Status => (true, true, false, true, false),
        Command::Check { .. } => (true, false, false, true, false),
        Command::Freeze { .. } => (true, false, true, false, false),
        Command::Forget { .. } => (true, false, true, false, true),
        Command::ImportActive { .. } => (false, false, true, false, false),
        Command::Restore { .. } => (true, false, true, false, true),
        Command::Udev => (false, false, false, false, false),
    };
    [
        (cli.kernel.is_some() && !kernel, "--kernel"),
        (cli.json && !json, "--json"),
        (cli.dry_run && !dry_run, "--dry-run"),
        (cli.verbose && !verbose, "--verbose"),
        (cli.quiet, "--quiet"),
        (cli.wait != crate::DEFAULT_WAIT && !wait, "--wait"),
        (cli.called_by.is_some(), "--called-by"),
    ]
    .into_iter()
    .find_map(|(given, option)| given.then_some(option))
}

/// glibc makes a thread's heap writable a few pages at a time, one `mprotect` each time it
/// grows, and each of those stops the other threads' page faults; a dry run's readers grew
/// theirs two hundred times. With a 16 MiB pad each heap is made writable once, and memory
/// is still only taken as it is touched.
fn pad_heaps() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tuning value; it is called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

fn execute(cli: &Cli, out: &mut Vec<String>) -> anyhow::Result<()> {
    let dry_run = cli.dry_run || cli.command.is_some();
    let opts = run::Options {
        root: cli.root.clone(),
        kernel: cli.kernel.clone(),
        dry_run,
        initramfs: cli.called_by != Some(Hook::Kernel),
        // JSON and -v readers want the plan itself, not the last run's summary.
        reuse: !cli.json && !cli.verbose,
        package: None,
        lock_wait: std::time::Duration::from_secs(cli.wait),
    };
    match &cli.command {
        None => {
            let outcome = match run::sync(&opts, |holder| eprintln!("{}", report::waiting(holder)))? {
                run::Synced::Ran(outcome) => outcome,
                run::Synced::Unchanged(saved) => {
                    for w in &saved.warnings {
                        warn(w);
                    }
                    if !cli.quiet && cli.called_by.is_none() {
                        for line in &saved.summaries {
                            say(out, line);
                        }
                    }
                    return Ok(());
                }
                run::Synced::NoTrees => {
                    if !cli.quiet && cli.called_by.is_none() {
                        say(out, report::NO_TREES);
                    }
                    return Ok(());
                }
            };
            // What a run read is large (a module index, every file of the trees) and the
            // process ends here: the kernel takes it back faster than freeing it would.
            let outcome = std::mem::ManuallyDrop::new(outcome);
            if cli.json {
                report::warnings(&outcome.plan, &outcome.gathered.state, &outcome.done).iter().for_each(|w| warn(w));
                out.push(limopack::shown::json(&report::sync_json(&outcome.plan, &outcome.done, &outcome.firmware, dry_run)));
                return stop_if_broken(&outcome.gathered);
            }
            let telling = report::Telling { dry_run, quiet: cli.quiet, verbose: cli.verbose, called: cli.called_by.is_some() };
            let printed = report::run(&outcome.plan, &outcome.done, &outcome.firmware, &outcome.gathered.state, &telling);
            printed.lines.iter().for_each(|line| say(out, line));
            printed.warnings.iter().for_each(|w| warn(w));
            if dry_run && !cli.quiet {
                let unbound = limopack::read::hotplug::unbound(&outcome.gathered.root, &outcome.gathered.state);
                report::hotplug::lines(unbound.as_deref().unwrap_or_default()).iter().for_each(|line| say(out, line));
            }
            stop_if_broken(&outcome.gathered)?;
        }
        Some(Command::Explain { module }) => {
            let gathered = std::mem::ManuallyDrop::new(run::gather(&opts)?);
            let plan = gathered.plan()?;
            let explained = report::explain(&gathered, &plan, module);
            print_either(out, cli.json, explained.lines, &explained.json);
            stop_if_broken(&gathered)?;
            if !explained.known {
                anyhow::bail!("`{module}` is no module, alias or built-in of any kernel here");
            }
        }
        Some(Command::Check { files }) => {
            let against = cli.kernel.is_some() || cli.root != std::path::Path::new("/");
            let kernels = match against {
                true => limopack::admin::check::kernels(&cli.root, cli.kernel.as_ref())?,
                false => Vec::new(),
            };
            let root = limopack::root::Root::new(&cli.root)?;
            let problems = limopack::admin::check::check(&root, files, &kernels);
            for problem in &problems {
                say(out, problem.to_string());
            }
            if !problems.is_empty() {
                anyhow::bail!("{} problem(s) in {} file(s)", problems.len(), files.len());
            }
            if cli.verbose {
                let against: Vec<&str> = kernels.iter().map(|k| k.version.as_str()).collect();
                for file in files {
                    say(out, format!("{}: ok{}", file.display(), match against.is_empty() {
                        true => String::new(),
                        false => format!(", every entry resolves in {}", against.join(", ")),
                    }));
                }
            }
        }
        Some(Command::ImportActive { file }) => {
            let root = limopack::root::Root::new(&cli.root)?;
            let yaml = limopack::admin::active::import(&root, file, cli.dry_run)?;
            match cli.dry_run {
                true => yaml.lines().for_each(|line| say(out, line)),
                false => {
                    say(out, format!("limopack: wrote {}", limopack::admin::active::IMPORTED));
                }
            }
        }
        Some(Command::Freeze { from_host }) => {
            let freeze = limopack::admin::freeze::Options { root: cli.root.clone(), kernel: cli.kernel.clone(), from_host: *from_host, dry_run: cli.dry_run };
            let outcome = limopack::admin::freeze::freeze(&freeze, &limopack::admin::freeze::Paths::host(), std::time::SystemTime::now())?;
            outcome.notes.iter().for_each(|note| warn(note));
            for line in &outcome.lines {
                say(out, line);
            }
            if cli.dry_run {
                outcome.yaml.lines().for_each(|line| say(out, line));
            }
        }
        Some(Command::Forget { names }) => {
            let opts = run::Options { dry_run: cli.dry_run, ..opts };
            for line in limopack::admin::forget::forget(&opts, names)?.lines {
                say(out, line);
            }
        }
        Some(Command::Restore { module, modalias, device, trigger }) => {
            use limopack::admin::restore::{Request, Wanted};
            let wanted = match (module, modalias) {
                (Some(module), _) => Wanted::Module(module.clone()),
                (None, modalias) => Wanted::Modalias(modalias.clone().unwrap_or_default()),
            };
            let request = Request { wanted, device: device.clone(), trigger: *trigger };
            let opts = run::Options { dry_run: cli.dry_run, ..opts };
            limopack::admin::restore::restore(&opts, &request, std::time::SystemTime::now())?.lines.iter().for_each(|line| say(out, line));
        }
        Some(Command::Udev) => uevent(),
        Some(Command::Status) => {
            let gathered = std::mem::ManuallyDrop::new(run::gather(&opts)?);
            let plan = gathered.plan()?;
            for w in report::warnings(&plan, &gathered.state, &[]) {
                warn(&w);
            }
            let (mut text, mut value) = report::status(&plan, &gathered.state, cli.verbose);
            report::hotplug::add(&mut text, &mut value, limopack::read::hotplug::unbound(&gathered.root, &gathered.state).as_deref());
            match plan.kernels.is_empty() && gathered.state.firmware.is_empty() && !cli.json {
                true => say(out, report::NO_TREES),
                false => print_either(out, cli.json, text, &value),
            }
            stop_if_broken(&gathered)?;
        }
    }
    Ok(())
}

/// The udev rule's lookup: MODALIAS and DEVPATH from the environment udev gives, each line
/// to the journal. It never fails udev: what goes wrong is logged too.
fn uevent() {
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
    let (modalias, devpath) = (var("MODALIAS"), var("DEVPATH"));
    if modalias.is_empty() {
        return;
    }
    let lines = limopack::root::Root::new(std::path::Path::new("/")).and_then(|root| limopack::admin::restore::uevent(&root, &modalias, &devpath));
    match lines {
        Ok(lines) => lines.iter().for_each(|line| limopack::apply::hotplug::log(line)),
        Err(e) => limopack::apply::hotplug::log(&format!("hotplug lookup for {devpath}: {e}")),
    }
}

fn print_either(out: &mut Vec<String>, json: bool, text: Vec<String>, value: &serde_json::Value) {
    match json {
        true => out.push(limopack::shown::json(value)),
        false => out.extend(text),
    }
}

/// Say each declaration that could not be read, after what the command printed, and end with
/// an error: the run did what it could (nothing pruned, restores done) and the files need
/// fixing.
fn stop_if_broken(gathered: &limopack::read::gathered::Gathered) -> anyhow::Result<()> {
    let mut lines = report::errors(gathered);
    let Some(last) = lines.pop() else { return Ok(()) };
    for line in lines {
        eprintln!("limopack: error: {}", escaped(&line));
    }
    anyhow::bail!(last)
}

/// One line of output, escaped: names in it come from disk.
fn say(out: &mut Vec<String>, line: impl AsRef<str>) {
    out.push(escaped(line.as_ref()).into_owned());
}

/// A warning, on standard error, escaped as every line printed is.
fn warn(warning: &str) {
    eprintln!("limopack: warning: {}", escaped(warning));
}
