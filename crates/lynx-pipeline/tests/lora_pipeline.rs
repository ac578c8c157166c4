//! LoRAs and the fast path end to end against the reference
//! (`components/lora.safetensors`, `lora.json`): the tiny Wan2.1 + lynx_full with the
//! recorded noise of `pipeline.safetensors`; fused at load (resident and streamed) and
//! on the fly per request; and on an fp8 DiT, whose quantized weights take the options'
//! LoRAs on the fly.

use burn::tensor::{DType, Tensor};
use lynx_pipeline::source::Source;
use lynx_pipeline::{
    GenerateRequest, Generated, IdentityGuidance, LynxPipeline, NoiseSource, Offload,
    PipelineOptions, SamplerKind, Subject,
};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

/// How a run gets its LoRAs.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Fused(Offload),
    OnTheFly,
}

fn lora(name: &str) -> std::path::PathBuf {
    fixtures_dir().join("loras").join(name)
}

/// One run of the fixture's settings `run` (a key of `lora.json`) with `loras`.
fn generate(run: &str, loras: &[(&str, f64)], mode: Mode) -> Generated {
    generate_on(run, loras, mode, None)
}

/// [`generate`] with the DiT weights of file `dit` (default: the folder's).
fn generate_on(
    run: &str,
    loras: &[(&str, f64)],
    mode: Mode,
    dit: Option<&std::path::Path>,
) -> Generated {
    let device = test_device();
    let fx = fixture("components/pipeline.safetensors");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("components/lora.json")).unwrap(),
    )
    .unwrap();
    let s = &json[run];
    let mut options = PipelineOptions::new(device.clone());
    options.resampler_dim_head = 8; // the tiny fixture's (PRESET.json)
    options.weights.transformer = dit.map(lynx_pipeline::Source::local);
    let loras: Vec<(std::path::PathBuf, f64)> = loras.iter().map(|(n, w)| (lora(n), *w)).collect();
    if let Mode::Fused(offload) = mode {
        options.offload = offload;
        options.loras = loras.iter().map(|(p, w)| (Source::local(p), *w)).collect();
    }
    let base = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join("lynx_full");
    let pipe =
        LynxPipeline::from_pretrained(&base, Some(Source::local(&adapters)), options).unwrap();
    // The options' LoRAs go on the fly exactly when the DiT file is quantized (the fp8
    // one here); fused otherwise.
    let quantized_with_options_loras =
        dit.is_some() && matches!(mode, Mode::Fused(_)) && !loras.is_empty();
    assert_eq!(pipe.loras_on_the_fly(), quantized_with_options_loras);

    let n = |k: &str| s[k].as_f64().unwrap();
    let mut req = GenerateRequest::new(s["prompt"].as_str().unwrap());
    if let Some(neg) = s["negative_prompt"].as_str() {
        req.negative_prompt = neg.into();
    }
    req.frames = Some(n("num_frames") as usize);
    req.height = n("height") as usize;
    req.width = n("width") as usize;
    req.steps = n("num_inference_steps") as usize;
    req.guidance = n("guidance_scale");
    req.guidance_identity = match s["guidance_scale_i"].as_f64() {
        Some(g) => IdentityGuidance::Scale(g),
        None => IdentityGuidance::Off,
    };
    req.ip_scale = n("ip_scale");
    req.ref_scale = Some(n("ref_scale"));
    let scheduler = &s["scheduler"];
    req.sampler = match scheduler["class"].as_str().unwrap() {
        "FlowMatchEulerDiscreteScheduler" => SamplerKind::Euler,
        _ => SamplerKind::UniPc,
    };
    req.flow_shift = Some(
        scheduler["flow_shift"]
            .as_f64()
            .or(scheduler["shift"].as_f64())
            .unwrap(),
    );
    if mode == Mode::OnTheFly {
        req.loras = loras;
    }
    let data = fx.read("aligned_face").unwrap();
    let [h, w] = [data.shape()[0], data.shape()[1]];
    let face = image::RgbImage::from_raw(w as u32, h as u32, data.as_bytes().to_vec()).unwrap();
    let embedding = fx
        .read("face_embedding")
        .unwrap()
        .convert_dtype(DType::F32)
        .try_to_vec::<f32>()
        .unwrap();
    req.subject = Some(Subject::Prepared {
        aligned_face: Some(face),
        embedding,
    });
    req.noise = NoiseSource::seeded(0)
        .with_initial_latents(fixture_tensor(&fx, "initial_latents", &device))
        .with_ref_eps(fixture_tensor(&fx, "ref_vae_eps", &device));
    pipe.generate(&req.with_trace(true)).unwrap()
}

/// Checks a run's frames and per-step latents against the fixture.
fn check(out: &Generated, frames: &str, latents: Option<&str>) {
    let device = test_device();
    let fx = fixture("components/lora.safetensors");
    if let Some(prefix) = latents {
        for (i, l) in out.latents_per_step.iter().enumerate() {
            let key = format!("{prefix}_latents_after_step_{i}");
            let want: Tensor<5> = fixture_tensor(&fx, &key, &device);
            assert_close(&key, l, &want, 1e-3);
        }
    }
    let want: Tensor<4> = fixture_tensor(&fx, frames, &device);
    assert_close(frames, &out.frames, &want, 1e-3);
}

const FAST: [(&str, f64); 2] = [
    ("style_peft.safetensors", 0.7),
    ("accel_comfy.safetensors", 0.5),
];

#[test]
fn frames_lora_fused() {
    let out = generate(
        "frames_lora",
        &[("style_comfy.safetensors", 0.8)],
        Mode::Fused(Offload::None),
    );
    check(&out, "frames_lora", Some("lora"));
}

#[test]
fn frames_fast_unipc_fused_streamed_and_on_the_fly() {
    let fused = generate("frames_fast", &FAST, Mode::Fused(Offload::None));
    check(&fused, "frames_fast", Some("fast"));
    let streamed = generate("frames_fast", &FAST, Mode::Fused(Offload::Blocks));
    assert_close(
        "offload blocks vs resident",
        &streamed.frames,
        &fused.frames,
        1e-5,
    );
    let fly = generate("frames_fast", &FAST, Mode::OnTheFly);
    assert_close("on the fly vs fused", &fly.frames, &fused.frames, 1e-5);
    for (a, b) in fly.latents_per_step.iter().zip(&fused.latents_per_step) {
        assert_close("latents on the fly vs fused", a, b, 1e-5);
    }
}

#[test]
fn frames_fast_euler() {
    let out = generate("frames_fast_euler", &FAST, Mode::Fused(Offload::None));
    check(&out, "frames_fast_euler", Some("fast_euler"));
}

#[test]
fn frames_fast_without_lora() {
    let out = generate("frames_fast_nolora", &[], Mode::Fused(Offload::None));
    check(&out, "frames_fast_nolora", None);
}

#[test]
fn quantized_dit_takes_the_options_loras_on_the_fly() {
    // fp8 weights stay quantized: the options' LoRAs run on the fly instead of being
    // fused, with the numbers of the same LoRAs given per request.
    let fp8 = fixtures_dir().join("formats/wan_native_fp8_e4m3fn.safetensors");
    let on = |loras: &[(&str, f64)], mode| generate_on("frames_fast", loras, mode, Some(&fp8));
    let options = on(&FAST, Mode::Fused(Offload::Blocks));
    let request = on(&FAST, Mode::OnTheFly);
    assert_close(
        "fp8: the options' LoRAs vs the request's",
        &options.frames,
        &request.frames,
        1e-5,
    );
    let plain = on(&[], Mode::OnTheFly);
    assert!(lynx_testing::diff(&options.frames, &plain.frames).rel_l2 > 1e-3);
}
