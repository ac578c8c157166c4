//! The VAE against diffusers 0.33.1 (`components/vae.safetensors`, made with the tiny
//! `Wan2.1-T2V-tiny-Diffusers/vae`: base_dim 8, z_dim 4).

use burn::tensor::{DType, Tensor, TensorData};
use lynx_testing::{assert_close, diff, fixture, fixture_tensor, fixtures_dir, test_device};
use lynx_vae::{Tiling, WanVae};

fn vae() -> WanVae {
    let dir = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/vae");
    WanVae::from_pretrained(dir, &test_device(), DType::F32).expect("tiny VAE loads")
}

#[test]
fn parity_vae_encode_video() {
    let device = test_device();
    let fx = fixture("components/vae.safetensors");
    let video: Tensor<5> = fixture_tensor(&fx, "video", &device);
    let posterior = vae().encode(video).unwrap();
    let mean: Tensor<5> = fixture_tensor(&fx, "enc_mean", &device);
    let logvar: Tensor<5> = fixture_tensor(&fx, "enc_logvar", &device);
    assert_close("enc_mean", &posterior.mean, &mean, 1e-4);
    assert_close("enc_logvar", &posterior.logvar, &logvar, 1e-4);
    assert_close("mode", &posterior.mode(), &mean, 1e-4);
}

#[test]
fn parity_vae_encode_image() {
    let device = test_device();
    let fx = fixture("components/vae.safetensors");
    let image: Tensor<5> = fixture_tensor(&fx, "image", &device);
    let posterior = vae().encode(image).unwrap();
    let want: Tensor<5> = fixture_tensor(&fx, "image_enc", &device);
    let got = Tensor::cat(vec![posterior.mean, posterior.logvar], 1);
    assert_close("image_enc", &got, &want, 1e-4);
}

#[test]
fn parity_vae_decode() {
    let device = test_device();
    let fx = fixture("components/vae.safetensors");
    let latents: Tensor<5> = fixture_tensor(&fx, "latents", &device);
    let want: Tensor<5> = fixture_tensor(&fx, "decoded", &device);
    let vae = vae();
    let got = vae.decode(latents.clone()).unwrap();
    assert_eq!(got.dtype(), DType::F32);
    assert_close("decoded", &got, &want, 1e-4);

    // Streaming hands out 1 frame, then 4 per latent frame, which together are `decode`.
    let mut sizes = Vec::new();
    let mut chunks = Vec::new();
    vae.decode_frames(latents, |c| {
        sizes.push(c.dims()[2]);
        chunks.push(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(sizes, [1, 4]);
    assert_close("decode_frames", &Tensor::cat(chunks, 2), &want, 1e-4);
}

#[test]
fn parity_vae_sample_and_normalisation() {
    let device = test_device();
    let fx = fixture("components/vae.safetensors");
    let vae = vae();
    let image: Tensor<5> = fixture_tensor(&fx, "image", &device);
    let posterior = vae.encode(image).unwrap();
    let dims = posterior.mean.dims();

    // sample = mean + exp(logvar / 2) · noise, checked on the host.
    let noise = Tensor::<5>::random(dims, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let z = posterior.sample(noise.clone()).unwrap();
    let host = |t: &Tensor<5>| t.to_data().try_into_vec::<f32>().unwrap();
    let (m, lv, n, zs) = (
        host(&posterior.mean),
        host(&posterior.logvar),
        host(&noise),
        host(&z),
    );
    for i in 0..zs.len() {
        let want = m[i] + (0.5 * lv[i]).exp() * n[i];
        assert!(
            (zs[i] - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "sample[{i}] {} vs {want}",
            zs[i]
        );
    }
    let wrong = Tensor::<5>::zeros([1, 4, 1, 8, 7], &device);
    assert!(posterior.sample(wrong).is_err());

    // normalize = (z − mean) / std per channel, denormalize its inverse.
    let cfg = vae.config().clone();
    let normed = vae.normalize(z.clone()).unwrap();
    let nz = host(&normed);
    let hw = dims[3] * dims[4];
    for (i, v) in nz.iter().enumerate() {
        let c = (i / hw) % dims[1];
        let want = (zs[i] as f64 - cfg.latents_mean[c]) / cfg.latents_std[c];
        assert!(
            (*v as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "normalize[{i}]"
        );
    }
    assert_close("denormalize", &vae.denormalize(normed).unwrap(), &z, 1e-6);
    let five = Tensor::<5>::zeros([1, 5, 1, 2, 2], &device);
    let err = vae.normalize(five).unwrap_err().to_string();
    assert!(err.contains("5 channels"), "{err}");
}

/// Deterministic pseudo-random normal-ish values (sum of uniforms), no RNG state shared
/// between tests.
fn pseudo_normal(dims: [usize; 5], seed: u64) -> Tensor<5> {
    let n: usize = dims.iter().product();
    let mut state = seed;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let values: Vec<f32> = (0..n)
        .map(|_| (0..4).map(|_| uniform()).sum::<f32>() * 1.7 - 3.4)
        .collect();
    Tensor::from_data(TensorData::new(values, dims), (&test_device(), DType::F32))
}

#[test]
fn parity_vae_tiled_vs_untiled_decode() {
    let mut vae = vae();
    // 2 latent frames of 12×16 (96×128 pixels); 64-pixel tiles every ≤ 32 pixels give
    // 2 × 3 tiles at latent rows [0, 8), [4, 12) and columns [0, 8), [4, 12), [8, 16).
    let latents = pseudo_normal([1, 4, 2, 12, 16], 7);
    let whole = vae.decode(latents.clone()).unwrap();
    vae.set_tiling(Some(Tiling {
        tile: 64,
        stride: 32,
    }))
    .unwrap();
    // The top-left tile alone fits in one tile, so it is decoded untiled.
    let corner = vae
        .decode(latents.clone().slice([0..1, 0..4, 0..2, 0..8, 0..8]))
        .unwrap();
    let tiled = vae.decode(latents).unwrap();
    assert_eq!(tiled.dims(), [1, 3, 5, 96, 128]);

    // Pixels only the first tile covers are that tile's decode, unchanged.
    let only_first = [0..1, 0..3, 0..5, 0..32, 0..32];
    assert_close(
        "tiled top-left (one tile only)",
        &tiled.clone().slice(only_first.clone()),
        &corner.slice(only_first),
        1e-6,
    );
    // Elsewhere tiles see less context than the whole frame (the mid attention spans the
    // frame), most near the seams; the random tiny model is a worst case for that.
    let d = diff(&tiled, &whole);
    eprintln!(
        "tiled vs untiled: rel_l2 = {:.3e}, max_abs = {:.3e}",
        d.rel_l2, d.max_abs
    );
    assert!(
        d.rel_l2 < 0.05,
        "tiled decode differs from untiled by {:.3e}",
        d.rel_l2
    );

    // Bad tilings are errors.
    assert!(
        vae.set_tiling(Some(Tiling {
            tile: 60,
            stride: 32
        }))
        .is_err()
    );
    assert!(
        vae.set_tiling(Some(Tiling {
            tile: 64,
            stride: 72
        }))
        .is_err()
    );
    assert!(
        vae.set_tiling(Some(Tiling {
            tile: 64,
            stride: 0
        }))
        .is_err()
    );
}

/// Half-precision weights run the same code (norms in f32) and stay near the f32
/// reference. Measured: bf16 5e-3 (flex); f16 7e-4 (flex), 3e-3 (wgpu, which also
/// accumulates in f16). A wrong layer gives errors of order 1.
#[test]
fn parity_vae_half_precision() {
    let device = test_device();
    let fx = fixture("components/vae.safetensors");
    let dir = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/vae");
    for (dtype, tol) in [(DType::BF16, 2e-2), (DType::F16, 1e-2)] {
        if !device.supports_dtype(dtype) {
            // WGSL has no bf16: loading says so instead of failing in a kernel.
            let err = WanVae::from_pretrained(&dir, &device, dtype).unwrap_err();
            assert!(matches!(err, lynx_core::Error::Device { .. }), "{err}");
            eprintln!("{dtype:?} not supported on {device:?}: {err}");
            continue;
        }
        let vae = WanVae::from_pretrained(&dir, &device, dtype).unwrap();
        let video: Tensor<5> = fixture_tensor(&fx, "video", &device);
        let posterior = vae.encode(video).unwrap();
        assert_eq!(posterior.mean.dtype(), DType::F32);
        let mean: Tensor<5> = fixture_tensor(&fx, "enc_mean", &device);
        assert_close(&format!("enc_mean {dtype:?}"), &posterior.mean, &mean, tol);
        let latents: Tensor<5> = fixture_tensor(&fx, "latents", &device);
        let want: Tensor<5> = fixture_tensor(&fx, "decoded", &device);
        let got = vae.decode(latents).unwrap();
        assert_close(&format!("decoded {dtype:?}"), &got, &want, tol);
    }
}
