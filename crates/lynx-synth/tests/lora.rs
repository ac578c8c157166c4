//! The synthetic LoRA (`SynthOptions::lora_rank`, `lynx synth-model --lora-rank`): the
//! tiny one has the documented key families and loads and applies (fused equals on the
//! fly); the 14B one's keys and shapes — from the plan, nothing written — fit the 14B
//! DiT's layout (from the walk of its loader, no weights), and LoRAs for other models
//! (the 1.3B's shapes, an I2V `k_img` layer) are refused naming a key.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::{DType, Tensor};
use lynx_dit::{DitInput, DitLora, WanConfig, WanTransformer};
use lynx_store::{Checkpoint, LoraFile, LoraSet};
use lynx_synth::{Component, Init, Plan, PlannedFile, Preset, SynthOptions, WeightDtype, plan};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn lora_plan(preset: Preset, rank: usize) -> Plan {
    let opts = SynthOptions {
        lite: false,
        lora_rank: Some(rank),
        ..SynthOptions::default()
    };
    plan(&preset.model_set(), WeightDtype::BF16, &opts).unwrap()
}

fn lora_file(plan: &Plan) -> &PlannedFile {
    let mut loras = plan.files.iter().filter(|f| f.component == Component::Lora);
    let file = loras.next().expect("a planned LoRA");
    assert!(loras.next().is_none());
    file
}

/// The planned LoRA's keys and shapes, and its alphas.
fn planned(file: &PlannedFile) -> (BTreeMap<String, Vec<usize>>, BTreeMap<String, f64>) {
    let mut shapes = BTreeMap::new();
    let mut alphas = BTreeMap::new();
    for (t, init) in file.tensors().iter().zip(file.inits()) {
        shapes.insert(t.name.clone(), t.shape.clone());
        if let Init::Const(v) = init {
            alphas.insert(t.name.clone(), *v as f64);
        }
    }
    (shapes, alphas)
}

/// A set of the planned LoRA's layout, as if read from its header.
fn layout_set(shapes: BTreeMap<String, Vec<usize>>, alphas: &BTreeMap<String, f64>) -> LoraSet {
    let file = LoraFile::layout("<planned LoRA>", shapes, alphas).unwrap();
    let mut set = LoraSet::new();
    set.add(std::sync::Arc::new(file), 1.0).unwrap();
    set
}

/// The DiT of `preset` as its loader reads it: every key and shape, no weights.
fn dit_layout(preset: Preset) -> Checkpoint {
    let records = lynx_synth::walk::dit(&preset.model_set().dit).unwrap();
    Checkpoint::recording(
        records
            .into_iter()
            .map(|p| (p.record.key, p.record.shape))
            .collect(),
    )
}

/// `key` with the `diffusion_model.` prefix dropped and the block index as `N`.
fn family(key: &str) -> String {
    let key = key.strip_prefix("diffusion_model.").unwrap();
    match key.strip_prefix("blocks.") {
        Some(rest) => format!("blocks.N.{}", rest.split_once('.').unwrap().1),
        None => key.to_string(),
    }
}

/// The key families the module docs of `lynx_synth::lora` list.
fn documented_families() -> BTreeSet<String> {
    let pair = ["lora_down.weight", "lora_up.weight", "alpha", "diff_b"];
    let mut linear = vec![
        "head.head".to_string(),
        "text_embedding.0".into(),
        "text_embedding.2".into(),
        "time_embedding.0".into(),
        "time_embedding.2".into(),
        "time_projection.1".into(),
        "blocks.N.ffn.0".into(),
        "blocks.N.ffn.2".into(),
    ];
    for attn in ["self_attn", "cross_attn"] {
        for l in ["q", "k", "v", "o"] {
            linear.push(format!("blocks.N.{attn}.{l}"));
        }
    }
    let mut all: BTreeSet<String> = linear
        .iter()
        .flat_map(|m| pair.iter().map(move |p| format!("{m}.{p}")))
        .collect();
    for attn in ["self_attn", "cross_attn"] {
        for n in ["norm_q", "norm_k"] {
            all.insert(format!("blocks.N.{attn}.{n}.diff"));
        }
    }
    for k in [
        "blocks.N.norm3.diff",
        "blocks.N.norm3.diff_b",
        "blocks.N.diff_m",
        "head.diff_m",
    ] {
        all.insert(k.into());
    }
    all
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
fn tiny_lora_has_the_documented_keys_and_applies() {
    let mut plan = lora_plan(Preset::Tiny, 64);
    plan.files.retain(|f| f.component == Component::Lora);
    let out = std::env::temp_dir().join(format!("lynx-synth-lora-{}", std::process::id()));
    let report = lynx_synth::write_plan(&plan, &out, |_| {}).unwrap();
    let path = &report.files[0].path;
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let families: BTreeSet<String> = header.tensors().keys().map(|k| family(k)).collect();
    assert_eq!(families, documented_families());

    // Fused at load and on the fly: the same numbers, and not the plain DiT's.
    let device = test_device();
    let dir = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer");
    let config = WanConfig::load(&dir).unwrap();
    let set = LoraSet::open(&[(path.clone(), 1.0)]).unwrap();
    let mut ckpt = Checkpoint::open(&dir).unwrap();
    assert!(ckpt.set_loras(set.clone()).unwrap().is_empty());
    let fused = ckpt
        .build(&device, DType::F32, |w| WanTransformer::load(w, config))
        .unwrap();
    let plain = WanTransformer::from_pretrained(&dir, &device, DType::F32).unwrap();
    let lora = DitLora::new(&set, plain.config(), &device, DType::F32).unwrap();
    let fly = dit_out(&plain, Some(&lora));
    assert_close(
        "synthetic LoRA on the fly vs fused",
        &fly,
        &dit_out(&fused, None),
        1e-5,
    );
    assert!(lynx_testing::diff(&fly, &dit_out(&plain, None)).rel_l2 > 1e-3);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn lora_for_14b_fits_the_14b_layout() {
    let plan = lora_plan(Preset::Wan14B, 64);
    let file = lora_file(&plan);
    assert_eq!(
        file.path.to_str(),
        Some("loras/Wan2.1-T2V-14B-synthetic-lora-rank64.safetensors")
    );
    let (shapes, alphas) = planned(file);
    for (key, shape) in [
        ("blocks.39.self_attn.q.lora_down.weight", vec![64, 5120]),
        ("blocks.39.cross_attn.o.lora_up.weight", vec![5120, 64]),
        ("blocks.0.ffn.0.lora_up.weight", vec![13824, 64]),
        ("blocks.0.ffn.2.lora_down.weight", vec![64, 13824]),
        ("blocks.0.ffn.0.diff_b", vec![13824]),
        ("blocks.0.norm3.diff", vec![5120]),
        ("blocks.0.diff_m", vec![1, 6, 5120]),
        ("head.diff_m", vec![1, 2, 5120]),
        ("head.head.lora_up.weight", vec![64, 64]),
        ("text_embedding.0.lora_down.weight", vec![64, 4096]),
        ("time_embedding.0.lora_down.weight", vec![64, 256]),
        ("time_projection.1.lora_up.weight", vec![30720, 64]),
        ("blocks.0.self_attn.q.alpha", vec![]),
    ] {
        let key = format!("diffusion_model.{key}");
        assert_eq!(shapes.get(&key), Some(&shape), "{key}");
    }
    assert_eq!(alphas["diffusion_model.blocks.0.self_attn.q.alpha"], 64.0);
    // 40 blocks × 47 keys + 6 layers outside × 4 + head.diff_m.
    assert_eq!(shapes.len(), 40 * 47 + 6 * 4 + 1);
    let families: BTreeSet<String> = shapes.keys().map(|k| family(k)).collect();
    assert_eq!(families, documented_families());
    let mut set = layout_set(shapes, &alphas);
    assert_eq!(
        set.check(&dit_layout(Preset::Wan14B)).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn lora_for_1_3b_is_refused_by_the_14b_layout() {
    let (shapes, alphas) = planned(lora_file(&lora_plan(Preset::Wan1_3B, 64)));
    let mut set = layout_set(shapes, &alphas);
    let e = set
        .check(&dit_layout(Preset::Wan14B))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`diffusion_model.blocks.0."), "{e}");
    assert!(e.contains("1536]") && e.contains("5120]"), "{e}");
}

#[test]
fn i2v_layer_is_refused_by_the_t2v_layout() {
    let (mut shapes, mut alphas) = planned(lora_file(&lora_plan(Preset::Wan14B, 64)));
    let k_img = "diffusion_model.blocks.0.cross_attn.k_img";
    shapes.insert(format!("{k_img}.lora_down.weight"), vec![64, 5120]);
    shapes.insert(format!("{k_img}.lora_up.weight"), vec![5120, 64]);
    shapes.insert(format!("{k_img}.alpha"), vec![]);
    alphas.insert(format!("{k_img}.alpha"), 64.0);
    let mut set = layout_set(shapes, &alphas);
    let e = set
        .check(&dit_layout(Preset::Wan14B))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("`{k_img}.lora_up.weight`")), "{e}");
}
