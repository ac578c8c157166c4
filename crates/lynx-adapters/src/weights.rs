//! Key mapping of the three `lynx_full/` files.
//!
//! | file | key | module |
//! |---|---|---|
//! | `resampler.safetensors` | `latents [1, Q, dim]`, `proj_in.*`, `proj_out.*`, `norm_out.*` | [`Resampler`] |
//! | | `layers.N.0.{norm1,norm2,to_q,to_kv,to_out}.*` | [`PerceiverAttention`] |
//! | | `layers.N.1.{0,1,3}.*` (LayerNorm, Linear, —, Linear) | [`ResamplerFeedForward`] |
//! | `ip_layers.safetensors` | `N.to_k_ip.*`, `N.to_v_ip.*` `[dim, C]`, `N.registers [1, R, C]` | [`IpAttn`] |
//! | `ref_layers.safetensors` | `N.to_k_ref.*`, `N.to_v_ref.*` `[dim, dim]` | [`RefAttn`] |
//!
//! `N` is the DiT block. Widths `C`, `R`, `Q`, … come from the files; the DiT's width
//! and block count are checked, so adapters of another base size are reported by
//! [`lynx_core::Loader::finish`] as shape mismatches / missing / unused keys.

use lynx_core::Loader;
use lynx_core::nn::{LayerNorm, load_linear};

use crate::id::IpAttn;
use crate::reference::RefAttn;
use crate::resampler::{
    LAYER_NORM_EPS, PerceiverAttention, Resampler, ResamplerConfig, ResamplerFeedForward,
    ResamplerLayer,
};

pub(crate) fn load_resampler(config: ResamplerConfig, w: &Loader) -> Resampler {
    let c = &config;
    let eps = LAYER_NORM_EPS;
    let layers = (0..c.depth)
        .map(|i| {
            let layer = w.sub("layers").sub(i);
            let (a, f) = (layer.sub(0), layer.sub(1));
            ResamplerLayer {
                attn: PerceiverAttention {
                    norm1: LayerNorm::load(&a.sub("norm1"), c.dim, eps),
                    norm2: LayerNorm::load(&a.sub("norm2"), c.dim, eps),
                    to_q: load_linear(&a.sub("to_q"), c.dim, c.inner_dim(), false),
                    to_kv: load_linear(&a.sub("to_kv"), c.dim, 2 * c.inner_dim(), false),
                    to_out: load_linear(&a.sub("to_out"), c.inner_dim(), c.dim, false),
                    heads: c.heads,
                },
                ff: ResamplerFeedForward {
                    norm: LayerNorm::load(&f.sub(0), c.dim, eps),
                    fc1: load_linear(&f.sub(1), c.dim, c.ff_inner_dim, false),
                    fc2: load_linear(&f.sub(3), c.ff_inner_dim, c.dim, false),
                },
            }
        })
        .collect();
    Resampler {
        latents: w.param("latents", [1, c.num_queries, c.dim]),
        proj_in: load_linear(&w.sub("proj_in"), c.embedding_dim, c.dim, true),
        layers,
        proj_out: load_linear(&w.sub("proj_out"), c.dim, c.output_dim, true),
        norm_out: LayerNorm::load(&w.sub("norm_out"), c.output_dim, eps),
        config,
    }
}

/// Per-block `to_k_ip`/`to_v_ip` (`[dim, C]`) and optional `registers` for a DiT of
/// width `dim` with `num_layers` blocks; `C` and `R` are read from block 0.
pub(crate) fn load_ip_layers(dim: usize, num_layers: usize, w: &Loader) -> Vec<IpAttn> {
    let token_dim = match w.shape("0.to_k_ip.weight").as_deref() {
        Some([_, c]) => *c,
        _ => dim,
    };
    let registers = match w.shape("0.registers").as_deref() {
        Some([1, r, _]) => Some(*r),
        Some(_) => Some(0), // reported as a mismatch below
        None => None,
    };
    (0..num_layers)
        .map(|i| {
            let l = w.sub(i);
            IpAttn {
                to_k_ip: load_linear(&l.sub("to_k_ip"), token_dim, dim, true),
                to_v_ip: load_linear(&l.sub("to_v_ip"), token_dim, dim, true),
                registers: registers.map(|r| l.param("registers", [1, r, token_dim])),
            }
        })
        .collect()
}

/// Per-block `to_k_ref`/`to_v_ref` (`[dim, dim]`).
pub(crate) fn load_ref_layers(dim: usize, num_layers: usize, w: &Loader) -> Vec<RefAttn> {
    (0..num_layers)
        .map(|i| {
            let l = w.sub(i);
            RefAttn {
                to_k_ref: load_linear(&l.sub("to_k_ref"), dim, dim, true),
                to_v_ref: load_linear(&l.sub("to_v_ref"), dim, dim, true),
            }
        })
        .collect()
}
