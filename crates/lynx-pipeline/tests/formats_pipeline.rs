//! The pipeline with the weight files users hold, given through
//! [`PipelineOptions::weights`]: the fp8 DiT, ComfyUI's scaled-fp8 UMT5 and the native
//! VAE, and a GGUF DiT, resident and with `--offload blocks`, against the same weights
//! dequantized (written by [`lynx_testing::formats`] from the generator's
//! `dequantized.safetensors`); streamed blocks stay in their file's encoding, and the
//! memory plan counts them so.

use std::path::PathBuf;

use burn::tensor::{DType, Tensor};
use lynx_dit::WanTransformer;
use lynx_pipeline::{
    GenerateRequest, LynxPipeline, NoiseSource, Offload, PipelineOptions, Subject,
};
use lynx_store::Checkpoint;
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn tiny() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers")
}

fn formats(file: &str) -> PathBuf {
    fixtures_dir().join("formats").join(file)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A short Lynx-lite request: 1 frame of 32×32, 2 steps, seeded.
fn request() -> GenerateRequest {
    let embedding = fixture("components/lite_pipeline.safetensors")
        .read("face_embedding")
        .unwrap()
        .convert_dtype(DType::F32)
        .try_into_vec::<f32>()
        .unwrap();
    let mut req = GenerateRequest::new("A person smiles.");
    (req.frames, req.height, req.width, req.steps) = (Some(1), 32, 32, 2);
    req.subject = Some(Subject::Prepared {
        aligned_face: None,
        embedding,
    });
    req.noise = NoiseSource::seeded(7);
    req
}

fn options(offload: Offload) -> PipelineOptions {
    let mut o = PipelineOptions::new(test_device()).with_offload(offload);
    o.resampler_dim_head = 8;
    o
}

fn frames(options: PipelineOptions) -> Tensor<4> {
    let adapters = Some(fixtures_dir().join("lynx_lite").into());
    let pipe = LynxPipeline::from_pretrained(tiny(), adapters, options).expect("loads");
    pipe.generate(&request()).expect("generates").frames
}

#[test]
fn pipeline_runs_weight_files_resident_and_streamed_as_their_dequantized_weights() {
    let dir = tmp("pipeline");
    let (dit, te) = (dir.join("dit.safetensors"), dir.join("umt5.safetensors"));
    lynx_testing::formats::write_dequantized("wan_native_fp8_e4m3fn.safetensors", &dit);
    lynx_testing::formats::write_dequantized("umt5_fp8_scaled.safetensors", &te);
    let plain = frames(
        options(Offload::None)
            .with_transformer(&dit)
            .with_text_encoder(&te)
            .with_vae(formats("vae_native.safetensors")),
    );
    for offload in [Offload::None, Offload::Blocks] {
        let got = frames(
            options(offload)
                .with_transformer(formats("wan_native_fp8_e4m3fn.safetensors"))
                .with_text_encoder(formats("umt5_fp8_scaled.safetensors"))
                .with_vae(formats("vae_native.safetensors")),
        );
        assert_close(
            &format!("fp8 files, offload {}", offload.name()),
            &got,
            &plain,
            1e-5,
        );
    }

    let file = "wan_Q8_0.gguf";
    lynx_testing::formats::write_dequantized_gguf(file, &dit);
    let plain = frames(options(Offload::None).with_transformer(&dit));
    for offload in [Offload::None, Offload::Blocks] {
        let got = frames(options(offload).with_transformer(formats(file)));
        assert_close(
            &format!("{file}, offload {}", offload.name()),
            &got,
            &plain,
            1e-5,
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Bytes block 0 of `ckpt` takes loaded in f32: encoded tensors at their stored size,
/// the others at 4 bytes an element.
fn block0_bytes(ckpt: &Checkpoint) -> u64 {
    ckpt.keys()
        .filter(|k| k.starts_with("blocks.0."))
        .map(|k| match ckpt.encoding(k) {
            Some(e) if !e.is_plain_float() => ckpt.stored_bytes(k).unwrap(),
            _ => 4 * ckpt.shape(k).unwrap().iter().product::<usize>() as u64,
        })
        .sum()
}

/// Streaming the blocks of an fp8 and a GGUF DiT gives the resident model's output; the
/// streamed blocks hold their Linear weights encoded (as many bytes as the file), and
/// the memory plan's block is that size.
#[test]
fn streamed_quantized_blocks_stay_encoded() {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
    let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
    let config = tiny().join("transformer");
    // (file, how many of a block's 10 Linear weights the file quantizes)
    for (file, quantized) in [
        ("wan_native_fp8_e4m3fn.safetensors", 10),
        ("wan_Q8_0.gguf", 1),
    ] {
        let path = formats(file);
        let load = |streamed| {
            WanTransformer::from_weights(&config, &path, &device, DType::F32, streamed).unwrap()
        };
        let (resident, streamed) = (load(false), load(true));
        assert!(streamed.is_streamed() && streamed.blocks().is_empty());
        let want = resident
            .forward(x.clone(), t.clone(), text.clone(), &[])
            .unwrap();
        let got = streamed
            .forward(x.clone(), t.clone(), text.clone(), &[])
            .unwrap();
        assert_close(&format!("{file} streamed"), &got, &want, 1e-5);

        let ckpt = Checkpoint::open(&path).unwrap();
        let mut seen = 0;
        streamed
            .for_each_block(|i, block| {
                let linears = block.linears();
                let encoded = linears
                    .iter()
                    .filter(|l| l.quantized_weight().is_some())
                    .count();
                assert_eq!(encoded, quantized, "{file}: block {i}");
                let bytes: u64 = linears.iter().map(|l| l.weight_bytes()).sum();
                let want: u64 = resident.blocks()[i]
                    .linears()
                    .iter()
                    .map(|l| l.weight_bytes())
                    .sum();
                assert_eq!(bytes, want, "{file}: block {i} bytes");
                seen += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, 2);
        // The resident block's Linears hold the file's bytes for the encoded weights.
        let block = &resident.blocks()[0];
        let keys = [
            "attn1.to_q",
            "attn1.to_k",
            "attn1.to_v",
            "attn1.to_out.0",
            "attn2.to_q",
            "attn2.to_k",
            "attn2.to_v",
            "attn2.to_out.0",
            "ffn.net.0.proj",
            "ffn.net.2",
        ];
        for (l, key) in block.linears().iter().zip(keys) {
            if let Some(q) = l.quantized_weight() {
                let stored = ckpt
                    .stored_bytes(&format!("blocks.0.{key}.weight"))
                    .unwrap();
                assert_eq!(q.byte_len() as u64, stored, "{file}: {key}");
            }
        }

        // The plan sizes a streamed block at its encoded size.
        let o = options(Offload::Blocks).with_transformer(&path);
        let plan = LynxPipeline::plan_memory(
            tiny(),
            Some(fixtures_dir().join("lynx_lite").into()),
            &o,
            &request(),
        )
        .unwrap();
        let layer = plan.weights.dit.layer;
        assert_eq!(layer, block0_bytes(&ckpt), "{file}: the plan's block");
        let f32_plan = LynxPipeline::plan_memory(
            tiny(),
            Some(fixtures_dir().join("lynx_lite").into()),
            &options(Offload::Blocks),
            &request(),
        )
        .unwrap();
        assert!(layer < f32_plan.weights.dit.layer, "{file}: {layer}");
    }
}
