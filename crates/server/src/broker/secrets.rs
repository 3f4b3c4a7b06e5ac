//! The secrets the broker holds and the scrubber built from them.
//!
//! The broker passes secrets from the vault to executors and to the scrubber's builder; it never
//! reads their plaintext. Reuse of a recently resolved value lives in the vault
//! ([`Vault::resolve_recent`]), zeroized when it is evicted.

use super::{Broker, BrokerError};
use airlock_core::config::{Handle, HandleKind, SecretRef};
use airlock_core::{CallError, ErrorCode, HandleName, Secret};
use airlock_scrub::{BuildError, Scrubber, ScrubberBuilder};
use airlock_vault::Vault;
use std::sync::{Arc, RwLock};

/// At most this many secrets are added to a built scrubber ([`Scrubber::with_added`]); the next
/// one rebuilds it from every secret. Each addition compiles a small automaton of its own (its
/// secret's forms only) and each costs one more pass per scrubbed text, so they are kept few: a
/// revoked lease's values are taken out again (its automaton dropped, nothing compiled), and
/// the periodic refresh rebuilds in full when the store's secrets changed.
const MAX_ADDED: usize = 16;

struct KnownSecrets {
    scrubber: Arc<Scrubber>,
    generation: String,
}

/// The values added since the last full build began ([`Broker::cover`]), so that a full build,
/// which runs without holding up additions, adds again at its swap what it did not read.
#[derive(Default)]
struct Journal {
    /// Counts additions.
    epoch: u64,
    added: Vec<(u64, HandleName, Secret)>,
}

/// The secret backends and the scrubber of every value they hold.
pub(crate) struct Secrets {
    pub(crate) vault: Vault,
    known: RwLock<Arc<KnownSecrets>>,
    /// Held to change `known` (an addition, a taking out, a full build's swap): short.
    swap: tokio::sync::Mutex<Journal>,
    /// Held for a whole full build: one at a time.
    full: tokio::sync::Mutex<()>,
}

impl Secrets {
    pub(crate) fn new(vault: Vault) -> Secrets {
        Secrets {
            vault,
            known: RwLock::new(Arc::new(KnownSecrets { scrubber: Arc::new(Scrubber::empty()), generation: String::new() })),
            swap: tokio::sync::Mutex::new(Journal::default()),
            full: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Arc<KnownSecrets> {
        self.known.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, scrubber: Scrubber, generation: String) {
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(KnownSecrets { scrubber: Arc::new(scrubber), generation });
    }
}

/// The most of a failed call's detail (the operator's log, never the agent's answer) that is
/// kept: enough for a database's or a program's error line.
const MAX_DETAIL_CHARS: usize = 4096;

impl Broker {
    /// The current scrubber (for front ends that scrub their own output, such as log lines).
    pub fn scrubber(&self) -> Arc<Scrubber> {
        self.secrets.current().scrubber.clone()
    }

    /// What the operator's log may show of a failed call's detail, which may quote an
    /// upstream's or a program's text at any length: bounded to [`MAX_DETAIL_CHARS`] and
    /// scrubbed, a secret the bound cut through leaving no prefix (T24). Every detail is logged
    /// through it.
    pub(crate) fn loggable_detail(&self, detail: &str) -> String {
        self.scrubber().scrub_bounded(detail, MAX_DETAIL_CHARS)
    }

    /// Rebuilds the known-value scrubber from every secret the broker holds: every sealed secret in
    /// the local vault and every handle's resolvable reference. Runs off the hot path, and without
    /// holding up values being added meanwhile ([`Broker::cover`]): the new matcher is swapped in
    /// when ready, with those values added to it.
    pub async fn rebuild_scrubber(&self) -> Result<(), BrokerError> {
        self.full_build(Vec::new()).await
    }

    /// A full build from every secret and `extra`; see [`Broker::rebuild_scrubber`].
    async fn full_build(&self, extra: Vec<(HandleName, Secret)>) -> Result<(), BrokerError> {
        let _full = self.secrets.full.lock().await;
        self.full_build_locked(extra).await
    }

    /// [`Broker::full_build`], with the full-build lock held.
    async fn full_build_locked(&self, extra: Vec<(HandleName, Secret)>) -> Result<(), BrokerError> {
        let (generation, start) = {
            let journal = self.secrets.swap.lock().await;
            (self.store.secrets_generation().await?, journal.epoch)
        };
        let labelled = self.gather(extra).await?;
        let built = tokio::task::spawn_blocking(move || build_from(&labelled)).await.expect("scrubber build does not panic");
        let mut journal = self.secrets.swap.lock().await;
        journal.added.retain(|(e, _, _)| *e > start);
        let since: Vec<(HandleName, Secret)> = journal.added.iter().map(|(_, l, s)| (l.clone(), s.clone())).collect();
        let scrubber = if since.is_empty() {
            built
        } else {
            // Added while this build read the secrets: added to it again (the rare failure, a
            // new marker holding a known pattern, builds once more with them).
            let again = since.clone();
            match tokio::task::spawn_blocking(move || built.with_added(&again)).await.expect("scrubber build does not panic") {
                Ok(s) => s,
                Err(_) => {
                    let labelled = self.gather(since).await?;
                    tokio::task::spawn_blocking(move || build_from(&labelled)).await.expect("scrubber build does not panic")
                }
            }
        };
        self.secrets.set(scrubber, generation);
        Ok(())
    }

    /// Makes the scrubber cover `secret` (stored or resolved under `name`, redacted as
    /// `label`) before anything can return it: added to the current scrubber without rebuilding
    /// it, or, past [`MAX_ADDED`] additions, by a full build. The store generation the scrubber
    /// covers does not move: the next refresh that sees the store changed builds from all of it.
    pub(crate) async fn cover(&self, name: &str, label: HandleName, secret: Secret) -> Result<(), BrokerError> {
        let mut parts = Vec::new();
        Self::push_known(&AwsNames::of(&self.cfg()), name, label.clone(), secret.clone(), &mut parts);
        if self.try_add(&label, &secret, &parts).await {
            return Ok(());
        }
        // No room: one full build at a time, and a full build that ran while this one waited
        // has made room again (or covers the value), so the waiters do not each build in full.
        let _full = self.secrets.full.lock().await;
        if self.try_add(&label, &secret, &parts).await {
            return Ok(());
        }
        self.full_build_locked(vec![(label, secret)]).await
    }

    /// Covers `secret` by adding `parts` to the current scrubber when it does not know it yet
    /// and has room; false when it would need a full build.
    async fn try_add(&self, label: &HandleName, secret: &Secret, parts: &[(HandleName, Secret)]) -> bool {
        let mut journal = self.secrets.swap.lock().await;
        let current = self.secrets.current();
        if current.scrubber.knows(label, secret) {
            return true;
        }
        if current.scrubber.added_count() + parts.len() > MAX_ADDED {
            return false;
        }
        let (base, adding) = (current.scrubber.clone(), parts.to_vec());
        match tokio::task::spawn_blocking(move || base.with_added(&adding)).await.expect("scrubber build does not panic") {
            Ok(scrubber) => {
                self.secrets.set(scrubber, current.generation.clone());
                journal.epoch += 1;
                let epoch = journal.epoch;
                journal.added.extend(parts.iter().map(|(l, s)| (epoch, l.clone(), s.clone())));
                true
            }
            Err(BuildError::MarkerConflict) => false,
            Err(e) => {
                tracing::warn!(error = %e, "adding to the scrubber failed; rebuilding it");
                false
            }
        }
    }

    /// Takes the values added for `label` (a lease's handle, once the lease is revoked) out of
    /// the scrubber's added automaton, so revoked credentials do not pile up there. Values the
    /// scrubber was built with stay until the next full build (still redacted; harmless).
    pub(crate) async fn uncover(&self, label: &HandleName) {
        let mut journal = self.secrets.swap.lock().await;
        journal.added.retain(|(_, l, _)| l != label);
        let current = self.secrets.current();
        let (scrubber, name) = (current.scrubber.clone(), label.clone());
        // A layer to compile again goes to a blocking thread; dropping whole layers is a few
        // copies of pointers, cheaper here than the hand-off.
        let taken = if scrubber.without_added_compiles(&name) {
            tokio::task::spawn_blocking(move || scrubber.without_added(&name)).await.expect("scrubber build does not panic")
        } else {
            scrubber.without_added(&name)
        };
        match taken {
            Ok(Some(s)) => self.secrets.set(s, current.generation.clone()),
            Ok(None) => {}
            Err(e) => tracing::warn!(handle = %label, error = %e, "taking a value out of the scrubber failed; the next rebuild does"),
        }
    }

    /// Every secret the scrubber must know, labelled, with `extra`.
    async fn gather(&self, extra: Vec<(HandleName, Secret)>) -> Result<Vec<(HandleName, Secret)>, BrokerError> {
        let mut labelled: Vec<(HandleName, Secret)> = Vec::new();
        let aws = AwsNames::of(&self.cfg());
        for (name, _) in self.store.all_sealed().await? {
            // A configured handle's local secret, or a value a person sent for a request.
            let label_text = airlock_store::requests::handle_of_value_name(&name).unwrap_or(&name);
            let Ok(label) = HandleName::parse(label_text) else { continue };
            match self.secrets.vault.resolve(&SecretRef::Local(name.clone())).await {
                Ok(s) => Self::push_known(&aws, &name, label, s, &mut labelled),
                // Removed since it was listed (a lease revoked meanwhile): nothing to cover.
                Err(airlock_vault::VaultError::NotFound(_)) => {}
                Err(e) => tracing::warn!(secret = %name, error = %e, "stored secret does not open; not in the scrubber"),
            }
        }
        for h in self.cfg().handles.values() {
            if matches!(h.secret, SecretRef::Local(_)) {
                continue;
            }
            match self.secrets.vault.resolve(&h.secret).await {
                Ok(s) => Self::push_known(&aws, h.name.as_str(), h.name.clone(), s, &mut labelled),
                Err(e) => tracing::warn!(handle = %h.name, error = %e, "secret unavailable; not in the scrubber"),
            }
        }
        // Values retired by a rotation, during its overlap: still valid upstream, so still
        // scrubbed.
        for (name, s) in self.secrets.vault.retired().await.map_err(BrokerError::from)? {
            if let Ok(label) = HandleName::parse(&name) {
                Self::push_known(&aws, &name, label, s, &mut labelled);
            }
        }
        // Connected accounts' tokens: an upstream that echoes its bearer token back is scrubbed.
        labelled.extend(self.account_tokens().await);
        for (label, s) in extra {
            Self::push_known(&aws, &label.to_string(), label, s, &mut labelled);
        }
        Ok(labelled)
    }

    /// Adds a secret to the scrubber's list. An aws secret (the handle's key pair or a lease's
    /// STS credentials, found by its vault name or handle name, [`AwsNames`]) is a JSON object:
    /// each of its values is added too, as they are what a response would carry.
    fn push_known(aws: &AwsNames, name: &str, label: HandleName, s: Secret, out: &mut Vec<(HandleName, Secret)>) {
        if aws.holds(name) {
            for p in airlock_exec_aws::secret_parts(&s) {
                out.push((label.clone(), p));
            }
        }
        out.push((label, s));
    }

    /// Checks whether secrets changed in the store (another process ran `secret put`) and rebuilds
    /// the scrubber and drops cached secrets if so. Call it periodically.
    pub async fn refresh(&self) -> Result<bool, BrokerError> {
        // Retired values whose overlap has ended leave the scrubber (the generation moves).
        self.store.drop_retired_secrets().await?;
        let generation = self.store.secrets_generation().await?;
        if generation == self.secrets.current().generation {
            return Ok(false);
        }
        self.secrets.vault.invalidate();
        self.rebuild_scrubber().await?;
        self.forget_gone_pools().await;
        Ok(true)
    }

    /// Closes the cached database pools of lease and requested handles whose credential is gone from the
    /// store: a lease revoked by another replica, whose revocation killed the role's sessions
    /// (without this, this replica would keep each killed connection open until its pool
    /// idled out).
    async fn forget_gone_pools(&self) {
        for name in self.executors.sql.cached_handles() {
            if self.cfg().handles.contains_key(&name) {
                continue;
            }
            // A lease's secret is stored under its handle's name, a requested handle's under
            // `request:NAME`: a pool whose secret is in neither place is gone.
            let requested = airlock_store::requests::value_seal_name(name.as_str());
            if matches!(self.store.get_sealed(name.as_str()).await, Ok(None)) && matches!(self.store.get_sealed(&requested).await, Ok(None)) {
                self.executors.sql.forget(&name).await;
            }
        }
    }

    /// The number of database pools this broker keeps open (for tests).
    #[doc(hidden)]
    pub fn sql_pool_count(&self) -> usize {
        self.executors.sql.pool_count()
    }

    /// Drops every cached secret, including values read from remote vaults (OpenBao, Vault), so
    /// the next call reads them again, and rebuilds the scrubber from fresh values. `airlock
    /// serve` calls it on SIGHUP; call it after rotating a secret in a remote vault.
    pub async fn invalidate_secrets(&self) -> Result<(), BrokerError> {
        self.secrets.vault.invalidate();
        self.rebuild_scrubber().await
    }

    /// The handle's secret, from its backend or read there less than a few seconds ago. A value
    /// the scrubber does not know yet (rotated, or new in its backend) is added to it before any
    /// output of this call is scrubbed.
    pub(crate) async fn resolve(&self, handle: &Handle) -> Result<Secret, CallError> {
        let started = std::time::Instant::now();
        // A child of the `execute` span it runs in; it names nothing but its place.
        let _span = super::spans::stage_here(super::metrics::Stage::Resolve);
        let secret = self.secrets.vault.resolve_recent(&handle.secret).await.map_err(|e| {
            CallError::new(ErrorCode::SecretUnavailable).detail(format!("handle {}: {e}", handle.name))
        })?;
        if !self.scrubber().knows(&handle.name, &secret) {
            Box::pin(self.cover(handle.name.as_str(), handle.name.clone(), secret.clone()))
                .await
                .map_err(|e| CallError::new(ErrorCode::SecretUnavailable).detail(e.to_string()))?;
        }
        self.metrics.stage(super::metrics::Stage::Resolve, started.elapsed().as_secs_f64());
        Ok(secret)
    }
}

/// The scrubber of `labelled`.
fn build_from(labelled: &[(HandleName, Secret)]) -> Scrubber {
    let mut b = ScrubberBuilder::new();
    for (l, s) in labelled {
        b.add_secret(l, s);
    }
    b.build()
}

/// The names under which an aws secret is stored or resolved, read once from the configuration
/// for a whole gathering (a lookup per secret, not a walk over every handle per secret).
struct AwsNames {
    /// Names of the aws handles.
    handles: std::collections::HashSet<String>,
    /// Local vault names of the aws handles' secrets.
    locals: std::collections::HashSet<String>,
}

impl AwsNames {
    fn of(cfg: &airlock_core::config::Config) -> AwsNames {
        let aws = || cfg.handles.values().filter(|h| h.kind == HandleKind::Aws);
        AwsNames {
            handles: aws().map(|h| h.name.as_str().to_owned()).collect(),
            locals: aws()
                .filter_map(|h| match &h.secret {
                    SecretRef::Local(k) => Some(k.clone()),
                    _ => None,
                })
                .collect(),
        }
    }

    /// True when `name` is an aws handle, the local vault name of an aws handle's secret, or a
    /// lease of an aws handle (`BASE__Lxxxxxx`).
    fn holds(&self, name: &str) -> bool {
        let base = match name.rsplit_once("__L") {
            Some((b, suffix)) if suffix.len() == 6 => b,
            _ => name,
        };
        self.handles.contains(base) || self.handles.contains(name) || self.locals.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::AwsNames;
    use airlock_core::config::{Config, HandleKind, SecretRef};
    use proptest::prelude::*;

    /// A configuration of `handles`: (name, aws or http, local vault key or an environment
    /// variable).
    fn config(handles: &[(&str, bool, Option<&str>)]) -> Config {
        let mut text = String::new();
        for (name, aws, local) in handles {
            let secret = local.map_or_else(|| format!("env:{name}_SECRET"), |k| format!("local:{k}"));
            text += &if *aws {
                format!(
                    "[handles.{name}]\nkind = \"aws\"\nsecret = \"{secret}\"\n[handles.{name}.aws]\nregion = \"us-east-1\"\n\
                     role_arn = \"arn:aws:iam::123456789012:role/r\"\nbuckets = [\"reports\"]\n"
                )
            } else {
                format!(
                    "[handles.{name}]\nkind = \"http\"\nsecret = \"{secret}\"\n[handles.{name}.http]\n\
                     destinations = [{{ url = \"https://api.example.com/\" }}]\ninject = {{ type = \"header\", name = \"Authorization\" }}\n"
                )
            };
        }
        Config::parse(&text, "airlock.toml", std::path::Path::new("/")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    proptest! {
        /// For any configuration and any name (a handle's, a vault key's, a lease of either with
        /// suffixes of every length around six, or another), the sets answer as a walk over every
        /// aws handle does.
        #[test]
        fn aws_names_answer_as_a_walk_over_the_handles(
            handles in proptest::collection::btree_map(
                proptest::sample::select(vec!["S3", "S4", "DB", "API"]),
                (any::<bool>(), proptest::option::of(proptest::sample::select(vec!["S3", "S4", "KEYS", "K1"]))),
                0..4,
            ),
            base in proptest::sample::select(vec!["S3", "S4", "DB", "API", "KEYS", "K1", "X", ""]),
            suffix in proptest::option::of("[a-z0-9]{4,8}"),
        ) {
            let list: Vec<(&str, bool, Option<&str>)> = handles.iter().map(|(n, (aws, k))| (*n, *aws, *k)).collect();
            let cfg = config(&list);
            let name = suffix.map_or_else(|| base.to_owned(), |s| format!("{base}__L{s}"));
            let lease_base = match name.rsplit_once("__L") {
                Some((b, s)) if s.len() == 6 => b,
                _ => name.as_str(),
            };
            let walk = cfg.handles.values().filter(|h| h.kind == HandleKind::Aws).any(|h| {
                h.name.as_str() == lease_base || h.name.as_str() == name || matches!(&h.secret, SecretRef::Local(k) if *k == name)
            });
            prop_assert_eq!(AwsNames::of(&cfg).holds(&name), walk, "{}", name);
        }
    }

    #[test]
    fn aws_names_are_the_handle_its_local_secret_and_its_leases() {
        let aws = AwsNames { handles: ["S3".to_owned()].into(), locals: ["s3-keys".to_owned()].into() };
        for name in ["S3", "s3-keys", "S3__Labc123", "S3__L000000"] {
            assert!(aws.holds(name), "{name} is an aws secret's name");
        }
        // A lease suffix is six characters; other names, and other handles' leases, are not aws.
        for name in ["S3__Labc", "S3__Labc1234", "S4", "S4__Labc123", "s3-keys__Labc123", "s3", ""] {
            assert!(!aws.holds(name), "{name} is not an aws secret's name");
        }
    }
}
