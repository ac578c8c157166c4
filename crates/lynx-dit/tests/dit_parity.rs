//! The plain DiT and its reference pass against diffusers 0.33.1 + Lynx
//! (`components/dit.safetensors`, made from the tiny fixture transformer).

use burn::tensor::{DType, Tensor};
use lynx_dit::{WanConfig, WanTransformer};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn transformer_dir() -> std::path::PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer")
}

fn model() -> WanTransformer {
    WanTransformer::from_pretrained(transformer_dir(), &test_device(), DType::F32)
        .expect("tiny transformer loads")
}

#[test]
fn loads_the_nine_shards() {
    let dir = transformer_dir();
    let shards = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_str().unwrap();
            name.starts_with("diffusion_pytorch_model-") && name.ends_with(".safetensors")
        })
        .count();
    assert_eq!(shards, 9);
    // The tensors really are spread over the nine files behind the index.
    let ckpt = lynx_store::Checkpoint::open(&dir).unwrap();
    let files: std::collections::BTreeSet<_> =
        ckpt.keys().filter_map(|k| ckpt.file_of(k)).collect();
    assert_eq!(files.len(), 9, "{files:?}");
    let dit = model();
    let cfg: &WanConfig = dit.config();
    assert_eq!(dit.num_layers(), cfg.num_layers);
    assert_eq!(dit.dim(), 48);
    assert_eq!(cfg.patch_size, [1, 2, 2]);
    assert_eq!(cfg.text_dim, 32);
}

#[test]
fn parity_out_plain() {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let dit = model();
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
    let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
    let out = dit.forward(x, t, text, &[]).unwrap();
    let want: Tensor<5> = fixture_tensor(&fx, "out_plain", &device);
    assert_close("out_plain", &out, &want, 1e-4);
}

#[test]
fn parity_ref_buffer() {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let dit = model();
    let x: Tensor<5> = fixture_tensor(&fx, "ref_latents", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "ref_text", &device);
    let feats = dit.reference_features(x, text).unwrap();
    assert_eq!(feats.len(), dit.num_layers());
    for (i, f) in feats.iter().enumerate() {
        let want: Tensor<3> = fixture_tensor(&fx, &format!("ref_buffer.{i}"), &device);
        assert_close(&format!("ref_buffer.{i}"), f, &want, 1e-4);
    }
}

#[test]
fn parity_batch_of_two_vs_single_runs() {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let dit = model();
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
    let ref_text: Tensor<3> = fixture_tensor(&fx, "ref_text", &device);
    let t = Tensor::<1>::from_floats([737.0, 250.0], &device);
    let xb = Tensor::cat(vec![x.clone(), x.clone() * 0.5], 0);
    let textb = Tensor::cat(vec![text.clone(), ref_text.clone()], 0);
    let both = dit.forward(xb, t, textb, &[]).unwrap();
    let one = |x: Tensor<5>, t: f32, text| {
        dit.forward(x, Tensor::from_floats([t], &device), text, &[])
            .unwrap()
    };
    let a = one(x.clone(), 737.0, text);
    let b = one(x * 0.5, 250.0, ref_text);
    assert_close("batch[0]", &both.clone().slice_dim(0, 0..1), &a, 1e-5);
    assert_close("batch[1]", &both.slice_dim(0, 1..2), &b, 1e-5);
}

#[test]
fn bf16_weights_stay_close_to_f32() {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let dit = WanTransformer::from_pretrained(transformer_dir(), &device, DType::BF16).unwrap();
    assert_eq!(
        dit.blocks()[0].scale_shift_table().val().dtype(),
        DType::F32,
        "modulation tables stay f32"
    );
    assert_eq!(dit.blocks()[0].attn1().to_q().weight().dtype(), DType::BF16);
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
    let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
    let out = dit.forward(x, t, text, &[]).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let want: Tensor<5> = fixture_tensor(&fx, "out_plain", &device);
    // bf16 keeps 8 bits of mantissa: a few percent over two blocks, not more.
    let d = lynx_testing::diff(&out, &want);
    eprintln!("bf16 out_plain: rel_l2 = {:.3e}", d.rel_l2);
    assert!(d.rel_l2 < 5e-2, "{d:?}");
}
