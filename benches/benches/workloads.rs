//! The workloads of `BENCH.md`, f32, on `LYNX_BENCH_DEVICE` (default cpu):
//! `dit_step`, `dit_step_lynx`, `dit_reference_pass`, `vae_decode`, `umt5_encode`;
//! `guidance_sequential` / `guidance_batched` (one Lynx step's three guided passes, one
//! by one or as a batch of 3: the pipeline's `GuidanceBatching`); and `seeded_latents_14b`
//! (the reference's noise for the 14B model at 480×832, 81 frames).
//! `LYNX_BENCH_SMALL_GUIDANCE=1` shrinks the guidance pair to 16 latent and 16 text
//! tokens, for software renderers.
//! Flat sampling (the same iteration count in every sample): each call takes seconds, so
//! criterion's default linear ramp would run a workload 55 times.

use std::time::Duration;

use burn::tensor::{DType, Int, Tensor, TensorData};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use lynx_benches::{device, dit_1_3b_2_layers, lynx_extras, noise, umt5_xxl_2_layers, wan_vae};

/// Forces the result to be computed (backends may run lazily).
fn sync<const D: usize>(t: Tensor<D>) {
    let _ = t.sum().into_data();
}

fn dit(c: &mut Criterion) {
    let device = device();
    let dit = dit_1_3b_2_layers(&device).expect("DiT");
    let x = noise([1, 16, 2, 30, 52], &device);
    let text = noise([1, 512, 4096], &device);
    let t = Tensor::<1>::from_data(TensorData::new(vec![500.0f32], [1]), (&device, DType::F32));
    let ref_latents = noise([1, 16, 1, 32, 32], &device);
    let extras = lynx_extras(&dit, 16 * 16, &device);
    let mut g = c.benchmark_group("dit");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    g.bench_function("dit_step", |b| {
        b.iter(|| {
            sync(
                dit.forward(x.clone(), t.clone(), text.clone(), &[])
                    .unwrap(),
            )
        })
    });
    g.bench_function("dit_step_lynx", |b| {
        b.iter(|| {
            sync(
                dit.forward(x.clone(), t.clone(), text.clone(), &extras)
                    .unwrap(),
            )
        })
    });
    // One Lynx step's three guided passes (cond, uncond, identity: the same adapter
    // inputs here, which does not change the cost), one by one and as one batch of 3.
    let batched_extras: Vec<_> = extras
        .iter()
        .map(|e| lynx_benches::stack_extras(&[e, e, e]))
        .collect();
    // `LYNX_BENCH_SMALL_GUIDANCE=1`: 16 latent tokens and 16 text tokens for these two
    // benches, for software renderers (lavapipe), where the full shapes take minutes.
    let (gx, gtext) = if std::env::var_os("LYNX_BENCH_SMALL_GUIDANCE").is_some() {
        (
            noise([1, 16, 1, 8, 8], &device),
            noise([1, 16, 4096], &device),
        )
    } else {
        (x.clone(), text.clone())
    };
    let x3 = Tensor::cat(vec![gx.clone(); 3], 0);
    let text3 = Tensor::cat(vec![gtext.clone(); 3], 0);
    g.bench_function("guidance_sequential", |b| {
        b.iter(|| {
            for _ in 0..3 {
                sync(
                    dit.forward(gx.clone(), t.clone(), gtext.clone(), &extras)
                        .unwrap(),
                );
            }
        })
    });
    g.bench_function("guidance_batched", |b| {
        b.iter(|| {
            sync(
                dit.forward(x3.clone(), t.clone(), text3.clone(), &batched_extras)
                    .unwrap(),
            )
        })
    });
    g.bench_function("dit_reference_pass", |b| {
        b.iter(|| {
            let f = dit
                .reference_features(ref_latents.clone(), text.clone())
                .unwrap();
            sync(f.into_iter().last().unwrap())
        })
    });
    g.finish();
}

fn vae(c: &mut Criterion) {
    let device = device();
    let vae = wan_vae(&device).expect("VAE");
    let z = noise([1, 16, 2, 30, 52], &device);
    let mut g = c.benchmark_group("vae");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(60));
    g.bench_function("vae_decode", |b| {
        b.iter(|| sync(vae.decode(z.clone()).unwrap()))
    });
    g.finish();
}

fn umt5(c: &mut Criterion) {
    let device = device();
    let model = umt5_xxl_2_layers(&device).expect("UMT5");
    let ids: Vec<i64> = (0..512).map(|i| (i * 37 % 32000) as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, 512]), &device);
    let mut g = c.benchmark_group("umt5");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    g.bench_function("umt5_encode", |b| {
        b.iter(|| sync(model.forward(ids.clone(), None).expect("UMT5 forward")))
    });
    g.finish();
}

fn seeded_noise(c: &mut Criterion) {
    let device = device();
    // [1, 16, 21, 60, 104]: 81 frames at 480×832 for the 14B model, drawn as
    // `torch.randn(shape, generator=manual_seed(42))` and uploaded.
    let shape = [1, 16, 21, 60, 104];
    let source = lynx_pipeline::NoiseSource::seeded(42);
    let mut g = c.benchmark_group("noise");
    g.sample_size(20);
    g.bench_function("seeded_latents_14b", |b| {
        b.iter(|| sync(source.initial_latents(shape, &device).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, dit, vae, umt5, seeded_noise);
criterion_main!(benches);
