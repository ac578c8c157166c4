//! `Checkpoint::recording`: what a loader asks for is recorded once, in order, with the
//! dtype it is read in; declared tensors answer `has`/`shape` and are checked like a
//! file's.

use std::collections::BTreeMap;

use burn::tensor::DType;
use lynx_core::Error;
use lynx_store::{Checkpoint, TensorRecord};
use lynx_testing::test_device;

fn rec(key: &str, shape: &[usize], dtype: DType) -> TensorRecord {
    TensorRecord {
        key: key.into(),
        shape: shape.to_vec(),
        dtype,
    }
}

#[test]
fn records_every_read_once_in_order() {
    let ckpt = Checkpoint::recording(BTreeMap::new());
    let records = ckpt
        .record(&test_device(), DType::F32, |w| {
            assert!(!w.has("norm.weight"));
            let norm = w.sub("norm").rms_norm(4, 1e-6);
            let lin = w.sub("proj").linear(4, 3, true);
            // A second read of the same tensor is the same tensor.
            let again = w.sub("proj").linear(4, 3, true);
            Ok((norm, lin, again))
        })
        .unwrap();
    assert_eq!(
        records,
        [
            rec("norm.weight", &[4], DType::F32),
            rec("proj.weight", &[3, 4], DType::F32),
            rec("proj.bias", &[3], DType::F32),
        ]
    );
}

#[test]
fn declared_tensors_are_answered_and_checked() {
    let declared = BTreeMap::from([("r".to_string(), vec![1, 5, 2])]);
    let ckpt = Checkpoint::recording(declared.clone());
    let records = ckpt
        .record(&test_device(), DType::F32, |w| {
            let [_, n, _] = w.dims::<3>("r").unwrap();
            Ok(w.tensor("r", [1, n, 2]))
        })
        .unwrap();
    assert_eq!(records, [rec("r", &[1, 5, 2], DType::F32)]);
    // Read in another shape: a mismatch naming the key.
    let err = Checkpoint::recording(declared.clone())
        .record(&test_device(), DType::F32, |w| Ok(w.tensor("r", [1, 4, 2])))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Keys { mismatched, .. } if mismatched[0].0 == "r"),
        "{err}"
    );
    // Never read: reported unused.
    let err = Checkpoint::recording(declared)
        .record(&test_device(), DType::F32, |_| Ok(()))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Keys { unexpected, .. } if unexpected == &["r"]),
        "{err}"
    );
}

#[test]
fn one_key_in_two_shapes_is_an_error() {
    let err = Checkpoint::recording(BTreeMap::new())
        .record(&test_device(), DType::F32, |w| {
            Ok((w.tensor("t", [2, 3]), w.tensor("t", [3, 2])))
        })
        .unwrap_err();
    assert!(err.to_string().contains("`t`"), "{err}");
    // Only a recording checkpoint records.
    assert!(
        Checkpoint::synthetic(1.0)
            .record(&test_device(), DType::F32, |_| Ok(()))
            .is_err()
    );
}
