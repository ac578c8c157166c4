//! The streaming writer against the official `safetensors` crate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lynx_store::safetensors_io::{Dtype, Layout, SafetensorsWriter, TensorSpec, save};
use safetensors::tensor::TensorView;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-st-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn official(d: Dtype) -> safetensors::Dtype {
    use safetensors::Dtype as S;
    match d {
        Dtype::Bool => S::BOOL,
        Dtype::U8 => S::U8,
        Dtype::I8 => S::I8,
        Dtype::F8E5M2 => S::F8_E5M2,
        Dtype::F8E4M3 => S::F8_E4M3,
        Dtype::I16 => S::I16,
        Dtype::U16 => S::U16,
        Dtype::F16 => S::F16,
        Dtype::BF16 => S::BF16,
        Dtype::I32 => S::I32,
        Dtype::U32 => S::U32,
        Dtype::F32 => S::F32,
        Dtype::F64 => S::F64,
        Dtype::I64 => S::I64,
        Dtype::U64 => S::U64,
    }
}

/// A mixed set of tensors: every dtype, names out of order, a scalar, an empty tensor.
fn sample() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let dtypes = [
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F64,
        Dtype::I64,
        Dtype::I32,
        Dtype::U8,
        Dtype::Bool,
        Dtype::I8,
        Dtype::I16,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
    ];
    let mut out = Vec::new();
    for (i, &d) in dtypes.iter().enumerate() {
        let shape = match i % 4 {
            0 => vec![3, 5],
            1 => vec![7],
            2 => vec![],
            _ => vec![2, 0, 4],
        };
        let n: usize = shape.iter().product::<usize>() * d.size();
        let bytes = (0..n)
            .map(|j| {
                if d == Dtype::Bool {
                    (j % 2) as u8
                } else {
                    (j * 31 + i) as u8
                }
            })
            .collect();
        out.push((
            format!("t{}.{}", 20 - i, d.name().to_lowercase()),
            d,
            shape,
            bytes,
        ));
    }
    out
}

fn official_bytes(
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    meta: Option<&BTreeMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                TensorView::new(official(*d), s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = meta.map(|m| m.clone().into_iter().collect());
    safetensors::serialize(views, meta).unwrap()
}

fn save_ours(
    path: &std::path::Path,
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    meta: Option<&BTreeMap<String, String>>,
) {
    let args: Vec<(&str, Dtype, &[usize], &[u8])> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice()))
        .collect();
    save(path, &args, meta).unwrap();
}

#[test]
fn byte_for_byte_equal_to_serialize() {
    let dir = tmp_dir("equal");
    let tensors = sample();
    let one = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let empty = BTreeMap::new();
    for meta in [None, Some(&one), Some(&empty)] {
        let path = dir.join("a.safetensors");
        save_ours(&path, &tensors, meta);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            official_bytes(&tensors, meta)
        );
    }
    // No tensors at all.
    let path = dir.join("empty.safetensors");
    save_ours(&path, &[], Some(&one));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        official_bytes(&[], Some(&one))
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn loads_with_official_crate_and_matches_layout() {
    let dir = tmp_dir("load");
    let tensors = sample();
    let meta = BTreeMap::from([
        ("b".to_string(), "2".to_string()),
        ("a \"quoted\" ü".to_string(), "1".to_string()),
    ]);
    let path = dir.join("b.safetensors");
    save_ours(&path, &tensors, Some(&meta));
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), tensors.len());
    for (n, d, s, b) in &tensors {
        let v = st.tensor(n).unwrap();
        assert_eq!(v.dtype(), official(*d));
        assert_eq!(v.shape(), s.as_slice());
        assert_eq!(v.data(), b.as_slice());
    }
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let got: BTreeMap<String, String> = m.metadata().clone().unwrap().into_iter().collect();
    assert_eq!(got, meta);
    let specs = tensors
        .iter()
        .map(|(n, d, s, _)| TensorSpec::new(n.clone(), *d, s))
        .collect();
    let layout = Layout::new(specs, Some(&meta)).unwrap();
    assert_eq!(layout.file_len(), bytes.len() as u64);
    assert_eq!(layout.header().len() % 8, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn streams_in_pieces() {
    let dir = tmp_dir("stream");
    let path = dir.join("s.safetensors");
    let data: Vec<u8> = (0..4000u32)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let specs = vec![
        TensorSpec::new("big", Dtype::F32, &[40, 100]),
        TensorSpec::new("a_small", Dtype::F32, &[2]),
    ];
    let layout = Layout::new(specs, None).unwrap();
    // File order: by name within one dtype.
    assert_eq!(layout.tensors()[0].name, "a_small");
    let mut w = SafetensorsWriter::create(&path, layout).unwrap();
    assert_eq!(w.next_tensor().unwrap().name, "a_small");
    w.write_tensor("a_small", &[0u8; 8]).unwrap();
    assert_eq!(w.next_tensor().unwrap().name, "big");
    w.begin_tensor("big").unwrap();
    for piece in data.chunks(999) {
        w.write_bytes(piece).unwrap();
    }
    assert!(w.next_tensor().is_none());
    assert!(!path.exists(), "nothing at the target before finish");
    let len = w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(len, bytes.len() as u64);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("big").unwrap().data(), data.as_slice());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary left"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn misuse_is_refused_and_leaves_no_file() {
    let dir = tmp_dir("misuse");
    let path = dir.join("m.safetensors");
    let specs = || {
        vec![
            TensorSpec::new("a", Dtype::F32, &[2]),
            TensorSpec::new("b", Dtype::F32, &[2]),
        ]
    };
    let empty_dir = |dir: &PathBuf| std::fs::read_dir(dir).unwrap().count() == 0;

    // Duplicate names and the reserved name.
    let dup = vec![
        TensorSpec::new("a", Dtype::F32, &[2]),
        TensorSpec::new("a", Dtype::F16, &[2]),
    ];
    assert!(Layout::new(dup, None).is_err());
    assert!(Layout::new(vec![TensorSpec::new("__metadata__", Dtype::U8, &[1])], None).is_err());

    // Out of order, too many bytes, write before begin, beginning before complete.
    let mut w = SafetensorsWriter::create(&path, Layout::new(specs(), None).unwrap()).unwrap();
    assert!(w.write_bytes(&[0; 4]).is_err());
    assert!(w.begin_tensor("b").is_err());
    w.begin_tensor("a").unwrap();
    assert!(w.write_bytes(&[0; 9]).is_err());
    w.write_bytes(&[0; 4]).unwrap();
    assert!(w.begin_tensor("b").is_err());
    drop(w);
    assert!(empty_dir(&dir), "a dropped writer leaves nothing");

    // finish with a tensor incomplete or missing.
    let mut w = SafetensorsWriter::create(&path, Layout::new(specs(), None).unwrap()).unwrap();
    w.write_tensor("a", &[0; 8]).unwrap();
    let err = w.finish().unwrap_err().to_string();
    assert!(
        err.contains("1 tensor(s) incomplete") && err.contains("`b`"),
        "{err}"
    );
    assert!(empty_dir(&dir), "a failed finish leaves nothing");

    // Wrong whole-tensor size.
    let mut w = SafetensorsWriter::create(&path, Layout::new(specs(), None).unwrap()).unwrap();
    assert!(w.write_tensor("a", &[0; 7]).is_err());
    drop(w);
    assert!(empty_dir(&dir));

    // A writer past its last tensor refuses more.
    let mut w = SafetensorsWriter::create(&path, Layout::new(specs(), None).unwrap()).unwrap();
    w.write_tensor("a", &[0; 8]).unwrap();
    w.write_tensor("b", &[0; 8]).unwrap();
    assert!(w.begin_tensor("c").is_err());
    w.finish().unwrap();
    assert!(path.exists());

    // save() checks sizes too.
    let bad = dir.join("bad.safetensors");
    let r = save(&bad, &[("x", Dtype::F32, &[3], &[0u8; 8])], None);
    assert!(r.is_err());
    assert!(!bad.exists());
    std::fs::remove_dir_all(dir).unwrap();
}
