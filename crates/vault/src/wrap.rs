//! The master key at rest (`[store.master_key]`).
//!
//! `data_dir/master.key` holds either the raw 32-byte key (`wrap = "file"`, 0600) or a wrapped
//! key, a JSON document:
//!
//! ```text
//! {"format": "airlock-master-key/1", "wrap": "passphrase",
//!  "kdf": {"alg": "argon2id", "m_kib": 65536, "t": 3, "p": 1, "salt": b64},
//!  "nonce": b64, "ciphertext": b64}            AES-256-GCM under the Argon2id output
//! {"format": "airlock-master-key/1", "wrap": "transit",
//!  "vault": "bao", "key": "transit/airlock-master", "ciphertext": "vault:v1:..."}
//! {"format": "airlock-master-key/1", "wrap": "aws_kms",
//!  "key_id": "alias/airlock-master", "region": "eu-west-1", "ciphertext": b64}
//! {"format": "airlock-master-key/1", "wrap": "systemd_creds", "ciphertext": b64}
//! ```
//!
//! `systemd_creds` runs `systemd-creds encrypt --with-key=auto --name=airlock-master` (the TPM2
//! when the machine has one, else the host key) and `systemd-creds decrypt` with the same name,
//! the key passing through their standard input and output only.
//!
//! The passphrase form's associated data is `airlock-master-key-v1\0passphrase`, so the document's
//! ciphertext opens only as what it says it is. The Argon2id cost (64 MiB, 3 passes, 1 lane)
//! is above OWASP's minimum (19 MiB, 2 passes) and recorded in the document, so raising it later
//! does not strand old files. A transit key is wrapped by OpenBao/Vault's transit engine
//! (`transit/encrypt/NAME`, `transit/decrypt/NAME`) with the vault's own login; an AWS KMS
//! key by `Encrypt`/`Decrypt` with the encryption context `airlock=master-key`, signed with the
//! credentials `aws_credentials` names (an environment variable or a file, never the config).
//!
//! The configured protection must match the file's: a raw file under `wrap = "passphrase"` is
//! refused (it would mean the protection silently went away), and so is the reverse. The
//! unwrapped key exists only in memory ([`MasterKey`] zeroizes it); nothing here writes it to
//! disk except [`MasterKey::create`] for `wrap = "file"`.

use crate::{MasterKey, RemoteVault, VaultError};
use airlock_core::config::{MasterKeyConfig, MasterKeyWrap, RemoteVaultConfig};
use airlock_core::Secret;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// The document's format tag.
pub const FORMAT: &str = "airlock-master-key/1";
/// Argon2id memory in KiB.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const ARGON2_T: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;
/// The least memory (KiB) and passes a document may ask for (OWASP's minimum): a tampered
/// document cannot make the passphrase cheap to guess from a later copy.
const ARGON2_MIN: (u32, u32) = (19 * 1024, 2);
/// The longest passphrase read.
const MAX_PASSPHRASE: usize = 4096;

fn err(path: &Path, m: impl Into<String>) -> VaultError {
    VaultError::MasterKey { path: path.display().to_string(), message: m.into() }
}

fn aad() -> &'static [u8] {
    b"airlock-master-key-v1\0passphrase"
}

/// Where the passphrase comes from.
fn read_passphrase(cfg: &MasterKeyConfig, path: &Path) -> Result<Zeroizing<String>, VaultError> {
    let raw = if let Some(f) = &cfg.passphrase_file {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(f).map_err(|e| err(path, format!("passphrase file {}: {e}", f.display())))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(err(path, format!("passphrase file {} is readable by group or others; chmod 600 it", f.display())));
            }
        }
        Zeroizing::new(std::fs::read_to_string(f).map_err(|e| err(path, format!("passphrase file {}: {e}", f.display())))?)
    } else if let Some(fd) = cfg.passphrase_fd {
        // The descriptor's path under /proc: no unsafe code to adopt a raw descriptor.
        let p = format!("/proc/self/fd/{fd}");
        Zeroizing::new(std::fs::read_to_string(&p).map_err(|e| err(path, format!("passphrase fd {fd}: {e}")))?)
    } else {
        Zeroizing::new(
            rpassword::prompt_password("airlock master key passphrase: ")
                .map_err(|e| err(path, format!("no passphrase: no passphrase_file or passphrase_fd, and no terminal to ask on ({e})")))?,
        )
    };
    let p = Zeroizing::new(raw.trim_end_matches(['\r', '\n']).to_owned());
    if p.is_empty() {
        return Err(err(path, "the passphrase is empty"));
    }
    if p.len() > MAX_PASSPHRASE {
        return Err(err(path, "the passphrase is longer than 4096 bytes"));
    }
    Ok(p)
}

fn kek(passphrase: &str, salt: &[u8], m: u32, t: u32, p: u32, path: &Path) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| err(path, format!("Argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase.as_bytes(), salt, out.as_mut()).map_err(|e| err(path, format!("Argon2id: {e}")))?;
    Ok(out)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).expect("system randomness");
    b
}

fn transit_vault<'v>(cfg: &MasterKeyConfig, vaults: &'v BTreeMap<String, RemoteVaultConfig>, path: &Path) -> Result<&'v RemoteVaultConfig, VaultError> {
    let name = cfg.vault.as_deref().ok_or_else(|| err(path, "wrap = \"transit\" names no vault"))?;
    vaults.get(name).ok_or_else(|| err(path, format!("[vaults.{name}] is not configured")))
}

/// The KMS settings of `cfg` and its credentials (from `env:NAME` or `file:/path`).
fn kms_parts(cfg: &MasterKeyConfig, path: &Path) -> Result<(String, String, Option<String>, airlock_exec_aws::AwsCredentials), VaultError> {
    let key_id = cfg.kms_key_id.clone().ok_or_else(|| err(path, "wrap = \"aws_kms\" names no kms_key_id"))?;
    let region = cfg.aws_region.clone().ok_or_else(|| err(path, "wrap = \"aws_kms\" names no aws_region"))?;
    let at = cfg.aws_credentials.as_deref().ok_or_else(|| err(path, "wrap = \"aws_kms\" names no aws_credentials"))?;
    let raw = if let Some(v) = at.strip_prefix("env:") {
        Zeroizing::new(std::env::var(v).map_err(|_| err(path, format!("aws_credentials: environment variable {v} is not set")))?)
    } else if let Some(f) = at.strip_prefix("file:") {
        Zeroizing::new(std::fs::read_to_string(f).map_err(|e| err(path, format!("aws_credentials: {f}: {e}")))?)
    } else {
        return Err(err(path, "aws_credentials is env:NAME or file:/path"));
    };
    let creds = airlock_exec_aws::AwsCredentials::from_secret(&Secret::new(raw.trim().as_bytes().to_vec()))
        .map_err(|m| err(path, format!("aws_credentials: {m}")))?;
    Ok((key_id, region, cfg.aws_endpoint.clone(), creds))
}

/// The credential name `systemd-creds` binds the wrapped key to.
const SYSTEMD_NAME: &str = "airlock-master";

/// Runs `systemd-creds ARGS` with `input` on its standard input; its standard output.
async fn systemd_creds(args: &[&str], input: &[u8], path: &Path) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("systemd-creds")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(path, format!("systemd-creds cannot run: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = input.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&data).await;
        drop(stdin);
        Zeroizing::new(data)
    });
    let out = child.wait_with_output().await.map_err(|e| err(path, format!("systemd-creds: {e}")))?;
    let _ = writer.await;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").chars().take(200).collect::<String>();
        return Err(err(path, format!("systemd-creds {} failed: {why}", args.first().unwrap_or(&""))));
    }
    Ok(stdout)
}

/// Wraps `key` as `cfg` says and writes it to `path` (0600, replacing it atomically).
pub async fn write_wrapped(
    key: &MasterKey,
    cfg: &MasterKeyConfig,
    vaults: &BTreeMap<String, RemoteVaultConfig>,
    path: &Path,
) -> Result<(), VaultError> {
    let bytes: Zeroizing<Vec<u8>> = match cfg.wrap {
        MasterKeyWrap::File => Zeroizing::new(key.0.to_vec()),
        MasterKeyWrap::Passphrase => {
            let pass = read_passphrase(cfg, path)?;
            let salt = random::<16>();
            let k = kek(&pass, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P, path)?;
            let nonce = random::<NONCE_LEN>();
            let mut ct = key.0.to_vec();
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k.as_ref()).expect("32-byte key"))
                .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad()), &mut ct)
                .expect("seal");
            let doc = json!({
                "format": FORMAT, "wrap": "passphrase",
                "kdf": {"alg": "argon2id", "m_kib": ARGON2_M_KIB, "t": ARGON2_T, "p": ARGON2_P, "salt": B64.encode(salt)},
                "nonce": B64.encode(nonce), "ciphertext": B64.encode(&ct),
            });
            Zeroizing::new(serde_json::to_vec_pretty(&doc).expect("JSON"))
        }
        MasterKeyWrap::Transit => {
            let v = RemoteVault::new(transit_vault(cfg, vaults, path)?.clone())?;
            let (mount, name) = cfg.transit_key();
            let ct = v.transit_encrypt(&mount, &name, &Secret::new(key.0.to_vec())).await?;
            let doc = json!({"format": FORMAT, "wrap": "transit", "vault": v.config().name, "key": format!("{mount}/{name}"), "ciphertext": ct});
            Zeroizing::new(serde_json::to_vec_pretty(&doc).expect("JSON"))
        }
        MasterKeyWrap::SystemdCreds => {
            let name = format!("--name={SYSTEMD_NAME}");
            let ct = systemd_creds(&["encrypt", "--with-key=auto", &name, "-", "-"], key.0.as_ref(), path).await?;
            let doc = json!({"format": FORMAT, "wrap": "systemd_creds", "ciphertext": B64.encode(ct.as_slice())});
            Zeroizing::new(serde_json::to_vec_pretty(&doc).expect("JSON"))
        }
        MasterKeyWrap::AwsKms => {
            let (key_id, region, endpoint, creds) = kms_parts(cfg, path)?;
            let kms = airlock_exec_aws::kms::Kms { creds: &creds, region: &region, endpoint: endpoint.as_deref() };
            let blob = kms.encrypt(&key_id, &Secret::new(key.0.to_vec())).await.map_err(|e| err(path, format!("wrapping through KMS: {e}")))?;
            let doc = json!({"format": FORMAT, "wrap": "aws_kms", "key_id": key_id, "region": region, "ciphertext": B64.encode(blob)});
            Zeroizing::new(serde_json::to_vec_pretty(&doc).expect("JSON"))
        }
    };
    let tmp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    airlock_store::write_private_file(&tmp, &bytes).map_err(|e| err(path, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e.to_string()))?;
    Ok(())
}

/// Creates a new random master key, wrapped as `cfg` says; refuses to replace a key.
pub async fn create(cfg: &MasterKeyConfig, vaults: &BTreeMap<String, RemoteVaultConfig>, path: &Path) -> Result<MasterKey, VaultError> {
    if path.exists() {
        return Err(err(path, "exists already; a master key is never replaced"));
    }
    let mut k = Zeroizing::new([0u8; 32]);
    SystemRandom::new().fill(k.as_mut()).map_err(|_| err(path, "no randomness"))?;
    let key = MasterKey(k);
    write_wrapped(&key, cfg, vaults, path).await?;
    Ok(key)
}

/// What protects the key file at `path` now, as its content says.
pub fn current_wrap(path: &Path) -> Result<MasterKeyWrap, VaultError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(path, e.to_string()))?);
    if bytes.len() == 32 {
        return Ok(MasterKeyWrap::File);
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(|_| err(path, "neither a raw key nor a wrapped key document"))?;
    match (doc["format"].as_str(), doc["wrap"].as_str()) {
        (Some(FORMAT), Some("passphrase")) => Ok(MasterKeyWrap::Passphrase),
        (Some(FORMAT), Some("transit")) => Ok(MasterKeyWrap::Transit),
        (Some(FORMAT), Some("aws_kms")) => Ok(MasterKeyWrap::AwsKms),
        (Some(FORMAT), Some("systemd_creds")) => Ok(MasterKeyWrap::SystemdCreds),
        _ => Err(err(path, "an unknown wrapped key format")),
    }
}

/// Opens the master key at `path`, which must be protected as `cfg` says.
pub async fn open(cfg: &MasterKeyConfig, vaults: &BTreeMap<String, RemoteVaultConfig>, path: &Path) -> Result<MasterKey, VaultError> {
    let found = current_wrap(path)?;
    if found != cfg.wrap {
        return Err(err(
            path,
            format!(
                "is protected by {found:?} but [store.master_key] says {:?}; `airlock key wrap` changes the protection",
                cfg.wrap
            ),
        ));
    }
    open_as(found, cfg, vaults, path).await
}

/// Opens the key file as `wrap`, with the means of `cfg` (its passphrase source, its vault).
pub async fn open_as(
    wrap: MasterKeyWrap,
    cfg: &MasterKeyConfig,
    vaults: &BTreeMap<String, RemoteVaultConfig>,
    path: &Path,
) -> Result<MasterKey, VaultError> {
    if wrap == MasterKeyWrap::File {
        return MasterKey::load(path);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| err(path, e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(path, "readable by group or others; chmod 600 it"));
        }
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(path, e.to_string()))?);
    let doc: Value = serde_json::from_slice(&bytes).map_err(|_| err(path, "not a wrapped key document"))?;
    let b64 = |v: &Value, what: &str| -> Result<Vec<u8>, VaultError> {
        v.as_str().and_then(|s| B64.decode(s).ok()).ok_or_else(|| err(path, format!("{what} is missing or not base64")))
    };
    let key: Zeroizing<Vec<u8>> = match wrap {
        MasterKeyWrap::Passphrase => {
            let kdf = &doc["kdf"];
            let num = |k: &str| kdf[k].as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| err(path, format!("kdf.{k} is missing")));
            let (m, t, p) = (num("m_kib")?, num("t")?, num("p")?);
            if kdf["alg"].as_str() != Some("argon2id") || m < ARGON2_MIN.0 || t < ARGON2_MIN.1 || m > 4 * 1024 * 1024 || t > 64 || !(1..=16).contains(&p) {
                return Err(err(path, "the key derivation parameters are not accepted (argon2id, at least 19 MiB and 2 passes)"));
            }
            let salt = b64(&kdf["salt"], "kdf.salt")?;
            let nonce: [u8; NONCE_LEN] = b64(&doc["nonce"], "nonce")?.try_into().map_err(|_| err(path, "the nonce is not 12 bytes"))?;
            let mut ct = Zeroizing::new(b64(&doc["ciphertext"], "ciphertext")?);
            let pass = read_passphrase(cfg, path)?;
            let k = kek(&pass, &salt, m, t, p, path)?;
            let opened = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k.as_ref()).expect("32-byte key"))
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad()), &mut ct)
                .map_err(|_| err(path, "the passphrase is wrong, or the key file was altered"))?;
            Zeroizing::new(opened.to_vec())
        }
        MasterKeyWrap::Transit => {
            let v = RemoteVault::new(transit_vault(cfg, vaults, path)?.clone())?;
            let (mount, name) = cfg.transit_key();
            if doc["key"].as_str() != Some(format!("{mount}/{name}").as_str()) || doc["vault"].as_str() != Some(v.config().name.as_str()) {
                return Err(err(path, "was wrapped by another vault or transit key than [store.master_key] names"));
            }
            let ct = doc["ciphertext"].as_str().ok_or_else(|| err(path, "ciphertext is missing"))?;
            let plain = v.transit_decrypt(&mount, &name, ct).await.map_err(|e| err(path, format!("unwrapping through transit: {e}")))?;
            Zeroizing::new(plain.expose_secret().to_vec())
        }
        MasterKeyWrap::AwsKms => {
            let (key_id, region, endpoint, creds) = kms_parts(cfg, path)?;
            if doc["key_id"].as_str() != Some(key_id.as_str()) || doc["region"].as_str() != Some(region.as_str()) {
                return Err(err(path, "was wrapped by another KMS key or region than [store.master_key] names"));
            }
            let blob = b64(&doc["ciphertext"], "ciphertext")?;
            let kms = airlock_exec_aws::kms::Kms { creds: &creds, region: &region, endpoint: endpoint.as_deref() };
            let plain = kms.decrypt(&key_id, &blob).await.map_err(|e| err(path, format!("unwrapping through KMS: {e}")))?;
            Zeroizing::new(plain.expose_secret().to_vec())
        }
        MasterKeyWrap::SystemdCreds => {
            let ct = b64(&doc["ciphertext"], "ciphertext")?;
            let name = format!("--name={SYSTEMD_NAME}");
            systemd_creds(&["decrypt", &name, "-", "-"], &ct, path).await?
        }
        MasterKeyWrap::File => unreachable!("handled above"),
    };
    if key.len() != 32 {
        return Err(err(path, "the unwrapped key is not 32 bytes"));
    }
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&key);
    Ok(MasterKey(k))
}
