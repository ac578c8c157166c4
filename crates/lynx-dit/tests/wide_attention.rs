//! The fused attention path on a wide sequence (hundreds of tokens, the tiny model's
//! weights) against a naive f64 computation written here: projections, RMS norms, the
//! 3D RoPE, a materialised softmax, an extra K/V set and the output projection.

use burn::tensor::{DType, Tensor, TensorData};
use lynx_dit::{ExtraKv, WanAttention, WanTransformer};
use lynx_testing::{assert_close, fixtures_dir, test_device};

/// Deterministic normal-ish numbers (sum of uniforms), no RNG dependency.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            }
            acc
        })
        .collect()
}

fn host<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.to_data()
        .convert_dtype(DType::F64)
        .try_to_vec::<f64>()
        .unwrap()
}

/// `x [n, d_in] · W + b` with burn's `[in, out]` weight layout.
fn linear(x: &[f64], n: usize, layer: &lynx_core::nn::Linear) -> Vec<f64> {
    let w = host(&layer.weight());
    let [d_in, d_out] = layer.weight().dims();
    let b = layer.bias().map(|b| host(&b));
    let mut y = vec![0.0; n * d_out];
    for r in 0..n {
        for o in 0..d_out {
            let mut acc = b.as_ref().map_or(0.0, |b| b[o]);
            for i in 0..d_in {
                acc += x[r * d_in + i] * w[i * d_out + o];
            }
            y[r * d_out + o] = acc;
        }
    }
    y
}

fn rms(x: &mut [f64], d: usize, weight: &[f64], eps: f64) {
    for row in x.chunks_mut(d) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v *= inv * w;
        }
    }
}

/// Rotates channel pairs of every head by the Wan 3D RoPE angle of the token.
fn rope(x: &mut [f64], grid: [usize; 3], heads: usize, hd: usize) {
    let (hw, half) = (hd / 6, hd / 2);
    let t_pairs = half - 2 * hw;
    let [_, gh, gw] = grid;
    for (tok, row) in x.chunks_mut(heads * hd).enumerate() {
        let pos = [tok / (gh * gw), (tok / gw) % gh, tok % gw];
        for head in row.chunks_mut(hd) {
            for j in 0..half {
                let (axis, idx, pairs) = if j < t_pairs {
                    (0, j, t_pairs)
                } else if j < t_pairs + hw {
                    (1, j - t_pairs, hw)
                } else {
                    (2, j - t_pairs - hw, hw)
                };
                let freq = 10000f64.powf(-((2 * idx) as f64) / (2 * pairs) as f64);
                let (s, c) = (pos[axis] as f64 * freq).sin_cos();
                let (a, b) = (head[2 * j], head[2 * j + 1]);
                head[2 * j] = a * c - b * s;
                head[2 * j + 1] = a * s + b * c;
            }
        }
    }
}

/// Materialised `softmax(q·kᵀ/√hd)·v` per head; rows of width `heads·hd`.
fn softmax_attention(q: &[f64], k: &[f64], v: &[f64], heads: usize, hd: usize) -> Vec<f64> {
    let d = heads * hd;
    let (n, m) = (q.len() / d, k.len() / d);
    let mut out = vec![0.0; n * d];
    let scale = 1.0 / (hd as f64).sqrt();
    for h in 0..heads {
        for i in 0..n {
            let qi = &q[i * d + h * hd..i * d + (h + 1) * hd];
            let scores: Vec<f64> = (0..m)
                .map(|j| {
                    let kj = &k[j * d + h * hd..j * d + (h + 1) * hd];
                    qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            for (j, e) in exp.iter().enumerate() {
                for c in 0..hd {
                    out[i * d + h * hd + c] += e / sum * v[j * d + h * hd + c];
                }
            }
        }
    }
    out
}

/// The whole attention module, naively, on batch 1.
fn naive(
    attn: &WanAttention,
    x: &[f64],
    context: Option<&[f64]>,
    grid: Option<[usize; 3]>,
    extra: Option<(&[f64], &[f64], f64)>,
    eps: f64,
) -> Vec<f64> {
    let dim = attn.to_q().weight().dims()[1];
    let (heads, hd) = (attn.heads(), dim / attn.heads());
    let n = x.len() / dim;
    let ctx = context.unwrap_or(x);
    let m = ctx.len() / dim;
    let wq = host(&attn.norm_q().weight.val());
    let wk = host(&attn.norm_k().weight.val());
    let mut q = linear(x, n, attn.to_q());
    rms(&mut q, dim, &wq, eps);
    let mut k = linear(ctx, m, attn.to_k());
    rms(&mut k, dim, &wk, eps);
    let v = linear(ctx, m, attn.to_v());
    let (mut qr, mut kr) = (q.clone(), k);
    if let Some(grid) = grid {
        rope(&mut qr, grid, heads, hd);
        rope(&mut kr, grid, heads, hd);
    }
    let mut out = softmax_attention(&qr, &kr, &v, heads, hd);
    if let Some((ek, ev, scale)) = extra {
        let mut ek = ek.to_vec();
        rms(&mut ek, dim, &wk, eps);
        let added = softmax_attention(&q, &ek, ev, heads, hd);
        for (o, a) in out.iter_mut().zip(added) {
            *o += scale * a;
        }
    }
    linear(&out, n, attn.to_out())
}

#[test]
fn parity_wide_fused_attention_vs_naive() {
    let device = test_device();
    let dit = WanTransformer::from_pretrained(
        fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer"),
        &device,
        DType::F32,
    )
    .unwrap();
    let dim = dit.dim();
    let eps = dit.config().eps;
    let grid = [3, 8, 12];
    let n = grid.iter().product::<usize>();
    assert!(n >= 250, "a wide sequence: {n} tokens");
    let tensor = |v: Vec<f32>, rows: usize| {
        Tensor::<3>::from_data(TensorData::new(v, [1, rows, dim]), (&device, DType::F32))
    };
    let x = tensor(noise(n * dim, 1), n);
    let (m_ref, m_text) = (40, 512);
    let ref_k = tensor(noise(m_ref * dim, 2), m_ref);
    let ref_v = tensor(noise(m_ref * dim, 3), m_ref);
    let text = tensor(noise(m_text * dim, 4), m_text);
    let table = dit.rope().table(grid, &device).unwrap();
    let block = &dit.blocks()[1];

    // Self-attention with RoPE and an extra (Ref-style) K/V set at scale 0.7.
    let extra = ExtraKv::new(ref_k.clone(), ref_v.clone(), 0.7);
    let fused = block
        .attn1()
        .forward(x.clone(), None, Some(&table), Some(&extra));
    let want = naive(
        block.attn1(),
        &host(&x),
        None,
        Some(grid),
        Some((&host(&ref_k), &host(&ref_v), 0.7)),
        eps,
    );
    let want = tensor(want.iter().map(|&v| v as f32).collect(), n);
    assert_close("wide self-attention + extra", &fused, &want, 1e-5);

    // Cross-attention over 512 text rows, no RoPE.
    let fused = block
        .attn2()
        .forward(x.clone(), Some(text.clone()), None, None);
    let want = naive(
        block.attn2(),
        &host(&x),
        Some(&host(&text)),
        None,
        None,
        eps,
    );
    let want = tensor(want.iter().map(|&v| v as f32).collect(), n);
    assert_close("wide cross-attention", &fused, &want, 1e-5);
}
