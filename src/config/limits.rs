//! Bounds on what a config may cost: the file is a regular file of at most
//! [`MAX_CONFIG_BYTES`], each regex at most [`MAX_PATTERN_BYTES`] long and
//! all of them within [`REGEX_BUDGET`] once compiled, and no error message
//! echoes more than [`ECHO_CHARS`] characters of the file or grows past
//! [`MAX_MESSAGE_BYTES`]. docs/security.md ("Files, signals and input
//! limits") gives the measured worst case.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::error::ConfigError;

/// The largest config file read (1 MiB; real configs are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The longest `match` pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// What all regexes of a config may take together: compiled size
/// (`size_limit`) plus lazy DFA cache (`dfa_size_limit`), 32 MiB. See
/// `regex_compat::compile_within`.
pub const REGEX_BUDGET: usize = 32 << 20;

/// The most one regex may take compiled (`size_limit`), and its lazy DFA's
/// cache at most (`dfa_size_limit`): 1 MiB each.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The most characters of a value from the file an error message repeats.
pub const ECHO_CHARS: usize = 100;

/// The longest error message (bytes; the parser's own may quote the file).
pub const MAX_MESSAGE_BYTES: usize = 500;

/// `text`, cut to [`ECHO_CHARS`] characters with "…" when longer: for
/// repeating a value from the file in a message.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        None => text.to_owned(),
        Some((i, _)) => format!("{}…", &text[..i]),
    }
}

/// `message`, cut to [`MAX_MESSAGE_BYTES`] (at a character boundary, with
/// "…") when longer.
pub fn cap(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// Read a config file: opened without blocking (a FIFO), refused at once
/// unless a regular file (symbolic links to one are fine), refused when
/// larger than [`MAX_CONFIG_BYTES`] (never reading more than one byte
/// past it: /dev/zero, a file that grows), UTF-8.
pub fn read_config(path: &Path) -> Result<String, ConfigError> {
    let file = path.display().to_string();
    let fail = |message: String| ConfigError::Read { file: file.clone(), source: io::Error::other(message) };
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    let meta = f.metadata().map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    let ty = meta.file_type();
    if !ty.is_file() {
        let what = if ty.is_dir() {
            "a directory"
        } else if ty.is_fifo() {
            "a FIFO"
        } else if ty.is_char_device() {
            "a character device"
        } else if ty.is_block_device() {
            "a block device"
        } else if ty.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(fail(format!("{what}: a config must be a regular file")));
    }
    let too_large = || fail(format!("larger than {MAX_CONFIG_BYTES} bytes (1 MiB), the limit for a config"));
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let text = &e.as_bytes()[..at];
        let line = text.iter().filter(|b| **b == b'\n').count() + 1;
        fail(format!("line {line}: not UTF-8 (byte {at})"))
    })
}
