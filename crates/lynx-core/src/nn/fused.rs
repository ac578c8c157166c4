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

/// Notes that the fused kernel `name` ran (in test builds, where the tests read the notes
/// of their thread to know which path they compared; nothing otherwise).
#[cfg(feature = "flex")]
#[inline(always)]
fn took(name: &'static str) {
    #[cfg(test)]
    tests::FAST_PATHS.with(|f| f.borrow_mut().push(name));
    #[cfg(not(test))]
    let _ = name;
}

/// GELU with the tanh approximation (`approximate="tanh"`, `gelu_new`):
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// # Shapes
/// - input and output: any shape, same dtype.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(t) = cpu::flex_f32(&x) {
        // `t` shares `x`'s buffer: dropping `x` lets the kernel write in place when the
        // caller gave up its last handle.
        drop(x);
        took("gelu_tanh");
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
            return cpu::wrap(cpu_linear::linear_quantized(&t, q, bias, false));
        }
        // A bf16 model: the same tiled product on bf16 operands, accumulated in f32 and
        // rounded once to bf16 (the generic path would decode the whole weight on one
        // core and multiply in bf16).
        if layer.dtype() == DType::BF16
            && x.dtype() == DType::BF16
            && x.device() == burn::tensor::Device::flex()
            && x.dims()[D - 1] == layer.d_in()
        {
            let xf = x.clone().cast(DType::F32);
            let bias = layer.bias().map(|b| b.cast(DType::F32));
            if let Some(t) = cpu::flex_f32(&xf) {
                let b = match &bias {
                    None => None,
                    Some(b) => cpu::flex_f32(b),
                };
                if bias.is_none() || b.is_some() {
                    let y =
                        cpu_linear::linear_quantized(&t, q, b.as_ref().map(cpu::elements), true);
                    return cpu::wrap::<D>(y).cast(DType::BF16);
                }
            }
        }
        return layer.forward_plain(x);
    }
    if layer.is_quantized() {
        // Re-laid on a device: decoded there for the call.
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
        took("linear");
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
        took("layer_norm_modulate");
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
        took("gated_residual");
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
        drop(x); // as in `gelu_tanh`: in place when `x` was the last handle
        took("rope_rotate");
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
            took("channel_norm");
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
                took("conv3d");
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
        took("rms_norm");
        Some(cpu::wrap(cpu::rms_norm(t, cpu::elements(&w), eps)))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, weight, eps);
        None
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::RefCell;

    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;
    use crate::nn::RmsNorm;
    use lynx_testing::{assert_close, test_device};

    thread_local! {
        /// The fused kernels that ran on this thread (see [`super::took`]).
        pub(in crate::nn) static FAST_PATHS: RefCell<Vec<&'static str>> =
            const { RefCell::new(Vec::new()) };
    }

    fn normal<const D: usize>(shape: [usize; D]) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 2.0), &test_device())
    }

    /// Asserts that the fused kernels `want` (in order) were the ones that ran since the
    /// last check, on flex; elsewhere, that none ran (both sides are burn ops there, which
    /// the output says).
    fn ran(what: &str, want: &[&str]) {
        let got = FAST_PATHS.with(|f| std::mem::take(&mut *f.borrow_mut()));
        let device = test_device();
        if device == Device::flex() {
            assert_eq!(got, want, "{what}: the flex fast paths that ran");
        } else {
            assert!(
                got.is_empty(),
                "{what}: fast paths ran on {device:?}: {got:?}"
            );
            eprintln!("{what}: flex fast paths skipped on {device:?} (burn ops on both sides)");
        }
    }

    /// `(tasks, elements of the last task)` when `len` elements go in chunks of `chunk`.
    fn split(len: usize, chunk: usize) -> (usize, usize) {
        (len.div_ceil(chunk), len - (len.div_ceil(chunk) - 1) * chunk)
    }

    /// The `[B, N, D]` fused kernels (GELU, modulated LayerNorm, gated residual, RoPE, RMS
    /// norm, linear with and without bias and low-rank terms) against the burn-op
    /// expressions they replace, with `heads` heads of `pairs` channel pairs and a linear
    /// layer to `d_out` features.
    fn token_ops_match_burn_ops([b, n]: [usize; 2], heads: usize, pairs: usize, d_out: usize) {
        let d = heads * 2 * pairs;
        let x = normal([b, n, d]);
        ran("setup", &[]);
        let want = burn::tensor::activation::gelu_approximate(x.clone());
        assert_close("gelu_tanh", &gelu_tanh(x.clone()), &want, 1e-6);
        ran("gelu_tanh", &["gelu_tanh"]);
        // A tensor whose buffer is shared: not written in place (`kept` is a copy of the
        // values, made before the kernels ran).
        let kept = Tensor::<3>::from_data(x.to_data(), &test_device());
        let _ = gelu_tanh(x.clone());
        assert_close("gelu leaves shared input", &x, &kept, 0.0);
        let angles = normal([n, pairs]);
        let (cos, sin) = (angles.clone().cos(), angles.sin());
        let _ = rope_rotate(x.clone(), &cos, &sin);
        assert_close("rope leaves shared input", &x, &kept, 0.0);
        ran("shared inputs", &["gelu_tanh", "rope_rotate"]);

        // Modulation rows as the DiT makes them: chunks of a [B, 6, D] table.
        let table = normal([b, 6, d]);
        let parts = table.chunk(6, 1);
        let (shift, scale, gate) = (&parts[0], &parts[1], &parts[2]);
        let ones = Tensor::<1>::ones([d], &test_device());
        let want = burn::tensor::module::layer_norm(x.clone(), ones.clone(), None, 1e-6)
            * (scale.clone() + 1.0)
            + shift.clone();
        let got = layer_norm_modulate(&x, scale, shift, 1e-6);
        assert_close("layer_norm_modulate", &got, &want, 1e-6);
        ran("layer_norm_modulate", &["layer_norm_modulate"]);

        let y = normal([b, n, d]);
        let want = x.clone() + y.clone() * gate.clone();
        let got = gated_residual(x.clone(), y, gate);
        assert_close("gated_residual", &got, &want, 1e-6);
        ran("gated_residual", &["gated_residual"]);

        // RoPE: `heads` heads of `pairs` channel pairs over N tokens.
        let five = x.clone().reshape([b, n, heads, pairs, 2]);
        let (re, im) = (five.clone().slice_dim(4, 0..1), five.slice_dim(4, 1..2));
        let c = cos.clone().reshape([1, n, 1, pairs, 1]);
        let s = sin.clone().reshape([1, n, 1, pairs, 1]);
        let want = Tensor::cat(
            vec![
                re.clone() * c.clone() - im.clone() * s.clone(),
                re * s + im * c,
            ],
            4,
        )
        .reshape([b, n, d]);
        assert_close(
            "rope_rotate",
            &rope_rotate(x.clone(), &cos, &sin),
            &want,
            1e-6,
        );
        ran("rope_rotate", &["rope_rotate"]);

        let weight = normal([d]);
        let norm = RmsNorm::new(burn::module::Param::from_tensor(weight.clone()), 1e-6);
        let want =
            x.clone() / (x.clone().square().mean_dim(2) + 1e-6).sqrt() * weight.unsqueeze::<3>();
        assert_close("rms_norm", &norm.forward(x.clone()), &want, 1e-6);
        ran("rms_norm", &["rms_norm"]);

        // Linear layers with and without bias, on rank 3 and rank 2 inputs, against
        // burn's linear on the same tensors.
        let layer = |bias: bool| {
            let (w, bv) = (normal([d, d_out]), bias.then(|| normal([d_out])));
            let reference = burn::nn::Linear {
                weight: burn::module::Param::from_tensor(w.clone()),
                bias: bv.clone().map(burn::module::Param::from_tensor),
            };
            (Linear::new(w, bv), reference)
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
            let x2 = x.clone().reshape([b * n, d]);
            assert_close(
                "linear rank 2",
                &linear(&l, x2.clone()),
                &reference.forward(x2),
                1e-6,
            );
            ran("linear", &["linear", "linear"]);
        }
        // A low-rank term `s·(x·Aᵀ)·Bᵀ` equals the product with `W + s·(B·A)ᵀ`, resident
        // or given per call.
        let (l, _) = layer(true);
        let (a, bm) = (normal([3, d]), normal([d_out, 3]));
        let merged = burn::nn::Linear {
            weight: burn::module::Param::from_tensor(
                l.weight() + bm.clone().matmul(a.clone()).transpose() * 0.5,
            ),
            bias: l.bias().map(burn::module::Param::from_tensor),
        };
        let want = merged.forward(x.clone());
        let term = LowRank::new(a, bm, 0.5);
        assert_close(
            "low rank, per call",
            &linear_with(&l, x.clone(), std::slice::from_ref(&term)),
            &want,
            1e-5,
        );
        let l = l.with_low_rank(term);
        assert_close("low rank, resident", &linear(&l, x.clone()), &want, 1e-5);
        FAST_PATHS.with(|f| f.borrow_mut().clear());

        // Heads split and merged: [B, N, H·2P] ↔ [B, H, N, 2P].
        let want = x.clone().reshape([b, n, heads, 2 * pairs]).swap_dims(1, 2);
        let split = crate::nn::split_heads(x.clone(), heads);
        assert_close("split_heads", &split, &want, 0.0);
        assert_close("merge_heads", &crate::nn::merge_heads(split), &x, 0.0);
    }

    /// The VAE's channel norm (with and without SiLU and bias) and the direct convolution
    /// (3×3×3 with spatial padding, 1×1×1, 3×1×1) over `[B, C, T, H, W]` inputs `dims`,
    /// with `c_out` output channels.
    fn volume_ops_match_burn_ops(dims: [usize; 5], c_out: usize) {
        let c = dims[1];
        let v = normal(dims);
        let gamma = normal([c]);
        let bias = normal([c]);
        let norm = v.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        let base = v.clone() / norm
            * gamma
                .clone()
                .mul_scalar(5f64.sqrt())
                .reshape([1, c, 1, 1, 1]);
        let with_bias = base.clone() + bias.clone().reshape([1, c, 1, 1, 1]);
        let got = channel_norm(v.clone(), &gamma, None, 5f64.sqrt(), false);
        assert_close("channel_norm", &got, &base, 1e-6);
        let got = channel_norm(v.clone(), &gamma, Some(&bias), 5f64.sqrt(), true);
        let want = burn::tensor::activation::silu(with_bias);
        assert_close("channel_norm + bias + silu", &got, &want, 1e-6);
        ran("channel_norm", &["channel_norm", "channel_norm"]);

        for (k, pad) in [
            ([3, 3, 3], [1, 1]),
            ([1, 1, 1], [0, 0]),
            ([3, 1, 1], [0, 0]),
        ] {
            let weight = normal([c_out, c, k[0], k[1], k[2]]);
            let bias = normal([c_out]);
            let options = ConvOptions::new([1, 1, 1], [0, pad[0], pad[1]], [1, 1, 1], 1);
            let want = burn::tensor::module::conv3d(
                v.clone(),
                weight.clone(),
                Some(bias.clone()),
                options.clone(),
            );
            let got = conv3d(v.clone(), &weight, Some(&bias), options);
            assert_close(&format!("conv3d {k:?}"), &got, &want, 1e-6);
            ran("conv3d", &["conv3d"]);
        }
    }

    /// The fused kernels against the burn-op expressions they replace, on shapes that
    /// fit in one parallel task.
    #[test]
    fn parity_fused_ops_match_burn_ops() {
        token_ops_match_burn_ops([2, 37], 2, 12, 20);
        volume_ops_match_burn_ops([2, 5, 3, 7, 9], 4);
    }

    /// The same at widths where every kernel splits its work into several parallel tasks
    /// with an uneven last one (and tasks that straddle two samples), as every production
    /// width (1536, 5120) does.
    #[test]
    fn parity_fused_ops_match_burn_ops_in_several_tasks() {
        use super::cpu::MIN_CHUNK;
        let device = test_device();
        if device != Device::flex() {
            // Elsewhere both sides are burn ops, and these shapes cost minutes on lavapipe.
            eprintln!("fused kernels in several tasks: skipped on {device:?} (flex only)");
            return;
        }
        let ([b, n], heads, pairs) = ([2, 37], 5, 100);
        let d = heads * 2 * pairs;
        // Rows per task of the row kernels, and element chunks of the GELU.
        let rows = MIN_CHUNK / d;
        let (tasks, last) = split(b * n, rows);
        assert!(tasks >= 3 && last < rows, "row tasks: {tasks}, last {last}");
        assert!(n % rows != 0, "a task straddles the two samples");
        let (tasks, last) = split(b * n * d, MIN_CHUNK);
        assert!(
            tasks >= 3 && last < MIN_CHUNK,
            "GELU tasks: {tasks}, last {last}"
        );
        // d_out = d: the bias rows split as the norms' do, and the GEMM goes parallel.
        token_ops_match_burn_ops([b, n], heads, pairs, d);

        // Channel norm: 2 790 positions per plane, in tiles of 2 048. Convolution: 70
        // output rows of 66 padded columns and 64 channels, in tiles of 62 rows (3×3×3)
        // or 64 (1×1×1), and two samples.
        let dims = [2, 4, 3, 70, 64];
        let plane = dims[2] * dims[3] * dims[4];
        assert!(plane % super::cpu::CHANNEL_TILE != 0 && plane > super::cpu::CHANNEL_TILE);
        volume_ops_match_burn_ops(dims, 64);
    }

    /// GELU and RoPE write into their input's buffer when the caller gave up its last
    /// handle (and the results are still right).
    #[test]
    fn gelu_and_rope_write_in_place_when_unshared() {
        let device = test_device();
        if device != Device::flex() {
            eprintln!("in-place kernels: skipped on {device:?} (flex only)");
            return;
        }
        let address = |t: &Tensor<3>| {
            let p = super::cpu::flex_f32(t).expect("contiguous f32 on flex");
            super::cpu::elements(&p).as_ptr() as usize
        };
        let x = normal([2, 37, 48]);
        let want = burn::tensor::activation::gelu_approximate(x.clone().add_scalar(0.0));
        let before = address(&x);
        let y = gelu_tanh(x);
        assert_eq!(address(&y), before, "gelu_tanh copied an unshared input");
        assert_close("gelu_tanh in place", &y, &want, 1e-6);

        let angles = normal([37, 12]);
        let (cos, sin) = (angles.clone().cos(), angles.sin());
        let want = rope_rotate(y.clone(), &cos, &sin);
        let before = address(&y);
        let z = rope_rotate(y, &cos, &sin);
        assert_eq!(address(&z), before, "rope_rotate copied an unshared input");
        assert_close("rope_rotate in place", &z, &want, 0.0);
    }
}
