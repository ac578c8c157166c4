//! `--model` on the original `Wan-AI/Wan2.1-T2V-14B` folder layout: the tiny model
//! written that way (`lynx_testing::wan_original`: Wan's `config.json`, the native DiT in
//! two shards behind an index, the T5 and VAE as `torch.save` files in Wan's own key
//! names, the tokenizer in `google/umt5-xxl/`) gives the same encoder output, DiT output,
//! decoded frames and whole generation as the tiny diffusers folder (≤ 1e-5), and hostile
//! `.pth` files fail with the file and the tensor named.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Int, Tensor, TensorData};
use lynx_dit::{WanConfig, WanTransformer};
use lynx_pipeline::folder::{FolderLayout, ModelFolder};
use lynx_pipeline::original;
use lynx_pipeline::{GenerateRequest, LynxPipeline, NoiseSource, PipelineOptions};
use lynx_store::Checkpoint;
use lynx_testing::wan_original::original_folder;
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};
use lynx_text::{Umt5Config, Umt5Encoder};
use lynx_vae::{VaeConfig, WanVae};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-wan-original-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers")
}

fn ints(key: &str) -> Vec<i64> {
    fixture("components/text.safetensors")
        .read(key)
        .unwrap()
        .try_into_vec::<i64>()
        .unwrap()
}

#[test]
fn parity_original_folder_parts() {
    let dir = tmp("parts");
    original_folder(&dir);
    let device = test_device();
    let folder = ModelFolder::open(&dir).unwrap();
    assert_eq!(folder.layout, FolderLayout::WanOriginal);
    let diffusers = ModelFolder::open(tiny()).unwrap();
    assert_eq!(diffusers.layout, FolderLayout::Diffusers);

    // The T5 from Wan's own key names, in a torch.save file.
    let text_cfg = folder.text_config().unwrap();
    let t5 = Checkpoint::open(dir.join(original::T5_FILE)).unwrap();
    assert_eq!(t5.layout(), lynx_store::formats::Layout::WanT5);
    let enc = t5
        .build(&device, DType::F32, |w| Umt5Encoder::load(w, &text_cfg))
        .unwrap();
    let ref_cfg = Umt5Config::load(tiny().join("text_encoder/config.json")).unwrap();
    let ref_enc = Checkpoint::open(tiny().join("text_encoder"))
        .unwrap()
        .build(&device, DType::F32, |w| Umt5Encoder::load(w, &ref_cfg))
        .unwrap();
    let input = || {
        (
            Tensor::<2, Int>::from_data(TensorData::new(ints("raw_ids_0"), [1, 512]), &device),
            Tensor::<2, Int>::from_data(TensorData::new(ints("raw_mask_0"), [1, 512]), &device),
        )
    };
    let (ids, mask) = input();
    let got = enc.forward(ids, Some(mask)).unwrap();
    let (ids, mask) = input();
    let want = ref_enc.forward(ids, Some(mask)).unwrap();
    assert_close("text hidden (Wan T5 .pth)", &got, &want, 1e-5);

    // The DiT: Wan's config.json completed with the released values, the native shards.
    let dit_cfg = folder.dit_config(text_cfg.d_model).unwrap();
    let ref_dit_cfg = WanConfig::load(tiny().join("transformer")).unwrap();
    let sizes = |c: &WanConfig| {
        (
            c.patch_size,
            c.num_attention_heads,
            c.attention_head_dim,
            c.in_channels,
            c.out_channels(),
            c.text_dim,
            c.freq_dim,
            c.ffn_dim,
            c.num_layers,
            c.cross_attn_norm,
            c.qk_norm.clone(),
            c.eps,
        )
    };
    assert_eq!(sizes(&dit_cfg), sizes(&ref_dit_cfg));
    let weights = original::dit_weights(&dir);
    assert!(
        weights.ends_with(original::DIT_INDEX),
        "{}",
        weights.display()
    );
    let dit = Checkpoint::open(&weights)
        .unwrap()
        .build(&device, DType::F32, |w| WanTransformer::load(w, dit_cfg))
        .unwrap();
    let ref_dit = Checkpoint::open(tiny().join("transformer"))
        .unwrap()
        .build(&device, DType::F32, |w| {
            WanTransformer::load(w, ref_dit_cfg)
        })
        .unwrap();
    let fx = fixture("components/dit.safetensors");
    let run = |d: &WanTransformer| {
        let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
        let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
        let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
        d.forward(x, t, text, &[]).unwrap()
    };
    assert_close("dit out (native shards)", &run(&dit), &run(&ref_dit), 1e-5);

    // The VAE from Wan2.1_VAE.pth.
    let vae = Checkpoint::open(dir.join(original::VAE_FILE))
        .unwrap()
        .build(&device, DType::F32, |w| {
            WanVae::load(w, folder.vae_config().unwrap())
        })
        .unwrap();
    let ref_vae = Checkpoint::open(tiny().join("vae/diffusion_pytorch_model.safetensors"))
        .unwrap()
        .build(&device, DType::F32, |w| {
            WanVae::load(w, VaeConfig::load(tiny().join("vae/config.json")).unwrap())
        })
        .unwrap();
    let vx = fixture("components/vae.safetensors");
    let latents = || fixture_tensor::<5>(&vx, "latents", &device);
    let got = vae.decode(latents()).unwrap();
    let want = ref_vae.decode(latents()).unwrap();
    assert_close("decoded (Wan2.1_VAE.pth)", &got, &want, 1e-5);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the folder does not hold: the released UMT5-XXL and VAE configs and Wan's T2V
/// sampling shift.
#[test]
fn released_configs_fill_in_the_rest() {
    let dir = tmp("released");
    original_folder(&dir);
    std::fs::remove_dir_all(dir.join("text_encoder")).unwrap();
    std::fs::remove_dir_all(dir.join("vae")).unwrap();
    let folder = ModelFolder::open(&dir).unwrap();
    let t5 = folder.text_config().unwrap();
    assert_eq!(
        (
            t5.vocab_size,
            t5.d_model,
            t5.d_kv,
            t5.d_ff,
            t5.num_heads,
            t5.num_layers
        ),
        (256_384, 4096, 64, 10_240, 64, 24)
    );
    let vae = folder.vae_config().unwrap();
    assert_eq!((vae.base_dim, vae.z_dim, vae.num_res_blocks), (96, 16, 2));
    assert_eq!(vae.latents_mean.len(), 16);
    let s = folder.scheduler().unwrap();
    assert_eq!(s.flow_shift, 5.0);
    s.check_unipc().unwrap();
    let dit = folder.dit_config(t5.d_model).unwrap();
    assert_eq!(
        (
            dit.inner_dim(),
            dit.num_attention_heads,
            dit.text_dim,
            dit.patch_size
        ),
        (48, 2, 4096, [1, 2, 2])
    );
    // The tiny weights do not fit the released T5 config: refused with the sizes.
    let options = PipelineOptions::new(test_device());
    let e = LynxPipeline::from_pretrained(&dir, None, options)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("d_model") || e.contains("vocab_size"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn original_folders_lynx_does_not_run_are_refused_by_name() {
    let dir = tmp("refused");
    original_folder(&dir);
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"t2v\"", "\"i2v\"")).unwrap();
    let e = ModelFolder::open(&dir).unwrap_err().to_string();
    assert!(e.contains("\"i2v\"") && e.contains("config.json"), "{e}");
    std::fs::write(&config, &text).unwrap();
    std::fs::remove_file(dir.join(original::VAE_FILE)).unwrap();
    let e = ModelFolder::open(&dir).unwrap_err().to_string();
    assert!(e.contains(original::VAE_FILE), "{e}");
    std::fs::remove_file(&config).unwrap();
    let e = ModelFolder::open(&dir).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("WanModel"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `v` rounded to bf16 (to nearest, ties to even), back in f32; no NaNs here.
fn bf16_round(v: f32) -> f32 {
    let b = v.to_bits();
    f32::from_bits(((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16)
}

/// The released T5 file is bf16: its storages read as the f32 values rounded to bf16.
#[test]
fn bf16_storages_read_as_the_rounded_values() {
    let own = fixtures_dir().join("wan_original");
    let f32s = Checkpoint::open(own.join(original::T5_FILE)).unwrap();
    let bf16s = Checkpoint::open(own.join("t5_bf16.pth")).unwrap();
    assert_eq!(bf16s.layout(), lynx_store::formats::Layout::WanT5);
    assert_eq!(f32s.keys().count(), bf16s.keys().count());
    for key in f32s.keys() {
        let want: Vec<f32> = f32s
            .read_f32(key)
            .unwrap()
            .into_iter()
            .map(bf16_round)
            .collect();
        assert_eq!(bf16s.read(key).unwrap().dtype(), DType::BF16, "{key}");
        assert_eq!(bf16s.read_f32(key).unwrap(), want, "{key}");
    }
}

/// Offset of the central header of zip entry `name` in `bytes`.
fn central_header(bytes: &[u8], name: &str) -> usize {
    let mut at = 0;
    loop {
        let i = at
            + bytes[at..]
                .windows(4)
                .position(|w| w == b"PK\x01\x02")
                .unwrap();
        let len = u16::from_le_bytes([bytes[i + 28], bytes[i + 29]]) as usize;
        if &bytes[i + 46..i + 46 + len] == name.as_bytes() {
            return i;
        }
        at = i + 4;
    }
}

fn open_err(path: &Path) -> String {
    Checkpoint::open(path).unwrap_err().to_string()
}

#[test]
fn hostile_pth_files_name_the_file_and_the_tensor() {
    let dir = tmp("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(fixtures_dir().join("wan_original").join(original::T5_FILE)).unwrap();

    // Cut short anywhere: an error naming the file, never a panic.
    for cut in [good.len() / 2, good.len() - 10, 100] {
        let path = dir.join(format!("cut{cut}.pth"));
        std::fs::write(&path, &good[..cut]).unwrap();
        let e = open_err(&path);
        assert!(e.contains(&path.display().to_string()), "{e}");
    }

    // A storage entry that claims 2 GB more than the file holds.
    let stem = "models_t5_umt5-xxl-enc-bf16";
    let mut bad = good.clone();
    let i = central_header(&bad, &format!("{stem}/data/0"));
    for field in [i + 20, i + 24] {
        bad[field..field + 4].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
    }
    let path = dir.join("oversized_entry.pth");
    std::fs::write(&path, &bad).unwrap();
    let e = open_err(&path);
    assert!(
        e.contains(&path.display().to_string())
            && e.contains("data/0")
            && e.contains("runs past the end"),
        "{e}"
    );
    assert!(e.contains("tensor `"), "the tensor is named: {e}");

    // A storage entry shorter than the elements its tensor declares.
    let mut bad = good.clone();
    let i = central_header(&bad, &format!("{stem}/data/0"));
    let size = u32::from_le_bytes(bad[i + 24..i + 28].try_into().unwrap());
    for field in [i + 20, i + 24] {
        bad[field..field + 4].copy_from_slice(&(size / 2).to_le_bytes());
    }
    let path = dir.join("short_entry.pth");
    std::fs::write(&path, &bad).unwrap();
    let e = open_err(&path);
    assert!(
        e.contains(&path.display().to_string())
            && e.contains("storage `0` declares")
            && e.contains("tensor `"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A whole plain text-to-video generation from each folder gives the same frames.
#[test]
fn parity_generation_from_the_original_folder() {
    let dir = tmp("generate");
    original_folder(&dir);
    let device = test_device();
    let request = GenerateRequest::new("a fox in the snow")
        .with_negative_prompt("blurry")
        .with_frames(5)
        .with_size(32, 32)
        .with_steps(2)
        .with_flow_shift(3.0)
        .with_noise(NoiseSource::seeded(7));
    let run = |base: &Path| {
        let pipe = LynxPipeline::from_pretrained(base, None, PipelineOptions::new(device.clone()))
            .unwrap_or_else(|e| panic!("{}: {e}", base.display()));
        pipe.generate(&request).unwrap().frames
    };
    let got = run(&dir);
    let want = run(&tiny());
    assert_close("frames (original folder)", &got, &want, 1e-5);
    let _ = std::fs::remove_dir_all(&dir);
}
