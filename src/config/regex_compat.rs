//! Go (RE2) regex semantics on top of Rust's `regex` crate.
//!
//! Configs written for the Go implementation rely on Go's meaning of the Perl
//! classes: `\d`, `\w`, `\s` and `\b` are ASCII-only in Go but Unicode-aware in
//! Rust. We rewrite those escapes into explicit ASCII classes before compiling,
//! so `\d+` never matches "١٢" (Arabic-Indic digits) in a cgroup name, exactly
//! as before. `\Q...\E` quoting, which Go supports and Rust does not, is
//! expanded into escaped literals.

use regex::{Regex, RegexBuilder};

use super::limits::{MAX_PATTERN_BYTES, REGEX_SIZE_LIMIT};

const DIGIT: &str = "0-9";
const WORD: &str = "0-9A-Za-z_";
// Go's \s is [\t\n\f\r ]: no \v, unlike POSIX [:space:].
const SPACE: &str = r"\t\n\x0C\r ";

/// Translate a Go regular expression into an equivalent Rust one.
pub fn translate(go: &str) -> String {
    let mut out = String::with_capacity(go.len() + 16);
    let mut chars = go.chars().peekable();
    // Inside a bracket expression the classes expand to ranges, outside to
    // whole bracket expressions.
    let mut in_class = false;
    // True right after `[` or `[^`, where a `]` is a literal.
    let mut class_start = false;
    while let Some(c) = chars.next() {
        let at_class_start = class_start;
        class_start = false;
        match c {
            '\\' => {
                let Some(e) = chars.next() else {
                    out.push('\\');
                    break;
                };
                match (e, in_class) {
                    ('d', false) => out.push_str(&format!("[{DIGIT}]")),
                    ('D', false) => out.push_str(&format!("[^{DIGIT}]")),
                    ('w', false) => out.push_str(&format!("[{WORD}]")),
                    ('W', false) => out.push_str(&format!("[^{WORD}]")),
                    ('s', false) => out.push_str(&format!("[{SPACE}]")),
                    ('S', false) => out.push_str(&format!("[^{SPACE}]")),
                    ('b', false) => out.push_str(r"(?-u:\b)"),
                    ('B', false) => out.push_str(r"(?-u:\B)"),
                    ('d', true) => out.push_str(DIGIT),
                    ('w', true) => out.push_str(WORD),
                    ('s', true) => out.push_str(SPACE),
                    ('D', true) => out.push_str("[:^digit:]"),
                    ('W', true) => out.push_str("[:^word:]"),
                    ('S', true) => out.push_str(r"[^\t\n\x0C\r ]"),
                    ('Q', false) => {
                        let mut literal = String::new();
                        loop {
                            match chars.next() {
                                None => break,
                                Some('\\') if chars.peek() == Some(&'E') => {
                                    chars.next();
                                    break;
                                }
                                Some(ch) => literal.push(ch),
                            }
                        }
                        out.push_str(&regex::escape(&literal));
                    }
                    (e, _) => {
                        out.push('\\');
                        out.push(e);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                class_start = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
            }
            '[' if in_class && chars.peek() == Some(&':') => {
                // A POSIX class like [:alpha:] inside a bracket expression:
                // copy it whole so its `]` does not close the outer class.
                out.push('[');
                for ch in chars.by_ref() {
                    out.push(ch);
                    if ch == ']' {
                        break;
                    }
                }
            }
            ']' if in_class && !at_class_start => {
                in_class = false;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// Compile a Go regular expression with Go's ASCII class semantics.
pub fn compile(go: &str) -> Result<Regex, regex::Error> {
    Regex::new(&translate(go))
}

/// The compiled sizes tried in turn (`size_limit`), each 4 times the last:
/// a regex is charged the first that fits.
const TIERS: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, REGEX_SIZE_LIMIT];

/// The lazy DFA cache a regex of compiled size `tier` gets: 4 times that,
/// from 16 KiB (smaller caches make matching ~10x slower) to 1 MiB.
fn dfa_limit(tier: usize) -> usize {
    (4 * tier).clamp(16 << 10, REGEX_SIZE_LIMIT)
}

/// Compile a Go regular expression as [`compile`] does, bounded: at most
/// [`MAX_PATTERN_BYTES`] long, at most [`REGEX_SIZE_LIMIT`] compiled, and
/// charged against `budget` (bytes left for all regexes of a config): the
/// first of [`TIERS`] it fits in plus its DFA cache limit. A failed try
/// stops as soon as the limit is passed, so the work stays in proportion
/// to what is charged. The error is one short sentence, without the
/// pattern.
pub fn compile_within(go: &str, budget: &mut usize) -> Result<Regex, String> {
    if go.len() > MAX_PATTERN_BYTES {
        return Err(format!("{} bytes long; a pattern may have at most {MAX_PATTERN_BYTES}", go.len()));
    }
    let translated = translate(go);
    for tier in TIERS {
        let charge = tier + dfa_limit(tier);
        if charge > *budget {
            return Err(format!(
                "with the rules before it, more than the {} MiB all regexes may take compiled \
                 (simpler or fewer rules)",
                super::limits::REGEX_BUDGET >> 20
            ));
        }
        match RegexBuilder::new(&translated).size_limit(tier).dfa_size_limit(dfa_limit(tier)).build() {
            Ok(re) => {
                *budget -= charge;
                return Ok(re);
            }
            Err(regex::Error::CompiledTooBig(_)) => continue,
            Err(e) => return Err(short_error(&e)),
        }
    }
    Err(format!("compiles to more than {} KiB, the limit for one regex", REGEX_SIZE_LIMIT >> 10))
}

/// The `error: ...` line of a regex syntax error (its other lines repeat
/// the whole pattern, translated), else the error's first line.
fn short_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let line = text.lines().rev().find_map(|l| l.strip_prefix("error: ")).or_else(|| text.lines().next());
    super::limits::clip(line.unwrap_or("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_is_ascii_only() {
        let re = compile(r"^app-\d+$").unwrap();
        assert!(re.is_match("app-12"));
        assert!(!re.is_match("app-١٢"), "Go's \\d does not match Arabic-Indic digits");
        // Rust's own \d would have matched:
        assert!(Regex::new(r"^app-\d+$").unwrap().is_match("app-١٢"));
    }

    #[test]
    fn word_and_space_are_ascii_only() {
        assert!(!compile(r"^\w$").unwrap().is_match("é"));
        assert!(compile(r"^\w$").unwrap().is_match("_"));
        assert!(!compile(r"^\s$").unwrap().is_match("\u{a0}"));
        assert!(!compile(r"^\s$").unwrap().is_match("\x0b"), "Go's \\s excludes \\v");
        assert!(compile(r"^\S+$").unwrap().is_match("é"));
        assert!(compile(r"^\W$").unwrap().is_match("é"));
        assert!(compile(r"^\D$").unwrap().is_match("١"));
    }

    #[test]
    fn classes_inside_brackets() {
        let re = compile(r"^[\d.]+$").unwrap();
        assert!(re.is_match("1.2"));
        assert!(!re.is_match("١"));
        let re = compile(r"^[^\w]$").unwrap();
        assert!(re.is_match("-"));
        assert!(!re.is_match("a"));
        let re = compile(r"^[]\d]+$").unwrap();
        assert!(re.is_match("]1"));
        let re = compile(r"^[[:alpha:]\d]+$").unwrap();
        assert!(re.is_match("a1"));
        assert!(!compile(r"^[\W]$").unwrap().is_match("a"));
    }

    #[test]
    fn escapes_stay_escapes() {
        let re = compile(r"\/user\.slice\/user-\d+\.slice").unwrap();
        assert!(re.is_match("/user.slice/user-1000.slice/x"));
        assert!(!re.is_match("/userXslice/user-1000.slice"));
        // An escaped backslash followed by d is a literal backslash and d.
        assert!(compile(r"^\\d$").unwrap().is_match(r"\d"));
    }

    #[test]
    fn word_boundary_is_ascii() {
        let re = compile(r"\bfoo\b").unwrap();
        assert!(re.is_match("a foo b"));
        assert!(re.is_match("éfooé"), "é is not a word character for Go's \\b");
    }

    #[test]
    fn bounded_compilation() {
        use super::super::limits::REGEX_BUDGET;
        let mut budget = REGEX_BUDGET;
        let re = compile_within(r"^app-\d+$", &mut budget).unwrap();
        assert!(re.is_match("app-12") && !re.is_match("app-١٢"), "Go's ASCII \\d still");
        assert_eq!(REGEX_BUDGET - budget, 4096 + 16384, "a small regex costs the smallest tier");
        // Too long: refused before compiling, without echoing it.
        let long = "a".repeat(MAX_PATTERN_BYTES + 1);
        let err = compile_within(&long, &mut budget).unwrap_err();
        assert!(err.contains("4097 bytes long") && err.len() < 100, "{err}");
        // Too big compiled: refused quickly.
        let t = std::time::Instant::now();
        let err = compile_within("(((a{100}){100}){100}){100}", &mut budget).unwrap_err();
        assert!(err.contains("more than 1024 KiB"), "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
        // A syntax error names the problem, not the (translated) pattern.
        let err = compile_within(&format!("({}", "x".repeat(4000)), &mut budget).unwrap_err();
        assert!(err.contains("unclosed group") && err.len() < 120, "{err}");
        // The budget runs out for many big regexes.
        let big = "[a-z]{2000}";
        let mut n = 0;
        let err = loop {
            match compile_within(big, &mut budget) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(n > 0 && n < 64 && err.contains("32 MiB"), "{n}: {err}");
    }

    #[test]
    fn quoted_literals() {
        let re = compile(r"^\Qa.b+\E\d$").unwrap();
        assert!(re.is_match("a.b+1"));
        assert!(!re.is_match("axbb1"));
    }
}
