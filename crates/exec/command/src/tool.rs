//! `run_command` in the shape every executor has ([`airlock_core::Executor`]).

use crate::{CommandArgs, CommandExecutor, ValidatedCommand};
use airlock_core::config::Handle;
use airlock_core::{CallError, CallFacts, Executor, Secret, Unscrubbed, ValidateCtx};

impl Executor for CommandExecutor {
    type Args = CommandArgs;
    type Prepared = ValidatedCommand;

    fn validate(&self, handle: &Handle, args: CommandArgs, _: &ValidateCtx<'_>) -> Result<ValidatedCommand, CallError> {
        CommandExecutor::validate(self, handle, &args)
    }

    /// Running a program acts on the world.
    fn facts(&self, _: &Handle, _: &ValidatedCommand) -> CallFacts {
        CallFacts { side_effects: true, ..CallFacts::default() }
    }

    async fn execute(&self, handle: &Handle, c: &ValidatedCommand, secret: &Secret) -> Result<Unscrubbed, CallError> {
        CommandExecutor::execute(self, handle, c, secret).await.map(Unscrubbed::new)
    }
}
