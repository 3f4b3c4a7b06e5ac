//! `http_request` in the shape every executor has ([`airlock_core::Executor`]).

use crate::{HttpArgs, HttpExecutor, ValidatedRequest};
use airlock_core::config::Handle;
use airlock_core::{CallError, CallFacts, Executor, Secret, Unscrubbed, ValidateCtx};

impl Executor for HttpExecutor {
    type Args = HttpArgs;
    type Prepared = ValidatedRequest;

    fn validate(&self, handle: &Handle, args: HttpArgs, _: &ValidateCtx<'_>) -> Result<ValidatedRequest, CallError> {
        HttpExecutor::validate(handle, &args)
    }

    fn facts(&self, _: &Handle, r: &ValidatedRequest) -> CallFacts {
        // Anything but the safe methods may change state upstream.
        let writes = !matches!(r.method(), "GET" | "HEAD" | "OPTIONS");
        CallFacts { writes, side_effects: writes, ..CallFacts::default() }
    }

    async fn execute(&self, handle: &Handle, r: &ValidatedRequest, secret: &Secret) -> Result<Unscrubbed, CallError> {
        HttpExecutor::execute(self, handle, r, secret).await.map(Unscrubbed::new)
    }
}
