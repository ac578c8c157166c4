//! Resampler and the DiT with Lynx's ID- and Ref-adapters against the reference
//! (`components/resampler.safetensors`, `components/dit.safetensors`, `lynx_full/`).

use burn::tensor::{DType, Tensor};
use lynx_adapters::{IdAdapter, IpLayout, LynxAdapters, RefAdapter, block_extras};
use lynx_dit::WanTransformer;
use lynx_testing::{assert_close, diff, fixture, fixture_tensor, fixtures_dir, test_device};

fn dit() -> WanTransformer {
    WanTransformer::from_pretrained(
        fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer"),
        &test_device(),
        DType::F32,
    )
    .expect("tiny transformer")
}

/// The fixture resampler's head width (not recoverable from its tensors).
fn dim_head() -> usize {
    let text = std::fs::read_to_string(fixtures_dir().join("PRESET.json")).unwrap();
    let preset: serde_json::Value = serde_json::from_str(&text).unwrap();
    preset["resampler"]["dim_head"].as_u64().unwrap() as usize
}

fn scales() -> (f64, f64) {
    let text = std::fs::read_to_string(fixtures_dir().join("components/dit.json")).unwrap();
    let s: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        s["ip_scale"].as_f64().unwrap(),
        s["ref_scale"].as_f64().unwrap(),
    )
}

fn id_adapter(dit: &WanTransformer) -> IdAdapter {
    IdAdapter::from_dir(
        fixtures_dir().join("lynx_full"),
        dit,
        IpLayout::Full,
        dim_head(),
        &test_device(),
        DType::F32,
    )
    .expect("ID-adapter loads")
}

fn ref_adapter(dit: &WanTransformer) -> RefAdapter {
    RefAdapter::from_dir(
        fixtures_dir().join("lynx_full"),
        dit,
        &test_device(),
        DType::F32,
    )
    .expect("Ref-adapter loads")
}

#[test]
fn parity_resampler_tokens() {
    let device = test_device();
    let fx = fixture("components/resampler.safetensors");
    let dit = dit();
    let id = id_adapter(&dit);
    let cfg = id.resampler().config();
    assert_eq!(
        (
            cfg.depth,
            cfg.dim,
            cfg.heads,
            cfg.num_queries,
            cfg.embedding_dim,
            cfg.output_dim
        ),
        (2, 32, 4, 4, 16, 48),
        "sizes read from the tensors"
    );
    let face: Tensor<3> = fixture_tensor(&fx, "face_embed", &device);
    let tokens = id.tokens(face.clone()).unwrap();
    assert_close(
        "tokens",
        &tokens,
        &fixture_tensor(&fx, "tokens", &device),
        1e-4,
    );
    let uncond = id.tokens(face.zeros_like()).unwrap();
    assert_close(
        "tokens_uncond",
        &uncond,
        &fixture_tensor(&fx, "tokens_uncond", &device),
        1e-4,
    );
}

#[test]
fn parity_dit_with_id_and_ref() {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let dit = dit();
    let (ip_scale, ref_scale) = scales();
    let lynx = LynxAdapters::from_dir(
        fixtures_dir().join("lynx_full"),
        &dit,
        dim_head(),
        &device,
        DType::F32,
    )
    .unwrap();

    let features = dit
        .reference_features(
            fixture_tensor(&fx, "ref_latents", &device),
            fixture_tensor(&fx, "ref_text", &device),
        )
        .unwrap();
    for (i, f) in features.iter().enumerate() {
        let want: Tensor<3> = fixture_tensor(&fx, &format!("ref_buffer.{i}"), &device);
        assert_close(&format!("ref_buffer.{i}"), f, &want, 1e-4);
    }
    let tokens: Tensor<3> = fixture_tensor(&fx, "ip_tokens", &device);
    let extras = lynx
        .extras(
            Some(&tokens),
            ip_scale,
            Some(features.as_slice()),
            ref_scale,
        )
        .unwrap();

    let mut blocks = Vec::new();
    let out = dit
        .forward_observed(
            fixture_tensor(&fx, "x", &device),
            fixture_tensor(&fx, "timestep", &device),
            fixture_tensor(&fx, "text", &device),
            &extras,
            |_, h| blocks.push(h.clone()),
        )
        .unwrap();
    assert_eq!(blocks.len(), dit.num_layers());
    for (i, h) in blocks.iter().enumerate() {
        let want: Tensor<3> = fixture_tensor(&fx, &format!("block_out.{i}"), &device);
        assert_close(&format!("block_out.{i}"), h, &want, 1e-4);
    }
    assert_close("out", &out, &fixture_tensor(&fx, "out", &device), 1e-4);

    // The adapters change the result: `out` is not `out_plain`.
    let plain: Tensor<5> = fixture_tensor(&fx, "out_plain", &device);
    let d = diff(&out, &plain);
    assert!(d.rel_l2 > 1e-2, "adapters had no effect: {d:?}");
}

#[test]
fn parity_id_only_and_scales() {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let dit = dit();
    let id = id_adapter(&dit);
    let reference = ref_adapter(&dit);
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
    let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
    let tokens: Tensor<3> = fixture_tensor(&fx, "ip_tokens", &device);
    let run = |extras: &[lynx_dit::BlockExtras]| {
        dit.forward(x.clone(), t.clone(), text.clone(), extras)
            .unwrap()
    };
    let plain = run(&[]);
    let full: Tensor<5> = fixture_tensor(&fx, "out", &device);

    // ID-adapter only (as Lynx-lite runs): differs from both the plain and the full model.
    let id_only = run(&block_extras(Some(id.block_kv(&tokens, 1.0).unwrap()), None).unwrap());
    assert!(diff(&id_only, &plain).rel_l2 > 1e-2);
    assert!(diff(&id_only, &full).rel_l2 > 1e-2);

    // An adapter at scale 0 is the model without it.
    let zero = run(&block_extras(Some(id.block_kv(&tokens, 0.0).unwrap()), None).unwrap());
    assert_close("ip_scale 0 = plain", &zero, &plain, 1e-6);
    let features = dit
        .reference_features(
            fixture_tensor(&fx, "ref_latents", &device),
            fixture_tensor(&fx, "ref_text", &device),
        )
        .unwrap();
    let ref_zero = run(&block_extras(
        Some(id.block_kv(&tokens, 1.0).unwrap()),
        Some(reference.block_kv(&features, 0.0).unwrap()),
    )
    .unwrap());
    assert_close("ref_scale 0 = ID only", &ref_zero, &id_only, 1e-6);

    // The scale weighs the adapter's attention: half the ID attention lands between.
    let half = run(&block_extras(Some(id.block_kv(&tokens, 0.5).unwrap()), None).unwrap());
    assert!(diff(&half, &plain).rel_l2 < diff(&id_only, &plain).rel_l2);
}

#[test]
fn parity_batched_conditions_match_single_runs() {
    // cond and uncond of one step in one batch: ID tokens of a face and of zeros, the
    // same reference features.
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let rx = fixture("components/resampler.safetensors");
    let dit = dit();
    let id = id_adapter(&dit);
    let reference = ref_adapter(&dit);
    let face: Tensor<3> = fixture_tensor(&rx, "face_embed", &device);
    let faces = Tensor::cat(vec![face.clone(), face.zeros_like()], 0);
    let tokens = id.tokens(faces).unwrap();
    let ref_latents: Tensor<5> = fixture_tensor(&fx, "ref_latents", &device);
    let ref_text: Tensor<3> = fixture_tensor(&fx, "ref_text", &device);
    let features = dit
        .reference_features(
            Tensor::cat(vec![ref_latents.clone(), ref_latents], 0),
            Tensor::cat(vec![ref_text.clone(), ref_text], 0),
        )
        .unwrap();
    let extras = block_extras(
        Some(id.block_kv(&tokens, 1.0).unwrap()),
        Some(reference.block_kv(&features, 1.0).unwrap()),
    )
    .unwrap();
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
    let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
    let both = dit
        .forward(
            Tensor::cat(vec![x.clone(), x.clone()], 0),
            t.clone(),
            Tensor::cat(vec![text.clone(), text.clone()], 0),
            &extras,
        )
        .unwrap();
    for (i, tok) in [tokens.clone().slice_dim(0, 0..1), tokens.slice_dim(0, 1..2)]
        .into_iter()
        .enumerate()
    {
        let feats: Vec<_> = features
            .iter()
            .map(|f| f.clone().slice_dim(0, i..i + 1))
            .collect();
        let extras = block_extras(
            Some(id.block_kv(&tok, 1.0).unwrap()),
            Some(reference.block_kv(&feats, 1.0).unwrap()),
        )
        .unwrap();
        let single = dit
            .forward(x.clone(), t.clone(), text.clone(), &extras)
            .unwrap();
        assert_close(
            &format!("batch[{i}]"),
            &both.clone().slice_dim(0, i..i + 1),
            &single,
            1e-5,
        );
    }
}
