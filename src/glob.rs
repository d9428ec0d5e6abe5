//! Globs: declarations' module entries and `kernels:`, the config's package globs, firmware
//! globs. The syntax and the matches are globset's (the crate limopack used before, MIT or
//! Unlicense), whose parser this follows step by step: `*`, `?`, `[...]` (`!` or `^`
//! negates, ranges), `{a,b}`, `**` as a whole path component, `\` escaping the next
//! character, and the same errors. What it leaves out is the regular expression engine globset
//! compiles each glob to (about 500 KB of the program): a glob becomes a small program of byte
//! steps, run over the text with every live position at once, so a match takes time bounded
//! by the glob's length times the text's, whatever the glob.
//!
//! As in globset, matching is on bytes: `?` is one byte, and a set (`[é]`) holds the bytes of
//! what it names. `*` and `?` cross `/` unless the glob is built with `literal_separator`.
//! `tests::agrees_with_globset` holds it to globset on random globs and texts.

use std::fmt;

/// A glob that did not parse, as globset words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobError {
    UnclosedClass,
    InvalidRange(char, char),
    UnopenedAlternates,
    UnclosedAlternates,
    DanglingEscape,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobError::UnclosedClass => f.write_str("unclosed character class; missing ']'"),
            GlobError::InvalidRange(s, e) => write!(f, "invalid range; '{s}' > '{e}'"),
            GlobError::UnopenedAlternates => {
                f.write_str("unopened alternate group; missing '{' (maybe escape '}' with '[}]'?)")
            }
            GlobError::UnclosedAlternates => {
                f.write_str("unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)")
            }
            GlobError::DanglingEscape => f.write_str("dangling '\\'"),
        }
    }
}

/// A parsed glob, ready to match.
#[derive(Clone)]
pub struct Glob {
    text: String,
    program: Vec<Step>,
    sets: Vec<[u64; 4]>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Glob").field(&self.text).finish()
    }
}

impl Glob {
    /// `text` as a glob whose `*` and `?` match any byte, `/` included (module names, package
    /// names and kernel versions hold no `/`).
    pub fn new(text: &str) -> Result<Glob, GlobError> {
        Glob::build(text, false)
    }

    /// `text` as a glob over paths: `*`, `?` and no other wildcard but `**` stop at `/`.
    pub fn path(text: &str) -> Result<Glob, GlobError> {
        Glob::build(text, true)
    }

    fn build(text: &str, literal_separator: bool) -> Result<Glob, GlobError> {
        let tokens = parse(text)?;
        let mut compiler = Compiler { literal_separator, program: Vec::new(), sets: Vec::new() };
        if let [Token::RecursivePrefix] = tokens[..] {
            // A glob of `**` alone matches everything.
            compiler.star(ANY);
        } else {
            compiler.tokens(&tokens);
        }
        compiler.program.push(Step::Match);
        Ok(Glob { text: text.to_string(), program: compiler.program, sets: compiler.sets })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        thread_local! {
            /// The live steps before and after a byte, and a stack: kept, so that a match
            /// allocates nothing.
            static SCRATCH: std::cell::RefCell<(Vec<u64>, Vec<u64>, Vec<usize>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                let (now, next, stack) = &mut *scratch;
                self.run(text, now, next, stack)
            }
            Err(_) => self.run(text, &mut Vec::new(), &mut Vec::new(), &mut Vec::new()),
        })
    }

    fn run(&self, text: &str, now: &mut Vec<u64>, next: &mut Vec<u64>, stack: &mut Vec<usize>) -> bool {
        let words = self.program.len().div_ceil(64);
        for live in [&mut *now, &mut *next] {
            live.clear();
            live.resize(words, 0);
        }
        self.follow(0, now, stack);
        for &byte in text.as_bytes() {
            let mut live = false;
            for (word, bits) in now.iter().enumerate() {
                let mut bits = *bits;
                while bits != 0 {
                    let at = word * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let takes = match self.program[at] {
                        Step::Byte(b) => b == byte,
                        Step::Set(set) => self.sets[set as usize][usize::from(byte >> 6)] >> (byte & 63) & 1 == 1,
                        Step::Split(..) | Step::Jump(_) | Step::Match => false,
                    };
                    if takes {
                        self.follow(at + 1, next, stack);
                        live = true;
                    }
                }
            }
            if !live {
                return false;
            }
            std::mem::swap(now, next);
            next.iter_mut().for_each(|w| *w = 0);
        }
        let end = self.program.len() - 1;
        now[end / 64] >> (end % 64) & 1 == 1
    }

    /// Marks `from` live in `live`, and every step reached from it without reading a byte.
    fn follow(&self, from: usize, live: &mut [u64], stack: &mut Vec<usize>) {
        stack.push(from);
        while let Some(at) = stack.pop() {
            let (word, bit) = (at / 64, 1u64 << (at % 64));
            if live[word] & bit != 0 {
                continue;
            }
            live[word] |= bit;
            match self.program[at] {
                Step::Split(a, b) => stack.extend([b as usize, a as usize]),
                Step::Jump(to) => stack.push(to as usize),
                Step::Byte(_) | Step::Set(_) | Step::Match => {}
            }
        }
    }
}

/// One step of a glob's program. A step that reads a byte goes on to the next step.
#[derive(Clone, Copy)]
enum Step {
    Byte(u8),
    /// A byte of the set with this index.
    Set(u32),
    Split(u32, u32),
    Jump(u32),
    Match,
}

/// Every byte.
const ANY: [u64; 4] = [u64::MAX; 4];

/// Every byte but `/`.
const NOT_SLASH: [u64; 4] = [!(1 << b'/'), u64::MAX, u64::MAX, u64::MAX];

/// A glob as globset parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    ZeroOrMore,
    /// `**/` at the start: any folders, or none.
    RecursivePrefix,
    /// `/**` at the end: `/` and anything.
    RecursiveSuffix,
    /// `/**/`: one `/`, or folders between two.
    RecursiveZeroOrMore,
    Class { negated: bool, ranges: Vec<(char, char)> },
    Alternates(Vec<Vec<Token>>),
}

/// Turns tokens into steps, as globset turns them into a regular expression.
struct Compiler {
    literal_separator: bool,
    program: Vec<Step>,
    sets: Vec<[u64; 4]>,
}

impl Compiler {
    fn at(&self) -> u32 {
        self.program.len() as u32
    }

    fn set(&mut self, set: [u64; 4]) {
        self.sets.push(set);
        self.program.push(Step::Set(self.sets.len() as u32 - 1));
    }

    /// Any number of bytes of `set`.
    fn star(&mut self, set: [u64; 4]) {
        let split = self.at();
        self.program.push(Step::Split(split + 1, 0));
        self.set(set);
        self.program.push(Step::Jump(split));
        self.program[split as usize] = Step::Split(split + 1, self.at());
    }

    fn tokens(&mut self, tokens: &[Token]) {
        let wild = if self.literal_separator { NOT_SLASH } else { ANY };
        for token in tokens {
            match token {
                Token::Literal(c) => {
                    for &b in c.encode_utf8(&mut [0; 4]).as_bytes() {
                        self.program.push(Step::Byte(b));
                    }
                }
                Token::Any => self.set(wild),
                Token::ZeroOrMore => self.star(wild),
                // `(?:/?|.*/)`: nothing, `/`, or anything up to a `/`.
                Token::RecursivePrefix => {
                    let split = self.at();
                    self.program.push(Step::Split(split + 1, 0));
                    self.program.push(Step::Split(split + 2, 0));
                    self.program.push(Step::Byte(b'/'));
                    let end_of_first = self.at();
                    self.program.push(Step::Jump(0));
                    self.program[split as usize + 1] = Step::Split(split + 2, end_of_first);
                    let second = self.at();
                    self.star(ANY);
                    self.program.push(Step::Byte(b'/'));
                    self.program[split as usize] = Step::Split(split + 1, second);
                    self.program[end_of_first as usize] = Step::Jump(self.at());
                }
                // `/.*`
                Token::RecursiveSuffix => {
                    self.program.push(Step::Byte(b'/'));
                    self.star(ANY);
                }
                // `(?:/|/.*/)`, that is `/` and then nothing or anything up to a `/`.
                Token::RecursiveZeroOrMore => {
                    self.program.push(Step::Byte(b'/'));
                    let split = self.at();
                    self.program.push(Step::Split(split + 1, 0));
                    self.star(ANY);
                    self.program.push(Step::Byte(b'/'));
                    self.program[split as usize] = Step::Split(split + 1, self.at());
                }
                Token::Class { negated, ranges } => {
                    let set = class(*negated, ranges);
                    self.set(set);
                }
                Token::Alternates(branches) => {
                    // globset leaves out the empty branches, and the group when all are.
                    let branches: Vec<&Vec<Token>> = branches.iter().filter(|b| !compiles_empty(b)).collect();
                    let mut jumps = Vec::new();
                    for (i, branch) in branches.iter().enumerate() {
                        let split = (i + 1 < branches.len()).then(|| {
                            let split = self.at();
                            self.program.push(Step::Split(split + 1, 0));
                            split
                        });
                        self.tokens(branch);
                        if let Some(split) = split {
                            jumps.push(self.at());
                            self.program.push(Step::Jump(0));
                            self.program[split as usize] = Step::Split(split + 1, self.at());
                        }
                    }
                    let end = self.at();
                    for jump in jumps {
                        self.program[jump as usize] = Step::Jump(end);
                    }
                }
            }
        }
    }
}

/// Whether globset writes these tokens as an empty regular expression: no tokens, or only
/// groups whose branches all are.
fn compiles_empty(tokens: &[Token]) -> bool {
    tokens.iter().all(|t| matches!(t, Token::Alternates(branches) if branches.iter().all(|b| compiles_empty(b))))
}

/// The bytes a set holds. globset writes each character of a set as the bytes of its UTF-8,
/// so a range between two characters reaches from the last byte of the first to the first
/// byte of the second, and the other bytes of each are in the set alone.
fn class(negated: bool, ranges: &[(char, char)]) -> [u64; 4] {
    let mut set = [0u64; 4];
    let mut add = |lo: u8, hi: u8| {
        for b in lo..=hi {
            set[usize::from(b >> 6)] |= 1 << (b & 63);
        }
    };
    for &(lo, hi) in ranges {
        let (mut a, mut b) = ([0; 4], [0; 4]);
        let (lo, hi) = (lo.encode_utf8(&mut a).as_bytes(), hi.encode_utf8(&mut b).as_bytes());
        if lo == hi {
            lo.iter().for_each(|&x| add(x, x));
        } else {
            lo[..lo.len() - 1].iter().for_each(|&x| add(x, x));
            add(lo[lo.len() - 1], hi[0]);
            hi[1..].iter().for_each(|&x| add(x, x));
        }
    }
    if negated {
        set.iter_mut().for_each(|w| *w = !*w);
    }
    set
}

/// globset's parser (`glob.rs`, `Parser`), with its options at their defaults: case
/// sensitive, `\` escapes, no empty alternates, an unclosed `[` is an error.
fn parse(glob: &str) -> Result<Vec<Token>, GlobError> {
    let mut p = Parser { alternates: Vec::new(), branches: vec![Vec::new()], chars: glob.chars().peekable(), prev: None, cur: None };
    while let Some(c) = p.bump() {
        match c {
            '?' => p.push(Token::Any)?,
            '*' => p.star()?,
            '[' => p.class()?,
            '{' => {
                p.alternates.push(p.branches.len());
                p.branches.push(Vec::new());
            }
            '}' => {
                let start = p.alternates.pop().ok_or(GlobError::UnopenedAlternates)?;
                let alternates = Token::Alternates(p.branches.drain(start..).collect());
                p.push(alternates)?;
            }
            ',' if !p.alternates.is_empty() => p.branches.push(Vec::new()),
            '\\' => {
                let c = p.bump().ok_or(GlobError::DanglingEscape)?;
                p.push(Token::Literal(c))?;
            }
            c => p.push(Token::Literal(c))?,
        }
    }
    if p.branches.len() > 1 {
        return Err(GlobError::UnclosedAlternates);
    }
    Ok(p.branches.pop().unwrap_or_default())
}

struct Parser<'a> {
    /// Where each open `{` started in `branches`.
    alternates: Vec<usize>,
    /// The branches being parsed; tokens go to the last.
    branches: Vec<Vec<Token>>,
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    prev: Option<char>,
    cur: Option<char>,
}

impl Parser<'_> {
    fn bump(&mut self) -> Option<char> {
        self.prev = self.cur;
        self.cur = self.chars.next();
        self.cur
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn branch(&mut self) -> Result<&mut Vec<Token>, GlobError> {
        self.branches.last_mut().ok_or(GlobError::UnopenedAlternates)
    }

    fn push(&mut self, token: Token) -> Result<(), GlobError> {
        self.branch()?.push(token);
        Ok(())
    }

    /// After a `*`: one `*`, or `**` as a path component (recursive), or `**` inside a
    /// component (two `*`).
    fn star(&mut self) -> Result<(), GlobError> {
        let prev = self.prev;
        if self.peek() != Some('*') {
            return self.push(Token::ZeroOrMore);
        }
        self.bump();
        if self.branch()?.is_empty() {
            if self.peek().is_none_or(|c| c == '/') {
                self.bump();
                self.push(Token::RecursivePrefix)?;
            } else {
                self.push(Token::ZeroOrMore)?;
                self.push(Token::ZeroOrMore)?;
            }
            return Ok(());
        }
        if prev != Some('/') && (self.branches.len() <= 1 || (prev != Some(',') && prev != Some('{'))) {
            self.push(Token::ZeroOrMore)?;
            return self.push(Token::ZeroOrMore);
        }
        let is_suffix = match self.peek() {
            None => {
                self.bump();
                true
            }
            Some(',' | '}') if self.branches.len() >= 2 => true,
            Some('/') => {
                self.bump();
                false
            }
            _ => {
                self.push(Token::ZeroOrMore)?;
                return self.push(Token::ZeroOrMore);
            }
        };
        let last = self.branch()?.pop();
        match last {
            Some(Token::RecursivePrefix) => self.push(Token::RecursivePrefix),
            Some(Token::RecursiveSuffix) => self.push(Token::RecursiveSuffix),
            _ if is_suffix => self.push(Token::RecursiveSuffix),
            _ => self.push(Token::RecursiveZeroOrMore),
        }
    }

    /// After a `[`: the set up to its `]`.
    fn class(&mut self) -> Result<(), GlobError> {
        let mut ranges: Vec<(char, char)> = Vec::new();
        let negated = matches!(self.peek(), Some('!' | '^'));
        if negated {
            self.bump();
        }
        let (mut first, mut in_range) = (true, false);
        let extend = |r: &mut (char, char), to: char| {
            r.1 = to;
            if r.1 < r.0 {
                return Err(GlobError::InvalidRange(r.0, r.1));
            }
            Ok(())
        };
        loop {
            let c = self.bump().ok_or(GlobError::UnclosedClass)?;
            match c {
                ']' if first => ranges.push((']', ']')),
                ']' => break,
                '-' if first => ranges.push(('-', '-')),
                '-' if in_range => {
                    extend(ranges.last_mut().expect("a range has a start"), '-')?;
                    in_range = false;
                }
                '-' => in_range = true,
                c if in_range => {
                    extend(ranges.last_mut().expect("a range has a start"), c)?;
                    in_range = false;
                }
                c => ranges.push((c, c)),
            }
            first = false;
        }
        if in_range {
            ranges.push(('-', '-'));
        }
        self.push(Token::Class { negated, ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_syntax() {
        let m = |g: &str, t: &str| Glob::new(g).unwrap().is_match(t);
        assert!(m("snd_hda_codec_*", "snd_hda_codec_realtek") && !m("snd_hda_codec_*", "snd_hda_intel"));
        assert!(m("6.1.*", "6.1.0-50-amd64") && !m("6.1.*", "6.12.1"));
        assert!(m("linux-image-*", "linux-image-6.1.0-50-amd64") && m("linux-modules-extra-*", "linux-modules-extra-6.8.0-1-generic"));
        assert!(m("e1000?", "e1000e") && !m("e1000?", "e1000"));
        assert!(m("nvme[_-]core", "nvme_core") && m("[!a-m]*", "xfs") && !m("[^a-m]*", "ext4"));
        assert!(m("{ext4,xfs}", "xfs") && !m("{ext4,xfs}", "btrfs"));
        assert!(m("a\\*", "a*") && !m("a\\*", "ab"));
        let p = |g: &str, t: &str| Glob::path(g).unwrap().is_match(t);
        assert!(p("iwlwifi-*.pnvm", "iwlwifi-ty-a0-gf-a0.pnvm") && !p("rtl_nic/*", "rtl_nic/sub/x.fw"));
        assert!(p("rtl_nic/**", "rtl_nic/sub/x.fw") && p("**/x.fw", "x.fw") && p("a/**/b", "a/b") && p("a/**/b", "a/x/y/b"));
        assert!(!p("a?b", "a/b") && m("a?b", "a/b") && m("*", "a/b"));
    }

    #[test]
    fn bad_globs_are_globsets_errors() {
        let e = |g: &str| Glob::new(g).unwrap_err().to_string();
        assert_eq!(e("a["), "unclosed character class; missing ']'");
        assert_eq!(e("[]"), "unclosed character class; missing ']'");
        assert_eq!(e("[z-a]"), "invalid range; 'z' > 'a'");
        assert_eq!(e("{a,b"), "unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)");
        assert_eq!(e("a}"), "unopened alternate group; missing '{' (maybe escape '}' with '[}]'?)");
        assert_eq!(e("a\\"), "dangling '\\'");
    }

    /// globset is the oracle (a dev-dependency): random globs over the characters that have a
    /// meaning, both with and without `literal_separator`, must parse or fail alike and match
    /// the same random texts.
    #[test]
    fn agrees_with_globset() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        let pieces = ["*", "**", "?", "/", "a", "b", "-", "[", "]", "!", "^", "{", "}", ",", "\\", "é", "\n", "a-z", "[a-c]", "[!/]", "**/", "/**"];
        let texts = ["a", "b", "/", "-", "é", "\n", "ab", "ba", "a/b", "é", "]", "{", ","];
        for _ in 0..200_000 {
            let glob: String = (0..next(7)).map(|_| pieces[next(pieces.len())]).collect();
            let text: String = (0..next(6)).map(|_| texts[next(texts.len())]).collect();
            let separator = next(2) == 0;
            let theirs = globset::GlobBuilder::new(&glob).literal_separator(separator).build();
            let ours = Glob::build(&glob, separator);
            match (&theirs, &ours) {
                (Ok(theirs), Ok(ours)) => assert_eq!(
                    ours.is_match(&text),
                    theirs.compile_matcher().is_match(&text),
                    "glob {glob:?} text {text:?} literal_separator {separator}"
                ),
                (Err(theirs), Err(ours)) => assert_eq!(ours.to_string(), theirs.kind().to_string(), "glob {glob:?}"),
                _ => panic!("glob {glob:?}: globset {theirs:?}, ours {ours:?}"),
            }
        }
    }
}
