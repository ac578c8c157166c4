//! [`LoraFile`]: one LoRA file's keys, checked and named by the diffusers module each
//! changes.

use std::collections::BTreeMap;
use std::path::Path;

use lynx_core::{Error, Result};

use super::keys::{self, Part};
use super::metadata;
use crate::Checkpoint;

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
    pub(crate) ckpt: Checkpoint,
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
        let modules = parse_modules(&ckpt, &config, |key| read_alpha(&ckpt, key))?;
        if modules.is_empty() {
            return Err(Error::format(path, "LoRA", "it holds no LoRA tensor"));
        }
        Ok(Self { ckpt, modules })
    }

    /// A LoRA file's layout without the file: its keys and shapes as a header would list
    /// them (`shapes`), and the value of each `.alpha` key (`alphas`; the only values
    /// [`LoraFile::open`] reads). Checked and named as [`LoraFile::open`] does, reading
    /// nothing: a [`crate::lora::LoraSet`] holding it can be [checked](crate::lora::LoraSet::check)
    /// against a model's keys and shapes (e.g. a [recording](Checkpoint::recording)
    /// checkpoint's), at any size in no memory, but not applied (its tensors have no
    /// data). `name` stands for the path in messages.
    pub fn layout(
        name: &str,
        shapes: BTreeMap<String, Vec<usize>>,
        alphas: &BTreeMap<String, f64>,
    ) -> Result<Self> {
        let mut ckpt = Checkpoint::recording(shapes);
        ckpt.path = name.into();
        let alpha = |key: &str| {
            check_scalar(&ckpt, key)?;
            check_alpha(&ckpt, key, alphas.get(key).copied().unwrap_or(f64::NAN))
        };
        let modules = parse_modules(&ckpt, &metadata::AdapterConfig::default(), alpha)?;
        if modules.is_empty() {
            return Err(Error::format(name, "LoRA", "it holds no LoRA tensor"));
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
    read_alpha: impl Fn(&str) -> Result<f64>,
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
            Some(key) => Some(read_alpha(&key)?),
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
    check_scalar(ckpt, key)?;
    check_alpha(ckpt, key, ckpt.read_f32(key)?[0] as f64)
}

/// Alpha `key` is one value.
fn check_scalar(ckpt: &Checkpoint, key: &str) -> Result<()> {
    let shape = ckpt.shape(key).unwrap_or(&[]);
    if shape.iter().product::<usize>() != 1 || shape.len() > 1 {
        return Err(Error::format(
            ckpt.path(),
            "LoRA",
            format!("alpha `{key}` has shape {shape:?}, not a scalar"),
        ));
    }
    Ok(())
}

/// `value` of alpha `key` when it is a positive finite number.
fn check_alpha(ckpt: &Checkpoint, key: &str, value: f64) -> Result<f64> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::format(
            ckpt.path(),
            "LoRA",
            format!("alpha `{key}` is {value}, not a positive number"),
        ));
    }
    Ok(value)
}
