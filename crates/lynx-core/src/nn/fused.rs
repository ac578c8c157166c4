//! Layer expressions computed in one pass where the backend allows it.
//!
//! Each function states the expression it computes. On burn's `flex` CPU backend, with
//! contiguous f32 tensors, a fused kernel does it in one or two passes (in place when
//! possible); on other backends or dtypes it is written out with burn ops, which CubeCL's
//! fusion compiles into few kernels on GPUs. Both give the same numbers up to f32
//! rounding (the tests hold them within 1e-6).

use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};

use super::linear::{Linear, LowRank};
#[cfg(feature = "flex")]
use super::{cpu, cpu_conv, cpu_linear};

/// GELU with the tanh approximation (`approximate="tanh"`, `gelu_new`):
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// # Shapes
/// - input and output: any shape, same dtype.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(t) = cpu::flex_f32(&x) {
        return cpu::wrap(cpu::gelu_tanh(t));
    }
    burn::tensor::activation::gelu_approximate(x)
}

/// A linear layer, `x · weight + bias` plus its low-rank terms (see [`Linear`]).
///
/// # Shapes
/// - `x`: `[..., d_in]`; output `[..., d_out]`.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    linear_with(layer, x, &[])
}

/// [`linear`] with the low-rank terms `extra` added as well (LoRAs of one request,
/// applied on the fly).
///
/// # Shapes
/// - `x`: `[..., d_in]`; output `[..., d_out]`.
pub fn linear_with<const D: usize>(layer: &Linear, x: Tensor<D>, extra: &[LowRank]) -> Tensor<D> {
    let terms = layer.low_rank().iter().chain(extra);
    let mut y = linear_base(layer, x.clone());
    for term in terms {
        y = y + term.forward(x.clone());
    }
    y
}

/// `x · weight + bias`, one GEMM on flex (a quantized weight decoded tile by tile into
/// it).
fn linear_base<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(q) = layer.quantized_weight() {
        if let Some(t) = cpu::flex_f32(&x)
            && x.dims()[D - 1] == layer.d_in()
            && layer.dtype() == DType::F32
        {
            let bias = match layer.bias() {
                None => None,
                Some(b) => match cpu::flex_f32(&b) {
                    Some(b) => Some(b),
                    None => return layer.forward_plain(x),
                },
            };
            let bias = bias.as_ref().map(cpu::elements);
            return cpu::wrap(cpu_linear::linear_quantized(&t, q, bias));
        }
        return layer.forward_plain(x);
    }
    #[cfg(feature = "flex")]
    if let (Some(t), Some(w)) = (cpu::flex_f32(&x), cpu::flex_f32(&layer.weight()))
        && x.dims()[D - 1] == layer.d_in()
    {
        let bias = match layer.bias() {
            None => None,
            Some(b) => match cpu::flex_f32(&b) {
                Some(b) => Some(b),
                None => return layer.forward_plain(x),
            },
        };
        return cpu::wrap(cpu_linear::linear(&t, &w, bias.as_ref().map(cpu::elements)));
    }
    layer.forward_plain(x)
}

/// `LN(x)·(1 + scale) + shift`: a layer norm over the last axis without affine
/// parameters, modulated (the DiT's adaLN), computed in f32 and returned in f32.
///
/// # Shapes
/// - `x`: `[B, N, D]`; `scale`, `shift`: `[B, 1, D]`; output `[B, N, D]`, f32.
pub fn layer_norm_modulate(
    x: &Tensor<3>,
    scale: &Tensor<3>,
    shift: &Tensor<3>,
    eps: f64,
) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let (Some(t), Some(sc), Some(sh)) = (
        cpu::flex_f32(x),
        cpu::gather_rows(scale),
        cpu::gather_rows(shift),
    ) {
        return cpu::wrap(cpu::layer_norm_modulate(&t, &sc, &sh, eps));
    }
    let x = x.clone().cast(DType::F32);
    let dim = x.dims()[2];
    let ones = Tensor::<1>::ones([dim], (&x.device(), DType::F32));
    let normed = burn::tensor::module::layer_norm(x, ones, None, eps);
    normed * (scale.clone() + 1.0) + shift.clone()
}

/// `x + y·gate` (a gated residual), in f32 and returned in f32.
///
/// # Shapes
/// - `x`, `y`: `[B, N, D]`; `gate`: `[B, 1, D]`; output `[B, N, D]`, f32.
pub fn gated_residual(x: Tensor<3>, y: Tensor<3>, gate: &Tensor<3>) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let (Some(t), Some(yt), Some(g)) =
        (cpu::flex_f32(&x), cpu::flex_f32(&y), cpu::gather_rows(gate))
    {
        drop(x);
        return cpu::wrap(cpu::gated_residual(t, &yt, &g));
    }
    x.cast(DType::F32) + y.cast(DType::F32) * gate.clone()
}

/// Rotary position embedding on the token layout: each head's channel pairs `(a, b)` of
/// token `n` become `(a·cos − b·sin, a·sin + b·cos)` with the angles of `n`, in f32,
/// returned in `x`'s dtype. Adjacent channels form a pair (the complex-number view of
/// diffusers' Wan attention).
///
/// # Shapes
/// - `x`: `[B, N, heads · 2P]`; `cos`, `sin`: `[N, P]` (f32); output as `x`.
pub fn rope_rotate(x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let (Some(t), Some(c), Some(s)) = (cpu::flex_f32(&x), cpu::flex_f32(cos), cpu::flex_f32(sin))
    {
        return cpu::wrap(cpu::rope_rotate(t, cpu::elements(&c), cpu::elements(&s)));
    }
    let dtype = x.dtype();
    let [b, n, d] = x.dims();
    let pairs = cos.dims()[1];
    let heads = d / (2 * pairs);
    let x = x.cast(DType::F32).reshape([b, n, heads, pairs, 2]);
    let cos = cos.clone().reshape([1, n, 1, pairs, 1]);
    let sin = sin.clone().reshape([1, n, 1, pairs, 1]);
    let re = x.clone().slice_dim(4, 0..1);
    let im = x.slice_dim(4, 1..2);
    let out_re = re.clone() * cos.clone() - im.clone() * sin.clone();
    let out_im = re * sin + im * cos;
    Tensor::cat(vec![out_re, out_im], 4)
        .reshape([b, n, d])
        .cast(dtype)
}

/// The VAE's channel norm (diffusers `WanRMS_norm`, `F.normalize(x, dim=1)·scale·gamma +
/// bias`): `x / max(‖x‖₂ over axis 1, 1e-12) · gain + bias` with `gain = scale · gamma`,
/// followed by SiLU when `silu`; computed in f32, returned in `x`'s dtype.
///
/// # Shapes
/// - `x`: `[B, C, …]`; `gamma`, `bias`: `[C]` (f32); output as `x`.
pub fn channel_norm<const D: usize>(
    x: Tensor<D>,
    gamma: &Tensor<1>,
    bias: Option<&Tensor<1>>,
    scale: f64,
    silu: bool,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let (Some(t), Some(g)) = (cpu::flex_f32(&x), cpu::flex_f32(gamma)) {
        let gain: Vec<f32> = cpu::elements(&g).iter().map(|v| v * scale as f32).collect();
        let b = bias.and_then(cpu::flex_f32);
        if bias.is_none() || b.is_some() {
            let out = cpu::channel_norm(&t, &gain, b.as_ref().map(cpu::elements), silu);
            return cpu::wrap(out);
        }
    }
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let c = gamma.dims()[0];
    let mut shape = [1usize; D];
    shape[1] = c;
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    let mut y = x / norm * gamma.clone().mul_scalar(scale).reshape(shape);
    if let Some(b) = bias {
        y = y + b.clone().reshape(shape);
    }
    if silu {
        y = burn::tensor::activation::silu(y);
    }
    y.cast(dtype)
}

/// `conv3d(x, weight, bias, options)` (burn's, with PyTorch's semantics). With stride 1,
/// no dilation or groups and no time padding (the causal convolutions of the Wan VAE),
/// f32 on flex runs a direct tap-by-tap convolution instead of flex's im2col.
///
/// # Shapes
/// - `x`: `[B, C_in, T, H, W]`; `weight`: `[C_out, C_in, kt, kh, kw]`; `bias`: `[C_out]`;
///   output `[B, C_out, T', H', W']`.
pub fn conv3d(
    x: Tensor<5>,
    weight: &Tensor<5>,
    bias: Option<&Tensor<1>>,
    options: ConvOptions<3>,
) -> Tensor<5> {
    #[cfg(feature = "flex")]
    {
        let [(t0, t1), (h0, h1), (w0, w1)] = options.padding;
        let simple = options.stride == [1; 3]
            && options.dilation == [1; 3]
            && options.groups == 1
            && (t0, t1) == (0, 0)
            && h0 == h1
            && w0 == w1;
        if simple && let (Some(t), Some(w)) = (cpu::flex_f32(&x), cpu::flex_f32(weight)) {
            let b = bias.and_then(cpu::flex_f32);
            if bias.is_none() || b.is_some() {
                let pad = [h0, w0];
                let out = cpu_conv::conv3d(
                    &t,
                    cpu::elements(&w),
                    weight.dims(),
                    b.as_ref().map(cpu::elements),
                    pad,
                );
                return cpu::wrap(out);
            }
        }
    }
    burn::tensor::module::conv3d(x, weight.clone(), bias.cloned(), options)
}

/// `x / √(mean(x²) + eps) · weight` over the last axis, for f32 `x` on flex; `None`
/// elsewhere (the caller then computes it with burn ops).
pub(super) fn rms_norm_fast<const D: usize>(
    x: &Tensor<D>,
    weight: &Tensor<1>,
    eps: f64,
) -> Option<Tensor<D>> {
    #[cfg(feature = "flex")]
    {
        let t = cpu::flex_f32(x)?;
        let w = cpu::flex_f32(weight)?;
        Some(cpu::wrap(cpu::rms_norm(t, cpu::elements(&w), eps)))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, weight, eps);
        None
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor};

    use super::*;
    use lynx_testing::{assert_close, test_device};

    fn normal<const D: usize>(shape: [usize; D]) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 2.0), &test_device())
    }

    /// The fused kernels against the burn-op expressions they replace.
    #[test]
    fn parity_fused_ops_match_burn_ops() {
        let x = normal([2, 37, 48]);
        let want = burn::tensor::activation::gelu_approximate(x.clone());
        assert_close("gelu_tanh", &gelu_tanh(x.clone()), &want, 1e-6);
        // A view whose buffer is shared: not written in place.
        let kept = x.clone();
        let _ = gelu_tanh(x.clone());
        assert_close("gelu leaves shared input", &kept, &x, 0.0);

        // Modulation rows as the DiT makes them: chunks of a [B, 6, D] table.
        let table = normal([2, 6, 48]);
        let parts = table.chunk(6, 1);
        let (shift, scale, gate) = (&parts[0], &parts[1], &parts[2]);
        let dim = 48;
        let ones = Tensor::<1>::ones([dim], &test_device());
        let want = burn::tensor::module::layer_norm(x.clone(), ones, None, 1e-6)
            * (scale.clone() + 1.0)
            + shift.clone();
        let got = layer_norm_modulate(&x, scale, shift, 1e-6);
        assert_close("layer_norm_modulate", &got, &want, 1e-6);

        let y = normal([2, 37, 48]);
        let want = x.clone() + y.clone() * gate.clone();
        let got = gated_residual(x.clone(), y, gate);
        assert_close("gated_residual", &got, &want, 1e-6);

        // RoPE: 2 heads of 24 channels (12 pairs) over 37 tokens.
        let angles = normal([37, 12]);
        let (cos, sin) = (angles.clone().cos(), angles.sin());
        let pairs = x.clone().reshape([2, 37, 2, 12, 2]);
        let (a, b) = (pairs.clone().slice_dim(4, 0..1), pairs.slice_dim(4, 1..2));
        let c = cos.clone().reshape([1, 37, 1, 12, 1]);
        let s = sin.clone().reshape([1, 37, 1, 12, 1]);
        let want = Tensor::cat(
            vec![a.clone() * c.clone() - b.clone() * s.clone(), a * s + b * c],
            4,
        )
        .reshape([2, 37, 48]);
        assert_close(
            "rope_rotate",
            &rope_rotate(x.clone(), &cos, &sin),
            &want,
            1e-6,
        );

        // The VAE's channel norm over [B, C, T, H, W], with and without SiLU and bias.
        let v = normal([2, 5, 3, 7, 9]);
        let gamma = normal([5]);
        let bias = normal([5]);
        let norm = v.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        let base = v.clone() / norm
            * gamma
                .clone()
                .mul_scalar(5f64.sqrt())
                .reshape([1, 5, 1, 1, 1]);
        let with_bias = base.clone() + bias.clone().reshape([1, 5, 1, 1, 1]);
        let got = channel_norm(v.clone(), &gamma, None, 5f64.sqrt(), false);
        assert_close("channel_norm", &got, &base, 1e-6);
        let got = channel_norm(v.clone(), &gamma, Some(&bias), 5f64.sqrt(), true);
        let want = burn::tensor::activation::silu(with_bias);
        assert_close("channel_norm + bias + silu", &got, &want, 1e-6);

        // Linear layers with and without bias, on rank 3 and rank 2 inputs, against
        // burn's linear on the same tensors.
        let layer = |bias: bool| {
            let (w, b) = (normal([48, 20]), bias.then(|| normal([20])));
            let reference = burn::nn::Linear {
                weight: burn::module::Param::from_tensor(w.clone()),
                bias: b.clone().map(burn::module::Param::from_tensor),
            };
            (Linear::new(w, b), reference)
        };
        for bias in [true, false] {
            let (l, reference) = layer(bias);
            let want = reference.forward(x.clone());
            assert_close(
                &format!("linear bias={bias}"),
                &linear(&l, x.clone()),
                &want,
                1e-6,
            );
            let x2 = x.clone().reshape([74, 48]);
            assert_close(
                "linear rank 2",
                &linear(&l, x2.clone()),
                &reference.forward(x2),
                1e-6,
            );
        }
        // A low-rank term `s·(x·Aᵀ)·Bᵀ` equals the product with `W + s·(B·A)ᵀ`, resident
        // or given per call.
        let (l, _) = layer(true);
        let (a, b) = (normal([3, 48]), normal([20, 3]));
        let merged = burn::nn::Linear {
            weight: burn::module::Param::from_tensor(
                l.weight() + b.clone().matmul(a.clone()).transpose() * 0.5,
            ),
            bias: l.bias().map(burn::module::Param::from_tensor),
        };
        let want = merged.forward(x.clone());
        let term = LowRank::new(a, b, 0.5);
        assert_close(
            "low rank, per call",
            &linear_with(&l, x.clone(), std::slice::from_ref(&term)),
            &want,
            1e-5,
        );
        let l = l.with_low_rank(term);
        assert_close("low rank, resident", &linear(&l, x.clone()), &want, 1e-5);

        // Heads split and merged: [2, 37, 4·12] ↔ [2, 4, 37, 12].
        let want = x.clone().reshape([2, 37, 4, 12]).swap_dims(1, 2);
        let split = crate::nn::split_heads(x.clone(), 4);
        assert_close("split_heads", &split, &want, 0.0);
        assert_close("merge_heads", &crate::nn::merge_heads(split), &x, 0.0);

        // The direct convolution: 3×3×3 with spatial padding, 1×1×1, and 3×1×1.
        for (k, pad) in [
            ([3, 3, 3], [1, 1]),
            ([1, 1, 1], [0, 0]),
            ([3, 1, 1], [0, 0]),
        ] {
            let weight = normal([4, 5, k[0], k[1], k[2]]);
            let bias = normal([4]);
            let options = ConvOptions::new([1, 1, 1], [0, pad[0], pad[1]], [1, 1, 1], 1);
            let want = burn::tensor::module::conv3d(
                v.clone(),
                weight.clone(),
                Some(bias.clone()),
                options.clone(),
            );
            let got = conv3d(v.clone(), &weight, Some(&bias), options);
            assert_close(&format!("conv3d {k:?}"), &got, &want, 1e-6);
        }
    }
}
