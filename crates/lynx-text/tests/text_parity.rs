//! The tokenizer, the UMT5 encoder and the pipeline's post-processing against
//! transformers 4.50.2 / diffusers 0.33.1 (`components/text.safetensors`, the tiny
//! Wan model's `text_encoder/` and `tokenizer/`).

use burn::tensor::{DType, Int, Tensor, TensorData};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};
use lynx_text::{TextEncoder, Tokenizer, postprocess};

#[derive(serde::Deserialize)]
struct TextJson {
    prompts: Vec<String>,
    max_sequence_length: usize,
}

fn prompts() -> Vec<String> {
    let meta: TextJson =
        lynx_core::config::load_json(fixtures_dir().join("components/text.json")).unwrap();
    assert_eq!(meta.max_sequence_length, lynx_text::MAX_SEQUENCE_LENGTH);
    meta.prompts
}

fn model_dir() -> std::path::PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers")
}

fn encoder(dtype: DType) -> TextEncoder {
    TextEncoder::from_model_dir(model_dir(), &test_device(), dtype).unwrap()
}

fn fixture_ints(key: &str) -> Vec<i64> {
    fixture("components/text.safetensors")
        .read(key)
        .unwrap()
        .try_into_vec::<i64>()
        .unwrap()
}

#[test]
fn parity_token_ids_and_masks() {
    let tok = Tokenizer::from_pretrained(model_dir()).unwrap();
    for (i, p) in prompts().iter().enumerate() {
        let t = tok.tokenize(p).unwrap();
        let ids: Vec<i64> = t.ids.iter().map(|&v| v.into()).collect();
        let mask: Vec<i64> = t.mask.iter().map(|&v| v.into()).collect();
        assert_eq!(
            ids,
            fixture_ints(&format!("raw_ids_{i}")),
            "ids of prompt {i} {p:?}"
        );
        assert_eq!(
            mask,
            fixture_ints(&format!("raw_mask_{i}")),
            "mask of prompt {i} {p:?}"
        );
        assert_eq!(t.len, mask.iter().filter(|&&m| m == 1).count());
        assert_eq!(t.truncated_from, None);
    }
}

#[test]
fn parity_encoder_hidden_states() {
    let device = test_device();
    let enc = encoder(DType::F32);
    let fx = fixture("components/text.safetensors");
    for i in 0..prompts().len() {
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(fixture_ints(&format!("raw_ids_{i}")), [1, 512]),
            &device,
        );
        let mask = Tensor::<2, Int>::from_data(
            TensorData::new(fixture_ints(&format!("raw_mask_{i}")), [1, 512]),
            &device,
        );
        let out = enc.forward(ids, Some(mask)).unwrap();
        let want: Tensor<3> = fixture_tensor(&fx, &format!("raw_hidden_{i}"), &device);
        assert_close(&format!("raw_hidden_{i}"), &out, &want, 1e-4);
    }
}

#[test]
fn parity_pipeline_embeddings() {
    let device = test_device();
    let enc = encoder(DType::F32);
    let fx = fixture("components/text.safetensors");
    for (i, p) in prompts().iter().enumerate() {
        // Prompt 2 is Lynx's reference prompt, which is not cleaned.
        let clean = i != 2;
        let out = enc.encode(p, clean).unwrap();
        assert_eq!(out.dims(), [1, 512, 32]);
        let want: Tensor<3> = fixture_tensor(&fx, &format!("pipeline_embeds_{i}"), &device);
        assert_close(&format!("pipeline_embeds_{i}"), &out, &want, 1e-4);

        // The post-processing alone, on the reference's own hidden states.
        let raw: Tensor<3> = fixture_tensor(&fx, &format!("raw_hidden_{i}"), &device);
        let len = enc.tokenize(p).unwrap().len;
        let trimmed = postprocess(raw, &[len]).unwrap();
        let d = lynx_testing::diff(&trimmed, &want);
        assert_eq!(d.max_abs, 0.0, "postprocess of raw_hidden_{i}: {d:?}");
    }
}

#[test]
fn embeddings_are_cached_per_prompt_and_cleaning() {
    let enc = encoder(DType::F32);
    assert!(enc.cache().is_empty());
    let a = enc.encode("  image of   a face ", true).unwrap();
    let b = enc.encode("  image of   a face ", true).unwrap();
    assert_eq!(enc.cache().len(), 1);
    assert_eq!(lynx_testing::diff(&a, &b).max_abs, 0.0);
    // Uncleaned, the same text is another entry, with other tokens (extra spaces).
    let c = enc.encode("  image of   a face ", false).unwrap();
    assert_eq!(enc.cache().len(), 2);
    let cleaned = enc.encode("image of a face", false).unwrap();
    assert_eq!(lynx_testing::diff(&a, &cleaned).max_abs, 0.0);
    assert!(lynx_testing::diff(&c, &cleaned).max_abs > 0.0);
    enc.cache().clear();
    assert!(enc.cache().is_empty());
}

#[test]
fn half_precision_models_stay_close_to_f32() {
    let fx = fixture("components/text.safetensors");
    let device = test_device();
    let want: Tensor<3> = fixture_tensor(&fx, "pipeline_embeds_0", &device);
    let prompt = &prompts()[0];
    // The fixture's random weights (std 0.3, no attention scaling) give attention
    // scores with a standard deviation near 8, so the softmax is sharp and amplifies
    // rounding: the error must follow the mantissa (bf16 has 8 bits, f16 11), which
    // also shows that the norms are not computed in half precision.
    let mut errors = Vec::new();
    for dtype in [DType::BF16, DType::F16] {
        let enc = encoder(dtype);
        assert_eq!(enc.dtype(), dtype);
        let out = enc.encode(prompt, true).unwrap();
        assert_eq!(out.dtype(), dtype);
        let tol = if dtype == DType::BF16 { 6e-2 } else { 8e-3 };
        assert_close(
            &format!("{dtype:?}"),
            &out.clone().cast(DType::F32),
            &want,
            tol,
        );
        errors.push(lynx_testing::diff(&out.cast(DType::F32), &want).rel_l2);
    }
    assert!(
        errors[1] < errors[0] / 4.0,
        "f16 error {} vs bf16 {}",
        errors[1],
        errors[0]
    );
}

#[test]
fn text_encoder_can_be_shared_between_threads() {
    fn check<T: Send + Sync>() {}
    check::<TextEncoder>();
}

/// `text/spiece_ids.json`: SentencePiece's own `encode` of a set of texts with the tiny
/// model's `spiece.model`, `</s>` appended (tests/fixtures/tools/make_spiece_ids.py).
#[derive(serde::Deserialize)]
struct SpieceIds {
    eos_id: u32,
    cases: Vec<SpieceCase>,
}

#[derive(serde::Deserialize)]
struct SpieceCase {
    text: String,
    ids: Vec<u32>,
}

/// The control pieces of the tiny model, which SentencePiece never matches in text and
/// the Unigram model does (the one difference `lynx_text::spiece` documents).
const CONTROL: [&str; 3] = ["</s>", "<pad>", "<unk>"];

fn check_spiece_tokenizer(tok: &Tokenizer) {
    let want: SpieceIds =
        lynx_core::config::load_json(fixtures_dir().join("text/spiece_ids.json")).unwrap();
    for case in &want.cases {
        let got = tok.inner().encode(case.text.as_str(), true).unwrap();
        let got = got.get_ids();
        if CONTROL.iter().any(|c| case.text.contains(c)) {
            assert_ne!(got, case.ids, "{:?}: typed control pieces", case.text);
            continue;
        }
        assert_eq!(got, case.ids, "{:?}", case.text);
        assert_eq!(got.last(), Some(&want.eos_id));
        let padded = tok.tokenize(&case.text).unwrap();
        assert_eq!(&padded.ids[..padded.len], got, "{:?} padded", case.text);
    }
}

#[test]
fn spiece_tokenizer_matches_sentencepiece() {
    // From the tokenizer folder's spiece.model ...
    let path = model_dir().join("tokenizer/spiece.model");
    let bytes = std::fs::read(&path).unwrap();
    check_spiece_tokenizer(&Tokenizer::from_spiece(&bytes, &path, 512).unwrap());
    // ... and from the `spiece_model` tensor of ComfyUI's UMT5 file (the same bytes).
    let comfy = fixture("formats/umt5_fp8_scaled.safetensors");
    let data = comfy.embedded("spiece_model").unwrap();
    assert_eq!(data, bytes);
    let path = fixtures_dir().join("formats/umt5_fp8_scaled.safetensors");
    check_spiece_tokenizer(&Tokenizer::from_spiece(&data, &path, 512).unwrap());
}
