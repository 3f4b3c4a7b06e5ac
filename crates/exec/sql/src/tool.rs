//! `query_db` in the shape every executor has ([`airlock_core::Executor`]).

use crate::{QueryArgs, SqlExecutor, ValidatedQuery};
use airlock_core::config::{Handle, Scope};
use airlock_core::{CallError, CallFacts, Executor, Secret, Unscrubbed, ValidateCtx};

impl Executor for SqlExecutor {
    type Args = QueryArgs;
    type Prepared = ValidatedQuery;

    fn validate(&self, handle: &Handle, args: QueryArgs, _: &ValidateCtx<'_>) -> Result<ValidatedQuery, CallError> {
        self.validate_cached(handle, &args)
    }

    fn facts(&self, handle: &Handle, q: &ValidatedQuery) -> CallFacts {
        // A read-write handle may change data whatever the statement looks like (functions with
        // side effects), so every call on it is recorded before it runs.
        let read_write = handle.database().is_some_and(|d| d.scope == Scope::ReadWrite);
        CallFacts { writes: q.is_write(), side_effects: read_write, ..CallFacts::default() }
    }

    async fn execute(&self, handle: &Handle, q: &ValidatedQuery, secret: &Secret) -> Result<Unscrubbed, CallError> {
        SqlExecutor::execute(self, handle, q, secret).await.map(Unscrubbed::new)
    }
}
