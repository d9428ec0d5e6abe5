//! Man pages and shell completions, made from the clap definitions the binaries parse, so that
//! `--help`, the man page and the completions cannot drift apart.
//!
//! Everything lands in OUT_DIR: `man/NAME.SECTION` and `completions/{bash/NAME, zsh/_NAME,
//! fish/NAME.fish}`, named as Debian installs them. debian/rules learns OUT_DIR from cargo's
//! `build-script-executed` message (right even when the build was cached); the tests read it
//! with `env!("OUT_DIR")`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

// The build script only reads the definitions; the parsed fields are for the binaries, which
// check a kernel version with the library's `Kver`.
type Kver = String;

fn kernel_version(text: &str) -> Result<Kver, String> {
    Ok(text.to_string())
}

// The library's `run::LOCK_WAIT`, which the binary passes; only the man page shows it here.
const DEFAULT_WAIT: u64 = 300;

#[allow(dead_code)]
#[path = "src/cli/hook.rs"]
mod hook;
#[allow(dead_code)]
#[path = "src/cli/limopack.rs"]
mod limopack;

/// Every program with its man section: one line per binary.
fn programs() -> Vec<(clap::Command, &'static str)> {
    vec![(hook::Cli::command(), "8"), (limopack::Cli::command(), "8")]
}

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for dir in ["man", "completions/bash", "completions/zsh", "completions/fish"] {
        std::fs::create_dir_all(out.join(dir))?;
    }
    for (mut cmd, section) in programs() {
        cmd.build();
        let name = cmd.get_name().to_string();
        std::fs::write(out.join(format!("man/{name}.{section}")), manual(&cmd, section)?)?;
        for (shell, file) in [(Shell::Bash, name.clone()), (Shell::Zsh, format!("_{name}")), (Shell::Fish, format!("{name}.fish"))] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut script);
            std::fs::write(out.join("completions").join(shell.to_string()).join(file), script)?;
        }
    }
    Ok(())
}

/// One page for the program and all its commands, the way apt-get(8) and dpkg(1) document
/// theirs: NAME, SYNOPSIS (one line per command), DESCRIPTION (the long about), COMMANDS (each
/// with its own arguments), OPTIONS, then the sections of `after_long_help`.
fn manual(cmd: &clap::Command, section: &str) -> std::io::Result<Vec<u8>> {
    let name = cmd.get_name();
    let man = Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(section)
        .date(date())
        .source(format!("limopack {}", env!("CARGO_PKG_VERSION")))
        .manual(match section {
            "8" => "System Administration",
            _ => "User Commands",
        });
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    let mut roff = Roff::new();
    // Paths and option names are long: no hyphenation, no stretched spaces.
    roff.control("nh", []).control("ad", ["l"]);
    roff.control("SH", ["NAME"]);
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    roff.text([roman(format!("{name} - {}", lowercase_first(&about)))]);
    if cmd.has_subcommands() {
        synopsis(&mut roff, cmd);
        append(&mut page, &roff.render())?;
        append(&mut page, &rendered(|w| man.render_description_section(w))?)?;
        let mut roff = Roff::new();
        commands(&mut roff, cmd);
        append(&mut page, &roff.render())?;
    } else {
        append(&mut page, &roff.render())?;
        append(&mut page, &rendered(|w| man.render_synopsis_section(w))?)?;
        append(&mut page, &rendered(|w| man.render_description_section(w))?)?;
    }
    // clap_mangen keeps the blank line between paragraphs of an option's help; in a .TP body
    // the next paragraph is an .IP.
    let options = rendered(|w| man.render_options_section(w))?;
    let options: Vec<&str> = options.lines().map(|l| if l.is_empty() { ".IP" } else { l }).collect();
    append(&mut page, &(options.join("\n") + "\n"))?;
    if let Some(after) = cmd.get_after_long_help() {
        let mut roff = Roff::new();
        sections(&mut roff, &after.to_string());
        append(&mut page, &roff.render())?;
    }
    Ok(page)
}

fn rendered(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> std::io::Result<String> {
    let mut out = Vec::new();
    render(&mut out)?;
    String::from_utf8(out).map_err(std::io::Error::other)
}

/// Adds a part to the page, without the preamble roff repeats at the start of each.
fn append(page: &mut Vec<u8>, part: &str) -> std::io::Result<()> {
    let preamble = Roff::new().render();
    page.write_all(part.strip_prefix(&preamble).unwrap_or(part).as_bytes())
}

/// The page's date: SOURCE_DATE_EPOCH's, which dpkg-buildpackage sets from the changelog so
/// that the package builds reproducibly, or today's.
fn date() -> String {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
    // Days to a civil date, after Howard Hinnant's `civil_from_days`.
    let z = seconds.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// `name [OPTIONS]`, then `name [OPTIONS] command ARGS` for each command.
fn synopsis(roff: &mut Roff, cmd: &clap::Command) {
    roff.control("SH", ["SYNOPSIS"]);
    let name = cmd.get_name();
    let mut first = true;
    for sub in std::iter::once(None).chain(visible_commands(cmd).map(Some)) {
        if !first {
            roff.control("br", []);
        }
        first = false;
        let mut line = vec![bold(name), roman(" ["), italic("OPTIONS"), roman("]")];
        if let Some(sub) = sub {
            line.extend([roman(" "), bold(sub.get_name())]);
            for arg in sub.get_positionals() {
                line.push(roman(" "));
                line.extend(positional(arg));
            }
        }
        roff.text(line);
    }
}

/// `FILE...`, `[FILE]`: a positional argument as usage shows it.
fn positional(arg: &clap::Arg) -> Vec<Inline> {
    let value = arg.get_value_names().map(|v| v.join(" ")).unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    let many = if arg.get_num_args().is_some_and(|n| n.max_values() > 1) { "..." } else { "" };
    match arg.is_required_set() {
        true => vec![italic(value), roman(many)],
        false => vec![roman("["), italic(value), roman("]"), roman(many)],
    }
}

fn visible_commands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// Each command with its long about and the arguments of its own (the global options are in
/// OPTIONS).
fn commands(roff: &mut Roff, cmd: &clap::Command) {
    roff.control("SH", ["COMMANDS"]);
    for sub in visible_commands(cmd) {
        roff.control("TP", []);
        let mut header = vec![bold(sub.get_name())];
        for arg in sub.get_positionals() {
            header.push(roman(" "));
            header.extend(positional(arg));
        }
        roff.text(header);
        paragraphs(roff, &sub.get_long_about().or(sub.get_about()).map(|a| a.to_string()).unwrap_or_default());
        let own: Vec<&clap::Arg> = sub.get_arguments().filter(|a| !a.is_global_set() && !a.is_hide_set() && a.get_id() != "help").collect();
        if own.is_empty() {
            continue;
        }
        roff.control("RS", []);
        for arg in own {
            roff.control("TP", []);
            roff.text(match (arg.get_short(), arg.get_long()) {
                (_, Some(long)) => vec![bold(format!("--{long}"))],
                (Some(short), None) => vec![bold(format!("-{short}"))],
                (None, None) => positional(arg),
            });
            paragraphs(roff, &arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default());
        }
        roff.control("RE", []);
    }
}

/// The body of an item: text lines, each blank line an indented paragraph break.
fn paragraphs(roff: &mut Roff, text: &str) {
    for (n, paragraph) in text.split("\n\n").enumerate() {
        if n > 0 {
            roff.control("IP", []);
        }
        for line in paragraph.lines() {
            roff.text(inline(line.trim()));
        }
    }
}

/// The sections of `after_long_help`: a `Heading:` line at the margin starts a section; an
/// indented `TERM  text` line, or a TERM line followed by deeper ones, is an item (a path in
/// italics, anything else in bold); other indented lines are running text.
fn sections(roff: &mut Roff, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let mut pending_break = false;
    for (n, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        if line.is_empty() {
            pending_break = true;
        } else if indent == 0 {
            roff.control("SH", [line.trim_end_matches(':').to_uppercase().as_str()]);
            pending_break = false;
        } else if indent <= 2 {
            let (term, body) = match line.split_once("  ") {
                Some((term, body)) => (term, Some(body.trim())),
                None => (line, None),
            };
            let deeper = lines.get(n + 1).is_some_and(|next| next.len() - next.trim_start().len() > 2);
            if body.is_none() && !deeper {
                if std::mem::take(&mut pending_break) {
                    roff.control("PP", []);
                }
                roff.text(inline(line));
                continue;
            }
            roff.control("TP", []);
            roff.text([if term.starts_with('/') { italic(term) } else { bold(term) }]);
            if let Some(body) = body {
                roff.text(inline(body));
            }
            pending_break = false;
        } else {
            roff.text(inline(line));
        }
    }
}

/// Running text, with references to other pages (`depmod(8)`) in bold as man-pages(7) asks.
fn inline(text: &str) -> Vec<Inline> {
    let mut parts = Vec::new();
    let mut plain = String::new();
    for word in text.split_inclusive(' ') {
        match page_reference(word) {
            Some((page, rest)) => {
                parts.push(roman(std::mem::take(&mut plain)));
                parts.push(bold(page));
                plain.push_str(rest);
            }
            None => plain.push_str(word),
        }
    }
    parts.push(roman(plain));
    parts.retain(|p| !matches!(p, Inline::Roman(t) if t.is_empty()));
    parts
}

/// `modprobe(8),` is the page `modprobe` and the rest `(8),`.
fn page_reference(word: &str) -> Option<(&str, &str)> {
    let open = word.find('(')?;
    let (page, rest) = word.split_at(open);
    let valid_page = !page.is_empty() && page.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let section = rest.as_bytes().get(1).is_some_and(|c| (b'1'..=b'8').contains(c)) && rest.as_bytes().get(2) == Some(&b')');
    (valid_page && section).then_some((page, rest))
}
