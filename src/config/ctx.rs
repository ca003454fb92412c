//! Where an error is: the file, and a value's line and column in it; and
//! the checks that `rules` and `gateway` entries share.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::limits::{cap, clip};
use super::target::{Target, Tproxy};

pub struct Ctx<'a> {
    pub file: &'a str,
}

impl Ctx<'_> {
    pub fn at<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            message: cap(message.into()),
        }
    }

    pub fn top(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { file: self.file.to_owned(), line: 1, column: 1, message: cap(message.into()) }
    }
}

/// The one-target check shared by `rules` and `gateway`: `what` names the
/// entry in messages; an unknown tproxy is reported at its own position.
/// `reject` is None where the entry has no such target (`gateway`).
pub fn one_target(
    ctx: &Ctx,
    what: &str,
    direct: bool,
    drop: bool,
    reject: Option<bool>,
    tproxy: Option<&Spanned<String>>,
    tproxies: &BTreeMap<String, Tproxy>,
) -> Result<Result<Target, String>, ConfigError> {
    let mut targets = Vec::new();
    if direct {
        targets.push(Target::Direct);
    }
    if drop {
        targets.push(Target::Drop);
    }
    if reject == Some(true) {
        targets.push(Target::Reject);
    }
    if let Some(name) = tproxy {
        if !tproxies.contains_key(&name.value) {
            let known: Vec<&str> = tproxies.keys().map(String::as_str).collect();
            return Err(ctx.at(
                name,
                format!(
                    "{what}: tproxy {:?} is not defined in `tproxies` (defined: {})",
                    clip(&name.value),
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            ));
        }
        targets.push(Target::Tproxy(name.value.clone()));
    }
    let choices = if reject.is_some() {
        "`direct: true`, `drop: true`, `reject: true`, `tproxy: NAME`"
    } else {
        "`direct: true`, `drop: true`, `tproxy: NAME`"
    };
    Ok(match targets.len() {
        1 => Ok(targets.remove(0)),
        0 => Err(format!("no target: set exactly one of {choices}")),
        _ => {
            let names: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
            Err(format!("{} targets ({}): set exactly one of {choices}", targets.len(), names.join(", ")))
        }
    })
}
