//! `lynx generate --model <folder>` on the original `Wan-AI/Wan2.1-T2V-14B` layout (the
//! tiny model written that way by `lynx_testing::wan_original`) writes the same frames as
//! the run on the tiny diffusers folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{DType, Tensor};
use lynx_testing::wan_original::original_folder;
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-cli-orig-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `generate` on `model`, writing the frames to `out`.
fn generate(model: &Path, embedding: &Path, out: &Path) {
    let face = fixtures_dir().join("components/pipeline_aligned_face.png");
    let adapters = fixtures_dir().join("lynx_full");
    let args: Vec<&std::ffi::OsStr> = [
        "generate".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--adapters".as_ref(),
        adapters.as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--prompt".as_ref(),
        "a fox in the snow".as_ref(),
        "--frames".as_ref(),
        "5".as_ref(),
        "--height".as_ref(),
        "32".as_ref(),
        "--width".as_ref(),
        "32".as_ref(),
        "--steps".as_ref(),
        "2".as_ref(),
        "--shift".as_ref(),
        "3".as_ref(),
        "--seed".as_ref(),
        "7".as_ref(),
        "--aligned-face".as_ref(),
        face.as_os_str(),
        "--face-embedding".as_ref(),
        embedding.as_os_str(),
        "--resampler-dim-head".as_ref(),
        "8".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
    ]
    .to_vec();
    let run = Command::new(env!("CARGO_BIN_EXE_lynx"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}: {}",
        model.display(),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn parity_cli_original_wan_folder() {
    let dir = tmp("run");
    let model = dir.join("Wan2.1-T2V-tiny");
    original_folder(&model);
    // The fixture's face embedding, as a one-tensor file.
    let fx = fixture("components/pipeline.safetensors");
    let data = fx.read("face_embedding").unwrap().convert_dtype(DType::F32);
    let shape = data.shape().to_vec();
    let bytes = data.as_bytes().to_vec();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes).unwrap();
    let embedding = dir.join("emb.safetensors");
    safetensors::serialize_to_file([("embedding", view)], None, &embedding).unwrap();

    let (got, want) = (
        dir.join("original.safetensors"),
        dir.join("diffusers.safetensors"),
    );
    generate(&model, &embedding, &got);
    generate(
        &fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers"),
        &embedding,
        &want,
    );
    let device = test_device();
    let read = |p: &Path| {
        let ckpt = lynx_store::Checkpoint::open(p).unwrap();
        let key = ckpt.keys().next().unwrap().to_string();
        fixture_tensor::<4>(&ckpt, &key, &device)
    };
    let (got, want): (Tensor<4>, Tensor<4>) = (read(&got), read(&want));
    assert_close("frames (--model original folder)", &got, &want, 1e-5);
    let _ = std::fs::remove_dir_all(&dir);
}
