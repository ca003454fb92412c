//! Cgroup names are bytes; paths are strings. How a directory name becomes
//! a component of the path string that rules match (reversibly, so every
//! distinct name gives a distinct path), how that path goes back to bytes
//! for the file system, and how a path is shown to a person (control
//! characters escaped, so a name can neither rewrite a terminal nor forge a
//! log line).
//!
//! The encoding leaves every valid UTF-8 name as it is, so rules written
//! for real names (systemd's `\x2d` escapes included: they are plain
//! backslashes in the name) match as before. An invalid byte becomes
//! U+FFFD (what a lossy conversion already showed in its place) followed by
//! the byte's two lowercase hex digits; a U+FFFD in the name itself is
//! doubled. No valid name contains a lone U+FFFD followed by hex digits
//! after encoding, so decoding is exact.

use std::borrow::Cow;
use std::fmt::Write;

const MARK: char = '\u{FFFD}';

/// Append the directory name `name` to the path string `out`.
pub fn push_name(out: &mut String, name: &[u8]) {
    let mut rest = name;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                push_valid(out, valid);
                return;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // SAFETY-free: `valid_up_to` bytes are valid UTF-8.
                push_valid(out, std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(after.len());
                for b in &after[..bad] {
                    let _ = write!(out, "{MARK}{b:02x}");
                }
                rest = &after[bad..];
            }
        }
    }
}

fn push_valid(out: &mut String, s: &str) {
    if s.contains(MARK) {
        for c in s.chars() {
            out.push(c);
            if c == MARK {
                out.push(MARK);
            }
        }
    } else {
        out.push_str(s);
    }
}

/// `parent/name` as a path string.
pub fn join(parent: &str, name: &[u8]) -> String {
    let mut s = String::with_capacity(parent.len() + 1 + name.len());
    s.push_str(parent);
    s.push('/');
    push_name(&mut s, name);
    s
}

/// The bytes of a path string made by [`push_name`]: what the file system
/// calls it.
pub fn to_bytes(path: &str) -> Cow<'_, [u8]> {
    if !path.contains(MARK) {
        return Cow::Borrowed(path.as_bytes());
    }
    let mut out = Vec::with_capacity(path.len());
    let mut chars = path.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != MARK {
            out.extend_from_slice(&path.as_bytes()[i..i + c.len_utf8()]);
            continue;
        }
        if chars.peek().is_some_and(|(_, n)| *n == MARK) {
            chars.next();
            out.extend_from_slice(MARK.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        let hex = path.get(i + MARK.len_utf8()..i + MARK.len_utf8() + 2);
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok().filter(|_| h.bytes().all(|b| b.is_ascii_hexdigit()))) {
            Some(b) => {
                out.push(b);
                chars.next();
                chars.next();
            }
            // Not made by push_name (typed by a person): taken literally.
            None => out.extend_from_slice(MARK.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Cow::Owned(out)
}

/// A name or path as it may be shown on a terminal, in a log line or in a
/// journal field: C0 and C1 control characters, DEL and the Unicode
/// characters that reorder or break lines (bidirectional overrides and
/// isolates, line and paragraph separators) are written as `\xNN` or
/// `\u{NNNN}`; everything else is unchanged. The one escaping function for
/// names: status, explain, print and the daemon's log use it.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(name: &[u8]) -> String {
        let mut s = String::new();
        push_name(&mut s, name);
        s
    }

    #[test]
    fn valid_names_are_unchanged() {
        for name in ["app-DDE-deepin\\x2dterminal-1234.scope", "mihomo.service", "café", "a\\xff", "\\\\"] {
            assert_eq!(enc(name.as_bytes()), name);
            assert_eq!(to_bytes(name), name.as_bytes());
        }
    }

    #[test]
    fn distinct_names_give_distinct_paths_and_back() {
        let names: Vec<&[u8]> = vec![
            b"x\xff",
            b"x\xfe",
            b"x\xef\xbf\xbdff",
            b"x\xef\xbf\xbd",
            b"x\xef\xbf\xbd\xff",
            b"x\xffff",
            b"\xc3",
            b"\xc3(",
            b"x\\xff",
            b"\xe2\x82",
        ];
        let paths: Vec<String> = names.iter().map(|n| enc(n)).collect();
        let unique: std::collections::BTreeSet<&String> = paths.iter().collect();
        assert_eq!(unique.len(), names.len(), "{paths:?}");
        for (n, p) in names.iter().zip(&paths) {
            assert_eq!(&*to_bytes(p), *n, "{p:?}");
        }
        assert_eq!(enc(b"x\xff"), "x\u{fffd}ff");
        assert_eq!(join("/a", b"b\x80"), "/a/b\u{fffd}80");
        assert_eq!(&*to_bytes("/a/b\u{fffd}80/c\u{fffd}\u{fffd}"), b"/a/b\x80/c\xef\xbf\xbd");
        assert_eq!(&*to_bytes("/a\u{fffd}zz"), "/a\u{fffd}zz".as_bytes(), "a typed U+FFFD is literal");
    }

    #[test]
    fn escape_control_characters() {
        assert_eq!(escape("/user.slice/app.scope"), "/user.slice/app.scope");
        assert!(matches!(escape("/a/café"), Cow::Borrowed(_)));
        assert_eq!(escape("/a/\x1b[2J\rINFO forged\n"), "/a/\\x1b[2J\\x0dINFO forged\\x0a");
        assert_eq!(escape("\x7f\u{85}\u{9b}x"), "\\x7f\\u{0085}\\u{009b}x");
        assert_eq!(escape("a\u{202e}b\u{2066}c\u{2028}"), "a\\u{202e}b\\u{2066}c\\u{2028}");
        assert_eq!(escape("t\tz\0"), "t\\x09z\\x00");
        // What push_name makes of raw bytes is printable as it is.
        assert_eq!(escape(&enc(b"n\xff\x1b")), "n\u{fffd}ff\\x1b");
    }
}
