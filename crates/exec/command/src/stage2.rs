//! The sandbox's second stage: `airlock __sandbox-stage2 SPEC` (or `... --probe SPEC`).
//!
//! bubblewrap starts this inside the call's fresh namespaces, already as the unprivileged
//! sandbox uid with no capabilities. It then:
//! 1. reads the control frame from stdin, unbuffered and exactly ([`encode_frame`]): the secret
//!    for `env` and `file` delivery, nothing for `stdin` delivery (the rest of the pipe is then
//!    the program's stdin, starting with the secret);
//! 2. writes `/etc/passwd` and `/etc/group` into the sandbox's private `/etc`, and for `file`
//!    delivery the secret into `/run/airlock/secret` (0400 in a 0700 directory, on a tmpfs that
//!    exists only in this sandbox's mount namespace);
//! 3. sets no_new_privs, a landlock ruleset (best effort: read and execute on the system
//!    directories and the workdir, write only on `/tmp`, `/dev/shm` and the secret directory),
//!    a seccomp filter denying the syscalls a command has no business making, and rlimits;
//! 4. closes every descriptor above 2 and executes the program with the clean environment.
//!
//! Its parameters ([`Spec`]) arrive as one JSON argument and never hold a secret; the secret
//! only ever crosses the stdin pipe. Any failure before the program runs exits with
//! [`EXIT_SETUP_FAILED`] and one line on stderr starting with [`ERROR_PREFIX`]: the broker turns
//! that into `command-failed`, never into a run without the sandbox.
//!
//! `--probe` does steps 1–3 and prints a [`ProbeReport`] instead of running a program: the
//! broker's preflight uses it to check that the sandbox really is one.

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use nix::libc;
use nix::sys::resource::{setrlimit, Resource};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use zeroize::Zeroizing;

/// The hidden subcommand of the `airlock` binary that runs this stage. `main` dispatches on it
/// before anything else (no argument parsing, logging or runtime).
pub const STAGE2_ARG: &str = "__sandbox-stage2";
/// After [`STAGE2_ARG`]: check the sandbox and report instead of running a program.
pub const PROBE_ARG: &str = "--probe";
/// Exit status when the sandbox could not be set up; the program did not run.
pub const EXIT_SETUP_FAILED: u8 = 125;
/// Start of the one stderr line written on a setup failure.
pub const ERROR_PREFIX: &str = "airlock-sandbox: ";
/// The uid and gid everything in the sandbox runs as (`nobody`).
pub const SANDBOX_UID: u32 = 65534;
/// The directory holding a `file`-delivered secret inside the sandbox.
pub const SECRET_DIR: &str = "/run/airlock";
/// The file holding a `file`-delivered secret inside the sandbox; the argv gets this path.
pub const SECRET_FILE: &str = "/run/airlock/secret";
/// Largest secret a frame may carry.
pub const MAX_FRAME_BYTES: u64 = 16 << 20;
/// Marker of a probe's report line.
pub const PROBE_MARKER: &str = "airlock-sandbox-probe";

/// How the secret reaches the program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSlot {
    /// The frame is empty; the secret follows it on stdin, for the program to read.
    Stdin,
    /// The frame's bytes go into this environment variable.
    Env {
        /// The variable's name.
        name: String,
    },
    /// The frame's bytes go into [`SECRET_FILE`].
    File,
}

/// What a path may be used for under landlock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathAccess {
    /// List directories only (the root, so `ls /` works; what is visible is the allow-list).
    List,
    /// Read and execute.
    ReadExec,
    /// Read and write existing files, no creating or removing (`/dev`).
    Device,
    /// Everything (`/tmp`, `/dev/shm`, the secret directory).
    ReadWrite,
}

/// Resource limits applied just before the program runs. All are hard limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `RLIMIT_NPROC`: processes and threads of the sandbox uid in this sandbox's namespace.
    pub processes: u64,
    /// `RLIMIT_AS`, bytes, per process.
    pub address_space_bytes: u64,
    /// `RLIMIT_FSIZE`, bytes: the largest file a process may write.
    pub file_size_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// `RLIMIT_CPU`, seconds of CPU per process (the wall-clock timeout is the broker's).
    pub cpu_seconds: u64,
}

/// Stage 2's parameters. Holds no secret: it travels in argv, visible to the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Absolute path of the program, as seen inside the sandbox.
    pub program: PathBuf,
    /// Its arguments after argv\[0\] (which is the program's path).
    pub args: Vec<String>,
    /// Its environment, besides the secret.
    pub env: Vec<(String, String)>,
    /// Where the secret goes.
    pub secret: SecretSlot,
    /// The landlock rules.
    pub paths: Vec<(PathBuf, PathAccess)>,
    /// The rlimits.
    pub limits: Limits,
}

/// What `--probe` prints, one JSON line after [`PROBE_MARKER`] and a space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Real uid inside.
    pub uid: u32,
    /// Own pid inside (small in a fresh PID namespace).
    pub pid: i32,
    /// `CapEff` from `/proc/self/status`.
    pub cap_eff: String,
    /// Network interfaces visible (`/proc/net/dev`); 1 (`lo`) in an empty network namespace.
    pub interfaces: usize,
    /// `full`, `partial` or `none`.
    pub landlock: String,
    /// The seccomp filter is in force: `unshare(CLONE_NEWUSER)` was refused after it.
    pub seccomp: bool,
    /// no_new_privs is set.
    pub no_new_privs: bool,
}

/// Why stage 2 could not run the program.
#[derive(Debug, thiserror::Error)]
pub enum Stage2Error {
    /// The arguments are not `[--probe] SPEC` or the spec is not valid JSON of [`Spec`].
    #[error("bad arguments: {0}")]
    Usage(String),
    /// Reading the control frame from stdin failed or it was malformed.
    #[error("control frame: {0}")]
    Frame(String),
    /// Writing a file of the sandbox (passwd, the secret file) failed.
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    /// A limit or flag could not be set.
    #[error("{0}: {1}")]
    Sys(&'static str, nix::Error),
    /// The landlock ruleset could not be built (a kernel without landlock is not an error).
    #[error("landlock: {0}")]
    Landlock(String),
    /// The seccomp filter could not be built or installed; the program is not run without it.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// execve failed.
    #[error("exec {0}: {1}")]
    Exec(String, std::io::Error),
}

/// The control frame the broker writes first on the child's stdin: the secret's length as 8
/// bytes big-endian, then the secret (empty for `stdin` delivery).
pub fn encode_frame(secret: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(8 + secret.len()));
    v.extend_from_slice(&(secret.len() as u64).to_be_bytes());
    v.extend_from_slice(secret);
    v
}

/// Entry point of `airlock __sandbox-stage2`. Only returns on failure (or after a probe).
pub fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let result = match args.as_slice() {
        [flag, spec] if flag == PROBE_ARG => parse(spec).and_then(|s| probe(&s)),
        [spec] => parse(spec).and_then(|s| exec(&s)),
        _ => Err(Stage2Error::Usage("expected [--probe] SPEC".into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Never the secret: no error above carries frame bytes.
            let _ = writeln!(std::io::stderr(), "{ERROR_PREFIX}{e}");
            ExitCode::from(EXIT_SETUP_FAILED)
        }
    }
}

fn parse(spec: &str) -> Result<Spec, Stage2Error> {
    serde_json::from_str(spec).map_err(|e| Stage2Error::Usage(e.to_string()))
}

/// Reads exactly `buf.len()` bytes from fd 0 with read(2): nothing past the frame may be
/// consumed, since the rest of the pipe belongs to the program.
fn read_exact_fd0(buf: &mut [u8]) -> Result<(), Stage2Error> {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let mut done = 0;
    while done < buf.len() {
        match nix::unistd::read(fd, &mut buf[done..]) {
            Ok(0) => return Err(Stage2Error::Frame("stdin closed inside the frame".into())),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Stage2Error::Frame(e.to_string())),
        }
    }
    Ok(())
}

fn read_frame() -> Result<Zeroizing<Vec<u8>>, Stage2Error> {
    let mut len = [0u8; 8];
    read_exact_fd0(&mut len)?;
    let n = u64::from_be_bytes(len);
    if n > MAX_FRAME_BYTES {
        return Err(Stage2Error::Frame(format!("length {n} over {MAX_FRAME_BYTES}")));
    }
    // Sized once, so the secret is never left behind in a reallocated buffer.
    let mut secret = Zeroizing::new(vec![0u8; n as usize]);
    read_exact_fd0(&mut secret)?;
    Ok(secret)
}

/// Steps 1–3: everything but running the program. Returns the secret and the landlock status.
fn prepare(spec: &Spec) -> Result<(Zeroizing<Vec<u8>>, &'static str), Stage2Error> {
    let secret = read_frame()?;
    write_identity();
    if spec.secret == SecretSlot::File {
        write_secret_file(&secret)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| Stage2Error::Sys("no_new_privs", e))?;
    let landlock = apply_landlock(&spec.paths)?;
    apply_seccomp()?;
    apply_limits(&spec.limits)?;
    Ok((secret, landlock))
}

/// A passwd and group naming the sandbox uid, so `id`, `whoami` and libraries that look the
/// user up work, without the host's accounts. Best effort: a read-only /etc only costs names.
fn write_identity() {
    let u = SANDBOX_UID;
    let _ = std::fs::write(
        "/etc/passwd",
        format!("root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nnobody:x:{u}:{u}:nobody:/nonexistent:/usr/sbin/nologin\n"),
    );
    let _ = std::fs::write("/etc/group", format!("root:x:0:\nnogroup:x:{u}:\n"));
}

fn write_secret_file(secret: &[u8]) -> Result<(), Stage2Error> {
    std::fs::DirBuilder::new().mode(0o700).create(SECRET_DIR).map_err(|e| Stage2Error::Io("secret directory", e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(SECRET_FILE)
        .map_err(|e| Stage2Error::Io("secret file", e))?;
    f.write_all(secret).map_err(|e| Stage2Error::Io("secret file", e))
}

/// Landlock, best effort up to ABI 6 (file rights including truncate and device ioctls, plus
/// scoping of abstract Unix sockets and signals to the sandbox). A path that does not exist is
/// skipped. Returns `full`, `partial` or `none`.
fn apply_landlock(paths: &[(PathBuf, PathAccess)]) -> Result<&'static str, Stage2Error> {
    let abi = ABI::V6;
    let err = |e: landlock::RulesetError| Stage2Error::Landlock(e.to_string());
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(err)?
        .create()
        .map_err(err)?;
    for (path, access) in paths {
        let Ok(meta) = std::fs::metadata(path) else { continue };
        let rights: BitFlags<AccessFs> = match access {
            PathAccess::List => AccessFs::ReadDir.into(),
            PathAccess::ReadExec => AccessFs::from_read(abi),
            PathAccess::Device => AccessFs::from_file(abi) | AccessFs::ReadDir,
            PathAccess::ReadWrite => AccessFs::from_all(abi),
        };
        // Directory-only rights on a file are an error for the kernel; keep the file rights.
        let rights = if meta.is_dir() { rights } else { rights & AccessFs::from_file(abi) };
        if rights.is_empty() {
            continue;
        }
        let fd = PathFd::new(path).map_err(|e| Stage2Error::Landlock(format!("{}: {e}", path.display())))?;
        ruleset = ruleset.add_rule(PathBeneath::new(fd, rights)).map_err(err)?;
    }
    let status = ruleset.restrict_self().map_err(err)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    })
}

/// Namespace-creating flags of clone(2): a command needs none of them, and each is a way to
/// regain capabilities over a fresh namespace.
const CLONE_NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// Syscalls refused outright with EPERM: debugging other processes, namespaces and mounts,
/// kernel keyrings, BPF and perf, modules and kexec, userfaultfd and io_uring (both have been
/// the way around seccomp filters and into kernel bugs), handle-based opens, and host
/// administration. Without capabilities most fail anyway; the filter makes it unconditional.
fn denied_syscalls() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_acct,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_pidfd_getfd,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib, libc::SYS_modify_ldt]);
    v
}

fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, Stage2Error> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| Stage2Error::Seccomp(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, Stage2Error> {
    SeccompRule::new(conds).map_err(|e| Stage2Error::Seccomp(e.to_string()))
}

/// The two filters: EPERM for [`denied_syscalls`], clone with a namespace flag, personality
/// changes other than a query, and terminal input injection (TIOCSTI, TIOCLINUX); ENOSYS for
/// clone3, whose flags live in memory a filter cannot read, so libc falls back to clone.
pub fn seccomp_filters() -> Result<[BpfProgram; 2], Stage2Error> {
    use SeccompCmpArgLen::{Dword, Qword};
    let arch = std::env::consts::ARCH.try_into().map_err(|e: seccompiler::BackendError| Stage2Error::Seccomp(e.to_string()))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied_syscalls().into_iter().map(|n| (n, Vec::new())).collect();
    let clone_rules =
        CLONE_NS_FLAGS.iter().map(|&f| rule(vec![cond(0, Qword, SeccompCmpOp::MaskedEq(f), f)?])).collect::<Result<_, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    rules.insert(
        libc::SYS_personality,
        vec![rule(vec![cond(0, Dword, SeccompCmpOp::Ne, 0)?, cond(0, Dword, SeccompCmpOp::Ne, 0xffff_ffff)?])?],
    );
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, Dword, SeccompCmpOp::Eq, libc::TIOCSTI)?])?,
            rule(vec![cond(1, Dword, SeccompCmpOp::Eq, libc::TIOCLINUX)?])?,
        ],
    );
    let eperm = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
        .map_err(|e| Stage2Error::Seccomp(e.to_string()))?;
    let enosys = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| Stage2Error::Seccomp(e.to_string()))?;
    let compile = |f: SeccompFilter| BpfProgram::try_from(f).map_err(|e| Stage2Error::Seccomp(e.to_string()));
    Ok([compile(eperm)?, compile(enosys)?])
}

fn apply_seccomp() -> Result<(), Stage2Error> {
    for f in seccomp_filters()? {
        seccompiler::apply_filter(&f).map_err(|e| Stage2Error::Seccomp(e.to_string()))?;
    }
    Ok(())
}

fn apply_limits(l: &Limits) -> Result<(), Stage2Error> {
    let set = |r: Resource, what: &'static str, v: u64| setrlimit(r, v, v).map_err(|e| Stage2Error::Sys(what, e));
    set(Resource::RLIMIT_CORE, "RLIMIT_CORE", 0)?;
    set(Resource::RLIMIT_NPROC, "RLIMIT_NPROC", l.processes)?;
    set(Resource::RLIMIT_AS, "RLIMIT_AS", l.address_space_bytes)?;
    set(Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE", l.file_size_bytes)?;
    set(Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", l.open_files)?;
    // The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
    setrlimit(Resource::RLIMIT_CPU, l.cpu_seconds, l.cpu_seconds + 1).map_err(|e| Stage2Error::Sys("RLIMIT_CPU", e))
}

/// Closes every descriptor above 2, so the program inherits only its stdio, whatever bwrap or
/// the broker's libraries left open without close-on-exec.
fn close_extra_fds() {
    let listed: Option<Vec<i32>> = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect());
    // The directory's own descriptor is closed by now; closing it again is a harmless EBADF.
    let fds = listed.unwrap_or_else(|| (3..1024).collect());
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // Stage 2 owns every descriptor of its process at this point: nothing else uses them.
        let _ = nix::unistd::close(fd);
    }
}

fn exec(spec: &Spec) -> Result<(), Stage2Error> {
    let (secret, _) = prepare(spec)?;
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args).env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let SecretSlot::Env { name } = &spec.secret {
        use std::os::unix::ffi::OsStrExt;
        cmd.env(name, std::ffi::OsStr::from_bytes(&secret));
    }
    drop(secret);
    close_extra_fds();
    let e = cmd.exec();
    Err(Stage2Error::Exec(spec.program.display().to_string(), e))
}

fn probe(spec: &Spec) -> Result<(), Stage2Error> {
    let (_, landlock) = prepare(spec)?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap_or("?").trim().to_owned();
    let no_new_privs = status.lines().find_map(|l| l.strip_prefix("NoNewPrivs:")).map(str::trim) == Some("1");
    let interfaces = std::fs::read_to_string("/proc/net/dev").map(|s| s.lines().skip(2).count()).unwrap_or(usize::MAX);
    let seccomp = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) == Err(nix::errno::Errno::EPERM);
    let report = ProbeReport {
        uid: nix::unistd::getuid().as_raw(),
        pid: nix::unistd::getpid().as_raw(),
        cap_eff,
        interfaces,
        landlock: landlock.into(),
        seccomp,
        no_new_privs,
    };
    let line = serde_json::to_string(&report).map_err(|e| Stage2Error::Usage(e.to_string()))?;
    println!("{PROBE_MARKER} {line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_length_prefixed() {
        assert_eq!(&encode_frame(b"")[..], &[0u8; 8]);
        let f = encode_frame(b"abc");
        assert_eq!(&f[..8], &3u64.to_be_bytes());
        assert_eq!(&f[8..], b"abc");
    }

    #[test]
    fn t23_seccomp_filters_compile_for_this_arch() {
        let [a, b] = seccomp_filters().unwrap();
        assert!(!a.is_empty() && !b.is_empty());
    }

    #[test]
    fn spec_round_trips_and_refuses_unknown_fields() {
        let s = Spec {
            program: "/bin/true".into(),
            args: vec!["a".into()],
            env: vec![("PATH".into(), "/bin".into())],
            secret: SecretSlot::Env { name: "TOKEN".into() },
            paths: vec![("/usr".into(), PathAccess::ReadExec)],
            limits: Limits { processes: 1, address_space_bytes: 2, file_size_bytes: 3, open_files: 4, cpu_seconds: 5 },
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(parse(&j).unwrap(), s);
        assert!(parse(&j.replace("\"program\"", "\"x\":1,\"program\"")).is_err());
    }
}
