//! Fused CPU kernels over host `f32` buffers: the hot paths of training and inference on the
//! CPU device.
//!
//! Each training kernel has a forward and a backward pass and works on row-major slices, so a
//! model can run its whole training step without building a tensor graph (see `kiln_models`'
//! fused Llama step); `decode.rs` holds what inference adds (attention against a key/value
//! cache). Rows are split over the rayon pool; matrix products call the `gemm` crate. The Burn
//! composition of the same functions stays the path on every other device, and the tests check
//! these kernels against it, values and gradients.

pub mod attention;
pub mod decode;
pub mod exp;
pub mod host;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod rope;
pub mod swiglu;

pub use attention::{AttentionDims, attention_backward, attention_forward};
pub use decode::{attend_cached, rms_norm_rows};
pub use exp::exp_inplace;
pub use host::HostValues;
pub use loss::cross_entropy_grad_inplace;
pub use matmul::{Layout, matmul};
pub use norm::{rms_norm_backward, rms_norm_forward};
pub use rope::RopeTable;
pub use swiglu::{swiglu_backward, swiglu_forward};
