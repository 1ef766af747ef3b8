//! `xvs import-keepalived`: a keepalived.conf (with its `include` files) converted to xvs TOML.
//!
//! Operators moving from IPVS and keepalived bring a configuration they trust; this carries over
//! everything xvs has a counterpart for (VRRP instances, sync groups and scripts, virtual servers,
//! real servers and their checkers) and names, with file and line, every option it cannot carry:
//! nothing is dropped silently. The TOML it writes is checked with [`crate::config::parse`] before
//! it is handed back, so a conversion that xvs itself would refuse is reported as such.

mod convert;
mod glob;
pub mod parse;

use std::fmt;
use std::path::Path;

/// Where a keyword was read: an index into the list of files read, and a 1-based line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub file: usize,
    pub line: usize,
    /// Lines read before this one, across every file: with includes spliced in, the order in
    /// which keepalived reads the configuration, so that warnings can be listed in that order.
    pub seq: usize,
}

/// An option that was not carried over, or was carried over with a change worth reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// `file:line`, filled in once the file names are known.
    pub at: String,
    loc: Loc,
    /// The keepalived keyword concerned.
    pub option: String,
    pub message: String,
}

impl Warning {
    fn new(loc: Loc, option: impl Into<String>, message: impl Into<String>) -> Warning {
        Warning {
            at: String::new(),
            loc,
            option: option.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.option, self.message)
    }
}

/// Why nothing could be converted.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file (the one named or an included one) could not be read.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// keepalived.conf syntax that cannot be parsed: an unclosed block or quote, a stray brace.
    #[error("{at}: {reason}")]
    Syntax { at: String, reason: String },
}

/// The converted configuration.
#[derive(Debug)]
pub struct Conversion {
    /// xvs TOML, with comments where the operator has something to check.
    pub toml: String,
    pub warnings: Vec<Warning>,
    /// What `xvs check` says about `toml` when it refuses it (empty when accepted).
    pub refused: Vec<crate::config::ConfigError>,
}

/// Converts the keepalived.conf at `path` and the files it includes.
pub fn convert_file(path: &Path) -> Result<Conversion, ImportError> {
    let mut src = parse::Sources::default();
    let mut warns = Vec::new();
    let nodes = parse::parse_file(path, &mut src, &mut warns)?;
    Ok(finish(&nodes, &path.display().to_string(), src, warns))
}

/// Converts keepalived.conf text read from `name`; `include`s are resolved against `base`.
pub fn convert_str(text: &str, name: &str, base: Option<&Path>) -> Result<Conversion, ImportError> {
    let mut src = parse::Sources::default();
    let mut warns = Vec::new();
    let nodes = parse::parse_str(text, name, base, &mut src, &mut warns)?;
    Ok(finish(&nodes, name, src, warns))
}

fn finish(nodes: &[parse::Node], name: &str, src: parse::Sources, mut warns: Vec<Warning>) -> Conversion {
    let toml = convert::convert(nodes, name, &mut warns);
    warns.sort_by_key(|w| w.loc.seq);
    for w in &mut warns {
        w.at = format!(
            "{}:{}",
            src.files.get(w.loc.file).map_or("?", |s| s.as_str()),
            w.loc.line
        );
    }
    let refused = match crate::config::parse(&toml, "converted TOML") {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    };
    Conversion {
        toml,
        warnings: warns,
        refused,
    }
}
