//! What the [`AdapterTarget`](kiln_nn::AdapterTarget) implementations of the architectures
//! share: visiting the linear projections and handling the prompt encoder.

use kiln_nn::adapter::PromptEncoder;

/// Writes a shared and a mutable visitor of a model's linear projections from one list (the
/// caller imports `AdaptableLinear`).
///
/// `fn visit / visit_mut (self, extra: Type, ...) |m, f| { body }` defines
/// `visit(&self, extra, f: &mut dyn FnMut(&str, &AdaptableLinear))` and
/// `visit_mut(&mut self, extra, f: &mut dyn FnMut(&str, &mut AdaptableLinear))`. In `body`, `m` is the
/// model, `f` the visitor, and `r!(place)` borrows a place shared or mutably.
macro_rules! linear_visitors {
    (
        $vis:vis fn $name:ident / $name_mut:ident (self $(, $arg:ident: $ty:ty)*)
        |$this:ident, $f:ident| $body:block
    ) => {
        $vis fn $name_mut(
            &mut self,
            $($arg: $ty,)*
            $f: &mut dyn FnMut(&str, &mut AdaptableLinear),
        ) {
            let $this = self;
            #[allow(unused_macros)]
            macro_rules! r {
                ($place:expr) => {
                    &mut $place
                };
            }
            $body
        }

        $vis fn $name(&self, $($arg: $ty,)* $f: &mut dyn FnMut(&str, &AdaptableLinear)) {
            let $this = self;
            #[allow(unused_macros)]
            macro_rules! r {
                ($place:expr) => {
                    &$place
                };
            }
            $body
        }
    };
}
pub(crate) use linear_visitors;

/// Writes the `prompt_encoder`, `set_prompt_encoder` and `set_adapters_enabled` methods of an
/// `AdapterTarget` impl for a model with the fields `prompt_encoder: Option<PromptEncoder>` and
/// `prompt_disabled: bool`: turning adapters off also turns the prompt encoder off.
macro_rules! prompt_encoder_methods {
    () => {
        fn prompt_encoder(&self) -> Option<&PromptEncoder> {
            self.prompt_encoder.as_ref()
        }

        fn set_prompt_encoder(&mut self, encoder: Option<PromptEncoder>) {
            self.prompt_encoder = encoder;
        }

        fn set_adapters_enabled(&mut self, enabled: bool) {
            self.visit_linears_mut(&mut |_, l| l.set_adapters_enabled(enabled));
            self.prompt_disabled = !enabled;
        }
    };
}
pub(crate) use prompt_encoder_methods;

/// The prompt encoder a forward pass applies: the attached one unless adapters are disabled.
pub(crate) fn active_prompt(
    encoder: &Option<PromptEncoder>,
    disabled: bool,
) -> Option<&PromptEncoder> {
    encoder.as_ref().filter(|_| !disabled)
}
