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
    // Unshifted: 1 − linspace(1, 1/1000, 5), reversed, last dropped; shift 3: 3s/(1+2s).
    for (got, s0) in s
        .sigmas()
        .iter()
        .zip([0.999, 0.74925, 0.4995, 0.24975, 0.0])
    {
        let want = 3.0 * s0 / (1.0 + 2.0 * s0);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    assert_eq!(s.timesteps().len(), 4);
    assert!((s.timesteps()[0] - 1000.0 * 3.0 * 0.999 / (1.0 + 2.0 * 0.999)).abs() < 1e-9);
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
