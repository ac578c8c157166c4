//! Euler against its closed form, and the guidance formulas.

use burn::tensor::{Distribution, Tensor};
use lynx_sampler::{FlowMatchEuler, Guidance, Scheduler};
use lynx_testing::{assert_close, test_device};

#[test]
fn euler_is_exact_on_straight_paths() {
    // x_σ = (1−σ)·x0 + σ·ε has constant velocity v = ε − x0; Euler must land on x0.
    let device = test_device();
    let x0 = Tensor::<5>::random([1, 2, 1, 3, 4], Distribution::Normal(0.0, 1.0), &device);
    let eps = Tensor::<5>::random([1, 2, 1, 3, 4], Distribution::Normal(0.0, 1.0), &device);
    let mut s = FlowMatchEuler::new(1000, 3.0).unwrap();
    s.set_timesteps(7).unwrap();
    let sigma0 = s.sigmas()[0];
    let mut x = x0.clone() * (1.0 - sigma0) + eps.clone() * sigma0;
    let v = eps - x0.clone();
    for t in s.timesteps().to_vec() {
        x = s.step(v.clone(), t, x).unwrap();
    }
    assert_close("euler x0", &x, &x0, 1e-5);
}

#[test]
fn euler_schedule_closed_form() {
    let mut s = FlowMatchEuler::new(1000, 3.0).unwrap();
    s.set_timesteps(4).unwrap();
    // diffusers shifts the end point twice: f(linspace(1, f(1/1000), 4)), f = 3s/(1+2s).
    let f = |s: f64| 3.0 * s / (1.0 + 2.0 * s);
    let end = f(0.001);
    let want: Vec<f64> = (0..4)
        .map(|i| f(1.0 + (end - 1.0) * i as f64 / 3.0))
        .chain([0.0])
        .collect();
    for (got, want) in s.sigmas().iter().zip(&want) {
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    assert_eq!(s.timesteps().len(), 4);
    assert!((s.timesteps()[2] - 1000.0 * want[2]).abs() < 1e-9);
}

/// The 4-step schedule of `FlowMatchEulerDiscreteScheduler(shift=5.0)` recorded by
/// diffusers 0.33.1 (`components/lora.safetensors`: `euler_sigmas`, `euler_timesteps`).
#[test]
fn euler_schedule_matches_diffusers() {
    let fx = lynx_testing::fixture("components/lora.safetensors");
    let sigmas = fx.read_f32("euler_sigmas").unwrap();
    let timesteps = fx.read_f32("euler_timesteps").unwrap();
    let mut s = FlowMatchEuler::new(1000, 5.0).unwrap();
    s.set_timesteps(4).unwrap();
    assert_eq!(s.sigmas().len(), sigmas.len());
    for (got, want) in s.sigmas().iter().zip(&sigmas) {
        assert!((got - *want as f64).abs() < 1e-6, "sigma {got} vs {want}");
    }
    for (got, want) in s.timesteps().iter().zip(&timesteps) {
        assert!(
            (got - *want as f64).abs() < 1e-3,
            "timestep {got} vs {want}"
        );
    }
}

#[test]
fn guidance_formulas() {
    let device = test_device();
    let c = Tensor::<1>::from_floats([3.0, 1.0], &device);
    let u = Tensor::<1>::from_floats([1.0, 1.0], &device);
    let i = Tensor::<1>::from_floats([2.0, 0.0], &device);
    let cfg = Guidance::new(5.0, None).combine(c.clone(), u.clone(), None);
    assert_eq!(cfg.to_data().try_to_vec::<f32>().unwrap(), vec![11.0, 1.0]);
    let g = Guidance::new(5.0, Some(2.0));
    assert_eq!(g.passes(), 3);
    // u + 2(i − u) + 5(c − i)
    let lynx = g.combine(c, u, Some(i));
    assert_eq!(lynx.to_data().try_to_vec::<f32>().unwrap(), vec![8.0, 4.0]);
}

/// UniPC at `flow_shift` 5 (the fast path's `--shift 5`) against diffusers' recorded
/// 4-step schedule (`fast_sigmas`, `fast_timesteps`: 999, 937, 833, 624).
#[test]
fn unipc_shift_five_matches_diffusers() {
    let fx = lynx_testing::fixture("components/lora.safetensors");
    let sigmas = fx.read_f32("fast_sigmas").unwrap();
    let timesteps = fx.read_f32("fast_timesteps").unwrap();
    let mut s =
        lynx_sampler::UniPcMultistep::new(lynx_sampler::SchedulerConfig::flow(5.0)).unwrap();
    s.set_timesteps(4).unwrap();
    for (got, want) in s.sigmas().iter().zip(&sigmas) {
        assert!((got - *want as f64).abs() < 1e-6, "sigma {got} vs {want}");
    }
    assert_eq!(
        s.timesteps(),
        timesteps.iter().map(|&t| t as f64).collect::<Vec<_>>()
    );
}
