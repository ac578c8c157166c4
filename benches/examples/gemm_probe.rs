//! Where matmul time goes on flex: burn's matmul with a transposed-view weight (as
//! `nn::Linear` holds PyTorch weights), with a contiguous weight, and the `gemm` crate
//! called directly. `cargo run --release -p lynx-benches --example gemm_probe`.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

fn main() {
    let device = Device::flex();
    for (m, k, n) in [
        (780, 1536, 1536),
        (780, 1536, 8960),
        (780, 8960, 1536),
        (512, 4096, 10240),
    ] {
        let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let w_t = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &device);
        let w_view = w_t.clone().transpose();
        let w_contig = Tensor::<2>::from_data(w_view.to_data(), &device);
        let flops = 2.0 * (m * n * k) as f64;
        let time = |f: &dyn Fn()| {
            f();
            let t = Instant::now();
            for _ in 0..5 {
                f();
            }
            t.elapsed().as_secs_f64() / 5.0
        };
        let a = time(&|| {
            let _ = x.clone().matmul(w_view.clone()).into_data();
        });
        let b = time(&|| {
            let _ = x.clone().matmul(w_contig.clone()).into_data();
        });
        let xs: Vec<f32> = x.to_data().to_vec().unwrap();
        let ws: Vec<f32> = w_contig.to_data().to_vec().unwrap();
        let mut out = vec![0.0f32; m * n];
        let c = time(&|| unsafe {
            let out = out.as_ptr() as *mut f32;
            gemm::gemm(
                m,
                n,
                k,
                out,
                1,
                n as isize,
                false,
                xs.as_ptr(),
                1,
                k as isize,
                ws.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(2),
            );
        });
        let g = |s: f64| flops / s / 1e9;
        println!(
            "[{m}x{k}]x[{k}x{n}]: flex view {:.0} GFLOP/s, flex contiguous {:.0}, gemm direct {:.0}",
            g(a),
            g(b),
            g(c)
        );
    }
}
