//! Lynx's ID-adapter: the Resampler's ID tokens projected per block by
//! `to_k_ip`/`to_v_ip` and attended from the block's cross-attention queries with weight
//! `ip_scale`. Two released layouts of `ip_layers.safetensors`:
//!
//! | | Lynx full (`modules/full/attention_processor.py`, `WanIPAttnProcessor`) | Lynx-lite (`modules/lite/attention_processor.py`, `IPAWanAttnProcessor2_0`) |
//! |---|---|---|
//! | layer `N` sits on | block `N`, every block | block `N · interval` (`interval` = 2 for the 40-block model) |
//! | keys | `N.to_k_ip.{weight,bias}`, `N.to_v_ip.{weight,bias}`, `N.registers [1, R, C]` | `N.to_k_ip.weight`, `N.to_v_ip.weight` |
//! | tokens | ID tokens ‖ registers | ID tokens |
//! | IP keys normalised by | the block's `norm_k` | a parameter-free RMS norm, eps 1e-5 (`norm_rms_k`) |
//!
//! `to_k_ip`/`to_v_ip` are `Linear(C → dim)`; `C` (the Resampler's output width: 5120 for
//! full, 2048 for lite) comes from the file.
//!
//! # Shapes
//! - ID tokens: `[B, Q, C]`; `registers`: `[1, R, C]`.
//! - per-block K/V: `[B, Q + R, dim]` (full) or `[B, Q, dim]` (lite).

use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor};
use lynx_core::nn::Linear;
use lynx_core::nn::{RmsNorm, linear};
use lynx_core::{Error, Result};
use lynx_dit::{ExtraKv, WanTransformer};
use lynx_store::for_each_layer;
use lynx_store::{Checkpoint, LayerStream, Loader};

use crate::resampler::Resampler;

/// Epsilon of Lynx-lite's parameter-free RMS norm of the IP keys.
pub const LITE_KEY_NORM_EPS: f64 = 1e-5;

/// Which release an `ip_layers.safetensors` comes from (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpLayout {
    /// One layer per block, with biases and registers; keys through the block's `norm_k`.
    Full,
    /// One layer on every `interval`-th block, no biases or registers; keys through a
    /// parameter-free RMS norm.
    Lite,
}

/// `blocks.N.attn2.processor` of the ID-adapter.
#[derive(Module, Debug)]
pub struct IpAttn {
    to_k_ip: Linear,
    to_v_ip: Linear,
    /// `[1, R, C]`: tokens appended to every sample's ID tokens (full only).
    registers: Option<Param<Tensor<3>>>,
    /// Lynx-lite's normalisation of the IP keys (full: the block's `norm_k` instead).
    norm_rms_k: Option<RmsNorm>,
}

impl IpAttn {
    /// Loads layer `N` of `ip_layers.safetensors` for tokens of width `token_dim` and
    /// blocks of width `dim`.
    pub fn load(w: &Loader, layout: IpLayout, token_dim: usize, dim: usize) -> Self {
        let full = layout == IpLayout::Full;
        let registers = match w.dims::<3>("registers") {
            Some([_, r, _]) if full => Some(w.param("registers", [1, r, token_dim])),
            _ if full && w.has("registers") => Some(w.param("registers", [1, 0, token_dim])),
            _ => None,
        };
        Self {
            to_k_ip: w.sub("to_k_ip").linear(token_dim, dim, full),
            to_v_ip: w.sub("to_v_ip").linear(token_dim, dim, full),
            registers,
            norm_rms_k: (!full).then(|| RmsNorm::plain(dim, LITE_KEY_NORM_EPS, w.device())),
        }
    }

    /// Input width `C` of `to_k_ip`.
    pub fn token_dim(&self) -> usize {
        self.to_k_ip.d_in()
    }

    /// The block's extra cross-attention K/V for ID tokens `[B, Q, C]`.
    ///
    /// # Shapes
    /// - `tokens` `[B, Q, C]` → K/V `[B, Q + R, dim]`.
    pub fn extra_kv(&self, tokens: Tensor<3>, scale: f64) -> ExtraKv {
        let b = tokens.dims()[0];
        let tokens = match &self.registers {
            Some(r) => Tensor::cat(vec![tokens, r.val().repeat_dim(0, b)], 1),
            None => tokens,
        };
        let key = linear(&self.to_k_ip, tokens.clone());
        let value = linear(&self.to_v_ip, tokens);
        match &self.norm_rms_k {
            None => ExtraKv::new(key, value, scale),
            Some(norm) => ExtraKv::normalized(norm.forward(key), value, scale),
        }
    }
}

/// The ID-adapter: resampler (`resampler.safetensors`) and IP attention layers
/// (`ip_layers.safetensors`) placed on the DiT's blocks.
#[derive(Module, Debug)]
pub struct IdAdapter {
    resampler: Resampler,
    /// The IP layers, when resident.
    layers: Vec<IpAttn>,
    /// The IP layers, when read one at a time from `ip_layers.safetensors`.
    #[module(skip)]
    stream: Option<LayerStream<IpAttn>>,
    /// The DiT block each layer sits on.
    #[module(skip)]
    blocks: Vec<usize>,
    /// Blocks of the DiT the adapter was loaded for.
    #[module(skip)]
    num_blocks: usize,
    #[module(skip)]
    layout: IpLayout,
}

impl IdAdapter {
    /// Loads `resampler.safetensors` and `ip_layers.safetensors` from an adapter folder
    /// in `layout`, for `dit` (its width and block count are checked against the files).
    /// `dim_head` is the resampler's head width
    /// ([`crate::ResamplerConfig::LYNX_DIM_HEAD`] for the released models).
    pub fn from_dir(
        dir: impl AsRef<Path>,
        dit: &WanTransformer,
        layout: IpLayout,
        dim_head: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::from_dir_with(dir, dit, layout, dim_head, device, dtype, false)
    }

    /// [`IdAdapter::from_dir`], with the IP layers left in their memory-mapped file when
    /// `streamed` (checked now, each read in its turn by [`IdAdapter::block_kv_many`]).
    #[allow(clippy::too_many_arguments)]
    pub fn from_dir_with(
        dir: impl AsRef<Path>,
        dit: &WanTransformer,
        layout: IpLayout,
        dim_head: usize,
        device: &Device,
        dtype: DType,
        streamed: bool,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        Self::open(
            crate::adapter_file(dir, "resampler.safetensors")?,
            crate::adapter_file(dir, "ip_layers.safetensors")?,
            (dit.dim(), dit.num_layers()),
            layout,
            dim_head,
            (device, dtype),
            streamed,
        )
    }

    /// [`IdAdapter::from_dir`] with the two files named.
    pub fn from_files(
        resampler: impl AsRef<Path>,
        ip_layers: impl AsRef<Path>,
        dit: &WanTransformer,
        layout: IpLayout,
        dim_head: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let dims = (dit.dim(), dit.num_layers());
        Self::open(
            resampler,
            ip_layers,
            dims,
            layout,
            dim_head,
            (device, dtype),
            false,
        )
    }

    /// Loads the resampler and the IP layers (or checks them and leaves them in their
    /// file, `streamed`) for a DiT of `(dim, num_blocks)`.
    fn open(
        resampler: impl AsRef<Path>,
        ip_layers: impl AsRef<Path>,
        (dim, num_blocks): (usize, usize),
        layout: IpLayout,
        dim_head: usize,
        (device, dtype): (&Device, DType),
        streamed: bool,
    ) -> Result<Self> {
        let resampler = Resampler::from_file(resampler, dim_head, device, dtype)?;
        let token_dim = resampler.config().output_dim;
        let path = ip_layers.as_ref();
        let ckpt = Arc::new(Checkpoint::open(path)?);
        let (layers, stream, blocks, file_dim) = ckpt.build(device, dtype, |w| {
            let blocks = layer_blocks(w.checkpoint(), layout, num_blocks)?;
            // The tokens' width as the file has it; checked against the resampler's below,
            // after the blocks' width and count (reported by key).
            let file_dim = w
                .dims::<2>("0.to_k_ip.weight")
                .map_or(token_dim, |[_, c]| c);
            let layer = move |l: &Loader<'_>| IpAttn::load(l, layout, file_dim, dim);
            if !streamed {
                let layers = (0..blocks.len()).map(|k| layer(&w.sub(k))).collect();
                return Ok((layers, None, blocks, file_dim));
            }
            let check = w.validating();
            (0..blocks.len()).for_each(|k| drop(layer(&check.sub(k))));
            let prefixes = (0..blocks.len()).map(|k| w.key(&k.to_string())).collect();
            let stream = LayerStream::new(ckpt.clone(), prefixes, device, dtype, layer);
            Ok((Vec::new(), Some(stream), blocks, file_dim))
        })?;
        if file_dim != token_dim {
            return Err(Error::Shape {
                path: path.to_path_buf(),
                key: "0.to_k_ip.weight".into(),
                expected: vec![dim, token_dim],
                found: vec![dim, file_dim],
            });
        }
        Ok(Self {
            resampler,
            layers,
            stream,
            blocks,
            num_blocks,
            layout,
        })
    }

    /// The resampler.
    pub fn resampler(&self) -> &Resampler {
        &self.resampler
    }

    /// The layout of the IP layers.
    pub fn layout(&self) -> IpLayout {
        self.layout
    }

    /// The DiT blocks that have an IP layer, in layer order.
    pub fn blocks(&self) -> &[usize] {
        &self.blocks
    }

    /// Face embedding `[B, n, embedding_dim]` → ID tokens `[B, Q, C]` (registers not yet
    /// appended). Lynx's unconditional branch passes an all-zero embedding.
    ///
    /// # Shapes
    /// - input `[B, n, embedding_dim]`, output `[B, Q, C]`.
    pub fn tokens(&self, face_embedding: Tensor<3>) -> Result<Tensor<3>> {
        self.resampler.forward(face_embedding)
    }

    /// Width `C` of the ID tokens the blocks take.
    pub fn token_dim(&self) -> usize {
        self.resampler.config().output_dim
    }

    /// Per-block cross-attention K/V for ID tokens `[B, Q, C]` at weight `ip_scale`: one
    /// entry per DiT block, `None` where the block has no IP layer. They depend on
    /// nothing else: compute them once per face and reuse them at every denoising step.
    ///
    /// # Shapes
    /// - `tokens` `[B, Q, C]` → per block K/V `[B, M, dim]`.
    pub fn block_kv(&self, tokens: &Tensor<3>, ip_scale: f64) -> Result<Vec<Option<ExtraKv>>> {
        let mut all = self.block_kv_many(&[tokens], ip_scale)?;
        all.pop()
            .ok_or_else(|| Error::input("the ID-adapter returned nothing for its one input"))
    }

    /// [`IdAdapter::block_kv`] for several sets of ID tokens (a conditional and an
    /// unconditional face), each layer serving all of them before the next (streamed
    /// layers are read once).
    ///
    /// # Shapes
    /// - per input `[B, Q, C]` → per input, per block K/V `[B, M, dim]`.
    pub fn block_kv_many(
        &self,
        tokens: &[&Tensor<3>],
        ip_scale: f64,
    ) -> Result<Vec<Vec<Option<ExtraKv>>>> {
        let dtype = self.resampler.dtype();
        let mut inputs = Vec::with_capacity(tokens.len());
        for t in tokens {
            let [b, q, c] = t.dims();
            if c != self.token_dim() || b == 0 || q == 0 {
                return Err(Error::input(format!(
                    "ID tokens of shape {:?}, the ID-adapter takes [B, Q, {}]",
                    t.dims(),
                    self.token_dim()
                )));
            }
            inputs.push((*t).clone().cast(dtype));
        }
        let mut out = vec![vec![None; self.num_blocks]; tokens.len()];
        for_each_layer(&self.layers, self.stream.as_ref(), |k, layer| {
            let block = self.blocks.get(k).copied().unwrap_or(usize::MAX);
            for (input, kv) in inputs.iter().zip(out.iter_mut()) {
                let slot = kv.get_mut(block).ok_or_else(|| {
                    Error::input(format!("IP layer {k} sits on no block of the DiT"))
                })?;
                *slot = Some(layer.extra_kv(input.clone(), ip_scale));
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The DiT block of each IP layer in `ckpt` (see the module docs).
fn layer_blocks(ckpt: &Checkpoint, layout: IpLayout, num_blocks: usize) -> Result<Vec<usize>> {
    match layout {
        IpLayout::Full => Ok((0..num_blocks).collect()),
        IpLayout::Lite => {
            let layers = (0..)
                .take_while(|k| ckpt.has_prefix(&format!("{k}.")))
                .count();
            let interval = lite_interval(num_blocks, layers).ok_or_else(|| {
                Error::format(
                    ckpt.path(),
                    "Lynx-lite IP layers",
                    format!(
                        "it holds {layers} layer(s), which no interval places on a \
                         {num_blocks}-block DiT (one layer on blocks 0, i, 2i, … below \
                         {num_blocks} makes ⌈{num_blocks} / i⌉ layers)"
                    ),
                )
            })?;
            Ok((0..layers).map(|k| k * interval).collect())
        }
    }
}

/// The interval `i` that puts `layers` IP layers on blocks `0, i, 2i, …` below
/// `num_blocks` (`⌈num_blocks / i⌉ = layers`), as the reference's
/// `range(0, blocks, interval)`. When several fit (possible only for small models), the
/// released 2 is preferred, then the smallest.
pub fn lite_interval(num_blocks: usize, layers: usize) -> Option<usize> {
    let fits: Vec<usize> = (1..=num_blocks.max(1))
        .filter(|&i| layers > 0 && num_blocks.div_ceil(i) == layers)
        .collect();
    if fits.contains(&2) {
        Some(2)
    } else {
        fits.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::lite_interval;

    #[test]
    fn interval_from_counts() {
        assert_eq!(lite_interval(40, 20), Some(2)); // the released 14B lite
        assert_eq!(lite_interval(3, 2), Some(2)); // blocks 0 and 2
        assert_eq!(lite_interval(2, 1), Some(2)); // the tiny fixture: block 0
        assert_eq!(lite_interval(40, 40), Some(1));
        assert_eq!(lite_interval(40, 14), Some(3));
        assert_eq!(lite_interval(40, 0), None);
        assert_eq!(lite_interval(40, 41), None);
        assert_eq!(lite_interval(10, 6), None); // ⌈10/i⌉ is 10, 5, 4, …: never 6
    }
}
