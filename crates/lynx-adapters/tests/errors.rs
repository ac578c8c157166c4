//! Adapter files that do not fit the base model, missing files and bad inputs give
//! errors naming the file, the key and the shapes.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Tensor};
use lynx_adapters::{IdAdapter, IpLayout, LynxAdapters, RefAdapter, ResamplerConfig};
use lynx_core::Error;
use lynx_dit::WanTransformer;
use lynx_store::Checkpoint;
use lynx_testing::{fixture, fixtures_dir, test_device};

fn dit() -> WanTransformer {
    WanTransformer::from_pretrained(
        fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer"),
        &test_device(),
        DType::F32,
    )
    .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-adapters-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a safetensors file of zero-filled f32 tensors.
fn write(path: &Path, tensors: &[(String, Vec<usize>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((k, s), b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (k.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// `lynx_full`-style adapter files for a base model of width `dim` with `layers` blocks.
fn adapters_for(dir: &Path, dim: usize, layers: usize) {
    let mut ip = Vec::new();
    let mut rf = Vec::new();
    for i in 0..layers {
        for p in ["to_k_ip", "to_v_ip"] {
            ip.push((format!("{i}.{p}.weight"), vec![dim, dim]));
            ip.push((format!("{i}.{p}.bias"), vec![dim]));
        }
        ip.push((format!("{i}.registers"), vec![1, 2, dim]));
        for p in ["to_k_ref", "to_v_ref"] {
            rf.push((format!("{i}.{p}.weight"), vec![dim, dim]));
            rf.push((format!("{i}.{p}.bias"), vec![dim]));
        }
    }
    write(&dir.join("ip_layers.safetensors"), &ip);
    write(&dir.join("ref_layers.safetensors"), &rf);
    std::fs::copy(
        fixtures_dir().join("lynx_full/resampler.safetensors"),
        dir.join("resampler.safetensors"),
    )
    .unwrap();
}

#[test]
fn adapters_of_another_base_size_are_rejected() {
    let dit = dit(); // width 48, 2 blocks
    let device = test_device();
    let dir = tmp("wide");
    adapters_for(&dir, 64, 2);
    let err = RefAdapter::from_dir(&dir, &dit, &device, DType::F32).unwrap_err();
    let Error::Keys { mismatched, .. } = &err else {
        panic!("expected a key report, got {err:?}");
    };
    assert!(
        mismatched
            .iter()
            .any(|(k, e, f)| k == "0.to_k_ref.weight" && e == &[48, 48] && f == &[64, 64]),
        "{mismatched:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ref_layers.safetensors") && msg.contains("shape mismatch"),
        "{msg}"
    );

    let err = IdAdapter::from_dir(&dir, &dit, IpLayout::Full, 8, &device, DType::F32).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("ip_layers.safetensors"), "{msg}");
    assert!(
        msg.contains("`0.to_k_ip.weight` is [64, 64], expected [48, 64]"),
        "{msg}"
    );
}

#[test]
fn adapters_of_a_deeper_model_are_rejected() {
    let dit = dit();
    let dir = tmp("deep");
    adapters_for(&dir, 48, 3);
    let err = RefAdapter::from_dir(&dir, &dit, &test_device(), DType::F32).unwrap_err();
    let Error::Keys { unexpected, .. } = &err else {
        panic!("expected a key report, got {err:?}");
    };
    assert!(
        unexpected.iter().any(|k| k == "2.to_k_ref.weight"),
        "{unexpected:?}"
    );
    assert!(err.to_string().contains("unused"), "{err}");
}

#[test]
fn resampler_width_must_match_the_ip_layers() {
    // IP layers for 48-wide blocks that take 64-wide tokens; the resampler makes 48.
    let dit = dit();
    let dir = tmp("tokens");
    adapters_for(&dir, 48, 2);
    let mut ip = Vec::new();
    for i in 0..2 {
        for p in ["to_k_ip", "to_v_ip"] {
            ip.push((format!("{i}.{p}.weight"), vec![48, 64]));
            ip.push((format!("{i}.{p}.bias"), vec![48]));
        }
    }
    write(&dir.join("ip_layers.safetensors"), &ip);
    let err =
        IdAdapter::from_dir(&dir, &dit, IpLayout::Full, 8, &test_device(), DType::F32).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert!(err.to_string().contains("0.to_k_ip.weight"), "{err}");
}

#[test]
fn missing_adapter_file_is_named() {
    let dit = dit();
    let dir = tmp("empty");
    let err =
        IdAdapter::from_dir(&dir, &dit, IpLayout::Full, 8, &test_device(), DType::F32).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("resampler.safetensors"), "{err}");
    let err = RefAdapter::from_dir(&dir, &dit, &test_device(), DType::F32).unwrap_err();
    assert!(err.to_string().contains("ref_layers.safetensors"), "{err}");
}

#[test]
fn resampler_head_width_must_divide_its_width() {
    let ckpt: Checkpoint = fixture("lynx_full/resampler.safetensors");
    let err = ResamplerConfig::from_checkpoint(&ckpt, 5).unwrap_err();
    assert!(err.to_string().contains("dim_head = 5"), "{err}");
    let cfg = ResamplerConfig::from_checkpoint(&ckpt, 8).unwrap();
    assert_eq!((cfg.heads, cfg.ff_inner_dim), (4, 64));
}

#[test]
fn bad_adapter_inputs_are_errors() {
    let device = test_device();
    let dit = dit();
    let lynx_full = fixtures_dir().join("lynx_full");
    let id = IdAdapter::from_dir(&lynx_full, &dit, IpLayout::Full, 8, &device, DType::F32).unwrap();
    let reference = RefAdapter::from_dir(&lynx_full, &dit, &device, DType::F32).unwrap();
    let is_input = |e: Error, needle: &str| {
        assert!(matches!(e, Error::Input(_)), "{e:?}");
        assert!(e.to_string().contains(needle), "{e}");
    };
    let face = Tensor::<3>::zeros([1, 1, 15], &device);
    is_input(id.tokens(face).unwrap_err(), "face embedding");
    let tokens = Tensor::<3>::zeros([1, 4, 47], &device);
    is_input(id.block_kv(&tokens, 1.0).unwrap_err(), "ID tokens");
    let one_block = vec![Tensor::<3>::zeros([1, 16, 48], &device)];
    is_input(reference.block_kv(&one_block, 1.0).unwrap_err(), "blocks");
    let narrow = vec![Tensor::<3>::zeros([1, 16, 40], &device); 2];
    is_input(reference.block_kv(&narrow, 1.0).unwrap_err(), "block 0");
    let a = id
        .block_kv(&Tensor::zeros([1, 4, 48], &device), 1.0)
        .unwrap();
    let b = reference
        .block_kv(&vec![Tensor::zeros([1, 16, 48], &device); 2], 1.0)
        .unwrap();
    let err = lynx_adapters::block_extras(Some(a), Some(b[..1].to_vec())).unwrap_err();
    is_input(err, "blocks");
    // Lynx-lite has no Ref-adapter: reference features are refused.
    let lite = LynxAdapters::from_dir(
        fixtures_dir().join("lynx_lite"),
        &dit,
        8,
        &device,
        DType::F32,
    )
    .unwrap();
    assert!(lite.extras(None, 1.0, None, 1.0).unwrap().is_empty());
    let err = lite.extras(Some(&tokens), 1.0, None, 1.0).unwrap_err();
    is_input(err, "ID tokens");
    let err = lite
        .extras(None, 1.0, Some(narrow.as_slice()), 1.0)
        .unwrap_err();
    is_input(err, "no Ref-adapter");
}
