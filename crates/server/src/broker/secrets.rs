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
/// one rebuilds it from every secret. Each addition recompiles the added automaton (about 1.5 ms
/// per connection URL here), so it is kept small: a revoked lease's values are taken out again,
/// and the periodic refresh rebuilds in full when the store's secrets changed.
const MAX_ADDED: usize = 16;

struct KnownSecrets {
    scrubber: Arc<Scrubber>,
    generation: String,
}

/// The secret backends and the scrubber of every value they hold.
pub(crate) struct Secrets {
    pub(crate) vault: Vault,
    known: RwLock<Arc<KnownSecrets>>,
    rebuild: tokio::sync::Mutex<()>,
}

impl Secrets {
    pub(crate) fn new(vault: Vault) -> Secrets {
        Secrets {
            vault,
            known: RwLock::new(Arc::new(KnownSecrets { scrubber: Arc::new(Scrubber::empty()), generation: String::new() })),
            rebuild: tokio::sync::Mutex::new(()),
        }
    }
}

impl Broker {
    /// The current scrubber (for front ends that scrub their own output, such as log lines).
    pub fn scrubber(&self) -> Arc<Scrubber> {
        self.secrets.known.read().unwrap_or_else(|p| p.into_inner()).scrubber.clone()
    }

    /// Rebuilds the known-value scrubber from every secret the broker holds: every sealed secret in
    /// the local vault and every handle's resolvable reference. Runs off the hot path; the new
    /// matcher is swapped in when ready.
    pub async fn rebuild_scrubber(&self) -> Result<(), BrokerError> {
        let _guard = self.secrets.rebuild.lock().await;
        let generation = self.store.secrets_generation().await?;
        self.rebuild_locked(None, generation).await
    }

    /// Makes the scrubber cover `secret` (stored or resolved under `name`, redacted as
    /// `label`) before anything can return it: added to the current scrubber without rebuilding
    /// it, or, past [`MAX_ADDED`] additions, by a rebuild from every secret. The store
    /// generation the scrubber covers does not move: the next refresh that sees the store
    /// changed rebuilds from all of it.
    pub(crate) async fn cover(&self, name: &str, label: HandleName, secret: Secret) -> Result<(), BrokerError> {
        let _guard = self.secrets.rebuild.lock().await;
        let current = self.secrets.known.read().unwrap_or_else(|p| p.into_inner()).clone();
        if current.scrubber.knows(&label, &secret) {
            return Ok(());
        }
        let mut parts = Vec::new();
        self.push_known(name, label.clone(), secret.clone(), &mut parts);
        if current.scrubber.added_count() + parts.len() <= MAX_ADDED {
            let base = current.scrubber.clone();
            let added = tokio::task::spawn_blocking(move || base.with_added(&parts))
                .await
                .expect("scrubber build does not panic");
            match added {
                Ok(scrubber) => {
                    *self.secrets.known.write().unwrap_or_else(|p| p.into_inner()) =
                        Arc::new(KnownSecrets { scrubber: Arc::new(scrubber), generation: current.generation.clone() });
                    return Ok(());
                }
                Err(BuildError::MarkerConflict) => {}
                Err(e) => tracing::warn!(error = %e, "adding to the scrubber failed; rebuilding it"),
            }
        }
        let generation = self.store.secrets_generation().await?;
        self.rebuild_locked(Some((label, secret)), generation).await
    }

    /// The rebuild, with the rebuild lock held and the store's `generation` read under it.
    async fn rebuild_locked(&self, extra: Option<(HandleName, Secret)>, generation: String) -> Result<(), BrokerError> {
        let mut labelled: Vec<(HandleName, Secret)> = Vec::new();
        for (name, _) in self.store.all_sealed().await? {
            // A configured handle's local secret, or a value a person sent for a request.
            let label_text = airlock_store::requests::handle_of_value_name(&name).unwrap_or(&name);
            let Ok(label) = HandleName::parse(label_text) else { continue };
            match self.secrets.vault.resolve(&SecretRef::Local(name.clone())).await {
                Ok(s) => self.push_known(&name, label, s, &mut labelled),
                Err(e) => tracing::warn!(secret = %name, error = %e, "stored secret does not open; not in the scrubber"),
            }
        }
        for h in self.cfg.handles.values() {
            if matches!(h.secret, SecretRef::Local(_)) {
                continue;
            }
            match self.secrets.vault.resolve(&h.secret).await {
                Ok(s) => self.push_known(h.name.as_str(), h.name.clone(), s, &mut labelled),
                Err(e) => tracing::warn!(handle = %h.name, error = %e, "secret unavailable; not in the scrubber"),
            }
        }
        // Values retired by a rotation, during its overlap: still valid upstream, so still
        // scrubbed.
        for (name, s) in self.secrets.vault.retired().await.map_err(BrokerError::from)? {
            if let Ok(label) = HandleName::parse(&name) {
                self.push_known(&name, label, s, &mut labelled);
            }
        }
        // Connected accounts' tokens: an upstream that echoes its bearer token back is scrubbed.
        labelled.extend(self.account_tokens().await);
        if let Some((label, s)) = extra {
            self.push_known(&label.to_string(), label, s, &mut labelled);
        }
        let scrubber = tokio::task::spawn_blocking(move || {
            let mut b = ScrubberBuilder::new();
            for (l, s) in &labelled {
                b.add_secret(l, s);
            }
            b.build()
        })
        .await
        .expect("scrubber build does not panic");
        *self.secrets.known.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(KnownSecrets { scrubber: Arc::new(scrubber), generation });
        Ok(())
    }

    /// Adds a secret to the scrubber's list. An aws secret (the handle's key pair or a lease's
    /// STS credentials, found by its vault name or handle name) is a JSON object: each of its
    /// values is added too, as they are what a response would carry.
    fn push_known(&self, name: &str, label: HandleName, s: Secret, out: &mut Vec<(HandleName, Secret)>) {
        if self.is_aws_secret(name) {
            for p in airlock_exec_aws::secret_parts(&s) {
                out.push((label.clone(), p));
            }
        }
        out.push((label, s));
    }

    /// True when `name` is an aws handle, the local vault name of an aws handle's secret, or a
    /// lease of an aws handle (`BASE__Lxxxxxx`).
    fn is_aws_secret(&self, name: &str) -> bool {
        let base = match name.rsplit_once("__L") {
            Some((b, suffix)) if suffix.len() == 6 => b,
            _ => name,
        };
        self.cfg.handles.values().filter(|h| h.kind == HandleKind::Aws).any(|h| {
            h.name.as_str() == base || h.name.as_str() == name || matches!(&h.secret, SecretRef::Local(k) if k == name)
        })
    }

    /// Takes the values added for `label` (a lease's handle, once the lease is revoked) out of
    /// the scrubber's added automaton, so revoked credentials do not pile up there. Values the
    /// scrubber was built with stay until the next full build (still redacted; harmless).
    pub(crate) async fn uncover(&self, label: &HandleName) {
        let _guard = self.secrets.rebuild.lock().await;
        let current = self.secrets.known.read().unwrap_or_else(|p| p.into_inner()).clone();
        let scrubber = current.scrubber.clone();
        let name = label.clone();
        match tokio::task::spawn_blocking(move || scrubber.without_added(&name)).await.expect("scrubber build does not panic") {
            Ok(Some(s)) => {
                *self.secrets.known.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(KnownSecrets { scrubber: Arc::new(s), generation: current.generation.clone() });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(handle = %label, error = %e, "taking a value out of the scrubber failed; the next rebuild does"),
        }
    }

    /// Checks whether secrets changed in the store (another process ran `secret put`) and rebuilds
    /// the scrubber and drops cached secrets if so. Call it periodically.
    pub async fn refresh(&self) -> Result<bool, BrokerError> {
        // Retired values whose overlap has ended leave the scrubber (the generation moves).
        self.store.drop_retired_secrets().await?;
        let generation = self.store.secrets_generation().await?;
        let current = self.secrets.known.read().unwrap_or_else(|p| p.into_inner()).generation.clone();
        if generation == current {
            return Ok(false);
        }
        self.secrets.vault.invalidate();
        self.rebuild_scrubber().await?;
        Ok(true)
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
        let secret = self.secrets.vault.resolve_recent(&handle.secret).await.map_err(|e| {
            CallError::new(ErrorCode::SecretUnavailable).detail(format!("handle {}: {e}", handle.name))
        })?;
        if !self.scrubber().knows(&handle.name, &secret) {
            self.cover(handle.name.as_str(), handle.name.clone(), secret.clone())
                .await
                .map_err(|e| CallError::new(ErrorCode::SecretUnavailable).detail(e.to_string()))?;
        }
        Ok(secret)
    }
}
