//! Hand-made hostile pickles inside legacy-format files: deep nesting, cycles,
//! exponential sharing, amplification, absurd lengths and memo indices, and a valid
//! Python 2 style pickle. Each must give `Ok` with the right index or one clear error.

use std::path::Path;

use lynx_store::pth::{PthDtype, read_index};

const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// A legacy file: magic, protocol, sys_info, `main`, `keys`, then `data`.
fn legacy(main: &[u8], keys: &[u8], data: &[u8]) -> Vec<u8> {
    let mut f = b"\x80\x02\x8a\x0a".to_vec();
    f.extend(MAGIC);
    f.extend(b".\x80\x02M\xe9\x03.\x80\x02}.");
    f.extend(main);
    f.extend(keys);
    f.extend(data);
    f
}

fn error(main: &[u8]) -> String {
    let file = legacy(main, b"\x80\x02].", b"");
    let e = read_index(&file, Path::new("hostile.pth")).expect_err("must fail");
    let msg = e.to_string();
    assert!(
        msg.starts_with("hostile.pth is not a valid PyTorch file: "),
        "{msg}"
    );
    msg
}

/// `{"k": <body>}` as a protocol 2 pickle.
fn under_k(body: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02}X\x01\x00\x00\x00k".to_vec();
    p.extend(body);
    p.extend(b"s.");
    p
}

#[test]
fn deep_nesting_is_bounded() {
    let mut body = vec![b']'; 20_000];
    body.extend(vec![b'a'; 19_999]);
    assert!(error(&under_k(&body)).contains("nests containers deeper than 32 levels"));
    assert!(error(&under_k(&[b']'; 40_000])).contains("the stack grows beyond"));
    assert!(error(&under_k(&[b'('; 2_000])).contains("MARKs nest deeper"));
}

#[test]
fn cycles_and_exponential_sharing_are_caught() {
    let msg = error(b"\x80\x02}q\x00X\x01\x00\x00\x00kh\x00s.");
    assert!(msg.contains("`k` contains itself"), "{msg}");
    // l0 = []; l(i) = [l(i-1), l(i-1)]: 2^20 paths through 41 lists.
    let mut body = b"]q\x00".to_vec();
    for i in 1..=20u8 {
        body.extend([b'0', b'(', b'h', i - 1, b'h', i - 1, b'l', b'q', i]);
    }
    let msg = error(&under_k(&body));
    assert!(msg.contains("shared too often"), "{msg}");
}

#[test]
fn amplification_is_caught() {
    // OrderedDict(pairs) with 1000 pairs, rebuilt 10 000 times from the memo.
    let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00](".to_vec();
    for _ in 0..1000 {
        p.extend(b"NN\x86");
    }
    p.extend(b"eq\x01");
    for _ in 0..10_000 {
        p.extend(b"h\x00h\x01\x85R0");
    }
    p.extend(b"0}.");
    let msg = error(&p);
    assert!(
        msg.contains("more items than the pickle's size allows"),
        "{msg}"
    );
}

#[test]
fn absurd_lengths_and_indices_are_refused() {
    let msg = error(b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7fabc");
    assert!(msg.contains("cut short"), "{msg}");
    let msg = error(b"\x80\x02}r\xff\xff\xff\xff.");
    assert!(
        msg.contains("memo entry 4294967295 is written before entry 0"),
        "{msg}"
    );
    let msg = error(b"\x80\x02j\x05\x00\x00\x00.");
    assert!(
        msg.contains("memo entry 5 is read before it is written"),
        "{msg}"
    );
    let msg = error(b"\x80\x02\x8b\x00\x00\x00\x80.");
    assert!(msg.contains("LONG4 has a negative size"), "{msg}");
    // A storage whose element count overflows.
    let main = b"\x80\x02}U\x01wctorch._utils\n_rebuild_tensor_v2\n((U\x07storagectorch\n\
        DoubleStorage\nU\x01kU\x03cpu\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7fNtQK\x00K\x02\x85\
        K\x01\x85\x89}tRs.";
    let file = legacy(main, b"\x80\x02]U\x01ka.", &[0xff; 16]);
    let msg = read_index(&file, Path::new("h.pth"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("storage `k` at byte"), "{msg}");
}

/// A Python 2 style state dict: SHORT_BINSTRING keys, `OrderedDict` from `()`, one
/// tensor `w` of two f32.
fn py2_tensor(key: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01".to_vec();
    p.extend(key);
    p.extend(
        b"ctorch._utils\n_rebuild_tensor_v2\n((U\x07storagectorch\nFloatStorage\n\
          U\x01kU\x03cpuK\x02Ntq\x02QK\x00K\x02\x85K\x01\x85\x89h\x00)RtRq\x03",
    );
    p
}

#[test]
fn python2_pickles_and_key_collisions() {
    let data = [2u8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut main = py2_tensor(b"U\x01w");
    main.extend(b"s.");
    let file = legacy(&main, b"\x80\x02]U\x01ka.", &data);
    let t = read_index(&file, Path::new("py2.pth")).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].name.as_str(), t[0].dtype, &t[0].shape[..]),
        ("w", PthDtype::F32, &[2][..])
    );
    assert_eq!(&file[t[0].start as usize..t[0].end as usize], &data[8..]);

    // {"a.b": t, "a": {"b": t}} flattens to `a.b` twice.
    let mut main = py2_tensor(b"U\x03a.b");
    main.extend(b"sU\x01a}U\x01bh\x03ss.");
    let file = legacy(&main, b"\x80\x02]U\x01ka.", &data);
    let msg = read_index(&file, Path::new("dup.pth"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("key `a.b` appears twice"), "{msg}");

    // The storage missing from the key list, and listed twice.
    let mut main = py2_tensor(b"U\x01w");
    main.extend(b"s.");
    let file = legacy(&main, b"\x80\x02].", &data);
    let msg = read_index(&file, Path::new("m.pth"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("storage `k` has no data"), "{msg}");
    let file = legacy(&main, b"\x80\x02](U\x01kU\x01ke.", &data);
    let msg = read_index(&file, Path::new("m.pth"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("storage `k` is listed twice"), "{msg}");
}
