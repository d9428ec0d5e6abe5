//! The manuals and completions: each man page build.rs makes agrees with the program's
//! `--help`, limopack.yaml(5) with the parser, the README's examples run as written, and the
//! shell completions load and complete.
//!
//! External tools used: man (man-db) and groff, pod2man (perl), bash, zsh and fish
//! (tests/run-all installs the two shells; man-db and perl come with lintian and debhelper,
//! which tests/build-deb installs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use fs_err as fs;

/// Where build.rs wrote the man pages and completions.
const GENERATED: &str = env!("OUT_DIR");

/// The man pages build.rs made, with the program each documents.
fn pages() -> Vec<(String, PathBuf)> {
    let mut pages: Vec<(String, PathBuf)> = fs::read_dir(Path::new(GENERATED).join("man"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    pages.sort();
    assert!(pages.iter().any(|(name, _)| name == "limopack-hook"), "{pages:?}");
    pages
}

/// A program of this package, by one of its names.
fn binary(name: &str) -> PathBuf {
    crate::support::program(name)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{cmd:?} ({}):\n{stderr}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// The page as `man` shows it, failing on any warning of groff's.
fn render(page: &Path) -> String {
    run(Command::new("man").args(["--warnings", "-E", "UTF-8", "-l"]).arg(page).env("MANWIDTH", "200").env("LC_ALL", "C.UTF-8"))
}

/// A rendered page's sections by heading, each as its lines.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines().skip(1) {
        if !line.starts_with(' ') && !line.is_empty() {
            sections.push((line.to_string(), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(line.to_string());
        }
    }
    sections.pop(); // the footer
    sections
}

fn section<'a>(sections: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
    sections.iter().find(|(n, _)| n == name).map(|(_, l)| l.as_slice()).unwrap_or_else(|| panic!("no {name} section"))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The tag of a `.TP` item at column 7, and its text when that starts on the same line: groff
/// puts it there, at column 14, when the tag is short enough.
fn tp_item(line: &str) -> (&str, Option<&str>) {
    let bytes = line.as_bytes();
    // A six-letter tag with its arguments (`forget NAME...`) also has a space there: words
    // that are all arguments (`NAME...`, `[FILE]`) are the tag's, not its text.
    let arguments = |text: &str| text.split_whitespace().all(|w| w.trim_matches(['[', ']', '.']).chars().all(|c| c.is_ascii_uppercase() || c == '_'));
    match bytes.len() > 14 && bytes[13] == b' ' && bytes[14] != b' ' && !arguments(&line[14..]) {
        true => (line[..13].trim(), Some(&line[14..])),
        false => (line.trim(), None),
    }
}

/// `-q`, `--quiet` from `-q, --quiet <X> text`: the option words a line starts with.
fn leading_options(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .take_while(|w| w.starts_with('-') || w.starts_with('<') || w.starts_with('['))
        .filter(|w| w.starts_with('-'))
        .map(str::to_string)
        .collect()
}

/// `--root`, `--called-by`, `-q`: every option named anywhere in the lines.
fn options_named(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || "`,;()".contains(c)))
        .filter(|w| w.len() > 1 && w.starts_with('-') && w[1..].chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '-'))
        .map(|w| w.trim_end_matches('.').to_string())
        .collect()
}

/// What `--help` lists.
#[derive(Debug, Default)]
struct Help {
    options: BTreeSet<String>,
    commands: BTreeSet<String>,
    arguments: BTreeSet<String>,
}

fn help(program: &str, args: &[&str]) -> Help {
    let text = run(Command::new(binary(program)).args(args).arg("--help"));
    let mut help = Help::default();
    let mut block = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            block = line;
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        match block {
            "Options:" if indent(line) <= 6 && first.starts_with('-') => help.options.extend(leading_options(line)),
            "Commands:" if indent(line) == 2 => {
                help.commands.insert(first.to_string());
            }
            "Arguments:" if indent(line) == 2 => {
                help.arguments.insert(first.trim_matches(['<', '>', '[', ']', '.']).to_string());
            }
            _ => {}
        }
    }
    assert!(help.options.contains("--help"), "{text}");
    help
}

/// Each option and command of `--help` is in the man page, and the page documents no other:
/// the OPTIONS section lists the program's options, COMMANDS each command with its arguments
/// and its own options, and each example is a command line the program accepts.
#[test]
fn man_pages_document_what_help_lists() {
    for (program, page) in pages() {
        let text = render(&page);
        let sections = sections(&text);
        let top = help(&program, &[]);

        let options = section(&sections, "OPTIONS");
        let documented: BTreeSet<String> = options.iter().filter(|l| indent(l) == 7).flat_map(|l| leading_options(l)).collect();
        assert_eq!(documented, top.options, "{program}: OPTIONS of {} against --help", page.display());
        let words: BTreeSet<&str> = options.iter().filter(|l| indent(l) == 7).flat_map(|l| l.split_whitespace()).collect();
        for argument in &top.arguments {
            assert!(words.iter().any(|w| w.trim_matches(['<', '>', '[', ']', '.']) == argument), "{program}: argument {argument} is not in OPTIONS");
        }

        let mut commands = top.commands.clone();
        commands.remove("help");
        if commands.is_empty() {
            assert!(!sections.iter().any(|(n, _)| n == "COMMANDS"), "{program} has no commands");
        } else {
            let lines = section(&sections, "COMMANDS");
            let mut entries: Vec<(String, Vec<String>)> = Vec::new();
            for line in lines {
                match indent(line) {
                    7 => {
                        let (tag, text) = tp_item(line);
                        entries.push((tag.to_string(), text.map(str::to_string).into_iter().collect()));
                    }
                    _ => entries.last_mut().unwrap_or_else(|| panic!("{line}")).1.push(line.clone()),
                }
            }
            let names: BTreeSet<String> = entries.iter().map(|(h, _)| h.split_whitespace().next().unwrap().to_string()).collect();
            assert_eq!(names, commands, "{program}: COMMANDS against --help");
            for (header, body) in &entries {
                let mut words = header.split_whitespace();
                let name = words.next().unwrap();
                let sub = help(&program, &[name]);
                let shown: BTreeSet<String> = words.map(|w| w.trim_matches(['[', ']', '.']).to_string()).collect();
                assert_eq!(shown, sub.arguments, "{program} {name}: arguments in COMMANDS against its --help");
                let own: BTreeSet<&String> = sub.options.iter().filter(|o| !top.options.contains(*o)).collect();
                let named = options_named(body);
                for option in own {
                    assert!(named.contains(option), "{program} {name}: {option} is not documented in COMMANDS");
                }
                let unknown: Vec<&String> = named.iter().filter(|o| !sub.options.contains(*o) && !top.options.contains(*o)).collect();
                assert!(unknown.is_empty(), "{program} {name}: COMMANDS names options it does not have: {unknown:?}");
            }
        }

        if let Some((_, examples)) = sections.iter().find(|(n, _)| n == "EXAMPLES") {
            for line in examples.iter().filter(|l| indent(l) == 7 && l.trim().starts_with(&program)) {
                let args: Vec<&str> = line.split_whitespace().skip(1).collect();
                run(Command::new(binary(&program)).args(&args).arg("--help"));
            }
        }
    }
}

/// The keys, values and examples of limopack.yaml(5) are the parser's: a key the page lists and
/// the parser does not know fails, and so does one the parser knows and the page leaves out.
#[test]
fn limopack_yaml_5_matches_the_parser() {
    let pod = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/limopack.yaml.pod");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("limopack.yaml.5");
    let roff = run(Command::new("pod2man").args(["--section=5", "--name=LIMOPACK.YAML", "--center=limopack", "--release=limopack", "--errors=die"]).arg(&pod));
    fs::write(&page, roff).unwrap();
    let rendered = render(&page);
    assert!(rendered.contains("limopack.yaml - limopack's module declarations and its configuration"), "{rendered}");

    let source = fs::read_to_string(&pod).unwrap();
    let part = |from: &str, to: &str| source[source.find(from).unwrap()..source.find(to).unwrap()].to_string();
    // The `=item B<key>` entries of a part of the page, at its first level of nesting.
    let items = |text: &str| -> BTreeSet<String> {
        let mut depth = 0;
        let mut keys = BTreeSet::new();
        for line in text.lines() {
            match line.split_whitespace().next() {
                Some("=over") => depth += 1,
                Some("=back") => depth -= 1,
                Some("=item") if depth == 1 => {
                    keys.extend(line.strip_prefix("=item B<").and_then(|r| r.strip_suffix('>')).map(str::to_string));
                }
                _ => {}
            }
        }
        keys
    };

    // What the parser expects, from its own error for an unknown key.
    let expected = |message: &str| -> BTreeSet<String> {
        let list = message.split("expected one of ").nth(1).unwrap_or_else(|| panic!("{message}"));
        list.lines().next().unwrap().split(", ").map(|k| k.trim_matches('`').to_string()).collect()
    };
    fs::write(dir.path().join("x.yaml"), "unknown-key: 1\n").unwrap();
    let out = Command::new(binary("limopack-hook")).arg("check").arg(dir.path().join("x.yaml")).output().unwrap();
    let declaration_keys = expected(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(items(&part("=head2 Keys", "=head2 Entries")), declaration_keys);

    let root = dir.path().join("root");
    let config = root.join("etc/limopack/limopack.yaml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    let config_error = |text: &str| {
        fs::write(&config, text).unwrap();
        let out = Command::new(binary("limopack-hook")).args(["--dry-run", "--root"]).arg(&root).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let configuration = part("=head1 CONFIGURATION", "=head1 EXAMPLES");
    assert_eq!(items(&configuration), expected(&config_error("unknown-key: 1\n").1));
    let initramfs = &configuration[configuration.find("=item B<initramfs>").unwrap()..configuration.find("=item B<archive>").unwrap()];
    let values: BTreeSet<String> = initramfs.lines().skip(1).filter_map(|l| l.strip_prefix("=item B<")).map(|v| v.trim_end_matches('>').to_string()).collect();
    assert_eq!(values, expected(&config_error("initramfs: sometimes\n").1));

    // The examples: each declaration passes check, the mistake gets the message shown, and the
    // configuration loads.
    let examples = part("=head1 EXAMPLES", "=head1 FILES");
    let blocks: Vec<String> = examples
        .split("\n\n")
        .filter(|p| p.starts_with("    "))
        .map(|p| p.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n") + "\n")
        .collect();
    assert_eq!(blocks.len(), 5, "{blocks:?}");
    for declaration in &blocks[..2] {
        fs::write(dir.path().join("ok.yaml"), declaration).unwrap();
        run(Command::new(binary("limopack-hook")).arg("check").arg(dir.path().join("ok.yaml")));
    }
    fs::write(dir.path().join("bluez.yaml"), &blocks[2]).unwrap();
    let (command, said) = blocks[3].split_once('\n').unwrap();
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = Command::new(binary("limopack-hook")).args(&args).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), said);
    let (ok, stderr) = config_error(&blocks[4]);
    assert!(ok, "{stderr}");
}

fn completions(shell: &str, file: &str) -> PathBuf {
    Path::new(GENERATED).join("completions").join(shell).join(file)
}

fn shell_output(shell: &str, script: &str) -> String {
    let which = Command::new("sh").args(["-c", &format!("command -v {shell}")]).output().unwrap();
    assert!(which.status.success(), "{shell} is not installed; tests/run-all installs it");
    run(Command::new(shell).arg("-c").arg(script))
}

/// bash: the script parses, and completing offers each command, each option and the values of
/// --called-by.
#[test]
fn bash_completion_completes() {
    for (program, _) in pages() {
        let script = completions("bash", &program);
        run(Command::new("bash").arg("-n").arg(&script));
        let complete = |words: &str| -> BTreeSet<String> {
            let out = shell_output(
                "bash",
                &format!(
                    "source {}; f=$(complete -p {program} | sed 's/.* -F \\([^ ]*\\) .*/\\1/'); COMP_WORDS=({program} {words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \"$f\" {program} \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                    script.display()
                ),
            );
            out.lines().map(str::to_string).collect()
        };
        let top = help(&program, &[]);
        let offered = complete("''");
        for word in top.commands.iter().chain(&top.options) {
            assert!(offered.contains(word), "bash offers no {word} for {program}: {offered:?}");
        }
        if program == "limopack-hook" {
            assert_eq!(complete("--called-by ''"), ["apt", "dpkg", "kernel"].map(String::from).into());
            assert_eq!(complete("exp"), ["explain".to_string()].into());
        }
    }
}

/// zsh: the script parses and is a completion function for the program.
#[test]
fn zsh_completion_parses() {
    for (program, _) in pages() {
        let script = completions("zsh", &format!("_{program}"));
        shell_output("zsh", &format!("zsh -n {}", script.display()));
        let text = fs::read_to_string(&script).unwrap();
        assert!(text.starts_with(&format!("#compdef {program}\n")), "{}", &text[..80]);
        for command in help(&program, &[]).commands {
            assert!(text.contains(&format!("'{command}:")), "zsh knows no {command}");
        }
    }
}

/// fish: the script parses, and completing offers each command and the values of --called-by.
#[test]
fn fish_completion_completes() {
    for (program, _) in pages() {
        let script = completions("fish", &format!("{program}.fish"));
        let complete = |line: &str| -> BTreeSet<String> {
            let out = shell_output("fish", &format!("source {}; complete -C '{line}'", script.display()));
            out.lines().map(|l| l.split('\t').next().unwrap().to_string()).collect()
        };
        let offered = complete(&format!("{program} "));
        for command in help(&program, &[]).commands {
            assert!(offered.contains(&command), "fish offers no {command} for {program}: {offered:?}");
        }
        if program == "limopack-hook" {
            let values = complete("limopack-hook --called-by=");
            assert_eq!(values, ["--called-by=apt", "--called-by=dpkg", "--called-by=kernel"].map(String::from).into());
            assert!(complete("limopack-hook check --ro").contains("--root"));
        }
    }
}

/// The README is for users and stays about 20 KB: the internals live in doc/HACKING.md, the
/// measurements in benches/README.md and the history in CHANGELOG.md, and the README points
/// to the man pages rather than repeating them.
#[test]
fn the_readme_stays_about_20_kb() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let len = fs::metadata(&readme).unwrap().len();
    assert!(len <= 22_000, "{}: {len} bytes; move what is not for users to doc/HACKING.md", readme.display());
}

/// A fenced block: its language tag and its lines.
type Block = (String, Vec<String>);

/// The README's fenced blocks.
fn readme_blocks() -> Vec<Block> {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let (mut blocks, mut open): (Vec<Block>, Option<Block>) = (Vec::new(), None);
    for line in text.lines() {
        match (line.strip_prefix("```"), open.take()) {
            (Some(_), Some(block)) => blocks.push(block),
            (Some(tag), None) => open = Some((tag.to_string(), Vec::new())),
            (None, Some((tag, mut lines))) => {
                lines.push(line.to_string());
                open = Some((tag, lines));
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md ends inside a fenced block");
    blocks
}

/// The README's examples work as written: every declaration it shows passes `check`, its
/// config parses, and each transcript on the bundled example root prints what it shows.
#[test]
fn readme_examples_run() {
    let blocks = readme_blocks();
    let dir = tempfile::tempdir().unwrap();
    let (mut declarations, mut configs, mut transcripts) = (0, 0, 0);
    for (tag, lines) in &blocks {
        let text = lines.join("\n") + "\n";
        if tag == "yaml" && text.contains("prune:") {
            // A config: a run on a root without trees still reads it, and fails on a bad one.
            let root = dir.path().join(format!("config-{configs}"));
            fs::create_dir_all(root.join("etc/limopack")).unwrap();
            fs::write(root.join("etc/limopack/limopack.yaml"), &text).unwrap();
            run(Command::new(binary("limopack-hook")).args(["--dry-run", "--quiet", "--root"]).arg(&root));
            configs += 1;
        } else if tag == "yaml" {
            let file = dir.path().join(format!("declaration-{declarations}.yaml"));
            fs::write(&file, &text).unwrap();
            run(Command::new(binary("limopack-hook")).arg("check").arg(&file));
            declarations += 1;
        } else if let Some(command) = lines.first().and_then(|l| l.strip_prefix("$ limopack-hook ")) {
            let out = run(Command::new(binary("limopack-hook")).args(command.split_whitespace()).current_dir(env!("CARGO_MANIFEST_DIR")));
            assert_eq!(out.lines().collect::<Vec<_>>(), lines[1..], "README: $ limopack-hook {command}");
            transcripts += 1;
        }
    }
    // The first command's example line, which follows it in a block of its own.
    let first = blocks.iter().position(|(_, l)| l.iter().any(|l| l.contains("--dry-run --root examples/demo-root"))).expect("the first command");
    let shown = &blocks[first + 1].1;
    let out = run(Command::new(binary("limopack-hook")).args(["--dry-run", "--root", "examples/demo-root"]).current_dir(env!("CARGO_MANIFEST_DIR")));
    assert_eq!(out.lines().collect::<Vec<_>>(), *shown, "README: the first command's output");
    assert!(declarations >= 2 && configs >= 1 && transcripts >= 1, "{declarations} declarations, {configs} configs, {transcripts} transcripts");
}
