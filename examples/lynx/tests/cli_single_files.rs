//! `lynx generate --transformer --text-encoder --vae` without `--model`: the three files
//! alone, with the released configs (`lynx_pipeline::single`). The synthetic 14B in
//! header-only files (`lynx_synth::sparse`) goes through to the memory plan; what the
//! released configs cannot describe is refused before anything is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lynx_store::safetensors_io::{Dtype, TensorSpec};
use lynx_synth::encoded::DitEncoding;
use lynx_synth::presets::Preset;
use lynx_synth::{Component, SynthOptions, WeightDtype, sparse, walk};
use lynx_testing::fixtures_dir;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-cli-single-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `lynx generate` of the lite adapters `adapters` with `args`, writing `out`.
fn generate(adapters: Option<&Path>, out: &Path, args: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lynx"));
    cmd.env("HF_HUB_OFFLINE", "1")
        .args([
            "generate", "--device", "cpu", "--quiet", "--prompt", "a cat",
        ])
        .args([
            "--frames", "1", "--height", "64", "--width", "64", "--steps", "2",
        ])
        .arg("--output")
        .arg(out);
    if let Some(a) = adapters {
        cmd.arg("--adapters").arg(a);
    }
    for pair in args.chunks(2) {
        cmd.arg(pair[0]).arg(pair[1]);
    }
    cmd.output().unwrap()
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_without_a_model_needs_all_three_files_of_released_models() {
    let dir = tmp("refused");
    let formats = fixtures_dir().join("formats");
    let lite = fixtures_dir().join("lynx_lite");
    let out = dir.join("out.safetensors");
    let dit = formats.join("wan_native_fp8_e4m3fn.safetensors");
    let te = formats.join("umt5_fp8_scaled.safetensors");
    let vae = formats.join("vae_native.safetensors");
    let (t, x, v) = (
        Path::new("--transformer"),
        Path::new("--text-encoder"),
        Path::new("--vae"),
    );

    let e = failed(&generate(Some(&lite), &out, &[t, &dit]));
    assert!(e.contains("--text-encoder and --vae missing"), "{e}");
    let e = failed(&generate(None, &out, &[t, &dit, x, &te, v, &vae]));
    assert!(e.contains("--adapters"), "{e}");
    // The tiny UMT5 is not UMT5-XXL: its config would have to come from a folder.
    let e = failed(&generate(Some(&lite), &out, &[t, &dit, x, &te, v, &vae]));
    assert!(
        e.contains("umt5_fp8_scaled.safetensors")
            && e.contains("shared.weight")
            && e.contains("--model"),
        "{e}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The synthetic 14B as ComfyUI users hold it — a Q4_K_M GGUF DiT, UMT5-XXL in one file
/// with its tokenizer, the VAE file — and Lynx-lite's 14B adapters: the run is planned at
/// the 14B's sizes (the DiT's from its GGUF shapes), and refused by a 1 GB budget with
/// the plan's figure, before anything is loaded or written.
#[test]
fn cli_plans_the_14b_from_three_files() {
    let dir = tmp("14b");
    let tokenizer = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/tokenizer");
    let opts = SynthOptions {
        tokenizer_dir: Some(tokenizer.clone()),
        encoding: Some(DitEncoding::Q4KM),
        ..SynthOptions::default()
    };
    let set = Preset::Wan14B.model_set();
    let plan = lynx_synth::plan(&set, WeightDtype::BF16, &opts).unwrap();
    sparse::write_plan(&plan, &dir).unwrap();
    let dit = plan
        .files
        .iter()
        .find(|f| f.component == Component::Transformer && f.path.parent() == Some(Path::new("")))
        .map(|f| dir.join(&f.path))
        .unwrap();
    let vae = dir
        .join(&plan.models.wan_folder)
        .join("vae/diffusion_pytorch_model.safetensors");
    let te = dir.join("umt5_xxl.safetensors");
    let spiece = std::fs::read(tokenizer.join("spiece.model")).unwrap();
    let mut specs: Vec<TensorSpec> = walk::umt5_encoder(&set.text)
        .unwrap()
        .iter()
        .map(|p| TensorSpec::new(p.key(), Dtype::BF16, p.shape()))
        .collect();
    specs.push(TensorSpec::new("spiece_model", Dtype::U8, &[spiece.len()]));
    sparse::write_tensors(&te, specs, &[("spiece_model", &spiece)]).unwrap();
    let emb = dir.join("emb.safetensors");
    let zeros = vec![0u8; 512 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![512], &zeros).unwrap();
    safetensors::serialize_to_file([("embedding", view)], None, &emb).unwrap();

    let out = dir.join("out.safetensors");
    let budget = PathBuf::from("1");
    let e = failed(&generate(
        Some(&dir.join("lynx_lite")),
        &out,
        &[
            Path::new("--transformer"),
            &dit,
            Path::new("--text-encoder"),
            &te,
            Path::new("--vae"),
            &vae,
            Path::new("--face-embedding"),
            &emb,
            Path::new("--memory-budget"),
            &budget,
        ],
    ));
    // The 14B's Q4_K_M DiT (sized from its GGUF shapes) and UMT5-XXL in f32 (the CPU's
    // default dtype), as the README's table has them.
    assert!(
        e.contains("needs about") && e.contains("text encoder 22.7 GB, DiT 10.1 GB"),
        "{e}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
