//! LoRAs on quantized DiT weights (`tests/fixtures/formats`): applied on the fly to the
//! fp8 and GGUF DiTs, whose weights stay quantized, they give the dequantized DiT with
//! the same LoRAs fused (≤ 1e-5); fusing into a weight kept quantized is refused with a
//! sentence naming it.

use burn::tensor::{DType, Tensor};
use lynx_dit::{DitInput, DitLora, WanConfig, WanTransformer};
use lynx_store::{Checkpoint, LoraSet};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn formats(file: &str) -> Checkpoint {
    Checkpoint::open(fixtures_dir().join("formats").join(file)).unwrap()
}

fn config() -> WanConfig {
    WanConfig::load(fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer")).unwrap()
}

/// A style LoRA and the acceleration LoRA (with bias and norm deltas), stacked.
fn stack() -> LoraSet {
    let lora = |n: &str| fixtures_dir().join("loras").join(n);
    LoraSet::open(&[
        (lora("style_comfy.safetensors"), 0.7),
        (lora("accel_comfy.safetensors"), 0.5),
    ])
    .unwrap()
}

fn dit_out(dit: &WanTransformer, lora: Option<&DitLora>) -> Tensor<5> {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let input = DitInput {
        x: fixture_tensor(&fx, "x", &device),
        timestep: fixture_tensor(&fx, "timestep", &device),
        text: fixture_tensor(&fx, "text", &device),
        extras: &[],
        lora,
    };
    dit.forward_many(std::slice::from_ref(&input))
        .unwrap()
        .pop()
        .unwrap()
}

#[test]
fn on_the_fly_on_quantized_weights_equals_the_dequantized_dit_fused() {
    let device = test_device();
    for file in ["wan_native_fp8_e4m3fn.safetensors", "wan_Q8_0.gguf"] {
        let quantized = formats(file)
            .build(&device, DType::F32, |w| WanTransformer::load(w, config()))
            .unwrap();
        let lora = DitLora::new(&stack(), quantized.config(), &device, DType::F32).unwrap();
        let fly = dit_out(&quantized, Some(&lora));
        let mut ckpt = formats(file);
        assert!(ckpt.set_loras(stack()).unwrap().is_empty());
        let dequantized = ckpt
            .build(&device, DType::F32, |w| {
                WanTransformer::load(&w.decoding(), config())
            })
            .unwrap();
        let fused = dit_out(&dequantized, None);
        assert_close(&format!("{file}: on the fly vs fused"), &fly, &fused, 1e-5);
        let plain = dit_out(&quantized, None);
        assert!(lynx_testing::diff(&fly, &plain).rel_l2 > 1e-3, "{file}");
    }
}

#[test]
fn fusing_into_weights_kept_quantized_is_refused() {
    let mut ckpt = formats("wan_native_fp8_e4m3fn.safetensors");
    ckpt.set_loras(stack()).unwrap();
    let e = ckpt
        .build(&test_device(), DType::F32, |w| {
            WanTransformer::load(w, config())
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("`blocks.0."), "{e}");
    assert!(e.contains("F8_E4M3") && e.contains("on the fly"), "{e}");
}
