//! Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020).
//!
//! A small residual MLP `y + up(act(down(y)))` on the output of a sub-layer, before the residual
//! connection: after attention (its output projection) and after the feed-forward block (its
//! down projection) for **Houlsby**, after the feed-forward block only for **Pfeiffer**. The up
//! projection starts at zero, so a fresh adapter leaves the model unchanged.
//!
//! PEFT has no bottleneck adapters; they are saved in the same folder layout with
//! `peft_type = "BOTTLENECK"` and keys `<path>.adapter_down.weight` / `adapter_up.weight`
//! (PyTorch `[out, in]` layout) plus biases. Only kiln reads them.

mod attach;
mod config;

pub use attach::attach_bottleneck;
pub use config::{BottleneckConfig, BottleneckPlacement};
pub use kiln_nn::adapter::{Activation, BottleneckLayer};
