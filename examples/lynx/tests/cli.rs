//! The `lynx` binary: end-to-end parity through the CLI, its defaults, and its errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{DType, Tensor};
use lynx_core::testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies fixture tensor `from` of `src` into a one-tensor file under key `to`.
fn extract(src: &lynx_core::Checkpoint, from: &str, to: &str, path: &Path) {
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

fn lynx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn parity_cli_end_to_end() {
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
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("components/pipeline.json")).unwrap(),
    )
    .unwrap();
    let s = |k: &str| settings[k].to_string().trim_matches('"').to_string();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let model = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join("lynx_full");
    let face = fixtures_dir().join("components/pipeline_aligned_face.png");
    let device = device_arg();
    let out = lynx(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--adapters",
        adapters.to_str().unwrap(),
        "--prompt",
        &s("prompt"),
        "--negative-prompt",
        &s("negative_prompt"),
        "--aligned-face",
        face.to_str().unwrap(),
        "--face-embedding",
        &p("emb.safetensors"),
        "--frames",
        &s("num_frames"),
        "--height",
        &s("height"),
        "--width",
        &s("width"),
        "--steps",
        &s("num_inference_steps"),
        "--guidance",
        &s("guidance_scale"),
        "--guidance-identity",
        &s("guidance_scale_i"),
        "--ip-scale",
        &s("ip_scale"),
        "--ref-scale",
        &s("ref_scale"),
        "--seed",
        "7",
        "--device",
        &device,
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
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let device = test_device();
    let got = fixture_trace(&dir.join("trace.safetensors"));
    for i in 0..4 {
        let key = format!("latents_after_step_{i}");
        let a: Tensor<5> = fixture_tensor(&got, &key, &device);
        let b: Tensor<5> = fixture_tensor(&fx, &key, &device);
        assert_close(&format!("cli {key}"), &a, &b, 1e-3);
    }
    let frames = fixture_trace(&dir.join("frames.safetensors"));
    let a: Tensor<4> = fixture_tensor(&frames, "frames", &device);
    let b: Tensor<4> = fixture_tensor(&fx, "frames", &device);
    assert_close("cli frames", &a, &b, 1e-3);
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
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("components/pipeline_seeded.json")).unwrap(),
    )
    .unwrap();
    let s = |k: &str| settings[k].to_string().trim_matches('"').to_string();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let model = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join("lynx_full");
    let face = fixtures_dir().join("components/pipeline_aligned_face.png");
    let device = device_arg();
    let out = lynx(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--adapters",
        adapters.to_str().unwrap(),
        "--prompt",
        &s("prompt"),
        "--negative-prompt",
        &s("negative_prompt"),
        "--aligned-face",
        face.to_str().unwrap(),
        "--face-embedding",
        &p("emb.safetensors"),
        "--frames",
        &s("num_frames"),
        "--height",
        &s("height"),
        "--width",
        &s("width"),
        "--steps",
        &s("num_inference_steps"),
        "--guidance",
        &s("guidance_scale"),
        "--guidance-identity",
        &s("guidance_scale_i"),
        "--seed",
        &s("seed"),
        "--device",
        &device,
        "--resampler-dim-head",
        "8",
        "--output",
        &p("frames.safetensors"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("components/lite_pipeline.json")).unwrap(),
    )
    .unwrap();
    let s = |k: &str| settings[k].to_string().trim_matches('"').to_string();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let model = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join("lynx_lite");
    let device = device_arg();
    let out = lynx(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--adapters",
        adapters.to_str().unwrap(),
        "--prompt",
        &s("prompt"),
        "--negative-prompt",
        &s("negative_prompt"),
        "--face-embedding",
        &p("emb.safetensors"),
        "--frames",
        &s("num_frames"),
        "--height",
        &s("height"),
        "--width",
        &s("width"),
        "--steps",
        &s("num_inference_steps"),
        "--guidance",
        &s("guidance_scale"),
        "--ip-scale",
        &s("ip_scale"),
        "--device",
        &device,
        "--init-latents",
        &p("latents.safetensors"),
        "--resampler-dim-head",
        &s("resampler_dim_head"),
        "--output",
        &p("frames.safetensors"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Lynx-lite"), "{err}");
    let frames = fixture_trace(&dir.join("frames.safetensors"));
    let device = test_device();
    let a: Tensor<4> = fixture_tensor(&frames, "frames", &device);
    let b: Tensor<4> = fixture_tensor(&fx, "frames", &device);
    assert_close("cli lite frames", &a, &b, 1e-3);

    // A full-only flag with lite adapters is refused before any sampling.
    let out = lynx(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--adapters",
        adapters.to_str().unwrap(),
        "--face-embedding",
        &p("emb.safetensors"),
        "--resampler-dim-head",
        "8",
        "--guidance-identity",
        "2",
        "--output",
        &p("refused.gif"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Lynx-lite has no identity guidance"),
        "{err}"
    );
    assert!(!dir.join("refused.gif").exists());
}

fn fixture_trace(path: &Path) -> lynx_core::Checkpoint {
    lynx_core::Checkpoint::open(path).unwrap()
}

#[test]
fn default_run_makes_a_video_of_the_bundled_model() {
    let dir = tmp("default");
    let gif = dir.join("lynx.gif");
    let out = lynx(&[
        "generate",
        "--steps",
        "1",
        "--output",
        gif.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
