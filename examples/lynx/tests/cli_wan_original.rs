//! `lynx generate --model <folder>` on the original `Wan-AI/Wan2.1-T2V-14B` layout (the
//! tiny model written that way by `lynx_testing::wan_original`) writes the same frames as
//! the run on the tiny diffusers folder; so does `--model Wan-AI/Wan2.1-T2V-14B`, the
//! same files in an offline Hub cache.

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

/// Runs `generate` on `model` (a folder or, with `hf_home`, a repo id in that offline
/// Hub cache), writing the frames to `out`.
fn generate(model: &Path, embedding: &Path, out: &Path, hf_home: Option<&Path>) {
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lynx"));
    cmd.args(&args);
    if let Some(hf_home) = hf_home {
        cmd.env("HF_HUB_OFFLINE", "1").env("HF_HOME", hf_home);
    }
    let run = cmd.output().unwrap();
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
    generate(&model, &embedding, &got, None);
    generate(
        &fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers"),
        &embedding,
        &want,
        None,
    );
    // The same folder as the Hub repo `Wan-AI/Wan2.1-T2V-14B` in an offline cache: the
    // original layout's files are fetched (a probe finds `config.json` and no
    // `model_index.json`), not the diffusers ones.
    let hf_home = dir.join("hf");
    hub_cache(&hf_home, "Wan-AI/Wan2.1-T2V-14B", &model);
    let from_hub = dir.join("hub.safetensors");
    generate(
        Path::new("Wan-AI/Wan2.1-T2V-14B"),
        &embedding,
        &from_hub,
        Some(&hf_home),
    );
    let device = test_device();
    let read = |p: &Path| {
        let ckpt = lynx_store::Checkpoint::open(p).unwrap();
        let key = ckpt.keys().next().unwrap().to_string();
        fixture_tensor::<4>(&ckpt, &key, &device)
    };
    let from_hub: Tensor<4> = read(&from_hub);
    let (got, want): (Tensor<4>, Tensor<4>) = (read(&got), read(&want));
    assert_close("frames (--model original folder)", &got, &want, 1e-5);
    assert_close("frames (--model original repo id)", &from_hub, &got, 1e-6);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Hub cache under `hf_home` whose repo `repo` at `main` holds every file under
/// `folder`, as huggingface_hub lays it out (`refs/main`, `snapshots/<commit>/<path>`).
fn hub_cache(hf_home: &Path, repo: &str, folder: &Path) {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let dir = hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), commit).unwrap();
    let snapshot = dir.join("snapshots").join(commit);
    let mut stack = vec![folder.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let to = snapshot.join(path.strip_prefix(folder).unwrap());
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&path, to).unwrap();
            }
        }
    }
}
