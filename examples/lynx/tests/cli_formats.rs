//! `lynx generate --transformer/--text-encoder/--vae` with the weight files users hold
//! (`tests/fixtures/formats`): the fp8 DiT, ComfyUI's scaled-fp8 UMT5 and the native VAE
//! on the tiny folder, and a GGUF DiT, each run against a run from the same weights
//! dequantized (written from the generator's `dequantized.safetensors`, in the same
//! layouts, by [`lynx_testing::formats`]). The fp8 DiT comes from a Hub cache, as a
//! `org/name/file` argument resolves.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{DType, Tensor};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-cli-formats-{}-{name}", std::process::id()));
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

fn formats(file: &str) -> String {
    let path = fixtures_dir().join("formats").join(file);
    path.to_str().unwrap().to_string()
}

/// A run of the Lynx-lite fixture (`lite_pipeline`) in f32 with `weights` (flag, value
/// pairs) and `HF_HOME` = `hf_home`, writing `dir/<name>.safetensors`; returns its frames.
fn run(dir: &Path, name: &str, hf_home: &Path, weights: &[(&str, String)]) -> Tensor<4> {
    let fx = fixture("components/lite_pipeline.safetensors");
    let emb = dir.join("emb.safetensors");
    let latents = dir.join("latents.safetensors");
    if !emb.exists() {
        extract(&fx, "face_embedding", "embedding", &emb);
        extract(&fx, "initial_latents", "latents", &latents);
    }
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("components/lite_pipeline.json")).unwrap(),
    )
    .unwrap();
    let output = dir.join(format!("{name}.safetensors"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lynx"));
    cmd.env("HF_HOME", hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .arg("generate")
        .arg("--model")
        .arg(fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers"))
        .arg("--adapters")
        .arg(fixtures_dir().join("lynx_lite"))
        .args(["--device", "cpu", "--dtype", "f32", "--quiet"])
        .args(["--prompt", s["prompt"].as_str().unwrap()])
        .args(["--negative-prompt", s["negative_prompt"].as_str().unwrap()])
        .args(["--frames", &s["num_frames"].to_string()])
        .args(["--height", &s["height"].to_string()])
        .args(["--width", &s["width"].to_string()])
        .args(["--steps", &s["num_inference_steps"].to_string()])
        .args(["--guidance", &s["guidance_scale"].to_string()])
        .args(["--resampler-dim-head", "8"])
        .arg("--face-embedding")
        .arg(&emb)
        .arg("--init-latents")
        .arg(&latents)
        .arg("--output")
        .arg(&output);
    for (flag, value) in weights {
        cmd.arg(flag).arg(value);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames = lynx_store::Checkpoint::open(&output).unwrap();
    fixture_tensor(&frames, "frames", &test_device())
}

/// A Hub cache under `hf_home` whose repo `org/name` at `main` holds `files`, as
/// huggingface_hub lays it out (`refs/main`, `snapshots/<commit>/<path>`).
fn hub_cache(hf_home: &Path, repo: &str, files: &[(&str, &Path)]) {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let dir = hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), commit).unwrap();
    for (path, from) in files {
        let to = dir.join("snapshots").join(commit).join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The acceptance run of the weight-formats issue: fp8 DiT (a Hub file), scaled-fp8
/// UMT5 and native VAE on the tiny folder; its frames equal those of the same weights
/// dequantized to f32 in plain files.
#[test]
fn cli_runs_fp8_scaled_fp8_and_native_files_as_their_dequantized_weights() {
    let dir = tmp("fp8");
    let hf_home = dir.join("hf");
    let fp8 = fixtures_dir().join("formats/wan_native_fp8_e4m3fn.safetensors");
    hub_cache(
        &hf_home,
        "some-org/wan-fp8",
        &[("split_files/wan_native_fp8_e4m3fn.safetensors", &fp8)],
    );
    let quantized = run(
        &dir,
        "quantized",
        &hf_home,
        &[
            (
                "--transformer",
                "some-org/wan-fp8/split_files/wan_native_fp8_e4m3fn.safetensors".into(),
            ),
            ("--text-encoder", formats("umt5_fp8_scaled.safetensors")),
            ("--vae", formats("vae_native.safetensors")),
        ],
    );

    let dit = dir.join("dit_f32.safetensors");
    let te = dir.join("umt5_f32.safetensors");
    let n = lynx_testing::formats::write_dequantized("wan_native_fp8_e4m3fn.safetensors", &dit);
    assert!(n >= 16, "{n} fp8 DiT tensors");
    let n = lynx_testing::formats::write_dequantized("umt5_fp8_scaled.safetensors", &te);
    assert!(n >= 8, "{n} scaled fp8 UMT5 tensors");
    let plain = run(
        &dir,
        "plain",
        &hf_home,
        &[
            ("--transformer", dit.to_str().unwrap().into()),
            ("--text-encoder", te.to_str().unwrap().into()),
            ("--vae", formats("vae_native.safetensors")),
        ],
    );
    assert_close("fp8 files vs dequantized", &quantized, &plain, 1e-5);

    // Not a no-op: the formats' weights differ from the folder's f32 ones.
    let folder = run(&dir, "folder", &hf_home, &[]);
    let diff = (quantized - folder).abs().max().into_scalar::<f32>();
    assert!(diff > 1e-3, "the fp8 run equals the folder's: {diff}");
    std::fs::remove_dir_all(dir).ok();
}

/// A GGUF DiT (city96's Q8_0 recipe) through the CLI, against the same DiT dequantized.
#[test]
fn cli_runs_a_gguf_dit_as_its_dequantized_weights() {
    let dir = tmp("gguf");
    let file = "wan_Q8_0.gguf";
    let quantized = run(&dir, "quantized", &dir, &[("--transformer", formats(file))]);
    let dit = dir.join("dit_f32.safetensors");
    let n = lynx_testing::formats::write_dequantized_gguf(file, &dit);
    assert!(n >= 2, "{n} Q8_0 tensors");
    let plain = run(
        &dir,
        "plain",
        &dir,
        &[("--transformer", dit.to_str().unwrap().into())],
    );
    assert_close("GGUF Q8_0 vs dequantized", &quantized, &plain, 1e-5);
    std::fs::remove_dir_all(dir).ok();
}
