//! LoRA files as users have them, and what they add to a model's weights.
//!
//! [`LoraFile::open`] reads a file's keys ([`keys`]: diffusers/PEFT `lora_A`/`lora_B`
//! with alpha from the header's `lora_adapter_metadata` ([`metadata`]), native Wan /
//! ComfyUI `lora_down`/`lora_up`/`.alpha`, `diff_b`, `diff`) and names every module in
//! the diffusers layout the models load. A [`LoraSet`] holds one or more files with
//! their strengths, keyed by the model tensor each term changes:
//!
//! ```text
//! weight += strength · (alpha / rank) · up @ down     rank = rows of down; no alpha: alpha/rank = 1
//! bias   += strength · diff_b
//! weight += strength · diff
//! ```
//!
//! (ComfyUI's `comfy/lora.py`; PEFT's `lora.Linear` gives the same with `lora_A` =
//! `down`, `lora_B` = `up`.) Several files add. Two ways to apply a set, with the same
//! numbers:
//! - fused at load: [`Checkpoint::set_loras`] — every read of a changed tensor through
//!   the [`Loader`](crate::Loader) adds the set's delta in f32 before the conversion to
//!   the run dtype, resident or streamed block by block;
//! - on the fly: [`LoraSet::low_rank`] and [`LoraSet::full_delta`] hand a model the
//!   terms to add per call (`lynx_core::nn::linear_with`), so LoRAs can change between
//!   requests without reloading the weights.
//!
//! A key the model has no place for is an error listing every such key
//! ([`LoraSet::check`]) unless the set skips unmatched keys; a delta of another shape
//! than the model's tensor (a LoRA for another model) is always an error naming the key
//! and both shapes.

pub mod keys;
pub mod metadata;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{DType, Device, Tensor};
use lynx_core::nn::LowRank;
use lynx_core::{Error, Result};

use crate::Checkpoint;
use keys::Part;

/// The low-rank part of one module's delta.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRankKeys {
    /// The `[r, in]` tensor's key (`lora_down` / `lora_A`).
    pub down: String,
    /// The `[out, r]` tensor's key (`lora_up` / `lora_B`).
    pub up: String,
    /// `r`.
    pub rank: usize,
    /// `[out, in]` of the delta.
    pub dims: [usize; 2],
    /// `alpha / r` (`alpha / √r` for rsLoRA; 1 without alpha).
    pub scale: f64,
}

/// Everything one file changes in one module (a diffusers module name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModuleDelta {
    /// `up @ down`, added to `weight`.
    pub low_rank: Option<LowRankKeys>,
    /// The key of a delta added to `bias`.
    pub bias: Option<String>,
    /// The key of a full-size delta added to `weight`.
    pub weight: Option<String>,
}

/// One LoRA file: its tensors (memory-mapped, read when applied) and, per module of
/// the model in diffusers names, what it changes.
#[derive(Debug)]
pub struct LoraFile {
    ckpt: Checkpoint,
    modules: BTreeMap<String, ModuleDelta>,
}

impl LoraFile {
    /// Opens and checks a LoRA file (`.safetensors`, or a PyTorch archive): every key
    /// must be a LoRA part ([`keys::parse_key`]), `down`/`up` come in pairs of matching
    /// rank, alphas are positive scalars. Nothing but the header and the alphas is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ckpt = Checkpoint::open(path)?;
        let config = if path.extension().is_some_and(|e| e == "safetensors") {
            match metadata::read_header_metadata(path)?.get("lora_adapter_metadata") {
                Some(json) => metadata::parse_adapter_config(json)
                    .map_err(|reason| Error::format(path, "LoRA", reason))?,
                None => metadata::AdapterConfig::default(),
            }
        } else {
            metadata::AdapterConfig::default()
        };
        let modules = parse_modules(&ckpt, &config)?;
        if modules.is_empty() {
            return Err(Error::format(path, "LoRA", "it holds no LoRA tensor"));
        }
        Ok(Self { ckpt, modules })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.ckpt.path()
    }

    /// What the file changes, by diffusers module name.
    pub fn modules(&self) -> &BTreeMap<String, ModuleDelta> {
        &self.modules
    }
}

/// Groups a file's keys by module and checks them.
fn parse_modules(
    ckpt: &Checkpoint,
    config: &metadata::AdapterConfig,
) -> Result<BTreeMap<String, ModuleDelta>> {
    let path = ckpt.path();
    let bad = |reason: String| Error::format(path, "LoRA", reason);
    let mut parts: BTreeMap<String, BTreeMap<Part, String>> = BTreeMap::new();
    let mut foreign = Vec::new();
    for key in ckpt.keys() {
        let Some((module, part)) = keys::parse_key(key) else {
            foreign.push(key.to_string());
            continue;
        };
        if let Some(other) = parts
            .entry(module.clone())
            .or_default()
            .insert(part, key.into())
        {
            return Err(bad(format!(
                "`{key}` and `{other}` are the same part of module `{module}`"
            )));
        }
    }
    if !foreign.is_empty() {
        let shown: Vec<String> = foreign.iter().take(8).map(|k| format!("`{k}`")).collect();
        return Err(bad(format!(
            "{} key(s) are no LoRA part (lora_A/lora_B, lora_down/lora_up, alpha, diff, diff_b): {}{}",
            foreign.len(),
            shown.join(", "),
            if foreign.len() > 8 { ", …" } else { "" }
        )));
    }
    let shape = |key: &str| ckpt.shape(key).unwrap_or(&[]).to_vec();
    let mut modules = BTreeMap::new();
    for (module, mut p) in parts {
        let mut delta = ModuleDelta {
            bias: p.remove(&Part::BiasDiff),
            weight: p.remove(&Part::WeightDiff),
            ..Default::default()
        };
        if let Some(key) = &delta.bias
            && shape(key).len() != 1
        {
            return Err(bad(format!(
                "bias delta `{key}` has shape {:?}, not one axis",
                shape(key)
            )));
        }
        let alpha = match p.remove(&Part::Alpha) {
            Some(key) => Some(read_alpha(ckpt, &key)?),
            None => config.alpha_for(&module),
        };
        match (p.remove(&Part::Down), p.remove(&Part::Up)) {
            (None, None) if alpha.is_some() && delta == ModuleDelta::default() => {
                return Err(bad(format!(
                    "module `{module}` has an alpha and no lora_down/lora_up"
                )));
            }
            (None, None) => {}
            (Some(down), Some(up)) => {
                let (ds, us) = (shape(&down), shape(&up));
                let (&[r, d_in], &[d_out, r2]) = (ds.as_slice(), us.as_slice()) else {
                    return Err(bad(format!(
                        "`{down}` is {ds:?} and `{up}` is {us:?}; expected [rank, in] and [out, rank]"
                    )));
                };
                if r != r2 || r == 0 {
                    return Err(bad(format!(
                        "`{down}` is {ds:?} and `{up}` is {us:?}: their ranks differ"
                    )));
                }
                let scale = match alpha {
                    None => 1.0,
                    Some(a) if config.rslora => a / (r as f64).sqrt(),
                    Some(a) => a / r as f64,
                };
                delta.low_rank = Some(LowRankKeys {
                    down,
                    up,
                    rank: r,
                    dims: [d_out, d_in],
                    scale,
                });
            }
            (Some(one), None) | (None, Some(one)) => {
                return Err(bad(format!("`{one}` has no matching lora_up/lora_down")));
            }
        }
        modules.insert(module, delta);
    }
    Ok(modules)
}

/// A module's `.alpha`: a positive finite scalar.
fn read_alpha(ckpt: &Checkpoint, key: &str) -> Result<f64> {
    let shape = ckpt.shape(key).unwrap_or(&[]);
    if shape.iter().product::<usize>() != 1 || shape.len() > 1 {
        return Err(Error::format(
            ckpt.path(),
            "LoRA",
            format!("alpha `{key}` has shape {shape:?}, not a scalar"),
        ));
    }
    let value = ckpt.read_f32(key)?[0] as f64;
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::format(
            ckpt.path(),
            "LoRA",
            format!("alpha `{key}` is {value}, not a positive number"),
        ));
    }
    Ok(value)
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
                self.targets
                    .entry(format!("{module}.{name}"))
                    .or_default()
                    .push(term);
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
