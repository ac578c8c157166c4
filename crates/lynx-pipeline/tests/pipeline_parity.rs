//! End to end against the reference (`components/pipeline.safetensors`): the tiny Wan2.1
//! model + lynx_full, aligned face + embedding + recorded noise, 4 UniPC steps with
//! Lynx's three-way guidance, then the VAE decode.

use burn::tensor::{DType, Tensor};
use lynx_arcface::DetectOptions;
use lynx_pipeline::source::Source;
use lynx_pipeline::{
    Error, GenerateRequest, GuidanceBatching, IdentityGuidance, LynxPipeline, NoiseSource,
    Observer, PipelineOptions, StepInfo, Subject, Variant,
};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn aligned_face(ckpt: &lynx_store::Checkpoint) -> image::RgbImage {
    let data = ckpt.read("aligned_face").unwrap();
    let [h, w, _] = [data.shape()[0], data.shape()[1], data.shape()[2]];
    image::RgbImage::from_raw(w as u32, h as u32, data.as_bytes().to_vec()).unwrap()
}

/// The settings of a pipeline fixture, `components/{name}.json`.
fn settings(name: &str) -> serde_json::Value {
    let path = fixtures_dir().join(format!("components/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A request with a fixture's prompts, sizes, steps, guidance and ID scale.
fn request(settings: &serde_json::Value) -> GenerateRequest {
    let s = |k: &str| settings[k].as_str().unwrap().to_string();
    let n = |k: &str| settings[k].as_f64().unwrap();
    let mut req = GenerateRequest::new(s("prompt"));
    req.negative_prompt = s("negative_prompt");
    req.frames = Some(n("num_frames") as usize);
    req.height = n("height") as usize;
    req.width = n("width") as usize;
    req.steps = n("num_inference_steps") as usize;
    req.guidance = n("guidance_scale");
    req.ip_scale = n("ip_scale");
    req
}

/// [`request`] with Lynx full's identity guidance and Ref scale as well.
fn full_request(settings: &serde_json::Value) -> GenerateRequest {
    let n = |k: &str| settings[k].as_f64().unwrap();
    let mut req = request(settings);
    req.guidance_identity = IdentityGuidance::Scale(n("guidance_scale_i"));
    req.ref_scale = Some(n("ref_scale"));
    req
}

#[test]
fn parity_pipeline_end_to_end() {
    let device = test_device();
    let fx = fixture("components/pipeline.safetensors");
    let settings = settings("pipeline");
    let base = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join("lynx_full");
    let mut options = PipelineOptions::new(device.clone());
    options.resampler_dim_head = 8; // the tiny fixture's (PRESET.json)
    let pipe = LynxPipeline::from_pretrained(&base, Some(Source::local(&adapters)), options)
        .expect("pipeline loads");
    assert_eq!(pipe.variant(), Some(Variant::Full));

    // The bundled PNG is the same crop as the fixture's array.
    let face = aligned_face(&fx);
    let png = lynx_arcface::load_rgb(fixtures_dir().join("components/pipeline_aligned_face.png"))
        .unwrap();
    assert_eq!(face.as_raw(), png.as_raw());

    let embedding = fx
        .read("face_embedding")
        .unwrap()
        .convert_dtype(DType::F32)
        .try_to_vec::<f32>()
        .unwrap();
    let mut req = full_request(&settings);
    req.subject = Some(Subject::Prepared {
        aligned_face: Some(face),
        embedding,
    });
    req.noise = NoiseSource::seeded(0)
        .with_initial_latents(fixture_tensor(&fx, "initial_latents", &device))
        .with_ref_eps(fixture_tensor(&fx, "ref_vae_eps", &device));
    let steps = req.steps;
    let out = pipe.generate(&req.with_trace(true)).expect("generation");

    assert_eq!(out.latents_per_step.len(), steps);
    for (i, latents) in out.latents_per_step.iter().enumerate() {
        let want: Tensor<5> = fixture_tensor(&fx, &format!("latents_after_step_{i}"), &device);
        assert_close(&format!("latents_after_step_{i}"), latents, &want, 1e-3);
    }
    let want: Tensor<4> = fixture_tensor(&fx, "frames", &device);
    assert_close("frames", &out.frames, &want, 1e-3);
    assert_eq!(
        out.video.data().len(),
        want.dims().iter().product::<usize>()
    );
}

#[test]
fn bad_inputs_are_sentences() {
    let device = test_device();
    let base = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let err = LynxPipeline::from_pretrained(
        "/nonexistent/Wan",
        None,
        PipelineOptions::new(device.clone()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("/nonexistent/Wan") && err.contains("diffusers"),
        "{err}"
    );
    let err = LynxPipeline::from_pretrained(
        &base,
        Some("/nonexistent/lynx_full".into()),
        PipelineOptions::new(device.clone()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("lynx_full"), "{err}");

    let pipe = LynxPipeline::from_pretrained(&base, None, PipelineOptions::new(device)).unwrap();
    let mut req = GenerateRequest::new("x");
    req.frames = Some(6);
    let err = pipe.generate(&req).unwrap_err().to_string();
    assert!(err.contains("4k+1") && err.contains("5 or 9"), "{err}");
    let mut req = GenerateRequest::new("x");
    req.width = 40;
    let err = pipe.generate(&req).unwrap_err().to_string();
    assert!(err.contains("multiple of 16"), "{err}");
    // A photo subject without face models, and a subject without adapters.
    let mut req = GenerateRequest::new("x");
    req.frames = Some(1);
    req.height = 32;
    req.width = 32;
    req.steps = 1;
    req.subject = Some(Subject::Photo {
        image: image::RgbImage::new(64, 64),
        landmarks: None,
    });
    let err = pipe.generate(&req).unwrap_err().to_string();
    assert!(err.contains("adapters"), "{err}");
}

#[test]
fn plain_text_to_video_runs_and_cancels() {
    let device = test_device();
    let base = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let pipe = LynxPipeline::from_pretrained(&base, None, PipelineOptions::new(device)).unwrap();
    let mut req = GenerateRequest::new("a cat");
    req.frames = Some(5);
    req.height = 32;
    req.width = 32;
    req.steps = 2;
    req.guidance_identity = IdentityGuidance::Off;
    /// Keeps the last step seen.
    struct LastStep(usize);
    impl Observer for LastStep {
        fn on_step(&mut self, info: StepInfo) -> std::ops::ControlFlow<()> {
            self.0 = info.step;
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut seen = LastStep(0);
    let out = pipe.generate_with(&req, &mut seen).unwrap();
    assert_eq!(seen.0, 2);
    assert_eq!(
        (out.video.frames(), out.video.height(), out.video.width()),
        (5, 32, 32)
    );
    assert!(out.video.data().iter().all(|v| (0.0..=1.0).contains(v)));

    let mut req = GenerateRequest::new("a cat");
    req.frames = Some(1);
    req.height = 32;
    req.width = 32;
    let mut cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let err = pipe.generate_with(&req, &mut cancel).unwrap_err();
    assert!(
        matches!(err, Error::Cancelled { done: 0, total: 50 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("cancelled"), "{err}");
}

/// Lynx-lite end to end (`components/lite_pipeline.safetensors`): face embedding alone,
/// plain CFG, recorded initial latents.
#[test]
fn parity_lite_pipeline_end_to_end() {
    let (pipe, lite_request) = lite_pipeline_matches("");
    // Full-only settings are refused with a sentence, not ignored.
    let mut req = lite_request();
    req.guidance_identity = IdentityGuidance::Scale(2.0);
    let err = pipe.generate(&req).unwrap_err().to_string();
    assert!(err.contains("Lynx-lite has no identity guidance"), "{err}");
    let mut req = lite_request();
    req.ref_scale = Some(1.0);
    let err = pipe.generate(&req).unwrap_err().to_string();
    assert!(err.contains("Lynx-lite has no Ref-adapter"), "{err}");
}

/// The same on the 8-block model of `tests/fixtures/deep`, whose four IP layers sit on
/// blocks 0, 2, 4 and 6.
#[test]
fn parity_lite_pipeline_end_to_end_eight_blocks() {
    let (pipe, _) = lite_pipeline_matches("deep/");
    let dit = pipe.dit().unwrap();
    assert_eq!(dit.config().num_layers, 8);
    assert_eq!(pipe.adapters().unwrap().id().blocks(), &[0, 2, 4, 6]);
}

/// Lynx-lite of the fixture set `tests/fixtures/{set}` end to end against its
/// `components/lite_pipeline.safetensors`; returns the pipeline and its request.
fn lite_pipeline_matches(set: &str) -> (LynxPipeline, impl Fn() -> GenerateRequest) {
    let device = test_device();
    let fx = fixture(&format!("{set}components/lite_pipeline.safetensors"));
    let settings = settings(&format!("../{set}components/lite_pipeline"));
    let base = fixtures_dir().join(set).join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join(set).join("lynx_lite");
    let mut options = PipelineOptions::new(device.clone());
    options.resampler_dim_head = settings["resampler_dim_head"].as_u64().unwrap() as usize;
    let pipe =
        LynxPipeline::from_pretrained(&base, Some(Source::local(&adapters)), options).unwrap();
    assert_eq!(pipe.variant(), Some(Variant::Lite));
    assert_eq!((pipe.defaults().frames, pipe.defaults().fps), (121, 24));

    let embedding = fx
        .read("face_embedding")
        .unwrap()
        .convert_dtype(DType::F32)
        .try_into_vec::<f32>()
        .unwrap();
    let initial: Tensor<5> = fixture_tensor(&fx, "initial_latents", &device);
    let steps = settings["num_inference_steps"].as_u64().unwrap() as usize;
    let lite_request = move || {
        let mut req = request(&settings);
        req.subject = Some(Subject::Prepared {
            aligned_face: None,
            embedding: embedding.clone(),
        });
        req.noise = NoiseSource::seeded(0).with_initial_latents(initial.clone());
        req
    };
    let out = pipe
        .generate(&lite_request().with_trace(true))
        .expect("lite generation");
    assert_eq!(out.latents_per_step.len(), steps, "lite steps traced");
    for (i, latents) in out.latents_per_step.iter().enumerate() {
        let want: Tensor<5> = fixture_tensor(&fx, &format!("latents_after_step_{i}"), &device);
        assert_close(
            &format!("lite latents_after_step_{i}"),
            latents,
            &want,
            1e-3,
        );
    }
    let want: Tensor<4> = fixture_tensor(&fx, "frames", &device);
    assert_close("lite frames", &out.frames, &want, 1e-3);
    (pipe, lite_request)
}

/// End to end from the seed alone (`components/pipeline_seeded.safetensors`): latents
/// from `manual_seed(42)`, the reference VAE sample from a fresh `manual_seed(43)` for
/// cond and uncond, as the reference's `lynx_infer.py` draws them.
#[test]
fn parity_seeded_pipeline_end_to_end() {
    let device = test_device();
    let inputs = fixture("components/pipeline.safetensors");
    let fx = fixture("components/pipeline_seeded.safetensors");
    let settings = settings("pipeline_seeded");
    let base = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join("lynx_full");
    let mut options = PipelineOptions::new(device.clone());
    options.resampler_dim_head = 8;
    let pipe =
        LynxPipeline::from_pretrained(&base, Some(Source::local(&adapters)), options).unwrap();
    let mut req = full_request(&settings);
    req.subject = Some(Subject::Prepared {
        aligned_face: Some(aligned_face(&inputs)),
        embedding: inputs
            .read("face_embedding")
            .unwrap()
            .convert_dtype(DType::F32)
            .try_into_vec::<f32>()
            .unwrap(),
    });
    req.noise = NoiseSource::seeded(settings["seed"].as_u64().unwrap());
    let out = pipe.generate(&req).expect("seeded generation");
    let want: Tensor<4> = fixture_tensor(&fx, "frames", &device);
    assert_close("seeded frames", &out.frames, &want, 1e-3);
}

/// The guidance passes stacked in one batch give what they give one by one, for Lynx
/// (3 passes) and Lynx-lite (2).
#[test]
fn parity_batched_guidance_matches_sequential() {
    let device = test_device();
    let fx = fixture("components/pipeline.safetensors");
    let base = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    for adapters in ["lynx_full", "lynx_lite"] {
        let mut options = PipelineOptions::new(device.clone());
        options.resampler_dim_head = 8;
        let mut pipe = LynxPipeline::from_pretrained(
            &base,
            Some(fixtures_dir().join(adapters).into()),
            options,
        )
        .unwrap();
        let lite = pipe.variant() == Some(Variant::Lite);
        let request = || {
            let mut req = GenerateRequest::new("A person carves a pumpkin.");
            req.frames = Some(5);
            req.height = 32;
            req.width = 48;
            req.steps = 2;
            let embedding = if lite {
                vec![0.05f32; 512]
            } else {
                fx.read("face_embedding")
                    .unwrap()
                    .convert_dtype(DType::F32)
                    .try_into_vec::<f32>()
                    .unwrap()
            };
            req.subject = Some(Subject::Prepared {
                aligned_face: (!lite).then(|| aligned_face(&fx)),
                embedding,
            });
            req.noise = NoiseSource::seeded(7);
            req
        };
        pipe.set_guidance_batching(GuidanceBatching::Sequential);
        let one_by_one = pipe.generate(&request().with_trace(true)).unwrap();
        pipe.set_guidance_batching(GuidanceBatching::Batched);
        let batched = pipe.generate(&request().with_trace(true)).unwrap();
        // The modes really differ: one stacked pass per step, or one per branch.
        let branches = if lite { 2 } else { 3 };
        assert_eq!(batched.dit_passes, 2, "{adapters}: batched passes");
        assert_eq!(
            one_by_one.dit_passes,
            2 * branches,
            "{adapters}: sequential"
        );
        assert_eq!(
            batched.latents_per_step.len(),
            2,
            "{adapters}: batched steps"
        );
        assert_eq!(
            one_by_one.latents_per_step.len(),
            2,
            "{adapters}: sequential"
        );
        for (i, (a, b)) in batched
            .latents_per_step
            .iter()
            .zip(&one_by_one.latents_per_step)
            .enumerate()
        {
            assert_close(&format!("{adapters} batched step {i}"), a, b, 1e-5);
        }
        assert_close(
            &format!("{adapters} batched frames"),
            &batched.frames,
            &one_by_one.frames,
            1e-5,
        );
    }
}

/// Fraction of `a`'s bytes within 2 levels of `b`'s, and the largest difference.
fn crop_agreement(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let d: Vec<u8> = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).collect();
    let within = d.iter().filter(|v| **v <= 2).count() as f64 / d.len() as f64;
    (within, d.into_iter().max().unwrap_or(0))
}

/// The photo path end to end against the reference chain
/// (`components/photo_pipeline.safetensors`): RetinaFace on the photo at its own size →
/// the largest face's landmarks → both crops → ArcFace → Lynx full, checked at each
/// stage as tightly as the component tests check it, and at the frames.
#[test]
fn parity_photo_pipeline_end_to_end() {
    let device = test_device();
    let fx = fixture("components/photo_pipeline.safetensors");
    let settings = settings("photo_pipeline");
    let s = |k: &str| settings[k].as_str().unwrap().to_string();
    let n = |k: &str| settings[k].as_f64().unwrap();
    let comp = fixtures_dir().join("components");
    let mut options = PipelineOptions::new(device.clone());
    options.resampler_dim_head = n("resampler_dim_head") as usize;
    options.arcface = Some(comp.join(s("arcface")).into());
    options.arcface_depths = Some(
        settings["arcface_depths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect(),
    );
    options.detector = Some(comp.join(s("detector")).into());
    assert!(settings["detect_at_original_size"].as_bool().unwrap());
    options.detect = DetectOptions {
        conf_threshold: n("conf_threshold") as f32,
        nms_threshold: n("nms_threshold") as f32,
        max_side: None,
    };
    let base = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join("lynx_full");
    let pipe =
        LynxPipeline::from_pretrained(&base, Some(Source::local(&adapters)), options).unwrap();
    let photo = lynx_arcface::load_rgb(comp.join(s("photo"))).unwrap();
    assert_eq!(photo.as_raw(), fx.read("photo_rgb").unwrap().as_bytes());

    // Stage 1, detection: the reference's faces as a set. Its threshold sits in a gap of
    // the scores wider than their tolerance, so no face is near it.
    const SCORE_TOL: f64 = 1e-4;
    assert!(n("threshold_margin") > SCORE_TOL);
    let analyzer = pipe.face_analyzer().unwrap();
    let found = analyzer
        .detector()
        .unwrap()
        .detect(&photo, &analyzer.options)
        .unwrap();
    let want = fx.read_f32("detections").unwrap();
    assert_eq!(found.len(), want.len() / 15, "{found:?}");
    for row in want.chunks(15) {
        let d = found
            .iter()
            .map(|d| d.to_row())
            .min_by(|a, b| {
                let dist = |r: &[f32; 15]| (0..4).map(|i| (r[i] - row[i]).abs()).sum::<f32>();
                dist(a).total_cmp(&dist(b))
            })
            .unwrap();
        let err = |r: std::ops::Range<usize>| r.map(|k| (d[k] - row[k]).abs()).fold(0f32, f32::max);
        eprintln!(
            "detection: box {:.2e} px, score {:.2e}, landmarks {:.2e} px",
            err(0..4),
            err(4..5),
            err(5..15)
        );
        assert!(err(0..4) <= 1e-2 && err(5..15) <= 1e-2, "{d:?} vs {row:?}");
        assert!(f64::from(err(4..5)) <= SCORE_TOL, "{d:?} vs {row:?}");
    }

    // Stages 2–5 run inside the generation, which returns what it made of the photo.
    let mut req = full_request(&settings);
    req.subject = Some(Subject::Photo {
        image: photo,
        landmarks: None,
    });
    req.noise = NoiseSource::seeded(0)
        .with_initial_latents(fixture_tensor(&fx, "initial_latents", &device))
        .with_ref_eps(fixture_tensor(&fx, "ref_vae_eps", &device));
    let steps = req.steps;
    let out = pipe
        .generate(&req.with_trace(true))
        .expect("generation from a photo");
    let face = out.face.as_ref().expect("a photo subject reports its face");

    let want = fx.read_f32("landmarks").unwrap();
    let got: Vec<f32> = face.landmarks.0.iter().flatten().copied().collect();
    let lm = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("landmarks: max error {lm:.2e} px (tolerance 1e-2 px)");
    assert!(lm <= 1e-2, "{got:?} vs {want:?}");
    assert_eq!(face.detection.unwrap().landmarks, face.landmarks);
    for (key, crop) in [
        ("aligned_112", &face.aligned_112),
        ("aligned_256", &face.aligned_256_extended),
    ] {
        assert_crop_matches(key, crop, &fx.read(key).unwrap());
    }
    let d = face.embedding.len();
    let emb = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(face.embedding.clone(), [1, d]),
        (&device, DType::F32),
    );
    let want: Tensor<1> = fixture_tensor(&fx, "embedding", &device);
    assert_close("photo embedding", &emb, &want.unsqueeze(), 1e-4);

    assert_eq!(out.latents_per_step.len(), steps);
    for (i, latents) in out.latents_per_step.iter().enumerate() {
        let want: Tensor<5> = fixture_tensor(&fx, &format!("latents_after_step_{i}"), &device);
        assert_close(
            &format!("photo latents_after_step_{i}"),
            latents,
            &want,
            1e-3,
        );
    }
    let want: Tensor<4> = fixture_tensor(&fx, "frames", &device);
    assert_close("photo frames", &out.frames, &want, 1e-3);
}

/// The observer stops a run after any step, and sees every stage start before it; the
/// sampler and its flow shift come from the request, or any `Scheduler` is given.
#[test]
fn observers_stop_runs_and_samplers_swap() {
    use lynx_pipeline::lynx_sampler::FlowMatchEuler;
    use lynx_pipeline::{SamplerKind, Stage, StageEvent};
    use std::ops::ControlFlow;

    /// Stops after `stop_after` steps; records the stages started.
    struct StopAfter {
        stop_after: usize,
        started: Vec<Stage>,
    }
    impl Observer for StopAfter {
        fn on_stage(&mut self, event: StageEvent) -> ControlFlow<()> {
            if let StageEvent::Start(stage) = event {
                self.started.push(stage);
            }
            ControlFlow::Continue(())
        }
        fn on_step(&mut self, info: StepInfo) -> ControlFlow<()> {
            if info.step >= self.stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }

    let base = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let pipe =
        LynxPipeline::from_pretrained(&base, None, PipelineOptions::new(test_device())).unwrap();
    let req = GenerateRequest::new("a cat")
        .with_frames(1)
        .with_size(32, 32)
        .with_steps(3)
        .with_seed(3);
    let mut observer = StopAfter {
        stop_after: 2,
        started: Vec::new(),
    };
    let err = pipe.generate_with(&req, &mut observer).unwrap_err();
    assert!(
        matches!(err, Error::Cancelled { done: 2, total: 3 }),
        "{err:?}"
    );
    assert_eq!(
        observer.started,
        [
            Stage::EncodePrompts,
            Stage::PrepareSubject,
            Stage::Condition,
            Stage::Denoise
        ]
    );

    // Euler with a flow shift through the request, and the same sampler given whole.
    let euler = req
        .clone()
        .with_sampler(SamplerKind::Euler)
        .with_flow_shift(5.0);
    let by_request = pipe.generate(&euler).unwrap();
    let config = pipe.scheduler_config();
    let given = Box::new(FlowMatchEuler::new(config.num_train_timesteps, 5.0).unwrap());
    let by_scheduler = pipe.generate_with_scheduler(&req, given, &mut ()).unwrap();
    assert!(
        by_request.video.data() == by_scheduler.video.data(),
        "the request's Euler with shift 5 differs from FlowMatchEuler(shift 5) given whole"
    );
    // The shift is used: the config's gives another video.
    let unshifted = pipe
        .generate(&req.clone().with_sampler(SamplerKind::Euler))
        .unwrap();
    assert!(
        by_request.video.data() != unshifted.video.data(),
        "flow_shift 5 gave the video of the config's shift 3"
    );
    assert_eq!(by_request.fps, 16, "plain Wan2.1 runs at 16 fps");
}

/// Compares a crop with the reference's: shape, 99% of bytes within 2 levels, and no byte
/// off by more than [`CROP_MAX_DIFF`] (the warps round differently near pixel edges; a
/// wrong crop is off by far more).
fn assert_crop_matches(key: &str, crop: &image::RgbImage, want: &burn::tensor::TensorData) {
    assert_eq!(
        [crop.height() as usize, crop.width() as usize, 3],
        want.shape()[..],
        "{key}"
    );
    let (within, max) = crop_agreement(crop.as_raw(), want.as_bytes());
    eprintln!(
        "{key}: {:.3}% within 2 levels, max diff {max} (bound {CROP_MAX_DIFF})",
        within * 100.0
    );
    assert!(
        within >= 0.99,
        "{key}: {:.3}% within 2 levels",
        within * 100.0
    );
    assert!(max <= CROP_MAX_DIFF, "{key}: a byte differs by {max}");
}

/// The largest difference of a crop byte from the reference's: 1 on flex; the landmarks
/// may be 1e-2 px off on other backends, which moves a bilinear tap across a sharp edge by
/// at most about 3 levels.
const CROP_MAX_DIFF: u8 = 8;

/// A photo where the detector finds two faces of different sizes, the smaller with the
/// better score (`components/two_faces.safetensors`, made with the reference's face
/// choice): the pipeline's face analysis keeps the larger, as the reference does, and its
/// landmarks, crops and embedding are the reference's.
#[test]
fn parity_photo_with_two_faces_keeps_the_largest() {
    let device = test_device();
    let fx = fixture("components/two_faces.safetensors");
    let settings = settings("two_faces");
    let s = |k: &str| settings[k].as_str().unwrap().to_string();
    let n = |k: &str| settings[k].as_f64().unwrap();
    let comp = fixtures_dir().join("components");
    // The detector: the photo fixture's, with the face logit of one anchor size raised.
    let base = lynx_store::Checkpoint::open(comp.join(s("detector"))).unwrap();
    let raised = s("raised");
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for key in base.keys() {
        let data = base.read(key).unwrap();
        if data.dtype() != DType::F32 {
            continue; // BatchNorm's batch counters
        }
        let data = if key == raised {
            fx.read("class_head_1_bias").unwrap()
        } else {
            data
        };
        tensors.push((
            key.to_string(),
            data.shape().to_vec(),
            data.as_bytes().to_vec(),
        ));
    }
    let dir = std::env::temp_dir().join(format!("lynx-two-faces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let detector_path = dir.join("retinaface_two_faces.safetensors");
    let views: Vec<(&str, lynx_store::safetensors_io::Dtype, &[usize], &[u8])> = tensors
        .iter()
        .map(|(k, shape, b)| {
            (
                k.as_str(),
                lynx_store::safetensors_io::Dtype::F32,
                &shape[..],
                &b[..],
            )
        })
        .collect();
    lynx_store::safetensors_io::save(&detector_path, &views, None).unwrap();
    let detector = lynx_arcface::load_retinaface(&detector_path, &device).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let depths = settings_depths();
    let arcface =
        lynx_arcface::load_arcface(comp.join(s("arcface")), &device, Some(&depths)).unwrap();
    let mut analyzer = lynx_arcface::FaceAnalyzer::new(arcface, Some(detector));
    assert!(n("threshold_margin") > 1e-4);
    analyzer.options = DetectOptions {
        conf_threshold: n("conf_threshold") as f32,
        nms_threshold: n("nms_threshold") as f32,
        max_side: None,
    };
    let photo = lynx_arcface::load_rgb(comp.join(s("photo"))).unwrap();

    // Both faces, as the reference found them; the better-scoring one is the smaller.
    let found = analyzer
        .detector()
        .unwrap()
        .detect(&photo, &analyzer.options)
        .unwrap();
    let want = fx.read_f32("detections").unwrap();
    assert_eq!((found.len(), want.len()), (2, 30), "{found:?}");
    let best = found
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .unwrap();
    assert!(
        found.iter().any(|d| d.area() > 2.0 * best.area()),
        "{found:?}"
    );

    let face = analyzer.prepare(&photo, None).unwrap();
    let want = fx.read_f32("landmarks").unwrap();
    let got: Vec<f32> = face.landmarks.0.iter().flatten().copied().collect();
    let lm = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("two faces, landmarks: max error {lm:.2e} px (tolerance 1e-2 px)");
    assert!(lm <= 1e-2, "{got:?} vs {want:?}");
    assert_crop_matches(
        "two faces aligned_112",
        &face.aligned_112,
        &fx.read("aligned_112").unwrap(),
    );
    assert_crop_matches(
        "two faces aligned_256",
        &face.aligned_256_extended,
        &fx.read("aligned_256").unwrap(),
    );
    let d = face.embedding.len();
    let emb = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(face.embedding.clone(), [1, d]),
        (&device, DType::F32),
    );
    let want: Tensor<1> = fixture_tensor(&fx, "embedding", &device);
    assert_close("two faces embedding", &emb, &want.unsqueeze(), 1e-4);
}

/// The tiny ArcFace's units per stage (`components/photo_pipeline.json`).
fn settings_depths() -> Vec<usize> {
    settings("photo_pipeline")["arcface_depths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}
