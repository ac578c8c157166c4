//! Lynx's adapters for the Wan2.1 DiT of [`lynx_dit`], loaded from the released adapter
//! folders and turned into the per-block extra key/value sets
//! ([`lynx_dit::BlockExtras`]) the DiT's attention takes.
//!
//! | module | mirrors (bytedance/lynx) |
//! |---|---|
//! | [`resampler`] | `modules/common/resampler.py` (`Resampler`, `PerceiverAttention`, `FeedForward`) |
//! | [`id`] | `modules/full/attention_processor.py` `WanIPAttnProcessor` (+ `registers`); `modules/lite/attention_processor.py` `IPAWanAttnProcessor2_0` |
//! | [`reference`](mod@reference) | `modules/full/attention_processor.py` `WanRefAttnProcessor` |
//!
//! Two released variants, told apart by the folder ([`Variant::detect`]):
//!
//! | variant | folder | adapters | guidance |
//! |---|---|---|---|
//! | [`Variant::Full`] | `lynx_full/`: `resampler`, `ip_layers` (biases, registers), `ref_layers` | ID on every block + Ref | text + identity, 3 DiT passes |
//! | [`Variant::Lite`] | `lynx_lite/`: `resampler` (out 2048), `ip_layers` (every 2nd block) | ID | plain CFG, 2 passes |
//!
//! [`LynxAdapters`] hides which one is loaded: the pipeline asks it whether it needs the
//! reference image and hands it the face embedding (and, for full, the reference pass'
//! features); it answers with the conditional and unconditional per-block inputs.
//!
//! The adapters' K/V depend only on the face (ID tokens) and the reference features, not
//! on the noisy latents or the timestep, so they are computed once per condition and
//! reused at every denoising step.
//!
//! # Shapes (released model / tiny fixture)
//! - face embedding `[B, 1, 512]` → ID tokens `[B, 16, C]` (Resampler: depth 4,
//!   width 1280, 20 heads × 64; `C` 5120 full, 2048 lite).
//! - ID K/V per block: `[B, 16 + R, dim]` (`R` registers, full only).
//! - reference features per block `[B, M, dim]` → Ref K/V `[B, M, dim]`.
//!
//! ```no_run
//! # use burn::tensor::{DType, Device, Tensor};
//! # fn demo(device: &Device, face: Tensor<3>, ref_latents: Tensor<5>, ref_text: Tensor<3>,
//! #         x: Tensor<5>, t: Tensor<1>, text: Tensor<3>) -> lynx_core::Result<()> {
//! use lynx_adapters::{LynxAdapters, ResamplerConfig};
//! let dit = lynx_dit::WanTransformer::from_pretrained("Wan/transformer", device, DType::BF16)?;
//! let lynx = LynxAdapters::from_dir("lynx_full", &dit, ResamplerConfig::LYNX_DIM_HEAD, device, DType::BF16)?;
//! // once per video
//! let features = dit.reference_features(ref_latents.clone(), ref_text.clone())?;
//! let uncond_features = dit.reference_features(ref_latents.zeros_like(), ref_text)?;
//! let c = lynx.conditions(face, 1.0, Some((&features, &uncond_features)), 1.0)?;
//! // every step
//! let flow = dit.forward(x, t, text, &c.cond)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod id;
pub mod reference;
pub mod resampler;

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor};
use lynx_core::{Error, Result};
use lynx_dit::{BlockExtras, ExtraKv, WanTransformer};
use lynx_store::Checkpoint;

pub use id::{IdAdapter, IpAttn, IpLayout, lite_interval};
pub use reference::{RefAdapter, RefAttn};
pub use resampler::{Resampler, ResamplerConfig};

/// The released Lynx variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `lynx_full/`: ID-adapter on every block + Ref-adapter; text and identity guidance.
    Full,
    /// `lynx_lite/`: ID-adapter on every 2nd block; plain classifier-free guidance.
    Lite,
}

impl Variant {
    /// Tells the variant from an adapter folder: `ref_layers.safetensors` present → full;
    /// `ip_layers.safetensors` without biases and registers → lite. Anything else is an
    /// error listing what the folder holds.
    pub fn detect(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: "expected a Lynx adapter folder (lynx_full/ or lynx_lite/)".into(),
            });
        }
        let has = |name: &str| dir.join(name).is_file();
        if has("resampler.safetensors") && has("ip_layers.safetensors") {
            if has("ref_layers.safetensors") {
                return Ok(Variant::Full);
            }
            let ip = Checkpoint::open(dir.join("ip_layers.safetensors"))?;
            let full_keys = ip
                .keys()
                .any(|k| k.ends_with(".registers") || k.ends_with(".to_k_ip.bias"));
            if !full_keys {
                return Ok(Variant::Lite);
            }
            return Err(Error::MissingFile {
                path: dir.join("ref_layers.safetensors"),
                hint: format!(
                    "{} has full-Lynx IP layers (with biases and registers) but no Ref-adapter; \
                     a lynx_full/ folder holds resampler.safetensors, ip_layers.safetensors \
                     and ref_layers.safetensors",
                    dir.display()
                ),
            });
        }
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        found.sort();
        Err(Error::format(
            dir,
            "Lynx adapter folder",
            format!(
                "it is neither lynx_full/ (resampler, ip_layers and ref_layers .safetensors) \
                 nor lynx_lite/ (resampler and ip_layers .safetensors); it holds: {}",
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join(", ")
                }
            ),
        ))
    }

    /// The variant's name as the release calls it.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Full => "Lynx",
            Variant::Lite => "Lynx-lite",
        }
    }
}

/// The per-block adapter inputs of one video: the conditional branch (the face) and the
/// unconditional one (an all-zero embedding and, for full, the mid-grey reference).
/// Lynx's identity branch pairs the negative prompt with `cond`.
#[derive(Debug, Clone)]
pub struct Conditions {
    /// With the subject.
    pub cond: Vec<BlockExtras>,
    /// Without it.
    pub uncond: Vec<BlockExtras>,
}

/// Features of the reference pass per block, for the conditional and the unconditional
/// reference image: `(cond, uncond)`.
pub type RefFeatures<'a> = (&'a [Tensor<3>], &'a [Tensor<3>]);

#[derive(Debug)]
enum Layout {
    Full {
        id: IdAdapter,
        reference: Box<RefAdapter>,
    },
    Lite {
        id: IdAdapter,
    },
}

/// The adapters of one released Lynx variant, loaded for a DiT.
#[derive(Debug)]
pub struct LynxAdapters {
    layout: Layout,
}

impl LynxAdapters {
    /// Loads an adapter folder for `dit`, detecting the variant ([`Variant::detect`]).
    /// `dim_head` is the resampler's head width, which its file does not record
    /// ([`ResamplerConfig::LYNX_DIM_HEAD`] for both releases).
    pub fn from_dir(
        dir: impl AsRef<Path>,
        dit: &WanTransformer,
        dim_head: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::from_dir_with(dir, dit, dim_head, device, dtype, false)
    }

    /// [`LynxAdapters::from_dir`], with the per-block layers (IP and Ref) left in their
    /// memory-mapped files when `streamed`: checked now, and read one at a time when
    /// [`LynxAdapters::conditions`] computes the blocks' K/V. Only the resampler is
    /// loaded onto the device.
    pub fn from_dir_with(
        dir: impl AsRef<Path>,
        dit: &WanTransformer,
        dim_head: usize,
        device: &Device,
        dtype: DType,
        streamed: bool,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let id =
            |layout| IdAdapter::from_dir_with(dir, dit, layout, dim_head, device, dtype, streamed);
        let layout = match Variant::detect(dir)? {
            Variant::Full => Layout::Full {
                id: id(IpLayout::Full)?,
                reference: Box::new(RefAdapter::from_dir_with(
                    dir, dit, device, dtype, streamed,
                )?),
            },
            Variant::Lite => Layout::Lite {
                id: id(IpLayout::Lite)?,
            },
        };
        Ok(Self { layout })
    }

    /// Which release is loaded.
    pub fn variant(&self) -> Variant {
        match self.layout {
            Layout::Full { .. } => Variant::Full,
            Layout::Lite { .. } => Variant::Lite,
        }
    }

    /// The ID-adapter.
    pub fn id(&self) -> &IdAdapter {
        match &self.layout {
            Layout::Full { id, .. } | Layout::Lite { id } => id,
        }
    }

    /// The Ref-adapter (full only).
    pub fn reference(&self) -> Option<&RefAdapter> {
        match &self.layout {
            Layout::Full { reference, .. } => Some(reference),
            Layout::Lite { .. } => None,
        }
    }

    /// Whether [`LynxAdapters::conditions`] needs the reference pass' features (of the
    /// aligned 256×256 face), i.e. the variant has a Ref-adapter.
    pub fn uses_reference(&self) -> bool {
        self.reference().is_some()
    }

    /// Width of the face embedding the resampler takes (ArcFace: 512).
    pub fn embedding_dim(&self) -> usize {
        self.id().resampler().config().embedding_dim
    }

    /// The per-block inputs for one face: `face` is the embedding `[1, 1, E]` (or
    /// `[B, 1, E]`); the unconditional branch uses an all-zero embedding. `reference`
    /// holds the reference pass' features for the face and for the mid-grey image; the
    /// full variant needs them, the lite one takes none.
    ///
    /// # Shapes
    /// - `face` `[B, n, E]`; reference features per block `[B, M, dim]`.
    pub fn conditions(
        &self,
        face: Tensor<3>,
        ip_scale: f64,
        reference: Option<RefFeatures<'_>>,
        ref_scale: f64,
    ) -> Result<Conditions> {
        let (features_c, features_u) = match (reference, self.uses_reference()) {
            (Some((c, u)), true) => (Some(c), Some(u)),
            (None, false) => (None, None),
            (None, true) => {
                return Err(Error::input(
                    "Lynx (full) needs the reference pass' features of the aligned face",
                ));
            }
            (Some(_), false) => {
                return Err(Error::input(
                    "Lynx-lite has no Ref-adapter: it takes no reference features",
                ));
            }
        };
        let id = self.id();
        let tokens = id.tokens(face.clone())?;
        let tokens_u = id.tokens(face.zeros_like())?;
        // Both conditions per layer: streamed layers are read once.
        let mut id_kv = id
            .block_kv_many(&[&tokens, &tokens_u], ip_scale)?
            .into_iter();
        let mut ref_kv = match (self.reference(), features_c, features_u) {
            (Some(adapter), Some(c), Some(u)) => {
                Some(adapter.block_kv_many(&[c, u], ref_scale)?.into_iter())
            }
            _ => None,
        };
        let mut next = || {
            let ref_next = ref_kv.as_mut().and_then(Iterator::next);
            block_extras(id_kv.next(), ref_next)
        };
        Ok(Conditions {
            cond: next()?,
            uncond: next()?,
        })
    }

    /// The DiT's per-block inputs for one condition: ID tokens `[B, Q, C]` (from
    /// [`IdAdapter::tokens`]) at `ip_scale` and/or the reference pass' features at
    /// `ref_scale`. Either left out means that adapter does not take part; features for
    /// a variant without a Ref-adapter are an error.
    ///
    /// # Shapes
    /// - `id_tokens` `[B, Q, C]`; `ref_features` per block `[B, M, dim]`.
    pub fn extras(
        &self,
        id_tokens: Option<&Tensor<3>>,
        ip_scale: f64,
        ref_features: Option<&[Tensor<3>]>,
        ref_scale: f64,
    ) -> Result<Vec<BlockExtras>> {
        let id = match id_tokens {
            Some(tokens) => Some(self.id().block_kv(tokens, ip_scale)?),
            None => None,
        };
        let reference = match (ref_features, self.reference()) {
            (Some(features), Some(adapter)) => Some(adapter.block_kv(features, ref_scale)?),
            (Some(_), None) => {
                return Err(Error::input(
                    "reference features given but no Ref-adapter loaded (Lynx-lite has none)",
                ));
            }
            (None, _) => None,
        };
        block_extras(id, reference)
    }
}

/// Combines the adapters' per-block K/V (one entry per DiT block, `None` where an
/// adapter skips the block) into the DiT's per-block inputs: ID K/V go to
/// cross-attention, Ref K/V to self-attention. With neither, the result is empty (the
/// plain DiT).
pub fn block_extras(
    id: Option<Vec<Option<ExtraKv>>>,
    reference: Option<Vec<Option<ExtraKv>>>,
) -> Result<Vec<BlockExtras>> {
    let n = match (&id, &reference) {
        (Some(a), Some(b)) if a.len() != b.len() => {
            return Err(Error::input(format!(
                "ID K/V for {} blocks but Ref K/V for {}",
                a.len(),
                b.len()
            )));
        }
        (Some(a), _) => a.len(),
        (None, Some(b)) => b.len(),
        (None, None) => 0,
    };
    let mut id = id.map(Vec::into_iter);
    let mut reference = reference.map(Vec::into_iter);
    Ok((0..n)
        .map(|_| BlockExtras {
            self_attn: reference.as_mut().and_then(Iterator::next).flatten(),
            cross_attn: id.as_mut().and_then(Iterator::next).flatten(),
        })
        .collect())
}

/// `dir/name`, or an error naming the missing adapter file.
fn adapter_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingFile {
            path,
            hint: "a lynx_full/ folder holds resampler.safetensors, ip_layers.safetensors \
                   and ref_layers.safetensors; a lynx_lite/ folder the first two"
                .into(),
        })
    }
}
