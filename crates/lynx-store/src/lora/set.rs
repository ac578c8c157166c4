//! [`LoraSet`]: LoRA files with their strengths, keyed by the model tensor each term
//! changes; the deltas fused at load and the terms applied on the fly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::{DType, Device, Tensor};
use lynx_core::nn::LowRank;
use lynx_core::{Error, Result};

use super::file::{LoraFile, LowRankKeys};
use crate::Checkpoint;

/// Whether `module` names a tensor rather than a module (the DiT's modulation tables,
/// `scale_shift_table`): its `diff` changes it, not a `weight` under it.
fn is_table(module: &str) -> bool {
    module.rsplit('.').next() == Some("scale_shift_table")
}

/// One term of a set: what it adds to one model tensor.
#[derive(Debug, Clone)]
enum Term {
    /// `scale · up @ down`.
    LowRank {
        file: usize,
        keys: LowRankKeys,
        scale: f64,
    },
    /// `scale · tensor`, of the target's shape.
    Full {
        file: usize,
        key: String,
        scale: f64,
    },
}

impl Term {
    fn file(&self) -> usize {
        match self {
            Term::LowRank { file, .. } | Term::Full { file, .. } => *file,
        }
    }

    /// The stored key naming this term in messages.
    fn source(&self) -> &str {
        match self {
            Term::LowRank { keys, .. } => &keys.up,
            Term::Full { key, .. } => key,
        }
    }
}

/// LoRA files with their strengths, by the model tensor each term changes
/// (`blocks.0.attn1.to_q.weight`, `blocks.0.norm2.bias`, …).
#[derive(Debug, Clone, Default)]
pub struct LoraSet {
    files: Vec<(Arc<LoraFile>, f64)>,
    targets: BTreeMap<String, Vec<Term>>,
    skip_unmatched: bool,
}

impl LoraSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `file` at `strength` (1 is the file as trained).
    pub fn add(&mut self, file: Arc<LoraFile>, strength: f64) -> Result<()> {
        if !strength.is_finite() {
            return Err(Error::input(format!(
                "LoRA {}: strength {strength} is not a finite number",
                file.path().display()
            )));
        }
        let index = self.files.len();
        for (module, delta) in file.modules() {
            let mut push = |name: &str, term: Term| {
                // A modulation table is a tensor of its own, not a module's `weight`.
                let target = if name == "weight" && is_table(module) {
                    module.clone()
                } else {
                    format!("{module}.{name}")
                };
                self.targets.entry(target).or_default().push(term);
            };
            if let Some(keys) = &delta.low_rank {
                let scale = strength * keys.scale;
                let keys = keys.clone();
                push(
                    "weight",
                    Term::LowRank {
                        file: index,
                        keys,
                        scale,
                    },
                );
            }
            if let Some(key) = &delta.weight {
                push(
                    "weight",
                    Term::Full {
                        file: index,
                        key: key.clone(),
                        scale: strength,
                    },
                );
            }
            if let Some(key) = &delta.bias {
                push(
                    "bias",
                    Term::Full {
                        file: index,
                        key: key.clone(),
                        scale: strength,
                    },
                );
            }
        }
        self.files.push((file, strength));
        Ok(())
    }

    /// Opens every `(path, strength)` into one set.
    pub fn open(loras: &[(PathBuf, f64)]) -> Result<Self> {
        let mut set = Self::new();
        for (path, strength) in loras {
            set.add(Arc::new(LoraFile::open(path)?), *strength)?;
        }
        Ok(set)
    }

    /// This set with keys the model has no place for skipped instead of refused
    /// ([`LoraSet::check`] then returns them).
    pub fn skip_unmatched(mut self, skip: bool) -> Self {
        self.skip_unmatched = skip;
        self
    }

    /// Whether unmatched keys are skipped.
    pub fn skips_unmatched(&self) -> bool {
        self.skip_unmatched
    }

    /// The files and their strengths.
    pub fn files(&self) -> impl Iterator<Item = (&LoraFile, f64)> {
        self.files.iter().map(|(f, s)| (f.as_ref(), *s))
    }

    /// Whether the set changes nothing.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The model tensors the set changes.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.targets.keys().map(String::as_str)
    }

    /// Whether the set changes model tensor `key`.
    pub fn changes(&self, key: &str) -> bool {
        self.targets.contains_key(key)
    }

    /// The device bytes of the set's terms applied on the fly: low-rank factors
    /// (`rank · (out + in)` values) in `dtype`, whole-tensor deltas (`diff`, `diff_b`,
    /// `diff_m`) in f32. What [`LoraSet::low_rank`] and [`LoraSet::full_delta`] put on the
    /// device, held through every pass that applies them.
    pub fn on_the_fly_bytes(&self, dtype: DType) -> u64 {
        let terms = self.targets.values().flatten();
        terms
            .map(|term| match term {
                Term::LowRank { keys, .. } => {
                    let [d_out, d_in] = keys.dims;
                    (keys.rank * (d_out + d_in) * dtype.size()) as u64
                }
                Term::Full { file, key, .. } => {
                    let shape = self.files[*file].0.ckpt.shape(key).unwrap_or(&[]);
                    shape.iter().product::<usize>() as u64 * 4
                }
            })
            .sum()
    }

    /// Checks the set against the model checkpoint's keys and shapes. A delta of another
    /// shape than its tensor is an error naming the LoRA key and both shapes; keys for
    /// tensors the model lacks are an error listing them, or, when the set skips
    /// unmatched keys, dropped and returned (as stored in the LoRA files). A synthetic
    /// checkpoint has no keys: then only the loads check.
    pub fn check(&mut self, model: &Checkpoint) -> Result<Vec<String>> {
        if model.synthetic_std().is_some() {
            return Ok(Vec::new());
        }
        let mut unmatched = Vec::new();
        for (target, terms) in &self.targets {
            match model.shape(target) {
                Some(shape) => {
                    for term in terms {
                        self.check_term(target, term, shape)?;
                    }
                }
                None => unmatched.extend(terms.iter().map(|t| (t.file(), t.source().to_string()))),
            }
        }
        self.unmatched(unmatched, |t| model.contains(t))
    }

    /// Drops or refuses the terms of `unmatched` `(file, key)` pairs; `keep(target)`
    /// says which targets stay.
    fn unmatched(
        &mut self,
        unmatched: Vec<(usize, String)>,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        if unmatched.is_empty() {
            return Ok(Vec::new());
        }
        if !self.skip_unmatched {
            let (file, _) = &unmatched[0];
            let keys: Vec<&String> = unmatched
                .iter()
                .filter(|(f, _)| f == file)
                .map(|(_, k)| k)
                .collect();
            let shown: Vec<String> = keys.iter().take(8).map(|k| format!("`{k}`")).collect();
            return Err(Error::format(
                self.files[*file].0.path(),
                "LoRA for this model",
                format!(
                    "{} key(s) have no place in the model: {}{} (skip unmatched keys to load the rest)",
                    keys.len(),
                    shown.join(", "),
                    if keys.len() > 8 { ", …" } else { "" }
                ),
            ));
        }
        self.targets.retain(|t, _| keep(t.as_str()));
        Ok(unmatched.into_iter().map(|(_, k)| k).collect())
    }

    /// Checks that the terms for `target` fit its `shape`.
    pub fn check_shape(&self, target: &str, shape: &[usize]) -> Result<()> {
        for term in self.targets.get(target).into_iter().flatten() {
            self.check_term(target, term, shape)?;
        }
        Ok(())
    }

    fn check_term(&self, target: &str, term: &Term, shape: &[usize]) -> Result<()> {
        let file = &self.files[term.file()].0;
        let (what, delta) = match term {
            Term::LowRank { keys, .. } => (
                format!("`{}` (with `{}`)", keys.up, keys.down),
                keys.dims.to_vec(),
            ),
            Term::Full { key, .. } => (
                format!("`{key}`"),
                file.ckpt.shape(key).unwrap_or(&[]).to_vec(),
            ),
        };
        if delta != shape {
            return Err(Error::format(
                file.path(),
                "LoRA for this model",
                format!(
                    "{what} changes `{target}` by a {delta:?} delta, but the model's `{target}` is {shape:?}"
                ),
            ));
        }
        Ok(())
    }

    /// Keys of `targets` under `prefix` (`""`: all) that `read` does not hold: what a
    /// load left unread.
    pub(crate) fn unread(&self, prefix: &str, read: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let unmatched: Vec<(usize, String)> = self
            .targets
            .iter()
            .filter(|(t, _)| t.starts_with(prefix) && !read(t))
            .flat_map(|(_, terms)| terms.iter().map(|t| (t.file(), t.source().to_string())))
            .collect();
        if unmatched.is_empty() {
            return Ok(Vec::new());
        }
        let mut copy = self.clone();
        copy.unmatched(unmatched, |_| true)
    }

    /// The sum of every term for `target`, f32 on `device`, `None` when the set does not
    /// change it. Shapes are checked first.
    pub fn delta<const D: usize>(
        &self,
        target: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Option<Tensor<D>>> {
        self.sum(target, shape, device, true)
    }

    /// [`LoraSet::delta`] without the low-rank terms (`diff` and `diff_b` only): what
    /// is left to add when the low-rank terms run on the fly ([`LoraSet::low_rank`]).
    pub fn full_delta<const D: usize>(
        &self,
        target: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Option<Tensor<D>>> {
        self.sum(target, shape, device, false)
    }

    fn sum<const D: usize>(
        &self,
        target: &str,
        shape: [usize; D],
        device: &Device,
        low_rank: bool,
    ) -> Result<Option<Tensor<D>>> {
        self.check_shape(target, &shape)?;
        let mut total: Option<Tensor<D>> = None;
        for term in self.targets.get(target).into_iter().flatten() {
            let ckpt = &self.files[term.file()].0.ckpt;
            let part = match term {
                Term::LowRank { keys, scale, .. } if low_rank => {
                    let up = ckpt.tensor::<2>(&keys.up, device, DType::F32)?;
                    let down = ckpt.tensor::<2>(&keys.down, device, DType::F32)?;
                    (up.matmul(down) * *scale).reshape(shape)
                }
                Term::LowRank { .. } => continue,
                Term::Full { key, scale, .. } => {
                    ckpt.tensor::<D>(key, device, DType::F32)? * *scale
                }
            };
            total = Some(match total {
                Some(t) => t + part,
                None => part,
            });
        }
        Ok(total)
    }

    /// The low-rank terms for `target` (a linear layer's `weight`, `[out, in]` =
    /// `shape`), to apply on the fly, their factors in `dtype`.
    pub fn low_rank(
        &self,
        target: &str,
        shape: [usize; 2],
        device: &Device,
        dtype: DType,
    ) -> Result<Vec<LowRank>> {
        self.check_shape(target, &shape)?;
        let mut out = Vec::new();
        for term in self.targets.get(target).into_iter().flatten() {
            if let Term::LowRank { file, keys, scale } = term {
                let ckpt = &self.files[*file].0.ckpt;
                let down = ckpt.tensor::<2>(&keys.down, device, dtype)?;
                let up = ckpt.tensor::<2>(&keys.up, device, dtype)?;
                out.push(LowRank::new(down, up, *scale));
            }
        }
        Ok(out)
    }
}
