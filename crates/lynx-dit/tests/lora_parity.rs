//! LoRAs on the DiT against the fixtures' references (`components/lora.safetensors`,
//! made with peft/ComfyUI's rules by `gen_lora_fixtures.py`): fused at load, resident
//! and streamed, in both file layouts; and the refusals of LoRAs for other models.

use std::path::PathBuf;

use burn::tensor::{DType, Tensor};
use lynx_dit::{WanConfig, WanTransformer};
use lynx_store::{Checkpoint, LoraSet};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn transformer_dir() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer")
}

fn lora(name: &str) -> PathBuf {
    fixtures_dir().join("loras").join(name)
}

/// The tiny DiT with `loras` fused at load (blocks streamed when `streamed`).
fn fused(loras: &[(&str, f64)], streamed: bool) -> WanTransformer {
    fused_in(loras, streamed, DType::F32)
}

/// [`fused`] in `dtype`.
fn fused_in(loras: &[(&str, f64)], streamed: bool, dtype: DType) -> WanTransformer {
    let device = test_device();
    let dir = transformer_dir();
    let config = WanConfig::load(&dir).unwrap();
    let set = LoraSet::open(&loras.iter().map(|(n, s)| (lora(n), *s)).collect::<Vec<_>>()).unwrap();
    let mut ckpt = Checkpoint::open(&dir).unwrap();
    assert!(ckpt.set_loras(set).unwrap().is_empty());
    let ckpt = std::sync::Arc::new(ckpt);
    if streamed {
        ckpt.build(&device, dtype, |w| {
            WanTransformer::load_streamed(w, config, ckpt.clone())
        })
    } else {
        ckpt.build(&device, dtype, |w| WanTransformer::load(w, config))
    }
    .unwrap()
}

fn dit_out(dit: &WanTransformer) -> Tensor<5> {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
    let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
    dit.forward(x, t, text, &[]).unwrap()
}

fn want(key: &str) -> Tensor<5> {
    fixture_tensor(&fixture("components/lora.safetensors"), key, &test_device())
}

#[test]
fn fused_style_both_layouts() {
    let want = want("dit_out_lora_a");
    for file in ["style_peft.safetensors", "style_comfy.safetensors"] {
        let out = dit_out(&fused(&[(file, 1.0)], false));
        assert_close(&format!("dit_out_lora_a ({file})"), &out, &want, 1e-5);
    }
}

#[test]
fn fused_accel() {
    let out = dit_out(&fused(&[("accel_comfy.safetensors", 1.0)], false));
    assert_close("dit_out_accel", &out, &want("dit_out_accel"), 1e-5);
}

#[test]
fn fused_stack_resident_and_streamed() {
    let want = want("dit_out_stack");
    for style in ["style_peft.safetensors", "style_comfy.safetensors"] {
        let stack = [(style, 0.7), ("accel_comfy.safetensors", 0.5)];
        let resident = dit_out(&fused(&stack, false));
        assert_close(&format!("dit_out_stack ({style})"), &resident, &want, 1e-5);
        let streamed = dit_out(&fused(&stack, true));
        assert_close("streamed vs resident", &streamed, &resident, 1e-5);
    }
}

/// The plain tiny DiT and `loras` as a [`lynx_dit::DitLora`] for passes on the fly.
fn on_the_fly(loras: &[(&str, f64)]) -> (WanTransformer, lynx_dit::DitLora) {
    let device = test_device();
    let dit = WanTransformer::from_pretrained(transformer_dir(), &device, DType::F32).unwrap();
    let set = LoraSet::open(&loras.iter().map(|(n, s)| (lora(n), *s)).collect::<Vec<_>>()).unwrap();
    let lora = lynx_dit::DitLora::new(&set, dit.config(), &device, DType::F32).unwrap();
    (dit, lora)
}

fn dit_out_with(dit: &WanTransformer, lora: &lynx_dit::DitLora) -> Tensor<5> {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let input = lynx_dit::DitInput {
        x: fixture_tensor(&fx, "x", &device),
        timestep: fixture_tensor(&fx, "timestep", &device),
        text: fixture_tensor(&fx, "text", &device),
        extras: &[],
        lora: Some(lora),
    };
    dit.forward_many(std::slice::from_ref(&input))
        .unwrap()
        .pop()
        .unwrap()
}

#[test]
fn on_the_fly_matches_references_and_fused() {
    let cases: [(&str, &[(&str, f64)]); 4] = [
        ("dit_out_lora_a", &[("style_peft.safetensors", 1.0)]),
        ("dit_out_lora_a", &[("style_comfy.safetensors", 1.0)]),
        ("dit_out_accel", &[("accel_comfy.safetensors", 1.0)]),
        (
            "dit_out_stack",
            &[
                ("style_comfy.safetensors", 0.7),
                ("accel_comfy.safetensors", 0.5),
            ],
        ),
    ];
    for (key, loras) in cases {
        let (dit, lora) = on_the_fly(loras);
        let out = dit_out_with(&dit, &lora);
        assert_close(
            &format!("{key} on the fly {loras:?}"),
            &out,
            &want(key),
            1e-5,
        );
        let fused = dit_out(&fused(loras, false));
        assert_close("on the fly vs fused", &out, &fused, 1e-5);
    }
}

#[test]
fn reference_pass_takes_the_lora() {
    // The reference pass of a fused model equals the plain model's with the LoRA on the fly.
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let x: Tensor<5> = fixture_tensor(&fx, "ref_latents", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "ref_text", &device);
    let stack = [
        ("style_peft.safetensors", 0.7),
        ("accel_comfy.safetensors", 0.5),
    ];
    let (dit, lora) = on_the_fly(&stack);
    let fly = dit
        .reference_features_lora(&[(x.clone(), text.clone())], Some(&lora))
        .unwrap()
        .remove(0);
    let plain = dit.reference_features(x.clone(), text.clone()).unwrap();
    let fused = fused(&stack, false).reference_features(x, text).unwrap();
    for (i, (f, g)) in fly.iter().zip(&fused).enumerate() {
        assert_close(&format!("ref features {i}"), f, g, 1e-5);
    }
    // Block 0's norm1 output comes before any LoRA'd layer; the last one after them all.
    let last = fly.len() - 1;
    assert!(lynx_testing::diff(&fly[last], &plain[last]).rel_l2 > 1e-3);
}

/// Writes a safetensors file of f32 tensors `(name, shape)` filled with deterministic
/// values in [-0.1, 0.1).
fn write_lora(dir: &std::path::Path, name: &str, tensors: &[(&str, &[usize])]) -> PathBuf {
    let mut header = serde_json_like(tensors);
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let mut i = 0u64;
    for (_, shape) in tensors {
        let n: usize = shape.iter().product();
        for _ in 0..n {
            // Deterministic values in [-0.1, 0.1).
            i += 1;
            let v = ((i * 7919) % 1000) as f32 / 5000.0 - 0.1;
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn serde_json_like(tensors: &[(&str, &[usize])]) -> String {
    let mut offset = 0;
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product::<usize>() * 4;
            let e = format!(
                r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{offset},{}]}}"#,
                offset + n
            );
            offset += n;
            e
        })
        .collect();
    format!("{{{}}}", entries.join(","))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-lora-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn refuses_a_lora_for_another_model() {
    let dir = tmp("wrong-model");
    // Wan 1.3B widths (1536) against the tiny DiT (48).
    let path = write_lora(
        &dir,
        "wan13b.safetensors",
        &[
            (
                "diffusion_model.blocks.0.self_attn.q.lora_down.weight",
                &[4, 1536],
            ),
            (
                "diffusion_model.blocks.0.self_attn.q.lora_up.weight",
                &[1536, 4],
            ),
        ],
    );
    let set = LoraSet::open(&[(path, 1.0)]).unwrap();
    let mut ckpt = Checkpoint::open(transformer_dir()).unwrap();
    let err = ckpt.set_loras(set).unwrap_err().to_string();
    for part in [
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight",
        "[1536, 1536]",
        "[48, 48]",
        "blocks.0.attn1.to_q.weight",
    ] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
    // An I2V LoRA: `k_img` has no place in a T2V model; listed, or skipped on request.
    let path = write_lora(
        &dir,
        "i2v.safetensors",
        &[
            (
                "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight",
                &[4, 48],
            ),
            (
                "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight",
                &[48, 4],
            ),
            (
                "diffusion_model.blocks.0.cross_attn.k.lora_down.weight",
                &[4, 48],
            ),
            (
                "diffusion_model.blocks.0.cross_attn.k.lora_up.weight",
                &[48, 4],
            ),
        ],
    );
    let set = LoraSet::open(&[(path.clone(), 1.0)]).unwrap();
    let mut ckpt = Checkpoint::open(transformer_dir()).unwrap();
    let err = ckpt.set_loras(set).unwrap_err().to_string();
    assert!(err.contains("cross_attn.k_img.lora_up.weight"), "{err}");
    assert!(err.contains("1 key(s) have no place"), "{err}");
    let set = LoraSet::open(&[(path, 1.0)]).unwrap().skip_unmatched(true);
    let skipped = ckpt.set_loras(set).unwrap();
    assert_eq!(
        skipped,
        ["diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight"]
    );
    // The same refusals on the fly.
    let dit =
        WanTransformer::from_pretrained(transformer_dir(), &test_device(), DType::F32).unwrap();
    let set = LoraSet::open(&[(dir.join("wan13b.safetensors"), 1.0)]).unwrap();
    let err = lynx_dit::DitLora::new(&set, dit.config(), &test_device(), DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[1536, 1536]") && err.contains("[48, 48]"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The keys and shapes of lightx2v's rank-64 T2V-14B step-distillation LoRA
/// (`Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors`, native names, no
/// alphas, `diff_b` beside every low-rank pair, norm `diff`s, the layers outside the
/// blocks), for a model of `dim` width, `ffn` hidden width and `layers` blocks.
fn lightx2v_keys(dim: usize, ffn: usize, layers: usize) -> Vec<(String, Vec<usize>)> {
    let r = 64;
    let mut keys = Vec::new();
    let mut linear = |name: String, d_in: usize, d_out: usize| {
        keys.push((
            format!("diffusion_model.{name}.lora_down.weight"),
            vec![r, d_in],
        ));
        keys.push((
            format!("diffusion_model.{name}.lora_up.weight"),
            vec![d_out, r],
        ));
        keys.push((format!("diffusion_model.{name}.diff_b"), vec![d_out]));
    };
    for i in 0..layers {
        for attn in ["self_attn", "cross_attn"] {
            for l in ["q", "k", "v", "o"] {
                linear(format!("blocks.{i}.{attn}.{l}"), dim, dim);
            }
        }
        linear(format!("blocks.{i}.ffn.0"), dim, ffn);
        linear(format!("blocks.{i}.ffn.2"), ffn, dim);
    }
    linear("head.head".into(), dim, 64);
    linear("text_embedding.0".into(), 4096, dim);
    linear("text_embedding.2".into(), dim, dim);
    linear("time_embedding.0".into(), 256, dim);
    linear("time_embedding.2".into(), dim, dim);
    linear("time_projection.1".into(), dim, 6 * dim);
    for i in 0..layers {
        let p = format!("diffusion_model.blocks.{i}");
        keys.push((format!("{p}.norm3.diff"), vec![dim]));
        keys.push((format!("{p}.norm3.diff_b"), vec![dim]));
        for attn in ["self_attn", "cross_attn"] {
            keys.push((format!("{p}.{attn}.norm_q.diff"), vec![dim]));
            keys.push((format!("{p}.{attn}.norm_k.diff"), vec![dim]));
        }
    }
    keys
}

/// A bf16 safetensors file of `keys` whose data is a hole (a sparse file): the header
/// is all a load checks, and nothing is read when a model is only measured.
fn write_sparse(path: &std::path::Path, keys: &[(String, Vec<usize>)]) {
    let mut offset = 0usize;
    let entries: Vec<String> = keys
        .iter()
        .map(|(name, shape)| {
            let n = shape.iter().product::<usize>() * 2;
            let e = format!(
                r#""{name}":{{"dtype":"BF16","shape":{shape:?},"data_offsets":[{offset},{}]}}"#,
                offset + n
            );
            offset += n;
            e
        })
        .collect();
    let mut header = format!("{{{}}}", entries.join(","));
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len((bytes.len() + offset) as u64).unwrap();
}

#[test]
fn lightx2v_rank64_fits_the_14b_and_not_the_1_3b() {
    let dir = tmp("lightx2v");
    let path = dir.join("lightx2v_rank64.safetensors");
    write_sparse(&path, &lightx2v_keys(5120, 13824, 40));
    let device = test_device();
    let measure = |config: WanConfig| {
        let set = LoraSet::open(&[(path.clone(), 1.0)])?;
        let mut ckpt = Checkpoint::synthetic(0.02);
        ckpt.set_loras(set)?;
        ckpt.measure(&device, DType::BF16, |w| WanTransformer::load(w, config))
    };
    // Every key has its place in the 14B layout, at its shape (measured: nothing read).
    let bytes = measure(WanConfig::default()).unwrap();
    assert!(bytes > 20_000_000_000, "{bytes}");
    // The 1.3B (width 1536, 30 blocks) refuses it with a key and both shapes.
    let small: WanConfig =
        serde_json::from_str(r#"{"num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30}"#)
            .unwrap();
    let err = measure(small).unwrap_err().to_string();
    assert!(
        // The first mismatch the loader meets (the time embedder's since the blocks are
        // read after the embeddings): the 14B's width in the delta, the 1.3B's in the model.
        err.contains("delta, but the model's")
            && err.contains("[5120, ")
            && err.contains("[1536, "),
        "{err}"
    );
    assert!(err.contains("lora_up.weight"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn on_the_fly_outside_the_blocks_matches_fused() {
    // The keys real acceleration LoRAs carry outside the blocks: head, text and time
    // embedders, time projection (low rank + bias deltas).
    let dir = tmp("outer");
    let dit =
        WanTransformer::from_pretrained(transformer_dir(), &test_device(), DType::F32).unwrap();
    let cfg = dit.config().clone();
    let (dim, head) = (cfg.inner_dim(), cfg.out_channels() * cfg.patch_volume());
    let layers = [
        ("head.head", dim, head),
        ("text_embedding.0", cfg.text_dim, dim),
        ("text_embedding.2", dim, dim),
        ("time_embedding.0", cfg.freq_dim, dim),
        ("time_embedding.2", dim, dim),
        ("time_projection.1", dim, 6 * dim),
    ];
    let names: Vec<(String, Vec<usize>)> = layers
        .iter()
        .flat_map(|(l, d_in, d_out)| {
            [
                (
                    format!("diffusion_model.{l}.lora_down.weight"),
                    vec![2, *d_in],
                ),
                (
                    format!("diffusion_model.{l}.lora_up.weight"),
                    vec![*d_out, 2],
                ),
                (format!("diffusion_model.{l}.diff_b"), vec![*d_out]),
            ]
        })
        .collect();
    let tensors: Vec<(&str, &[usize])> = names
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    let path = write_lora(&dir, "outer.safetensors", &tensors);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let set = LoraSet::open(&[(path.clone(), 0.8)]).unwrap();
    let lora = lynx_dit::DitLora::new(&set, &cfg, &test_device(), DType::F32).unwrap();
    let fly = dit_out_with(&dit, &lora);
    let plain = dit_out(&dit);
    assert!(lynx_testing::diff(&fly, &plain).rel_l2 > 1e-3);
    // Fused: a checkpoint with the same set.
    let mut ckpt = Checkpoint::open(transformer_dir()).unwrap();
    ckpt.set_loras(set).unwrap();
    let fused = ckpt
        .build(&test_device(), DType::F32, |w| WanTransformer::load(w, cfg))
        .unwrap();
    assert_close(
        &format!("{name} on the fly vs fused"),
        &fly,
        &dit_out(&fused),
        1e-5,
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn fused_in_bf16_is_the_f32_sum_rounded_once() {
    if !test_device().supports_dtype(DType::BF16) {
        return;
    }
    let stack = [
        ("style_comfy.safetensors", 0.7),
        ("accel_comfy.safetensors", 0.5),
    ];
    let f32 = fused_in(&stack, false, DType::F32);
    let bf16 = fused_in(&stack, false, DType::BF16);
    // The weight is W + ΔW summed in f32 and converted once.
    let w = bf16.blocks()[1].attn2().to_out().weight();
    assert_eq!(w.dtype(), DType::BF16);
    let rounded = f32.blocks()[1].attn2().to_out().weight().cast(DType::BF16);
    assert_close(
        "bf16 fused to_out",
        &w.cast(DType::F32),
        &rounded.cast(DType::F32),
        0.0,
    );
    // Streamed blocks are fused the same way; the output stays near the f32 reference.
    let out = dit_out(&bf16);
    let streamed = dit_out(&fused_in(&stack, true, DType::BF16));
    assert_close("bf16 streamed vs resident", &streamed, &out, 1e-5);
    let d = lynx_testing::diff(&out, &want("dit_out_stack"));
    assert!(d.rel_l2 < 5e-2, "{d:?}");
}

#[test]
fn fused_style_with_kohya_names() {
    // style_comfy.safetensors with its keys as kohya-style trainers write them
    // (`lora_unet_blocks_0_self_attn_q.lora_down.weight`, `….alpha`).
    let bytes = std::fs::read(lora("style_comfy.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let renamed: serde_json::Map<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| {
            let Some(rest) = k.strip_prefix("diffusion_model.") else {
                return (k, v);
            };
            let (module, part) = match rest.strip_suffix(".alpha") {
                Some(m) => (m, "alpha"),
                None => (rest.rsplitn(3, '.').nth(2).unwrap(), ""),
            };
            let part = if part.is_empty() {
                &rest[module.len() + 1..]
            } else {
                part
            };
            (format!("lora_unet_{}.{part}", module.replace('.', "_")), v)
        })
        .collect();
    let mut text = serde_json::to_string(&renamed).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let dir = tmp("kohya");
    let path = dir.join("style_kohya.safetensors");
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    let device = test_device();
    let config = WanConfig::load(transformer_dir()).unwrap();
    let mut ckpt = Checkpoint::open(transformer_dir()).unwrap();
    ckpt.set_loras(LoraSet::open(&[(path, 1.0)]).unwrap())
        .unwrap();
    let dit = ckpt
        .build(&device, DType::F32, |w| WanTransformer::load(w, config))
        .unwrap();
    assert_close(
        "dit_out_lora_a (kohya names)",
        &dit_out(&dit),
        &want("dit_out_lora_a"),
        1e-5,
    );
    std::fs::remove_dir_all(dir).ok();
}
