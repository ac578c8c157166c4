//! Weight layout at load time.
//!
//! PyTorch stores a linear layer's weight as `[out, in]`; burn multiplies by `[in, out]`.
//! A transposed *view* would do for the product itself, but burn's `linear` reshapes the
//! weight to the input's rank, and a reshape of a non-contiguous tensor copies it: the
//! whole matrix, on every call. So weights are transposed once, when they are loaded.

use burn::tensor::Tensor;

/// `wᵀ` laid out row-major on `w`'s device (one copy, made there), so that products
/// and reshapes with it never copy it again.
///
/// # Shapes
/// - input `[rows, cols]`, output `[cols, rows]`.
pub fn transposed(w: Tensor<2>) -> Tensor<2> {
    // A reshape of the transposed view is where every backend materialises it.
    w.transpose().unsqueeze::<3>().squeeze_dim::<2>(0)
}
