//! `lynx generate --lora FILE:S` and the fast path (`--fast`, `--shift`, `--sampler`)
//! against the reference runs of `components/lora.safetensors` (`lora.json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{DType, Tensor};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-cli-lora-{}-{name}", std::process::id()));
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

/// Runs `generate` for the `lora.json` run `run` with `flags`, then checks the trace
/// (`{prefix}_latents_after_step_i`) and the frames (`frames`) against the fixture.
fn check_run(run: &str, flags: &[&str], prefix: &str, frames: &str) {
    let dir = tmp(run);
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
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("components/lora.json")).unwrap(),
    )
    .unwrap();
    let s = &json[run];
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let face = fixtures_dir().join("components/pipeline_aligned_face.png");
    let model = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers");
    let adapters = fixtures_dir().join("lynx_full");
    let mut args: Vec<String> = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--adapters",
        adapters.to_str().unwrap(),
        "--device",
        "cpu",
        "--prompt",
        s["prompt"].as_str().unwrap(),
        "--frames",
        &s["num_frames"].to_string(),
        "--height",
        &s["height"].to_string(),
        "--width",
        &s["width"].to_string(),
        "--aligned-face",
        face.to_str().unwrap(),
        "--face-embedding",
        &p("emb.safetensors"),
        "--init-latents",
        &p("latents.safetensors"),
        "--ref-noise",
        &p("eps.safetensors"),
        "--resampler-dim-head",
        "8",
        "--trace",
        &p("trace.safetensors"),
        "--output",
        &p("frames.safetensors"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if let Some(neg) = s["negative_prompt"].as_str() {
        args.extend(["--negative-prompt".into(), neg.into()]);
    }
    let lora = |name: &str| fixtures_dir().join("loras").join(name);
    for flag in flags {
        // `@file` names a fixture LoRA.
        args.push(match flag.strip_prefix('@') {
            Some(rest) => {
                let (file, strength) = rest.split_once(':').unwrap();
                format!("{}:{strength}", lora(file).display())
            }
            None => flag.to_string(),
        });
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let device = test_device();
    let want = fixture("components/lora.safetensors");
    let trace = lynx_store::Checkpoint::open(dir.join("trace.safetensors")).unwrap();
    for i in 0..4 {
        let a: Tensor<5> = fixture_tensor(&trace, &format!("latents_after_step_{i}"), &device);
        let key = format!("{prefix}_latents_after_step_{i}");
        let b: Tensor<5> = fixture_tensor(&want, &key, &device);
        assert_close(&format!("cli {key}"), &a, &b, 1e-3);
    }
    let got = lynx_store::Checkpoint::open(dir.join("frames.safetensors")).unwrap();
    let a: Tensor<4> = fixture_tensor(&got, "frames", &device);
    let b: Tensor<4> = fixture_tensor(&want, frames, &device);
    assert_close(&format!("cli {frames}"), &a, &b, 1e-3);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn cli_lora_at_full_guidance() {
    check_run(
        "frames_lora",
        &[
            "--lora",
            "@style_comfy.safetensors:0.8",
            "--steps",
            "4",
            "--guidance",
            "5",
            "--guidance-identity",
            "2",
            "--shift",
            "3",
        ],
        "lora",
        "frames_lora",
    );
}

#[test]
fn cli_fast_unipc() {
    check_run(
        "frames_fast",
        &[
            "--lora",
            "@style_peft.safetensors:0.7",
            "--lora",
            "@accel_comfy.safetensors:0.5",
            "--fast",
            "--sampler",
            "unipc",
        ],
        "fast",
        "frames_fast",
    );
}

#[test]
fn cli_fast_euler_with_explicit_flags() {
    check_run(
        "frames_fast_euler",
        &[
            "--lora",
            "@style_comfy.safetensors:0.7",
            "--lora",
            "@accel_comfy.safetensors:0.5",
            "--steps",
            "4",
            "--guidance",
            "1",
            "--shift",
            "5",
            "--sampler",
            "euler",
        ],
        "fast_euler",
        "frames_fast_euler",
    );
}

#[test]
fn cli_refuses_a_lora_for_another_model() {
    let dir = tmp("refuse");
    let path = dir.join("wide.safetensors");
    let down = vec![0u8; 4 * 64 * 4];
    let up = vec![0u8; 64 * 4 * 4];
    let views = [
        (
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 64], &down)
                .unwrap(),
        ),
        (
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![64, 4], &up)
                .unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args([
            "generate",
            "--device",
            "cpu",
            "--lora",
            path.to_str().unwrap(),
            "--output",
            dir.join("x.mp4").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["self_attn.q.lora_up.weight", "[64, 64]", "[48, 48]"] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
    assert!(!dir.join("x.mp4").exists());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn cli_lora_from_the_hub_offline_names_repo_and_file() {
    let dir = tmp("hub");
    let out = Command::new(env!("CARGO_BIN_EXE_lynx"))
        .env("HF_HOME", &dir)
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "generate",
            "--device",
            "cpu",
            "--lora",
            "some-org/some-loras/sub/style.safetensors:0.5",
            "--output",
            dir.join("x.mp4").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Looked up in the Hub cache (not taken for a missing local path).
    assert!(err.contains("Hub repo `some-org/some-loras`"), "{err}");
    assert!(
        err.contains("sub/style.safetensors") && err.contains("cache"),
        "{err}"
    );
    assert!(!dir.join("x.mp4").exists());
    std::fs::remove_dir_all(dir).ok();
}
