//! `lynx generate`: photo (or face embedding, plus the aligned crop for Lynx full) +
//! prompt → video.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lynx_pipeline::export::check_output;
use lynx_pipeline::inputs::{read_embedding, read_latents, read_ref_noise};
use lynx_pipeline::lynx_arcface::{Landmarks, load_rgb};
use lynx_pipeline::lynx_core::device::to_host_f32;
use lynx_pipeline::lynx_store::output::check_writable;
use lynx_pipeline::lynx_store::safetensors_io::{self, Dtype};
use lynx_pipeline::source::Source;
use lynx_pipeline::{
    Error, GenerateRequest, Generated, IdentityGuidance, LynxPipeline, NoiseSource,
    PipelineOptions, Subject, Variant, VariantDefaults, parse_device,
};

mod args;

pub use args::GenerateArgs;
use args::lora_arg;

use crate::BadDevice;
use crate::bundled::bundled;
use crate::models;
use crate::progress::StageBars;

/// Frames, height, width and steps the bundled tiny model runs with by default (its
/// parity fixture's).
const TINY: (usize, usize, usize, usize) = (5, 32, 48, 4);
/// The resampler head width of the bundled tiny adapters (PRESET.json).
const TINY_DIM_HEAD: usize = 8;

pub fn run(args: GenerateArgs) -> Result<()> {
    let quiet = args.quiet;
    let say = |msg: &str| {
        if !quiet {
            eprintln!("{msg}");
        }
    };
    // No --model with weight files: the files alone, with the released configs.
    let files_only = args.model.is_none()
        && (args.transformer.is_some() || args.text_encoder.is_some() || args.vae.is_some());
    let bundled_model = args.model.is_none() && !files_only;
    if files_only {
        let missing: Vec<&str> = [
            ("--transformer", &args.transformer),
            ("--text-encoder", &args.text_encoder),
            ("--vae", &args.vae),
        ]
        .into_iter()
        .filter_map(|(flag, v)| v.is_none().then_some(flag))
        .collect();
        if !missing.is_empty() {
            bail!(
                "without --model, give all three weight files (the configs are then the \
                 released ones): {} missing; or give --model for the configs",
                missing.join(" and ")
            );
        }
        if args.adapters.is_none() {
            bail!(
                "--transformer, --text-encoder and --vae without --model: give --adapters \
                 too (e.g. ByteDance/lynx); the bundled tiny adapters fit only the bundled model"
            );
        }
    }
    let auto = (args.device == "auto").then(lynx_pipeline::lynx_core::device::auto_device);
    let device_name = auto.as_ref().map_or(args.device.as_str(), |a| a.name);
    let device = parse_device(device_name).map_err(BadDevice)?;
    if let Some(auto) = &auto {
        let why = auto.passed_over.as_ref().map(|w| format!("{w}; "));
        say(&format!(
            "{}device: {device_name} (--device auto)",
            why.unwrap_or_default()
        ));
    }
    let mut options = PipelineOptions::new(device.clone())
        .with_dtype(args.dtype.into())
        .with_offload(args.offload.into())
        .with_detect(args.face_flags.detect_options());
    options.arcface_depths = args.face_flags.arcface_depths.clone();
    options.memory_budget = args.memory_budget.map(|g| (g * 1e9) as u64);
    if let Some(d) = args
        .resampler_dim_head
        .or(bundled_model.then_some(TINY_DIM_HEAD))
    {
        options = options.with_resampler_dim_head(d);
    }
    if args.face.is_some() && args.detector.is_none() && args.landmarks.is_none() {
        bail!("--face needs --detector FILE (RetinaFace .pth) or --landmarks JSON");
    }

    let prompt = match &args.prompt_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the prompt from {}", p.display()))?
            .trim()
            .to_string(),
        None => args.prompt.clone(),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let mut request = GenerateRequest::new(&prompt);
    if let Some(n) = &args.negative_prompt {
        request = request.with_negative_prompt(n);
    }
    if bundled_model {
        let (frames, height, width, steps) = TINY;
        request = request
            .with_frames(frames)
            .with_size(height, width)
            .with_steps(steps);
    }
    request.frames = args.frames.or(request.frames);
    request.height = args.height.unwrap_or(request.height);
    request.width = args.width.unwrap_or(request.width);
    request.steps = args.steps.unwrap_or(request.steps);
    request.fps = args.fps;
    request.trace = args.trace.is_some();
    let identity =
        match args.guidance_identity.as_deref() {
            None => IdentityGuidance::Default,
            Some("none" | "None") => IdentityGuidance::Off,
            Some(v) => IdentityGuidance::Scale(v.parse().with_context(|| {
                format!("--guidance-identity takes a number or `none`, not `{v}`")
            })?),
        };
    request = request
        .with_guidance(args.guidance)
        .with_identity_guidance(identity)
        .with_ip_scale(args.ip_scale)
        .with_sampler(args.sampler.into());
    if args.fast {
        request = request.fast();
        request.steps = args.steps.unwrap_or(request.steps);
    }
    if let Some(shift) = args.shift {
        request = request.with_flow_shift(shift);
    }
    request.ref_scale = args.ref_scale;
    request.validate()?;
    // Before anything slow: an output that cannot be written fails now.
    if let Some(output) = &args.output {
        check_output(output, request.frames)?;
    }
    if let Some(trace) = &args.trace {
        check_writable(trace, false)?;
    }
    let seed = u64::try_from(args.seed).unwrap_or_else(|_| {
        let seed = NoiseSource::random_seed();
        eprintln!("seed: {seed} (drawn at random; pass --seed {seed} to replay)");
        seed
    });
    let mut noise = NoiseSource::seeded(seed);
    if let Some(p) = &args.init_latents {
        noise = noise.with_initial_latents(read_latents(p, &device)?);
    }
    if let Some(p) = &args.ref_noise {
        noise = noise.with_ref_eps(read_ref_noise(p, &device)?);
    }
    request = request.with_noise(noise);
    let cancel = cancel_on_signals()?;

    // Folders, repo ids (fetched into the Hub cache) and URLs, made local.
    options.arcface = args.arcface.as_deref().map(models::file_source);
    options.detector = args.detector.as_deref().map(models::file_source);
    for spec in &args.lora {
        let (file, strength) = lora_arg(spec)?;
        options = options.with_lora(models::lora(file, quiet)?, strength);
    }
    options.lora_skip_unmatched = args.lora_skip_unmatched;
    let weight = |spec: &Option<String>| spec.as_deref().map(Source::parse_file).transpose();
    options.weights.transformer = weight(&args.transformer)?;
    options.weights.text_encoder = weight(&args.text_encoder)?;
    options.weights.vae = weight(&args.vae)?;
    let mut options = models::resolved(&options, quiet)?;
    let model = match &args.model {
        Some(spec) => models::model(&Source::parse(spec)?, quiet)?,
        // The DiT's file stands for the model (see lynx_pipeline::single).
        None if files_only => match options.weights.transformer.take() {
            Some(Source::Local(path)) => path,
            other => bail!("--transformer was not made local: {other:?}"),
        },
        None => bundled("Wan2.1-T2V-tiny-Diffusers")?,
    };
    let adapters = match &args.adapters {
        Some(spec) => {
            let mut source = Source::parse(spec)?;
            if let Some(sub) = &args.adapters_subfolder {
                source = source.with_subfolder(sub);
            }
            models::adapters(&source, quiet)?
        }
        None => bundled("lynx_full")?,
    };
    LynxPipeline::check_model(&model, &options)?;
    let variant = Variant::detect(&adapters)?;
    let frames = request
        .frames
        .unwrap_or(VariantDefaults::of(Some(variant)).frames);
    let output = match &args.output {
        Some(o) => o.clone(),
        None => {
            let o = reference_name(&args, frames, seed);
            if let Some(dir) = o.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the output folder {}", dir.display()))?;
            }
            check_output(&o, Some(frames))?;
            o
        }
    };
    if variant == Variant::Lite {
        if args.guidance_identity.is_some() {
            bail!("--guidance-identity: Lynx-lite has no identity guidance (it runs plain CFG)");
        }
        if args.ref_scale.is_some() {
            bail!("--ref-scale: Lynx-lite has no Ref-adapter");
        }
    }
    request.subject = Some(subject(&args, bundled_model, variant)?);

    // The memory check before anything is loaded: fails at once when the run cannot fit.
    let adapters_source = Some(Source::local(&adapters));
    let plan = LynxPipeline::check_memory(&model, adapters_source.clone(), &options, &request)?;
    say(&plan.to_string());
    say(&format!(
        "loading {} and {}",
        model.display(),
        adapters.display()
    ));
    let start = Instant::now();
    let loading = crate::progress::spinner(quiet, "load");
    let pipe = LynxPipeline::from_pretrained(&model, adapters_source, options)?;
    loading.finish();
    let load_time = start.elapsed();
    let skipped = pipe.skipped_lora_keys();
    if !skipped.is_empty() {
        say(&format!(
            "--lora-skip-unmatched: skipped {} LoRA key(s) the model has no place for: {}",
            skipped.len(),
            skipped.join(", ")
        ));
    }
    if pipe.loras_on_the_fly() {
        say(
            "--lora: the DiT's weights stay quantized (fp8/GGUF), so the LoRAs are not fused \
             at load: they run on the fly in each DiT pass (the same numbers)",
        );
    }
    say(&format!(
        "loaded {} in {:.1}s (offload {})",
        variant.name(),
        load_time.as_secs_f64(),
        pipe.offload().name()
    ));
    let mut progress = StageBars::new(quiet, request.steps, cancel.clone());
    let steps = request.steps;
    let generated = pipe.generate_with(&request, &mut progress)?;
    if cancel.load(Ordering::SeqCst) {
        // Interrupted while decoding, after the last step: still nothing is written.
        return Err(Error::Cancelled {
            done: steps,
            total: steps,
        }
        .into());
    }
    generated.save(&output)?;
    if let Some(trace) = &args.trace {
        write_trace(trace, &generated)?;
    }
    say(&format!(
        "wrote {} ({} frames of {}×{}; {} DiT passes) in {:.1}s",
        output.display(),
        generated.video.frames(),
        generated.video.width(),
        generated.video.height(),
        generated.dit_passes,
        start.elapsed().as_secs_f64()
    ));
    let peak = lynx_pipeline::lynx_core::device::peak_resident_memory();
    if let Some(peak) = peak {
        say(&format!(
            "peak resident memory {} (estimated {})",
            lynx_pipeline::memory::gb(peak),
            lynx_pipeline::memory::gb(plan.peak())
        ));
    }
    say(&progress.summary(load_time, steps, peak));
    if bundled_model {
        say(
            "note: the bundled model has tiny random weights, so this video is noise; \
             real videos need Wan2.1-T2V-14B-Diffusers and lynx_full (see the README)",
        );
    }
    Ok(())
}

/// `{output-dir}/{subject}/{name}-fr{frames}-s{seed}.{ext}`, the reference's naming; the
/// subject is the photo's (or embedding's) file stem, `tiny` for the bundled subject.
fn reference_name(args: &GenerateArgs, frames: usize, seed: u64) -> PathBuf {
    let stem = args
        .face
        .as_ref()
        .or(args.face_embedding.as_ref())
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tiny".into());
    args.output_dir
        .join(stem)
        .join(format!("{}-fr{frames}-s{seed}.{}", args.name, args.ext))
}

fn subject(args: &GenerateArgs, bundled_model: bool, variant: Variant) -> Result<Subject> {
    if let Some(face) = &args.face {
        let landmarks = match &args.landmarks {
            Some(p) => Some(Landmarks::from_json_file(p)?),
            None => None,
        };
        return Ok(Subject::Photo {
            image: load_rgb(face)?,
            landmarks,
        });
    }
    let (aligned, embedding) = match (&args.aligned_face, &args.face_embedding) {
        (a, Some(e)) => (a.clone(), e.clone()),
        (None, None) if bundled_model && variant == Variant::Lite => {
            (None, bundled("cli/face_embedding_512.safetensors")?)
        }
        (None, None) if bundled_model => (
            Some(bundled("components/pipeline_aligned_face.png")?),
            bundled("cli/face_embedding.safetensors")?,
        ),
        _ => bail!(
            "give the subject: --face PHOTO --arcface FILE (--detector FILE | --landmarks JSON), \
             or --face-embedding FILE.safetensors (with --aligned-face PNG for Lynx full)"
        ),
    };
    if variant == Variant::Full && aligned.is_none() {
        bail!(
            "Lynx (full) needs the aligned face crop for its Ref-adapter: add --aligned-face PNG, \
             or give --face PHOTO"
        );
    }
    Ok(Subject::Prepared {
        aligned_face: aligned.as_deref().map(load_rgb).transpose()?,
        embedding: read_embedding(&embedding)?,
    })
}

/// Ctrl-C (SIGINT) and SIGTERM set the returned flag, which the progress observer hands
/// to the pipeline at every stage and step boundary: the run stops with `Error::Cancelled` and nothing is written. A second
/// signal ends the process at once (exit status 130), after removing the temporary file
/// of any output being written (which no destructor would remove).
fn cancel_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing the Ctrl-C handler")?;
    let seen = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if seen.swap(true, Ordering::SeqCst) {
                    lynx_pipeline::lynx_store::output::remove_uncommitted();
                    std::process::exit(130);
                }
            }
        })
        .context("installing the Ctrl-C handler")?;
    Ok(flag)
}

/// A pause after each tensor of the trace, from `LYNX_TEST_TRACE_PAUSE_MS`, in debug
/// builds only: the CLI tests signal the process while its trace is being written.
fn test_pause() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("LYNX_TEST_TRACE_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// The latents after every step and, for a photo subject, each stage of the face path.
fn write_trace(path: &Path, generated: &Generated) -> Result<()> {
    let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, l) in generated.latents_per_step.iter().enumerate() {
        let v = to_host_f32(l.clone(), "the latents")?;
        data.push((
            format!("latents_after_step_{i}"),
            Dtype::F32,
            l.dims().to_vec(),
            f32s(&v),
        ));
    }
    if let Some(face) = &generated.face {
        if let Some(d) = &face.detection {
            data.push(("detection".into(), Dtype::F32, vec![15], f32s(&d.to_row())));
        }
        let points: Vec<f32> = face.landmarks.0.iter().flatten().copied().collect();
        data.push(("landmarks".into(), Dtype::F32, vec![5, 2], f32s(&points)));
        for (key, crop) in [
            ("aligned_112", &face.aligned_112),
            ("aligned_256", &face.aligned_256_extended),
        ] {
            let (w, h) = crop.dimensions();
            let shape = vec![h as usize, w as usize, 3];
            data.push((key.into(), Dtype::U8, shape, crop.as_raw().clone()));
        }
        let n = face.embedding.len();
        data.push((
            "embedding".into(),
            Dtype::F32,
            vec![n],
            f32s(&face.embedding),
        ));
    }
    let specs = data
        .iter()
        .map(|(k, d, s, _)| safetensors_io::TensorSpec::new(k.as_str(), *d, s))
        .collect();
    let layout = safetensors_io::Layout::new(specs, None)?;
    let by_name: std::collections::BTreeMap<&str, &[u8]> = data
        .iter()
        .map(|(k, _, _, b)| (k.as_str(), b.as_slice()))
        .collect();
    let order: Vec<String> = layout.tensors().iter().map(|t| t.name.clone()).collect();
    let mut w = safetensors_io::SafetensorsWriter::create(path, layout)?;
    for name in &order {
        w.write_tensor(name, by_name[name.as_str()])?;
        test_pause();
    }
    w.finish()?;
    Ok(())
}
