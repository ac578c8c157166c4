//! The JSON files of a model folder, printed as Python's
//! `json.dumps(obj, indent=2, sort_keys=True) + "\n"` prints them (which is how diffusers
//! and transformers save `config.json`, `model_index.json`, `scheduler_config.json` and
//! the shard index), so that a synthetic file reads like a released one: floats in
//! Python's `repr` (`1e-06`, `3.0`), keys sorted.

use lynx_core::{Error, Result};
use lynx_dit::WanConfig;
use lynx_text::Umt5Config;
use lynx_vae::VaeConfig;
use serde::Serialize;
use serde_json::{Value, json};

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

/// `model_index.json` of `WanPipeline`; `transformer_library` names the module the
/// transformer class comes from.
pub fn model_index(transformer_library: &str) -> Value {
    json!({
        "_class_name": "WanPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": [transformer_library, "WanTransformer3DModel"],
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

/// `config` serialised, with `extra` fields (the library's bookkeeping) added.
fn with_fields(config: &impl Serialize, what: &str, extra: Value) -> Result<Value> {
    let mut value = serde_json::to_value(config)
        .map_err(|e| Error::input(format!("cannot serialise the {what} config: {e}")))?;
    if let (Some(obj), Value::Object(extra)) = (value.as_object_mut(), extra) {
        obj.extend(extra);
    }
    Ok(value)
}

/// `text_encoder/config.json` of `UMT5EncoderModel`: the [`Umt5Config`] and what
/// transformers saves beside it; `torch_dtype` is the weights' dtype. The encoder-only
/// checkpoint claims as many decoder layers as encoder layers, as UMT5's do.
pub fn text_encoder(c: &Umt5Config, torch_dtype: &str) -> Result<Value> {
    let extra = json!({
        "architectures": ["UMT5EncoderModel"],
        "classifier_dropout": 0.0,
        "decoder_start_token_id": 0,
        "dropout_rate": 0.0,
        "eos_token_id": 1,
        "initializer_factor": 1.0,
        "is_encoder_decoder": true,
        "num_decoder_layers": c.num_layers,
        "pad_token_id": 0,
        "tie_word_embeddings": false,
        "tokenizer_class": "T5Tokenizer",
        "torch_dtype": torch_dtype,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": true,
    });
    with_fields(c, "text encoder", extra)
}

/// `transformer/config.json` of `WanTransformer3DModel`: the [`WanConfig`].
pub fn transformer(c: &WanConfig) -> Result<Value> {
    let extra = json!({ "_diffusers_version": DIFFUSERS_VERSION });
    with_fields(c, "transformer", extra)
}

/// `vae/config.json` of `AutoencoderKLWan`: the [`VaeConfig`].
pub fn vae(c: &VaeConfig) -> Result<Value> {
    let extra = json!({ "_diffusers_version": DIFFUSERS_VERSION });
    with_fields(c, "VAE", extra)
}
