use serde::{Deserialize, Serialize};

/// A prompt/completion pair: loss is taken on the completion only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptCompletion {
    /// The text the model is given.
    pub prompt: String,
    /// The text the model learns to produce.
    pub completion: String,
}
