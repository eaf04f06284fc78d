//! IA3: learned rescaling of activations (Liu et al., 2022, "(IA)³").
//!
//! Keys and values (and other non-feed-forward targets) are scaled on their output,
//! `y = (x·W + b) ⊙ l`; feed-forward targets on their input, `y = (x ⊙ l)·W + b`. Vectors start
//! at one, so a fresh adapter leaves the model unchanged.

mod attach;
mod config;

pub use attach::attach_ia3;
pub use config::Ia3Config;
pub use kiln_nn::adapter::Ia3Layer;
