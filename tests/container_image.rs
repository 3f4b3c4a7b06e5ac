//! The container image (packaging/Containerfile, packaging/build-image.sh), built from the binary
//! this test suite built: what is in it (the binary, the libraries it links, passwd and group for
//! the non-root user, the CA bundle, and nothing else: no shell), its configuration (user 10001,
//! the entrypoint), its size, and, where this machine can start containers, `airlock --version`,
//! `airlock init` and `airlock serve` in it with a read-only root and the data directory on a
//! volume, /healthz answering from the host through a published port.
//!
//! Needs podman (apt-get install podman runc). With AIRLOCK_REQUIRE_SERVICES=1 a missing podman
//! fails; a machine on which no OCI runtime can start a container skips the run part with the
//! runtimes' errors printed.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image's user, as the Containerfile says.
const UID: u32 = 10001;
/// What the image may weigh beyond the binary: the loader, libc, libm and libgcc_s are about
/// 3.2 MB and the CA bundle 0.2 MB on Debian bookworm (measured: 3.4 MB in all).
const OVERHEAD_MAX: u64 = 8 * 1024 * 1024;

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).stdin(Stdio::null()).output().expect("running podman")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn missing_podman() -> Option<String> {
    match Command::new("podman").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("podman --version failed: {}", text(&o))),
        Err(e) => Some(format!("podman is missing (apt-get install podman runc): {e}")),
    }
}

fn skip_or_fail() -> bool {
    if let Some(why) = missing_podman() {
        if common::require() {
            panic!("AIRLOCK_REQUIRE_SERVICES=1 but {why}");
        }
        println!("skipped: {why}");
        return true;
    }
    false
}

/// The image, removed with its containers when dropped.
struct Image(String);
impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "--force", &self.0]);
    }
}

/// A container, removed when dropped.
struct Container(String);
impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "1", &self.0]);
    }
}

/// The libraries `ldd` says `bin` loads, as absolute paths (the vDSO has no file).
fn linked_libraries(bin: &str) -> BTreeSet<String> {
    let o = Command::new("ldd").arg(bin).output().expect("ldd");
    assert!(o.status.success(), "ldd {bin}: {}", text(&o));
    let mut libs = BTreeSet::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 && f[1] == "=>" && f[2].starts_with('/') {
            libs.insert(f[2].to_string());
        } else if f.first().is_some_and(|p| p.starts_with('/')) {
            libs.insert(f[0].to_string());
        }
    }
    libs
}

/// The options every `podman run` gets here: ulimits no higher than this process's (podman's
/// default of 1048576 open files needs CAP_SYS_RESOURCE, which a containerised CI host lacks),
/// and the runtime that can start a container on this machine (crun, podman's default, refuses
/// hosts with cgroup controllers on both v1 and v2; runc copes). None, with every runtime's
/// error, when none can: the loader in the image, run with --version, is the probe, so that a
/// broken airlock binary or a missing library cannot pass for a machine without containers.
fn run_options(image: &str) -> Result<Vec<String>, String> {
    let base = vec!["--ulimit".to_string(), "nofile=1024:1024".into(), "--ulimit".into(), "nproc=1024:1024".into()];
    let mut errors = Vec::new();
    for runtime in [None, Some("runc")] {
        let mut opts = base.clone();
        if let Some(r) = runtime {
            opts.extend(["--runtime".to_string(), r.to_string()]);
        }
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(opts.iter().map(String::as_str));
        args.extend(["--entrypoint", "/lib64/ld-linux-x86-64.so.2", image, "--version"]);
        let o = podman(&args);
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ld.so") {
            return Ok(opts);
        }
        errors.push(format!("runtime {}: {}", runtime.unwrap_or("default"), text(&o).trim()));
    }
    Err(errors.join("; "))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET /healthz on 127.0.0.1:`port`, or None while nothing answers it.
fn healthz(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    (!resp.is_empty()).then_some(resp)
}

#[test]
fn image_holds_the_binary_its_libraries_and_nothing_else_and_serves_read_only() {
    if skip_or_fail() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_airlock");
    let tag = format!("localhost/airlock-test:{}", std::process::id());
    let script = common::root().join("packaging/build-image.sh");
    let o = Command::new("bash").arg(&script).args([bin, tag.as_str()]).stdin(Stdio::null()).output().unwrap();
    let image = Image(tag.clone());
    assert!(o.status.success(), "build-image.sh failed: {}", text(&o));

    // Its configuration: a non-root user, the binary as entrypoint, the data directory as volume.
    let o = podman(&["image", "inspect", &image.0]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cfg = &v[0]["Config"];
    let user = cfg["User"].as_str().unwrap_or_default();
    assert_eq!(user, format!("{UID}:{UID}"), "the image's user: {cfg}");
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "the image runs as root");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/usr/local/bin/airlock"]), "{cfg}");
    assert!(cfg["Volumes"].get("/var/lib/airlock").is_some(), "no volume at /var/lib/airlock: {cfg}");
    let env = cfg["Env"].as_array().map(|e| e.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()).unwrap_or_default();
    assert!(env.contains(&"MALLOC_ARENA_MAX=2"), "glibc's arenas bounded (README \"Soak\"): {env:?}");
    let size = v[0]["Size"].as_u64().unwrap();
    let bin_size = std::fs::metadata(bin).unwrap().len();
    println!("image size {size} bytes, binary {bin_size} bytes, overhead {} bytes", size.saturating_sub(bin_size));
    assert!(size <= bin_size + OVERHEAD_MAX, "image {size} bytes, binary {bin_size}: more than {OVERHEAD_MAX} bytes besides it");

    // Its files, read from an exported (never started) container: exactly these.
    let o = podman(&["create", &image.0]);
    assert!(o.status.success(), "{}", text(&o));
    let created = Container(String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("rootfs.tar");
    let o = podman(&["export", "-o", tar.to_str().unwrap(), &created.0]);
    assert!(o.status.success(), "{}", text(&o));
    drop(created);
    let o = Command::new("tar").args(["--numeric-owner", "-tvf"]).arg(&tar).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        // "-rwxr-xr-x 0/0 1234 2026-01-01 00:00 usr/local/bin/airlock"; directories ("d"),
        // and podman's empty mount points for /etc/hosts and the like, are not files to count.
        let kind = line.chars().next().unwrap_or('?');
        let name = format!("/{}", line.split_whitespace().nth(5).unwrap_or_default().trim_start_matches("./"));
        assert!(kind == '-' || kind == 'd', "not a plain file or directory in the image: {line}");
        let size: u64 = line.split_whitespace().nth(2).unwrap_or("0").parse().unwrap_or(0);
        if kind == '-' && !(size == 0 && ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run/.containerenv"].contains(&name.as_str())) {
            files.insert(name);
        }
    }
    let mut want: BTreeSet<String> = linked_libraries(bin);
    want.extend(["/usr/local/bin/airlock", "/etc/passwd", "/etc/group", "/etc/ssl/certs/ca-certificates.crt"].map(String::from));
    assert_eq!(files, want, "the image's files:\n{listing}");
    for sh in ["/bin/sh", "/usr/bin/sh", "/bin/bash", "/bin/busybox"] {
        assert!(!listing.contains(&format!(" {}\n", &sh[1..])), "{sh} is in the image");
    }
    assert!(listing.lines().any(|l| l.starts_with("drwx------") && l.contains(&format!(" {UID}/{UID} ")) && l.trim_end().ends_with("var/lib/airlock/")),
        "/var/lib/airlock is not 0700 and the user's:\n{listing}");
    for line in listing.lines().filter(|l| !l.trim_end().ends_with("var/lib/airlock/")) {
        assert!(line.split_whitespace().nth(1) == Some("0/0"), "not root's (only /var/lib/airlock is the user's): {line}");
    }
    let o = Command::new("tar").arg("-xOf").arg(&tar).arg("etc/passwd").output().unwrap();
    let passwd = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(passwd, format!("airlock:x:{UID}:{UID}:airlock:/var/lib/airlock:/nonexistent\n"));

    // Running it: only where a container can start here.
    let opts = match run_options(&image.0) {
        Ok(o) => o,
        Err(why) => {
            println!("skipped the run part: no OCI runtime can start a container on this machine: {why}");
            return;
        }
    };
    let run = |extra: &[&str], args: &[&str]| {
        let mut a: Vec<&str> = vec!["run"];
        a.extend(opts.iter().map(String::as_str));
        a.extend(extra);
        a.push(&image.0);
        a.extend(args);
        podman(&a)
    };
    let o = run(&["--rm", "--read-only"], &["--version"]);
    assert!(o.status.success(), "airlock --version in the image: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("airlock "), "{}", text(&o));

    // init on a volume, as the image's user; then serve on 0.0.0.0 behind a published port.
    let data = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(data.path(), Some(UID), Some(UID)).unwrap();
    let vol = format!("{}:/var/lib/airlock", data.path().display());
    let o = run(&["--rm", "--read-only", "-v", &vol], &["init"]);
    assert!(o.status.success(), "airlock init in the image: {}", text(&o));
    use std::os::unix::fs::MetadataExt;
    for f in ["airlock.toml", "airlock-data/master.key", "airlock-data/audit-signing.key", "airlock-data/store.db"] {
        let m = std::fs::metadata(data.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!((m.uid(), m.mode() & 0o777), (UID, 0o600), "{f}");
    }
    let cfg_path = data.path().join("airlock.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(cfg.contains("listen = \"127.0.0.1:7878\""), "{cfg}");
    let cfg = cfg.replace("listen = \"127.0.0.1:7878\"", "listen = \"0.0.0.0:7878\"")
        + "\n[shares]\nbase_url = \"https://airlock.example\"\n";
    std::fs::write(&cfg_path, cfg).unwrap();

    let port = free_port();
    let publish = format!("127.0.0.1:{port}:7878");
    let o = run(&["-d", "--read-only", "-v", &vol, "-p", &publish], &[]);
    assert!(o.status.success(), "airlock serve in the image: {}", text(&o));
    let serving = Container(String::from_utf8_lossy(&o.stdout).trim().to_string());
    let deadline = Instant::now() + Duration::from_secs(60);
    let resp = loop {
        if let Some(r) = healthz(port).filter(|r| r.starts_with("HTTP/1.1")) {
            break r;
        }
        let st = podman(&["inspect", "--format", "{{.State.Running}}", &serving.0]);
        if String::from_utf8_lossy(&st.stdout).trim() == "false" {
            panic!("airlock serve stopped in the container: {}", text(&podman(&["logs", &serving.0])));
        }
        assert!(Instant::now() < deadline, "/healthz did not answer: {}", text(&podman(&["logs", &serving.0])));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("{\"ok\":true}"), "{resp}");

    // The root filesystem is read-only: the broker could write only its volume and /run's tmpfs.
    let o = podman(&["inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", &serving.0]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "true");
    let logs = text(&podman(&["logs", &serving.0]));
    assert!(logs.contains("airlock serving"), "{logs}");
    drop(serving);
    println!("ran airlock --version, init and serve in the image with {}", opts.join(" "));
}
