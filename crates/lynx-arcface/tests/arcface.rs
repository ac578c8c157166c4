//! ArcFace IR-SE against facexlib's `Backbone` (`components/arcface*`), loaded from the
//! `.pth` and from safetensors.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::image;
use lynx_arcface::{ArcFace, load_arcface};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

/// Units per stage, from `arcface.json` (the fixture's stages 2 and 3 share a width).
fn depths() -> Vec<usize> {
    let text = std::fs::read_to_string(fixtures_dir().join("components/arcface.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["depths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn check(model: &ArcFace, name: &str) {
    let device = test_device();
    let fx = fixture("components/arcface.safetensors");
    let rgb: Tensor<4> = fixture_tensor(&fx, "input_rgb", &device);
    let bgr = rgb.select(
        1,
        Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 1, 0], [3]), &device),
    );
    let emb = model.forward(bgr).unwrap();
    let want: Tensor<2> = fixture_tensor(&fx, "embedding", &device);
    assert_close(name, &emb, &want, 1e-4);
    let norm: f32 = emb.square().sum().sqrt().into_scalar();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
}

#[test]
fn parity_embedding_from_pth() {
    let path = fixtures_dir().join("components/arcface_ir_se.pth");
    let model =
        load_arcface(path, &test_device(), Some(&depths())).unwrap_or_else(|e| panic!("{e}"));
    check(&model, "embedding (.pth)");
}

/// The same weights saved in PyTorch's legacy (pre-1.6, non-zip) format.
#[test]
fn parity_embedding_from_legacy_pth() {
    let path = fixtures_dir().join("components/arcface_ir_se_legacy.pth");
    let model =
        load_arcface(path, &test_device(), Some(&depths())).unwrap_or_else(|e| panic!("{e}"));
    check(&model, "embedding (legacy .pth)");
}

#[test]
fn parity_embedding_from_safetensors() {
    let path = fixtures_dir().join("components/arcface_ir_se.safetensors");
    let model =
        load_arcface(path, &test_device(), Some(&depths())).unwrap_or_else(|e| panic!("{e}"));
    check(&model, "embedding (.safetensors)");
}

#[test]
fn parity_embedding_of_the_aligned_crop() {
    // From the u8 crop through the reference preprocessing (/255, ±1, RGB → BGR).
    let device = test_device();
    let path = fixtures_dir().join("components/arcface_ir_se.safetensors");
    let model = load_arcface(path, &device, Some(&depths())).unwrap();
    let crop = image(&fixture("components/align.safetensors"), "aligned_112");
    let emb = model.embed(&crop).unwrap();
    let want: Tensor<2> = fixture_tensor(
        &fixture("components/arcface.safetensors"),
        "embedding",
        &device,
    );
    assert_close("embedding (u8 crop)", &emb, &want, 1e-4);
}

#[test]
fn stage_boundaries_need_depths_when_widths_repeat() {
    let path = fixtures_dir().join("components/arcface_ir_se.pth");
    let err = load_arcface(&path, &test_device(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("depths") && err.contains("arcface_ir_se.pth"),
        "{err}"
    );
    let err = load_arcface(&path, &test_device(), Some(&[2, 1, 1, 1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("inside a stage"), "{err}");
    let err = load_arcface(&path, &test_device(), Some(&[2, 2, 1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("5 units in 4 stages"), "{err}");
}

#[test]
fn wrong_input_size_is_an_error() {
    let device = test_device();
    let path = fixtures_dir().join("components/arcface_ir_se.safetensors");
    let model = load_arcface(path, &device, Some(&depths())).unwrap();
    let err = model
        .embed(&image::RgbImage::new(100, 112))
        .unwrap_err()
        .to_string();
    assert!(err.contains("112×112"), "{err}");
    let err = model
        .forward(Tensor::zeros([1, 3, 64, 64], &device))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 3, 64, 64]"), "{err}");
}
