//! Lynx-lite against the reference (`components/lite_dit.safetensors`, `lynx_lite/`): the
//! resampler of the face embedding and of zeros, and one batched [uncond, cond] DiT
//! forward with the IP layer on every 2nd block; on the tiny 2-block model (one IP layer,
//! on block 0) and on the 8-block one of `deep/` (four, on blocks 0, 2, 4 and 6).

use std::path::Path;

use burn::tensor::{DType, Tensor};
use lynx_adapters::{LynxAdapters, Variant};
use lynx_core::Error;
use lynx_dit::WanTransformer;
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn dit() -> WanTransformer {
    dit_in(&fixtures_dir())
}

/// The tiny transformer of the fixture set at `root` (`tests/fixtures` or its `deep/`).
fn dit_in(root: &Path) -> WanTransformer {
    WanTransformer::from_pretrained(
        root.join("Wan2.1-T2V-tiny-Diffusers/transformer"),
        &test_device(),
        DType::F32,
    )
    .expect("tiny transformer")
}

/// The lite fixture's resampler head width (PRESET.json's `resampler.dim_head`).
const DIM_HEAD: usize = 8;

fn lite(dit: &WanTransformer) -> LynxAdapters {
    lite_in(&fixtures_dir(), dit)
}

fn lite_in(root: &Path, dit: &WanTransformer) -> LynxAdapters {
    LynxAdapters::from_dir(
        root.join("lynx_lite"),
        dit,
        DIM_HEAD,
        &test_device(),
        DType::F32,
    )
    .expect("lynx_lite loads")
}

#[test]
fn parity_lite_dit_batched_cfg() {
    // One IP layer on a 2-block DiT: block 0 (interval 2).
    lite_dit_matches("", &[0]);
}

/// Layer k on block k·2, checked against the reference on every block.
#[test]
fn parity_lite_dit_batched_cfg_eight_blocks() {
    lite_dit_matches("deep/", &[0, 2, 4, 6]);
}

/// The lite DiT forward of the fixture set `tests/fixtures/{set}` against its
/// `components/lite_dit.safetensors`, with the IP layers on `blocks`.
fn lite_dit_matches(set: &str, blocks: &[usize]) {
    let device = test_device();
    let fx = fixture(&format!("{set}components/lite_dit.safetensors"));
    let root = fixtures_dir().join(set);
    let dit = dit_in(&root);
    let lynx = lite_in(&root, &dit);
    assert_eq!(lynx.variant(), Variant::Lite);
    assert!(!lynx.uses_reference());
    assert_eq!(lynx.id().blocks(), blocks);

    // The resampler of [zeros, face] gives the fixture's tokens.
    let face: Tensor<1> = fixture_tensor(&fx, "face_embedding", &device);
    let face = face.reshape([1, 1, 512]);
    let tokens = lynx
        .id()
        .tokens(Tensor::cat(vec![face.zeros_like(), face], 0))
        .unwrap();
    let want_tokens: Tensor<3> = fixture_tensor(&fx, "ip_tokens", &device);
    assert_close("ip_tokens", &tokens, &want_tokens, 1e-4);

    let ip_scale = 1.0;
    let extras = lynx
        .extras(Some(&want_tokens), ip_scale, None, 1.0)
        .unwrap();
    for (i, e) in extras.iter().enumerate() {
        assert_eq!(e.cross_attn.is_some(), blocks.contains(&i), "block {i}");
    }
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
    let text = Tensor::cat(
        vec![
            fixture_tensor::<3>(&fx, "text_uncond", &device),
            fixture_tensor::<3>(&fx, "text_cond", &device),
        ],
        0,
    );
    let mut blocks = Vec::new();
    let out = dit
        .forward_observed(
            Tensor::cat(vec![x.clone(), x], 0),
            fixture_tensor(&fx, "timestep", &device),
            text,
            &extras,
            |_, h| blocks.push(h.clone()),
        )
        .unwrap();
    assert_eq!(blocks.len(), dit.config().num_layers, "blocks observed");
    for (i, h) in blocks.iter().enumerate() {
        let want: Tensor<3> = fixture_tensor(&fx, &format!("block_out.{i}"), &device);
        assert_close(&format!("lite block_out.{i}"), h, &want, 1e-4);
    }
    assert_close("lite out", &out, &fixture_tensor(&fx, "out", &device), 1e-4);
}

#[test]
fn lite_conditions_take_no_reference() {
    let device = test_device();
    let dit = dit();
    let lynx = lite(&dit);
    let face = Tensor::<3>::ones([1, 1, 512], &device);
    let c = lynx.conditions(face.clone(), 1.0, None, 1.0).unwrap();
    assert_eq!((c.cond.len(), c.uncond.len()), (2, 2));
    let features = vec![Tensor::<3>::zeros([1, 4, 48], &device); 2];
    let err = lynx
        .conditions(face, 1.0, Some((&features, &features)), 1.0)
        .unwrap_err();
    assert!(err.to_string().contains("no Ref-adapter"), "{err}");
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-lite-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes zero-filled f32 tensors as a safetensors file.
fn write(path: &std::path::Path, tensors: &[(String, Vec<usize>)]) {
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

/// A lynx_lite folder with the fixture's resampler and the given IP layers.
fn lite_dir(name: &str, ip: &[(String, Vec<usize>)]) -> std::path::PathBuf {
    let dir = tmp(name);
    std::fs::copy(
        fixtures_dir().join("lynx_lite/resampler.safetensors"),
        dir.join("resampler.safetensors"),
    )
    .unwrap();
    write(&dir.join("ip_layers.safetensors"), ip);
    dir
}

fn ip_layer(k: usize, dim: usize, c: usize) -> Vec<(String, Vec<usize>)> {
    ["to_k_ip", "to_v_ip"]
        .iter()
        .map(|p| (format!("{k}.{p}.weight"), vec![dim, c]))
        .collect()
}

#[test]
fn lite_folder_errors_name_the_problem() {
    let device = test_device();
    let dit = dit(); // 2 blocks, width 48
    let load = |dir: &std::path::Path| {
        LynxAdapters::from_dir(dir, &dit, DIM_HEAD, &device, DType::F32).unwrap_err()
    };

    // Three IP layers cannot sit on a 2-block DiT at any interval.
    let mut ip = ip_layer(0, 48, 40);
    ip.extend(ip_layer(1, 48, 40));
    ip.extend(ip_layer(2, 48, 40));
    let err = load(&lite_dir("count", &ip));
    let msg = err.to_string();
    assert!(
        msg.contains("3 layer(s)") && msg.contains("2-block") && msg.contains("interval"),
        "{msg}"
    );

    // A mis-shaped key is reported by name with both shapes.
    let err = load(&lite_dir("shape", &ip_layer(0, 64, 40)));
    let Error::Keys { mismatched, .. } = &err else {
        panic!("expected a key report, got {err:?}");
    };
    assert!(
        mismatched
            .iter()
            .any(|(k, e, f)| k == "0.to_k_ip.weight" && e == &[48, 40] && f == &[64, 40]),
        "{mismatched:?}"
    );

    // A missing key.
    let mut ip = ip_layer(0, 48, 40);
    ip.pop();
    let err = load(&lite_dir("missing", &ip));
    assert!(
        err.to_string().contains("0.to_v_ip.weight") && err.to_string().contains("missing"),
        "{err}"
    );

    // A folder that is neither variant lists what it holds.
    let dir = tmp("neither");
    std::fs::write(dir.join("notes.txt"), "x").unwrap();
    let msg = load(&dir).to_string();
    assert!(
        msg.contains("neither") && msg.contains("notes.txt"),
        "{msg}"
    );

    // Full-style IP layers without ref_layers: the missing file is named.
    let dir = tmp("half-full");
    for f in ["resampler.safetensors", "ip_layers.safetensors"] {
        std::fs::copy(fixtures_dir().join("lynx_full").join(f), dir.join(f)).unwrap();
    }
    let msg = load(&dir).to_string();
    assert!(msg.contains("ref_layers.safetensors"), "{msg}");
}
