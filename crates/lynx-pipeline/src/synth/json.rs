//! The JSON files of a model folder, printed as Python's
//! `json.dumps(obj, indent=2, sort_keys=True) + "\n"` prints them (which is how diffusers
//! and transformers save `config.json`, `model_index.json`, `scheduler_config.json` and
//! the shard index), so that a synthetic file reads like a released one: floats in
//! Python's `repr` (`1e-06`, `3.0`), keys sorted.

use serde_json::{Value, json};

use super::spec::{DitSpec, ModelSpec, TextSpec, VaeSpec};

/// diffusers version the configs claim (the fixture's).
const DIFFUSERS_VERSION: &str = "0.33.1";
/// transformers version the text encoder config claims (the fixture's).
const TRANSFORMERS_VERSION: &str = "4.50.2";

/// `value` as Python's `json.dumps(value, indent=2, sort_keys=True) + "\n"`.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out.push('\n');
    out
}

fn write_value(out: &mut String, v: &Value, depth: usize) {
    let pad = |out: &mut String, d: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(d));
    };
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => out.push_str(&u.to_string()),
            (None, Some(i), _) => out.push_str(&i.to_string()),
            (_, _, Some(f)) => out.push_str(&py_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => out.push_str(&serde_json::to_string(s).expect("string")),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                write_value(out, item, depth + 1);
            }
            pad(out, depth);
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push('{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                out.push_str(&serde_json::to_string(k).expect("string"));
                out.push_str(": ");
                write_value(out, &map[k], depth + 1);
            }
            pad(out, depth);
            out.push('}');
        }
    }
}

/// `f` as Python's `repr(float)`: shortest round-trip digits, positional notation for
/// decimal exponents in `[-4, 16)`, otherwise `1.5e-07` style.
pub fn py_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// `model_index.json` of `WanPipeline`.
pub fn model_index(spec: &ModelSpec) -> Value {
    json!({
        "_class_name": "WanPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": [spec.transformer_library, "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    })
}

/// `scheduler/scheduler_config.json`: UniPC with flow sigmas, as released.
pub fn scheduler(flow_shift: f64) -> Value {
    json!({
        "_class_name": "UniPCMultistepScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "disable_corrector": [],
        "dynamic_thresholding_ratio": 0.995,
        "final_sigmas_type": "zero",
        "flow_shift": flow_shift,
        "lower_order_final": true,
        "num_train_timesteps": 1000,
        "predict_x0": true,
        "prediction_type": "flow_prediction",
        "rescale_betas_zero_snr": false,
        "sample_max_value": 1.0,
        "solver_order": 2,
        "solver_p": null,
        "solver_type": "bh2",
        "steps_offset": 0,
        "thresholding": false,
        "timestep_spacing": "linspace",
        "trained_betas": null,
        "use_beta_sigmas": false,
        "use_exponential_sigmas": false,
        "use_flow_sigmas": true,
        "use_karras_sigmas": false,
    })
}

/// `text_encoder/config.json` of `UMT5EncoderModel`; `torch_dtype` is the weights' dtype.
pub fn text_encoder(c: &TextSpec, torch_dtype: &str) -> Value {
    json!({
        "architectures": ["UMT5EncoderModel"],
        "classifier_dropout": 0.0,
        "d_ff": c.d_ff,
        "d_kv": c.d_kv,
        "d_model": c.d_model,
        "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new",
        "dropout_rate": 0.0,
        "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0,
        "is_encoder_decoder": true,
        "is_gated_act": true,
        "layer_norm_epsilon": 1e-06,
        "model_type": "umt5",
        "num_decoder_layers": c.num_decoder_layers,
        "num_heads": c.num_heads,
        "num_layers": c.num_layers,
        "pad_token_id": 0,
        "relative_attention_max_distance": c.relative_attention_max_distance,
        "relative_attention_num_buckets": c.relative_attention_num_buckets,
        "tie_word_embeddings": false,
        "tokenizer_class": "T5Tokenizer",
        "torch_dtype": torch_dtype,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": true,
        "vocab_size": c.vocab_size,
    })
}

/// `transformer/config.json` of `WanTransformer3DModel`.
pub fn transformer(c: &DitSpec) -> Value {
    json!({
        "_class_name": "WanTransformer3DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "added_kv_proj_dim": null,
        "attention_head_dim": c.head_dim,
        "cross_attn_norm": true,
        "eps": c.eps,
        "ffn_dim": c.ffn_dim,
        "freq_dim": c.freq_dim,
        "image_dim": null,
        "in_channels": c.in_channels,
        "num_attention_heads": c.num_heads,
        "num_layers": c.num_layers,
        "out_channels": c.out_channels,
        "patch_size": c.patch_size,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": c.rope_max_seq_len,
        "text_dim": c.text_dim,
    })
}

/// `vae/config.json` of `AutoencoderKLWan`.
pub fn vae(c: &VaeSpec) -> Value {
    json!({
        "_class_name": "AutoencoderKLWan",
        "_diffusers_version": DIFFUSERS_VERSION,
        "attn_scales": c.attn_scales,
        "base_dim": c.base_dim,
        "dim_mult": c.dim_mult,
        "dropout": 0.0,
        "latents_mean": c.latents_mean,
        "latents_std": c.latents_std,
        "num_res_blocks": c.num_res_blocks,
        "temperal_downsample": c.temperal_downsample,
        "z_dim": c.z_dim,
    })
}
