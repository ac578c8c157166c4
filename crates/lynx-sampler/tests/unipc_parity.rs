//! UniPC against diffusers 0.33.1 (`components/unipc.safetensors`: 4 steps, flow_shift 3).

use burn::tensor::{DType, Tensor};
use lynx_sampler::{Scheduler, SchedulerConfig, UniPcMultistep};
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};

fn scheduler() -> UniPcMultistep {
    let cfg = SchedulerConfig::load(fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/scheduler"))
        .expect("scheduler config");
    UniPcMultistep::new(cfg).expect("supported config")
}

#[test]
fn parity_unipc_schedule() {
    let fx = fixture("components/unipc.safetensors");
    let mut s = scheduler();
    s.set_timesteps(4).unwrap();
    let want_t = fx.read("timesteps").unwrap().try_to_vec::<f64>().unwrap();
    let want_s = fx.read("sigmas").unwrap().try_to_vec::<f64>().unwrap();
    assert_eq!(s.timesteps(), want_t.as_slice());
    assert_eq!(s.sigmas().len(), want_s.len());
    for (a, b) in s.sigmas().iter().zip(&want_s) {
        assert!(
            (a - b).abs() <= 1e-7 * b.abs().max(1.0),
            "sigmas {:?} vs {want_s:?}",
            s.sigmas()
        );
    }
}

#[test]
fn parity_unipc_steps() {
    let device = test_device();
    let fx = fixture("components/unipc.safetensors");
    let mut s = scheduler();
    s.set_timesteps(4).unwrap();
    let timesteps = s.timesteps().to_vec();
    let mut sample: Tensor<5> = fixture_tensor(&fx, "sample_0", &device);
    for (i, t) in timesteps.iter().enumerate() {
        let out: Tensor<5> = fixture_tensor(&fx, &format!("model_output_{i}"), &device);
        sample = s.step(out, *t, sample).unwrap();
        let want: Tensor<5> = fixture_tensor(&fx, &format!("sample_{}", i + 1), &device);
        assert_close(&format!("sample_{}", i + 1), &sample, &want, 1e-5);
    }
    assert_eq!(sample.dtype(), DType::F32);
    // A fifth step is an error, not a panic.
    let out: Tensor<5> = fixture_tensor(&fx, "model_output_0", &device);
    assert!(s.step(out, 0.0, sample).is_err());
}

#[test]
fn unsupported_options_are_named() {
    let dir = std::env::temp_dir().join(format!("lynx-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"use_flow_sigmas": true, "use_karras_sigmas": true, "thresholding": true, "flow_shift": 5.0}"#,
    )
    .unwrap();
    let cfg = SchedulerConfig::load(&path).unwrap();
    let err = UniPcMultistep::new(cfg)
        .err()
        .expect("must be rejected")
        .to_string();
    assert!(err.contains("use_karras_sigmas"), "{err}");
    assert!(err.contains("thresholding"), "{err}");
    assert!(err.contains("scheduler_config.json"), "{err}");
}
