//! A Linear whose weight stays in its file's encoding computes what the same layer with
//! the decoded weight computes — bias, low-rank terms and all — on the CPU's tiled path
//! and on the generic one (bf16 input), holding only the encoded bytes — on a GPU device
//! (CI's wgpu parity pass) re-laid there and decoded by burn's ops.

use std::sync::Arc;

use burn::tensor::{DType, Distribution, Tensor, TensorData};
use lynx_core::device::to_host_f32;
use lynx_core::nn::{Linear, LowRank, linear, linear_with, transposed};
use lynx_core::quant::{DeviceQuant, Encoding, QuantTensor};
use lynx_testing::{assert_close, test_device};

/// Random but valid blocks: f16 scales small and finite, the rest any byte.
fn random_blocks(enc: Encoding, rows: usize, width: usize, seed: u64) -> Vec<u8> {
    let (values, bytes) = enc.block();
    let n = rows * width / values;
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u8
    };
    let mut out = Vec::with_capacity(n * bytes);
    for _ in 0..n {
        let mut block: Vec<u8> = (0..bytes).map(|_| next()).collect();
        // Positions of the f16 `d`/`dmin`/`m` fields per format.
        let halves: &[usize] = match enc {
            Encoding::Q8_0 | Encoding::Q4_0 | Encoding::Q5_0 => &[0],
            Encoding::Q4_1 | Encoding::Q5_1 | Encoding::Q4_K | Encoding::Q5_K => &[0, 2],
            Encoding::Q2_K => &[80, 82],
            Encoding::Q3_K => &[108],
            Encoding::Q6_K => &[208],
            _ => &[],
        };
        for &h in halves {
            let v = burn::tensor::f16::from_f32(0.001 + (next() as f32) / 25600.0);
            block[h..h + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
        for b in &mut block {
            // No NaN (e4m3fn S.1111.111) and no infinity or NaN (e5m2 S.11111.xx).
            match enc {
                Encoding::F8_E4M3 if *b & 0x7f == 0x7f => *b = 0x70,
                Encoding::F8_E5M2 if *b & 0x7c == 0x7c => *b = 0x40,
                _ => {}
            }
        }
        out.extend(block);
    }
    out
}

/// Every block type re-laid for a device and decoded there by burn's ops gives the host
/// decoder's values: bit for bit on flex; on wgpu (CI's parity pass) within 1e-7.
#[test]
fn parity_device_decode_of_random_blocks_equals_the_host_decoder() {
    let device = test_device();
    let exact = lynx_core::device::is_cpu(&device);
    for (enc, scale) in [
        (Encoding::F8_E4M3, None),
        (Encoding::F8_E4M3, Some(0.0125f32)),
        (Encoding::F8_E5M2, Some(0.5)),
        (Encoding::Q8_0, None),
        (Encoding::Q4_0, None),
        (Encoding::Q4_1, None),
        (Encoding::Q5_0, None),
        (Encoding::Q5_1, None),
        (Encoding::Q2_K, None),
        (Encoding::Q3_K, None),
        (Encoding::Q4_K, None),
        (Encoding::Q5_K, None),
        (Encoding::Q6_K, None),
    ] {
        // 12 rows of 512 values: 2 K-blocks or 16 small blocks a row; fp8 also 3 × 7.
        for (rows, width) in [(12, 512), (3, 7)] {
            if enc.row_bytes(width).is_none() {
                continue;
            }
            let bytes = random_blocks(enc, rows, width, 3);
            let q = QuantTensor::new(Arc::from(bytes), enc, scale, vec![rows, width]).unwrap();
            let on_device = DeviceQuant::upload(&q, &device).unwrap();
            let got = to_host_f32(on_device.decode(), "decoded").unwrap();
            let want = q.to_f32();
            let name = format!("{} {scale:?} [{rows}, {width}]", enc.name());
            if exact {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(g == w, "{name}: value {i}: {g} vs {w}");
                }
            } else {
                let d = lynx_testing::diff(
                    &Tensor::<1>::from_data(TensorData::new(got, [rows * width]), &device),
                    &Tensor::<1>::from_data(TensorData::new(want, [rows * width]), &device),
                );
                assert!(d.rel_l2 <= 1e-7, "{name}: {d:?}");
            }
        }
    }
}

#[test]
fn parity_kept_quantized_linear_equals_the_decoded_one() {
    // 512 inputs: one tile; 2048 inputs and 1100 outputs: three tiles of 512, 512 and 76
    // output rows (the CPU path decodes 2²⁰ values per tile).
    for (enc, scale, d_in, d_out) in [
        (Encoding::F8_E4M3, Some(0.0125f32), 512, 72),
        (Encoding::F8_E4M3, None, 512, 72),
        (Encoding::Q8_0, None, 512, 72),
        (Encoding::Q4_K, None, 512, 72),
        (Encoding::Q6_K, None, 512, 72),
        (Encoding::Q3_K, None, 512, 72),
        (Encoding::Q5_K, None, 2048, 1100),
        (Encoding::F8_E5M2, Some(0.5), 2048, 1100),
    ] {
        check(enc, scale, d_in, d_out);
    }
}

fn check(enc: Encoding, scale: Option<f32>, d_in: usize, d_out: usize) {
    let device = test_device();
    {
        let bytes = random_blocks(enc, d_out, d_in, 7);
        let q = QuantTensor::new(Arc::from(bytes), enc, scale, vec![d_out, d_in]).unwrap();
        let decoded = Tensor::<2>::from_data(TensorData::new(q.to_f32(), [d_out, d_in]), &device);
        let bias = Tensor::<1>::random([d_out], Distribution::Normal(0.0, 1.0), &device);
        let plain = Linear::new(transposed(decoded), Some(bias.clone()));
        let kept = Linear::quantized(q.clone(), Some(bias.clone()), &device, DType::F32);
        assert_eq!(kept.dims(), [d_in, d_out]);
        // The CPU keeps the file's bytes; another device the re-laid form, on the device.
        let held = if lynx_core::device::is_cpu(&device) {
            assert!(kept.quantized_weight().is_some());
            q.byte_len()
        } else {
            assert!(kept.quantized_weight().is_none());
            kept.device_quantized_weight().unwrap().byte_len()
        };
        assert!(kept.is_quantized());
        assert_eq!(kept.weight_bytes(), held as u64 + 4 * d_out as u64);
        let x = Tensor::<3>::random([2, 9, d_in], Distribution::Normal(0.0, 1.0), &device);
        let name = format!("{} scale {scale:?}", enc.name());
        assert_close(
            &name,
            &linear(&kept, x.clone()),
            &linear(&plain, x.clone()),
            1e-5,
        );
        // Low-rank terms apply to the kept layer as to the plain one.
        let a = Tensor::<2>::random([4, d_in], Distribution::Normal(0.0, 0.1), &device);
        let b = Tensor::<2>::random([d_out, 4], Distribution::Normal(0.0, 0.1), &device);
        let term = LowRank::new(a, b, 0.7);
        let extra = std::slice::from_ref(&term);
        assert_close(
            &format!("{name} + low rank"),
            &linear_with(&kept, x.clone(), extra),
            &linear_with(&plain, x.clone(), extra),
            1e-5,
        );
        // The generic path (a bf16 model) decodes for the call (where the device computes
        // in bf16: lavapipe does not).
        if lynx_core::device::check_dtype(&device, DType::BF16).is_err() {
            return;
        }
        let bias16 = Some(bias.clone().cast(DType::BF16));
        let kept16 = Linear::quantized(q.clone(), bias16, &device, DType::BF16);
        let got = linear(&kept16, x.clone().cast(DType::BF16)).cast(DType::F32);
        let d = lynx_testing::diff(&got, &linear(&plain, x.clone()));
        assert!(d.rel_l2 < 2e-2, "{name} bf16: {d:?}");
        // It is the product of the bf16 operands (the weight rounded to bf16 after
        // decoding, as a bf16 model holds it), rounded once to bf16.
        let r = |t: Tensor<2>| t.cast(DType::BF16).cast(DType::F32);
        let w16 = r(Tensor::<2>::from_data(
            TensorData::new(q.to_f32(), [d_out, d_in]),
            &device,
        ));
        let x16 = r(x.reshape([2 * 9, d_in]));
        let want = x16.matmul(w16.transpose()) + r(bias.unsqueeze::<2>());
        let got = got.reshape([2 * 9, d_out]);
        let want = r(want);
        if lynx_core::device::is_cpu(&device) {
            // On the CPU the same f32 products, summed in whatever order the GEMM's blocking
            // picks for the tile's shape (it differs between machines): each value the bf16
            // of the operands' product or, where another order's f32 sum lands across a bf16
            // rounding boundary, one bf16 step from it (or, where the sum cancels to near
            // zero, within the f32 sum's own error), and those rare. A weight left unrounded
            // moves the sums by ~1e-3 of a value, a quarter of a bf16 step: off every few
            // values.
            let got = to_host_f32(got, "bf16 output").unwrap();
            let want = to_host_f32(want, "bf16 product").unwrap();
            let rms = (want.iter().map(|w| w * w).sum::<f32>() / want.len() as f32).sqrt();
            // One bf16 step at `v`'s binade: 2^(exponent − 7).
            let step = |v: f32| f32::from_bits(v.abs().to_bits() & 0x7F80_0000) / 128.0;
            let mut off = 0usize;
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= step(g.abs().max(w.abs())) + 1e-5 * rms,
                    "{name} bf16 against the bf16 operands: value {i} is {g}, not {w} or next to it"
                );
                off += usize::from(g != w);
            }
            assert!(
                off * 100 <= got.len(),
                "{name} bf16 against the bf16 operands: {off} of {} values off",
                got.len()
            );
        } else {
            let d = lynx_testing::diff(&got, &want);
            assert!(
                d.rel_l2 <= 1e-3,
                "{name} bf16 against the bf16 operands: {d:?}"
            );
        }
    }
}
