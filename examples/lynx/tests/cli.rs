//! The `lynx` binary: end-to-end parity through the CLI, its defaults, and its errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{DType, Tensor};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies fixture tensor `from` of `src` into a one-tensor file under key `to`.
fn extract(src: &lynx_store::Checkpoint, from: &str, to: &str, path: &Path) {
    let data = src.read(from).unwrap().convert_dtype(DType::F32);
    let shape = data.shape().to_vec();
    let bytes = data.as_bytes().to_vec();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes).unwrap();
    safetensors::serialize_to_file([(to, view)], None, path).unwrap();
}

fn device_arg() -> String {
    match std::env::var("LYNX_TEST_DEVICE").as_deref() {
        Ok("wgpu") => "wgpu".into(),
        _ => "cpu".into(),
    }
}

fn lynx<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `lynx` with `args`, which must succeed.
fn lynx_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    let out = lynx(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `generate` with the tiny model, the adapters folder `adapters` (`lynx_full` or
/// `lynx_lite`), the test device, the flags of the fixture `settings` (see
/// [`setting_args`]; `Value::Null` for none) and `extra`.
fn generate_args(adapters: &str, settings: &serde_json::Value, extra: &[&str]) -> Vec<String> {
    let model = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join(adapters);
    let mut args = vec![
        "generate".to_string(),
        "--model".into(),
        model.to_str().unwrap().into(),
        "--adapters".into(),
        adapters.to_str().unwrap().into(),
        "--device".into(),
        device_arg(),
    ];
    args.extend(setting_args(settings));
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The settings of a pipeline fixture, `components/{name}.json`.
fn settings(name: &str) -> serde_json::Value {
    let path = fixtures_dir().join(format!("components/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `generate` flags a fixture's settings give, with the key of each.
const SETTING_FLAGS: [(&str, &str); 12] = [
    ("--prompt", "prompt"),
    ("--negative-prompt", "negative_prompt"),
    ("--frames", "num_frames"),
    ("--height", "height"),
    ("--width", "width"),
    ("--steps", "num_inference_steps"),
    ("--guidance", "guidance_scale"),
    ("--guidance-identity", "guidance_scale_i"),
    ("--ip-scale", "ip_scale"),
    ("--ref-scale", "ref_scale"),
    ("--resampler-dim-head", "resampler_dim_head"),
    ("--seed", "seed"),
];

/// `--flag value` for each of [`SETTING_FLAGS`] whose key `settings` has.
fn setting_args(settings: &serde_json::Value) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, key) in SETTING_FLAGS {
        if let Some(v) = settings.get(key) {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            args.extend([flag.to_string(), v]);
        }
    }
    args
}

#[test]
fn parity_cli_full_end_to_end() {
    let dir = tmp("parity");
    let fx = fixture("components/pipeline.safetensors");
    extract(
        &fx,
        "face_embedding",
        "embedding",
        &dir.join("emb.safetensors"),
    );
    extract(
        &fx,
        "initial_latents",
        "latents",
        &dir.join("latents.safetensors"),
    );
    extract(&fx, "ref_vae_eps", "eps", &dir.join("eps.safetensors"));
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let face = fixtures_dir().join("components/pipeline_aligned_face.png");
    let args = generate_args(
        "lynx_full",
        &settings("pipeline"),
        &[
            "--aligned-face",
            face.to_str().unwrap(),
            "--face-embedding",
            &p("emb.safetensors"),
            "--seed",
            "7",
            "--dtype",
            "f32",
            "--init-latents",
            &p("latents.safetensors"),
            "--ref-noise",
            &p("eps.safetensors"),
            "--sampler",
            "unipc",
            "--resampler-dim-head",
            "8",
            "--trace",
            &p("trace.safetensors"),
            "--output",
            &p("frames.safetensors"),
        ],
    );
    lynx_ok(&args);

    assert_run_matches("cli", &dir, &fx);
}

/// Checks a 4-step run that wrote `trace.safetensors` and `frames.safetensors` into
/// `dir` against the fixture `fx`: the latents after each step, then the frames.
fn assert_run_matches(label: &str, dir: &Path, fx: &lynx_store::Checkpoint) {
    let device = test_device();
    let trace = fixture_trace(&dir.join("trace.safetensors"));
    for i in 0..4 {
        let key = format!("latents_after_step_{i}");
        let a: Tensor<5> = fixture_tensor(&trace, &key, &device);
        let b: Tensor<5> = fixture_tensor(fx, &key, &device);
        assert_close(&format!("{label} {key}"), &a, &b, 1e-3);
    }
    let frames = fixture_trace(&dir.join("frames.safetensors"));
    let a: Tensor<4> = fixture_tensor(&frames, "frames", &device);
    let b: Tensor<4> = fixture_tensor(fx, "frames", &device);
    assert_close(&format!("{label} frames"), &a, &b, 1e-3);
}

/// From the seed alone: the CLI draws the reference's noise (`components/pipeline_seeded`).
#[test]
fn parity_cli_seeded_end_to_end() {
    let dir = tmp("seeded");
    let inputs = fixture("components/pipeline.safetensors");
    extract(
        &inputs,
        "face_embedding",
        "embedding",
        &dir.join("emb.safetensors"),
    );
    let fx = fixture("components/pipeline_seeded.safetensors");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let face = fixtures_dir().join("components/pipeline_aligned_face.png");
    let args = generate_args(
        "lynx_full",
        &settings("pipeline_seeded"),
        &[
            "--aligned-face",
            face.to_str().unwrap(),
            "--face-embedding",
            &p("emb.safetensors"),
            "--resampler-dim-head",
            "8",
            "--output",
            &p("frames.safetensors"),
        ],
    );
    lynx_ok(&args);
    let frames = fixture_trace(&dir.join("frames.safetensors"));
    let device = test_device();
    let a: Tensor<4> = fixture_tensor(&frames, "frames", &device);
    let b: Tensor<4> = fixture_tensor(&fx, "frames", &device);
    assert_close("cli seeded frames", &a, &b, 1e-3);
}

/// Lynx-lite through the CLI: a face embedding alone is the subject (no aligned crop).
#[test]
fn parity_cli_end_to_end_lite() {
    let dir = tmp("lite");
    let fx = fixture("components/lite_pipeline.safetensors");
    extract(
        &fx,
        "face_embedding",
        "embedding",
        &dir.join("emb.safetensors"),
    );
    extract(
        &fx,
        "initial_latents",
        "latents",
        &dir.join("latents.safetensors"),
    );
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let args = generate_args(
        "lynx_lite",
        &settings("lite_pipeline"),
        &[
            "--face-embedding",
            &p("emb.safetensors"),
            "--init-latents",
            &p("latents.safetensors"),
            "--output",
            &p("frames.safetensors"),
        ],
    );
    let out = lynx_ok(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Lynx-lite"), "{err}");
    let frames = fixture_trace(&dir.join("frames.safetensors"));
    let device = test_device();
    let a: Tensor<4> = fixture_tensor(&frames, "frames", &device);
    let b: Tensor<4> = fixture_tensor(&fx, "frames", &device);
    assert_close("cli lite frames", &a, &b, 1e-3);

    // A full-only flag with lite adapters is refused before any sampling.
    let out = lynx(&generate_args(
        "lynx_lite",
        &serde_json::Value::Null,
        &[
            "--face-embedding",
            &p("emb.safetensors"),
            "--resampler-dim-head",
            "8",
            "--guidance-identity",
            "2",
            "--output",
            &p("refused.gif"),
        ],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Lynx-lite has no identity guidance"),
        "{err}"
    );
    assert!(!dir.join("refused.gif").exists());
}

fn fixture_trace(path: &Path) -> lynx_store::Checkpoint {
    lynx_store::Checkpoint::open(path).unwrap()
}

#[test]
fn default_run_makes_a_video_of_the_bundled_model() {
    let dir = tmp("default");
    let gif = dir.join("lynx.gif");
    let out = lynx_ok(&[
        "generate",
        "--steps",
        "1",
        "--output",
        gif.to_str().unwrap(),
    ]);
    assert!(std::fs::metadata(&gif).unwrap().len() > 100);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("random weights"), "{err}");
}

#[test]
fn user_errors_are_sentences() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["generate", "--frames", "80", "--output", "/tmp/x.gif"],
            "round it to 81",
        ),
        (
            &["generate", "--width", "50", "--output", "/tmp/x.gif"],
            "multiple of 16",
        ),
        (
            &["generate", "--device", "tpu", "--output", "/tmp/x.gif"],
            "unknown device",
        ),
        (
            &[
                "generate",
                "--model",
                "/nonexistent/Wan",
                "--output",
                "/tmp/x.gif",
            ],
            "/nonexistent/Wan",
        ),
    ];
    for (args, want) in cases {
        let out = lynx(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    #[cfg(not(feature = "cuda"))]
    {
        let out = lynx(&["generate", "--device", "cuda:0", "--output", "/tmp/x.gif"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--features cuda"), "{err}");
    }
}

/// A photo run with the photo-path fixture's models, settings
/// (`components/photo_pipeline.json`) and recorded noise (copied into a new scratch
/// folder `name`), at detection threshold `threshold` (empty: the fixture's): the folder
/// and the flags, without the output.
fn photo_run(name: &str, threshold: &str) -> (PathBuf, Vec<String>) {
    let dir = tmp(name);
    let fx = fixture("components/photo_pipeline.safetensors");
    extract(
        &fx,
        "initial_latents",
        "latents",
        &dir.join("latents.safetensors"),
    );
    extract(&fx, "ref_vae_eps", "eps", &dir.join("eps.safetensors"));
    let settings = settings("photo_pipeline");
    let s = |k: &str| settings[k].to_string().trim_matches('"').to_string();
    let comp = |k: &str| {
        fixtures_dir()
            .join("components")
            .join(s(k))
            .to_str()
            .unwrap()
            .to_string()
    };
    let depths: Vec<String> = settings["arcface_depths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.to_string())
        .collect();
    let threshold = if threshold.is_empty() {
        s("conf_threshold")
    } else {
        threshold.into()
    };
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let args = generate_args(
        "lynx_full",
        &settings,
        &[
            "--face",
            &comp("photo"),
            "--arcface",
            &comp("arcface"),
            "--arcface-depths",
            &depths.join(","),
            "--detector",
            &comp("detector"),
            "--detect-threshold",
            &threshold,
            "--detect-max-side",
            "0",
            "--init-latents",
            &p("latents.safetensors"),
            "--ref-noise",
            &p("eps.safetensors"),
        ],
    );
    (dir, args)
}

/// The photo path through the CLI (`--face`, the detector, the face flags) against the
/// reference chain of `components/photo_pipeline.safetensors`: each stage from the
/// trace, then the frames. Named so CI's wgpu pass skips it (the library test
/// `parity_photo_pipeline_end_to_end` runs there).
#[test]
fn parity_cli_end_to_end_photo() {
    let (dir, mut args) = photo_run("photo", "");
    let fx = fixture("components/photo_pipeline.safetensors");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    args.extend([
        "--trace".into(),
        p("trace.safetensors"),
        "--output".into(),
        p("frames.safetensors"),
    ]);
    lynx_ok(&args);

    let device = test_device();
    let trace = fixture_trace(&dir.join("trace.safetensors"));
    let detection = trace.read_f32("detection").unwrap();
    let want = fx.read_f32("detections").unwrap();
    let err = |r: std::ops::Range<usize>| {
        r.map(|k| (detection[k] - want[k]).abs())
            .fold(0f32, f32::max)
    };
    assert_eq!(want.len(), 15, "the fixture photo has one face");
    assert!(
        err(0..4) <= 1e-2 && err(4..5) <= 1e-4 && err(5..15) <= 1e-2,
        "{detection:?}"
    );
    let landmarks = trace.read_f32("landmarks").unwrap();
    let want = fx.read_f32("landmarks").unwrap();
    let lm = landmarks
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(lm <= 1e-2, "landmarks {landmarks:?} vs {want:?}");
    for key in ["aligned_112", "aligned_256"] {
        let (a, b) = (trace.read(key).unwrap(), fx.read(key).unwrap());
        assert_eq!(a.shape(), b.shape());
        let diffs: Vec<u8> = a
            .as_bytes()
            .iter()
            .zip(b.as_bytes())
            .map(|(x, y)| x.abs_diff(*y))
            .collect();
        let close = diffs.iter().filter(|d| **d <= 2).count();
        assert!(close as f64 >= 0.99 * b.as_bytes().len() as f64, "{key}");
        // As the photo pipeline test bounds it (the landmarks may be 1e-2 px off).
        let max = diffs.iter().max().copied().unwrap_or(0);
        assert!(max <= 8, "{key}: a byte differs by {max}");
    }
    let a: Tensor<1> = fixture_tensor(&trace, "embedding", &device);
    let b: Tensor<1> = fixture_tensor(&fx, "embedding", &device);
    assert_close("cli photo embedding", &a, &b, 1e-4);
    assert_run_matches("cli photo", &dir, &fx);
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A photo without a face (nothing scores 0.99): the sentence, and no output at all —
/// the subject fails after the output check and the model loading.
#[test]
fn generate_without_a_face_writes_nothing() {
    let (dir, mut args) = photo_run("noface", "0.99");
    for out in ["video.mp4", "frames"] {
        let target = dir.join(out).to_str().unwrap().to_string();
        args.extend(["--output".into(), target]);
        let run = lynx(&args);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains("no face found"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        args.truncate(args.len() - 2);
    }
    assert_eq!(listing(&dir), ["eps.safetensors", "latents.safetensors"]);
}

/// An output that cannot be written fails before the models load (the run never says
/// `loading`, and ends well within the 30 s bound: the bound only catches a run that went
/// on to load and sample; the time itself is not what is judged, so that a loaded 2-core
/// machine cannot fail it).
#[test]
fn unwritable_outputs_fail_at_once() {
    let dir = tmp("unwritable");
    std::fs::create_dir(dir.join("mine")).unwrap();
    std::fs::write(dir.join("mine/notes.txt"), b"x").unwrap();
    let missing = dir.join("no/such/folder/video.mp4");
    let cases = [
        (missing.to_str().unwrap().to_string(), "does not exist"),
        (
            dir.join("video.avi").to_str().unwrap().to_string(),
            "cannot write `.avi`",
        ),
        (dir.join("mine").to_str().unwrap().to_string(), "notes.txt"),
    ];
    for (output, want) in cases {
        let start = std::time::Instant::now();
        let out = lynx(&["generate", "--steps", "1", "--output", &output]);
        let took = start.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{output}: {err}"
        );
        assert!(
            !err.contains("loading"),
            "{output}: the models were loaded first: {err}"
        );
        assert!(
            took < std::time::Duration::from_secs(30),
            "{output}: took {took:?}"
        );
    }
    let trace = dir.join("no/trace.safetensors");
    let out = lynx(&[
        "generate",
        "--trace",
        trace.to_str().unwrap(),
        "--output",
        dir.join("v.gif").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(listing(&dir), ["mine"]);
    assert_eq!(listing(&dir.join("mine")), ["notes.txt"]);
}

/// Ctrl-C (SIGINT) during sampling: the run stops at the next step boundary, exits with
/// status 130 and writes nothing, neither the video nor the trace.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_generate_and_writes_nothing() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tmp("sigint");
    let video = dir.join("video.gif");
    let trace = dir.join("trace.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args([
            "generate",
            "--steps",
            "2000",
            "--sampler",
            "euler",
            "--trace",
            trace.to_str().unwrap(),
            "--output",
            video.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // Wait until the models are loaded: sampling starts right after.
    while !seen.contains("loaded") {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("lynx ended before loading: {seen}");
        }
        seen.push_str(&line);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("lynx did not stop within a minute of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        seen.contains("cancelled after") && seen.contains("nothing was written"),
        "{seen}"
    );
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));
}

/// A second Ctrl-C while an output is being written ends the run at once (status 130)
/// and leaves no temporary file behind. The trace is written slowly here (a pause after
/// each tensor: `LYNX_TEST_TRACE_PAUSE_MS`, a hook of debug builds), so that both signals
/// arrive while it is staged.
#[cfg(unix)]
#[test]
fn second_ctrl_c_while_writing_leaves_no_temporary_file() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = tmp("sigint-twice");
    let video = dir.join("video.gif");
    let trace = dir.join("trace.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args([
            "generate",
            "--steps",
            "8",
            "--sampler",
            "euler",
            "--trace",
            trace.to_str().unwrap(),
            "--output",
            video.to_str().unwrap(),
        ])
        .env("LYNX_TEST_TRACE_PAUSE_MS", "500")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let interrupt = |pid: u32| {
        let kill = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    };
    // The video is written (committed) first, then the trace is staged: wait for both.
    let start = Instant::now();
    loop {
        let names = listing(&dir);
        if video.exists() && names.iter().any(|n| n.ends_with(".tmp")) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("lynx ended ({status}) before writing its trace: {names:?}");
        }
        if start.elapsed() > Duration::from_secs(180) {
            child.kill().unwrap();
            panic!("lynx did not start writing its trace within 3 minutes: {names:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(child.id());
    std::thread::sleep(Duration::from_millis(300));
    interrupt(child.id());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("lynx did not stop within a minute of the second SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    assert_eq!(listing(&dir), ["video.gif"], "a temporary file was left");
}
