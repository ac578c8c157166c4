//! Synthetic files from `tests/data/make_synthetic.py` (protocol 4, every dtype, nested
//! and wrapped state dicts, shared storages, Parameters, legacy storage views) and the
//! files that must be rejected, with the words their error must contain.

use std::path::PathBuf;

use lynx_store::pth::open;
use serde_json::Value;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn synthetic_files_match_their_description() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pth");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("synthetic.json")).unwrap())
            .unwrap();
    let files = expected.as_object().unwrap();
    assert!(files.len() >= 9);
    for (file, want) in files {
        let path = dir.join(file);
        let result = open(&path);
        if let Some(words) = want.get("error") {
            let msg = result.expect_err(file).to_string();
            let words = words.as_str().unwrap();
            assert!(msg.contains(words), "{file}: `{msg}` lacks `{words}`");
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let got = result.unwrap_or_else(|e| panic!("{e}"));
        let want = want.as_array().unwrap();
        let names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, want_names, "{file}");
        for (t, w) in got.iter().zip(want) {
            let shape: Vec<usize> = w["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                format!("{:?}", t.dtype),
                w["dtype"].as_str().unwrap(),
                "{}",
                t.name
            );
            assert_eq!(t.shape, shape, "{}", t.name);
            let data = &bytes[t.start as usize..t.end as usize];
            assert_eq!(hex(data), w["hex"].as_str().unwrap(), "{}", t.name);
        }
    }
}
