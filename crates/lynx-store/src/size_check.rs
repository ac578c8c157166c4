//! [`SizeCheck`]: a config's sizes against the checkpoint it describes.

use std::path::Path;

use lynx_core::{Error, Result};

use crate::Loader;

/// Sizes a config declares, checked against the headers of the checkpoint they describe
/// before any layer is built. A corrupt config, or one of another model, would otherwise
/// have layers of its sizes allocated (norm weights, tables) and looped over first — a
/// `num_layers` of 10¹² is a hang, a width of 10¹² an out-of-memory abort — before the
/// load could report the mismatch. Tensors absent from the checkpoint are skipped here
/// (the load reports them), and so is a checkpoint with no tensors at all
/// ([`crate::Checkpoint::synthetic`]).
pub struct SizeCheck<'a> {
    config: &'a Path,
    w: &'a Loader<'a>,
    problems: Vec<String>,
}

impl std::fmt::Debug for SizeCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SizeCheck")
            .field("config", &self.config)
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

impl<'a> SizeCheck<'a> {
    /// Checks for the config at `config` against the tensors under `w`.
    pub fn new(config: &'a Path, w: &'a Loader<'a>) -> Self {
        Self {
            config,
            w,
            problems: Vec::new(),
        }
    }

    fn active(&self) -> bool {
        !self.w.checkpoint().is_empty()
    }

    /// `field` = `value` must be axis `axis` of the tensor `key` (under the loader).
    pub fn dim(mut self, field: &str, value: usize, key: &str, axis: usize) -> Self {
        if !self.active() {
            return self;
        }
        if let Some(shape) = self.w.shape(key)
            && shape.get(axis) != Some(&value)
        {
            self.problems.push(format!(
                "`{field}` = {value}, but `{}` has shape {shape:?}",
                self.w.key(key)
            ));
        }
        self
    }

    /// `field` = `value` must be the number of sub-modules `prefix.0`, `prefix.1`, …
    /// (numbered from 0, without gaps).
    pub fn count(mut self, field: &str, value: usize, prefix: &str) -> Self {
        if !self.active() {
            return self;
        }
        let root = format!("{}.", self.w.key(prefix));
        let mut seen = std::collections::BTreeSet::new();
        for key in self.w.checkpoint().keys() {
            if let Some(n) = key
                .strip_prefix(&root)
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<usize>().ok())
            {
                seen.insert(n);
            }
        }
        let found = seen.len();
        if found != value || seen.last().is_some_and(|&last| last + 1 != found) {
            self.problems.push(format!(
                "`{field}` = {value}, but the checkpoint holds {found} `{}N` sub-modules",
                root
            ));
        }
        self
    }

    /// The mismatches found, as one [`Error::Config`].
    pub fn finish(self) -> Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(Error::config(
            self.config,
            format!(
                "{}: the config and the weights ({}) are of different models",
                self.problems.join("; "),
                self.w.checkpoint().path().display()
            ),
        ))
    }
}
