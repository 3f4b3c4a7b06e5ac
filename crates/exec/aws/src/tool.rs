//! `s3_object` in the shape every executor has ([`airlock_core::Executor`]).

use crate::{AwsExecutor, S3Args, ValidatedS3};
use airlock_core::config::Handle;
use airlock_core::{CallError, CallFacts, Executor, Secret, Unscrubbed, ValidateCtx};

impl Executor for AwsExecutor {
    type Args = S3Args;
    type Prepared = ValidatedS3;

    fn validate(&self, handle: &Handle, args: S3Args, _: &ValidateCtx<'_>) -> Result<ValidatedS3, CallError> {
        AwsExecutor::validate(handle, &args)
    }

    fn facts(&self, _: &Handle, v: &ValidatedS3) -> CallFacts {
        CallFacts { writes: v.writes(), side_effects: v.writes(), ..CallFacts::default() }
    }

    async fn execute(&self, handle: &Handle, v: &ValidatedS3, secret: &Secret) -> Result<Unscrubbed, CallError> {
        AwsExecutor::execute(self, handle, v, secret).await.map(Unscrubbed::new)
    }
}
