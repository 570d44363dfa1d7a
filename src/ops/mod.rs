//! Operations: one module per job. Each takes validated options and
//! returns a serialisable report; the command line ([`crate::cli`]), the
//! tests and the benchmarks call exactly these functions.

pub mod bench;
pub mod calibration;
pub mod convert;
pub mod dequantize;
pub mod eval;
pub mod fragment;
pub mod generate;
pub mod inspect;
pub mod lora;
pub mod pipeline;
pub mod push;
pub mod quantize;
pub mod vram;

use crate::model::adapter::AdapterError;
use crate::model::engine::text::TextError;
use crate::model::engine::EngineError;
use crate::model::tokenizer::TokenizerError;
use crate::quant::ftype::TypeRuleError;
use crate::store::StoreError;

/// The error of every operation. Errors of the layers below are kept whole
/// as the `source` (so callers and the command line can find, for example,
/// [`crate::cancel::Interrupted`] in the chain); their message is this
/// error's message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("{0}")]
    Adapter(#[from] AdapterError),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Text(#[from] TextError),
    #[error("{0}")]
    TypeRule(#[from] TypeRuleError),
    #[error("{0}")]
    Hub(#[from] crate::hub::HubError),
    #[error("{0}")]
    Recipe(#[from] pipeline::RecipeError),
    /// A well-formed input or option the operation refuses; the message
    /// names the file or tensor and the way out.
    #[error("{0}")]
    Refused(String),
}

impl From<crate::cancel::Interrupted> for Error {
    fn from(e: crate::cancel::Interrupted) -> Error {
        Error::Store(e.into())
    }
}

/// The result of an operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the engine runs a model, for the operations that run one
/// (`generate`, `eval`).
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Hugging Face directory (or tokenizer.json) holding the tokenizer;
    /// default: the model's own.
    pub tokenizer: Option<std::path::PathBuf>,
    pub activations: crate::model::engine::Activations,
}

impl EngineOptions {
    /// The engine over `model` with these options.
    pub fn engine<'m>(
        &self,
        model: &'m crate::store::Model,
    ) -> Result<crate::model::engine::Engine<'m>> {
        Ok(crate::model::engine::Engine::new(model)?.with_activations(self.activations))
    }
}
