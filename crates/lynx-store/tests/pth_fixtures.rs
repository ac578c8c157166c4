//! Fixture parity: every `.pth` fixture yields the keys, dtypes, shapes and bytes of its
//! twin (the safetensors file, or the other `.pth` of the same weights).

use std::collections::BTreeMap;
use std::path::PathBuf;

use lynx_store::pth::{PthDtype, PthTensor, open, read_index};

fn fixture(name: &str) -> PathBuf {
    lynx_testing::fixtures_dir().join("components").join(name)
}

/// `name → (dtype, shape, bytes)` of a `.pth`, with `strip` removed from every key.
fn pth_tensors(name: &str, strip: &str) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let path = fixture(name);
    let bytes = std::fs::read(&path).unwrap();
    let tensors = open(&path).unwrap();
    // The in-memory reader agrees with the file reader.
    assert_eq!(read_index(&bytes, &path).unwrap(), tensors);
    let mut out = BTreeMap::new();
    for t in tensors {
        let PthTensor {
            name,
            dtype,
            shape,
            start,
            end,
        } = t;
        let numel: usize = shape.iter().product();
        assert_eq!((end - start) as usize, numel * dtype.size(), "{name}");
        let key = name
            .strip_prefix(strip)
            .unwrap_or_else(|| panic!("{name} lacks {strip}"));
        let data = bytes[start as usize..end as usize].to_vec();
        let dtype = format!("{dtype:?}");
        assert!(
            out.insert(key.to_owned(), (dtype, shape, data)).is_none(),
            "{name} twice"
        );
    }
    out
}

fn safetensors(name: &str) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let dtype = match v.dtype() {
                safetensors::Dtype::F32 => "F32",
                safetensors::Dtype::I64 => "I64",
                other => panic!("{other:?}"),
            };
            (k, (dtype.to_owned(), v.shape().to_vec(), v.data().to_vec()))
        })
        .collect()
}

fn assert_same(
    a: &BTreeMap<String, (String, Vec<usize>, Vec<u8>)>,
    b: &BTreeMap<String, (String, Vec<usize>, Vec<u8>)>,
) {
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb);
    for (k, va) in a {
        assert_eq!(va, &b[k], "{k}");
    }
}

#[test]
fn arcface_zip_and_legacy_match_safetensors() {
    let st = safetensors("arcface_ir_se.safetensors");
    let zip = pth_tensors("arcface_ir_se.pth", "");
    let legacy = pth_tensors("arcface_ir_se_legacy.pth", "");
    assert_same(&zip, &legacy);
    // The safetensors twin leaves out `num_batches_tracked`, which must be i64 scalars.
    let (tracked, rest): (BTreeMap<_, _>, BTreeMap<_, _>) = zip
        .into_iter()
        .partition(|(k, _)| k.ends_with("num_batches_tracked"));
    for (k, (dtype, shape, data)) in &tracked {
        assert_eq!(
            (dtype.as_str(), shape.len(), data.len()),
            ("I64", 0, 8),
            "{k}"
        );
    }
    assert_same(&rest, &st);
    assert_eq!(rest.len(), st.len());
}

#[test]
fn retinaface_zip_matches_legacy_module_prefixed() {
    let zip = pth_tensors("retinaface_mobile0.25.pth", "");
    let legacy = pth_tensors("retinaface_mobile0.25_legacy_module.pth", "module.");
    assert_same(&zip, &legacy);
    assert_eq!(zip.len(), 300);
    let tracked = zip
        .iter()
        .filter(|(k, _)| k.ends_with("num_batches_tracked"));
    for (k, (dtype, shape, data)) in tracked {
        assert_eq!(
            (dtype.as_str(), shape.len(), data.len()),
            ("I64", 0, 8),
            "{k}"
        );
    }
}

#[test]
fn retinaface_photo_has_the_same_layout() {
    // A plain-dict state dict of the same network with other weights.
    let photo = pth_tensors("retinaface_photo.pth", "");
    let zip = pth_tensors("retinaface_mobile0.25.pth", "");
    let layout = |m: &BTreeMap<String, (String, Vec<usize>, Vec<u8>)>| {
        m.iter()
            .map(|(k, (d, s, _))| (k.clone(), d.clone(), s.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(layout(&photo), layout(&zip));
}

#[test]
fn dtypes_report_their_sizes() {
    assert_eq!(PthDtype::BF16.size(), 2);
    assert_eq!(PthDtype::Bool.name(), "bool");
}
