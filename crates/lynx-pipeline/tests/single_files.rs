//! A model given as its three weight files without a folder (`lynx_pipeline::single`):
//! at the real 1.3B and 14B shapes (header-only synthetic files, `lynx_synth::sparse`)
//! it is read as the folder with its `config.json` reads it; what the released configs
//! cannot describe is refused by name.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use lynx_dit::WanConfig;
use lynx_pipeline::folder::{FolderLayout, ModelFolder, WeightFiles};
use lynx_pipeline::original::released_text_config;
use lynx_pipeline::source::Source;
use lynx_pipeline::{GenerateRequest, LynxPipeline, PipelineOptions};
use lynx_store::Offload;
use lynx_store::safetensors_io::{Dtype, TensorSpec};
use lynx_synth::encoded::{DitEncoding, dit_tensors};
use lynx_synth::presets::Preset;
use lynx_synth::{Component, SynthOptions, WeightDtype, sparse, walk};
use lynx_testing::{fixtures_dir, test_device};
use lynx_text::Tokenizer;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-single-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_tokenizer() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/tokenizer")
}

/// The config fields a run depends on (not where it was read from).
fn sizes(c: &WanConfig) -> serde_json::Value {
    let mut c = c.clone();
    c.class_name = None;
    c.path = PathBuf::new();
    c.extra.clear();
    serde_json::to_value(&c).unwrap()
}

/// The DiT configs read off the released models' weights in every encoding the
/// synthetic files come in equal their `config.json`s.
#[test]
fn the_dit_config_is_read_off_the_released_shapes() {
    for preset in [Preset::Wan1_3B, Preset::Wan14B] {
        let want = preset.model_set().dit;
        for enc in [
            DitEncoding::Fp8,
            DitEncoding::Fp8Scaled,
            DitEncoding::Q8_0,
            DitEncoding::Q4KM,
        ] {
            let tensors = dit_tensors(&want, enc).unwrap();
            let got = WanConfig::from_shapes(
                |key| {
                    tensors
                        .iter()
                        .find(|t| t.key == key)
                        .map(|t| t.shape.clone())
                },
                Path::new("dit.safetensors"),
            )
            .unwrap();
            assert_eq!(sizes(&got), sizes(&want), "{preset:?} {enc:?}");
        }
    }
}

/// The synthetic 14B in header-only files: the DiT as one fp8 (or GGUF) file, UMT5-XXL
/// as one file carrying its tokenizer as ComfyUI's do, the VAE file. Planned without a
/// folder, the run has the sizes the folder gives.
#[test]
fn three_files_plan_as_the_folder_at_the_14b_shapes() {
    let dir = tmp("14b");
    let spiece = std::fs::read(tiny_tokenizer().join("spiece.model")).unwrap();
    let te = dir.join("umt5_xxl_bf16.safetensors");
    let released = released_text_config(&te);
    let mut specs: Vec<TensorSpec> = walk::umt5_encoder(&released)
        .unwrap()
        .iter()
        .map(|p| TensorSpec::new(p.key(), Dtype::BF16, p.shape()))
        .collect();
    specs.push(TensorSpec::new("spiece_model", Dtype::U8, &[spiece.len()]));
    sparse::write_tensors(&te, specs, &[("spiece_model", &spiece)]).unwrap();

    // Empty prompts: the tiny tokenizer.json of the folder and its spiece.model (put in
    // the text encoder file) split words differently (the fixture's prepend scheme).
    let request = GenerateRequest::new("")
        .with_negative_prompt("")
        .with_frames(1)
        .with_size(64, 64)
        .with_steps(2);
    for enc in [DitEncoding::Fp8Scaled, DitEncoding::Q4KM] {
        let opts = SynthOptions {
            tokenizer_dir: Some(tiny_tokenizer()),
            lite: false,
            encoding: Some(enc),
            ..SynthOptions::default()
        };
        let plan = lynx_synth::plan(&Preset::Wan14B.model_set(), WeightDtype::BF16, &opts).unwrap();
        let written = sparse::write_plan(&plan, &dir).unwrap();
        assert!(written < 50 << 20, "{written} bytes written for headers");
        let folder = dir.join(&plan.models.wan_folder);
        let dit = plan
            .files
            .iter()
            .find(|f| {
                f.component == Component::Transformer && f.path.parent() == Some(Path::new(""))
            })
            .map(|f| dir.join(&f.path))
            .unwrap();
        let vae = folder.join("vae/diffusion_pytorch_model.safetensors");

        let files = WeightFiles {
            transformer: None,
            text_encoder: Some(Source::local(&te)),
            vae: Some(Source::local(&vae)),
        };
        let alone = ModelFolder::open_with(&dit, &files).unwrap();
        assert_eq!(alone.layout, FolderLayout::SingleFiles);
        let with_folder = ModelFolder::open_with(
            &folder,
            &WeightFiles {
                transformer: Some(Source::local(&dit)),
                ..WeightFiles::default()
            },
        )
        .unwrap();
        let (a, f) = (
            alone.dit_config(4096).unwrap(),
            with_folder.dit_config(4096).unwrap(),
        );
        assert_eq!(sizes(&a), sizes(&f), "{enc:?}");
        assert_eq!(alone.text_config().unwrap().d_ff, 10_240);
        assert_eq!(alone.vae_config().unwrap().z_dim, 16);
        assert_eq!(alone.scheduler().unwrap().flow_shift, 5.0);
        // The tokenizer is the text encoder file's sentencepiece model.
        let from_file = Tokenizer::from_spiece(&spiece, &te, 512).unwrap();
        let tokenizer = alone.tokenizer().unwrap();
        for p in ["a cat", "A portrait of a man", ""] {
            let (a, b) = (
                tokenizer.tokenize(p).unwrap(),
                from_file.tokenize(p).unwrap(),
            );
            assert_eq!((a.len, &a.ids), (b.len, &b.ids), "{p:?}");
        }

        for offload in [Offload::None, Offload::Blocks] {
            let options = PipelineOptions::new(test_device())
                .with_dtype(DType::F32)
                .with_offload(offload);
            let by_folder = LynxPipeline::plan_memory(
                &folder,
                None,
                &options.clone().with_transformer(Source::local(&dit)),
                &request,
            )
            .unwrap();
            let by_files = LynxPipeline::plan_memory(
                &dit,
                None,
                &options
                    .clone()
                    .with_text_encoder(Source::local(&te))
                    .with_vae(Source::local(&vae)),
                &request,
            )
            .unwrap();
            let w = (&by_files.weights, &by_folder.weights);
            assert_eq!((w.0.text, w.0.dit, w.0.vae), (w.1.text, w.1.dit, w.1.vae));
            assert_eq!(by_files.phases, by_folder.phases, "{enc:?} {offload:?}");
            assert_eq!(by_files.peak(), by_folder.peak());
            assert_eq!(by_files.resident(), by_folder.resident());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the released configs cannot describe is refused, naming the file, the tensor
/// and the way out (a model folder).
#[test]
fn files_the_released_configs_do_not_fit_are_refused_by_name() {
    let formats = fixtures_dir().join("formats");
    let dit = formats.join("wan_native_fp8_e4m3fn.safetensors");
    let te = formats.join("umt5_fp8_scaled.safetensors");
    let vae = formats.join("vae_native.safetensors");
    let files = |te: &Path, vae: Option<&Path>| WeightFiles {
        transformer: None,
        text_encoder: Some(Source::local(te)),
        vae: vae.map(Source::local),
    };
    let open = |dit: &Path, files: &WeightFiles| {
        ModelFolder::open_with(dit, files).unwrap_err().to_string()
    };

    // The tiny UMT5 is not UMT5-XXL.
    let e = open(&dit, &files(&te, Some(&vae)));
    assert!(
        e.contains("umt5_fp8_scaled.safetensors")
            && e.contains("shared.weight")
            && e.contains("[256384, 4096]")
            && e.contains("--model"),
        "{e}"
    );
    // No VAE given.
    let e = open(&dit, &files(&te, None));
    assert!(e.contains("--vae") && e.contains("wan_native_fp8"), "{e}");
    // The DiT twice.
    let mut twice = files(&te, Some(&vae));
    twice.transformer = Some(Source::local(&dit));
    assert!(open(&dit, &twice).contains("given twice"));
    // A folder's DiT of width 48 has no released head count.
    let e = WanConfig::from_checkpoint(&lynx_store::Checkpoint::open(&dit).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wan_native_fp8_e4m3fn.safetensors")
            && e.contains("patch_embedding.weight")
            && e.contains("multiple of 128")
            && e.contains("--model"),
        "{e}"
    );
    // The tiny VAE is not the released one.
    let dir = tmp("refused");
    let spiece = std::fs::read(tiny_tokenizer().join("spiece.model")).unwrap();
    let xxl = dir.join("umt5.safetensors");
    let mut specs: Vec<TensorSpec> = walk::umt5_encoder(&released_text_config(&xxl))
        .unwrap()
        .iter()
        .map(|p| TensorSpec::new(p.key(), Dtype::BF16, p.shape()))
        .collect();
    let no_tokenizer = dir.join("umt5_no_tokenizer.safetensors");
    sparse::write_tensors(&no_tokenizer, specs.clone(), &[]).unwrap();
    specs.push(TensorSpec::new("spiece_model", Dtype::U8, &[spiece.len()]));
    sparse::write_tensors(&xxl, specs, &[("spiece_model", &spiece)]).unwrap();
    let e = open(&dit, &files(&xxl, Some(&vae)));
    assert!(
        e.contains("vae_native.safetensors") && e.contains("encoder.conv_in.weight"),
        "{e}"
    );
    // A UMT5-XXL without its tokenizer.
    let e = open(&dit, &files(&no_tokenizer, Some(&vae)));
    assert!(
        e.contains("spiece_model") && e.contains("umt5_no_tokenizer"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
