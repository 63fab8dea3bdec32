#![allow(clippy::excessive_precision)] // digits as PyTorch printed them
//! Fixed inputs shared by the loss tests (the PyTorch snippets next to each
//! test build the same tensors).

use tch::Tensor;

/// `f` under CPU autocast in bfloat16 (what `mixed_precision` does on CUDA):
/// the losses must give their float32 values there.
pub(crate) fn bf16<T>(f: impl FnOnce() -> T) -> T {
    use crate::autocast::{with_autocast, AutocastDevice, AutocastDtype};
    with_autocast(AutocastDevice::Cpu, AutocastDtype::BFloat16, f).unwrap()
}

/// `|a - b|` of two scalar tensors.
pub(crate) fn gap(a: &Tensor, b: &Tensor) -> f64 {
    (a.double_value(&[]) - b.double_value(&[])).abs()
}

/// `z1`, `z2`: `[4, 3]`, as in
/// `z1 = torch.tensor([1.0,0.0,0.5, 0.2,1.0,-0.3, -0.5,0.3,1.0, 0.4,-0.8,0.1]).reshape(4,3)` and
/// `z2 = torch.tensor([0.9,0.1,0.4, 0.0,1.2,-0.1, -0.3,0.5,0.8, 0.5,-0.6,-0.2]).reshape(4,3)`.
pub(crate) fn fixture() -> (Tensor, Tensor) {
    let z1 = Tensor::from_slice(&[
        1.0f32, 0.0, 0.5, 0.2, 1.0, -0.3, -0.5, 0.3, 1.0, 0.4, -0.8, 0.1,
    ])
    .reshape([4, 3]);
    let z2 = Tensor::from_slice(&[
        0.9f32, 0.1, 0.4, 0.0, 1.2, -0.1, -0.3, 0.5, 0.8, 0.5, -0.6, -0.2,
    ])
    .reshape([4, 3]);
    (z1, z2)
}
/// `torch.manual_seed(0); t = [torch.randn(4,5) for _ in range(2)]` (flattened).
pub(crate) const TEACHER: [[f32; 20]; 2] = [
    [
        -1.1258398,
        -1.1523602,
        -0.25057858,
        -0.43387881,
        0.59883946,
        -1.5550951,
        -0.34136039,
        1.8530061,
        0.46809641,
        -0.15771244,
        1.4436601,
        0.26604941,
        1.3893661,
        1.5863342,
        0.94629836,
        -0.84367675,
        0.93182659,
        1.2590092,
        2.0049806,
        0.053736903,
    ],
    [
        0.43969584,
        0.11241119,
        0.64079237,
        0.44115627,
        0.20552567,
        -0.45032975,
        -0.57307708,
        -0.55535841,
        0.59432304,
        1.5419426,
        0.50733441,
        -0.59103316,
        -1.325326,
        0.18855357,
        -0.069072686,
        -0.49492535,
        -1.4959149,
        -0.19383712,
        0.44551218,
        1.3252748,
    ],
];

/// Then `s = [torch.randn(4,5) for _ in range(3)]`.
pub(crate) const STUDENT: [[f32; 20]; 3] = [
    [
        1.5091219,
        2.0819554,
        1.7067116,
        2.3803675,
        1.941462,
        0.79149806,
        -0.020251827,
        -0.43716955,
        1.645867,
        -1.3601689,
        0.34456542,
        0.51986772,
        -0.3656188,
        -1.3024404,
        0.099403463,
        0.44182202,
        0.2469264,
        0.076887004,
        0.33800581,
        0.45440176,
    ],
    [
        -0.80249292,
        -1.2951862,
        -0.7501815,
        -1.3119657,
        -0.88337576,
        -0.41891348,
        -0.8048265,
        0.56560963,
        0.61036462,
        0.46688354,
        1.9506571,
        -1.0630985,
        -0.077325754,
        0.11639865,
        -0.5939908,
        -1.2439282,
        -0.10209263,
        -1.0335484,
        -0.31263882,
        0.24578547,
    ],
    [
        -0.25964156,
        0.11833705,
        0.24395925,
        1.1646006,
        0.9984566,
        -0.49871477,
        0.7611109,
        0.61830086,
        -0.29938447,
        -0.18777807,
        1.9158976,
        0.69019532,
        -0.314035,
        -1.0787081,
        0.24081051,
        -1.3962272,
        0.1135521,
        1.1047257,
        -1.395172,
        0.47511873,
    ],
];

/// Then `center = torch.randn(1,5) * 0.1`.
pub(crate) const CENTER: [f32; 5] = [
    -0.17786637,
    0.084765129,
    0.024594283,
    -0.013116787,
    -0.017851807,
];

/// Row `i` of a fixture table as a `[4, 5]` tensor.
pub(crate) fn table(rows: &[[f32; 20]], i: usize) -> Tensor {
    Tensor::from_slice(&rows[i]).reshape([4, 5])
}
