//! `send_email` in the shape every executor has ([`airlock_core::Executor`]).

use crate::{EmailArgs, EmailExecutor, ValidatedEmail};
use airlock_core::config::Handle;
use airlock_core::{CallError, CallFacts, Executor, Secret, Unscrubbed, ValidateCtx};

impl Executor for EmailExecutor {
    type Args = EmailArgs;
    type Prepared = ValidatedEmail;

    /// An e-mail cannot be redacted once sent: a known secret or an encoding of one anywhere in
    /// the agent's text blocks the send (T10).
    fn validate(&self, handle: &Handle, args: EmailArgs, ctx: &ValidateCtx<'_>) -> Result<ValidatedEmail, CallError> {
        EmailExecutor::validate(handle, args, ctx.contains_known_secret)
    }

    fn facts(&self, _: &Handle, m: &ValidatedEmail) -> CallFacts {
        CallFacts { side_effects: true, recipients: m.recipients().map(str::to_owned).collect(), ..CallFacts::default() }
    }

    async fn execute(&self, handle: &Handle, m: &ValidatedEmail, secret: &Secret) -> Result<Unscrubbed, CallError> {
        EmailExecutor::execute(self, handle, m, secret).await.map(Unscrubbed::new)
    }
}
