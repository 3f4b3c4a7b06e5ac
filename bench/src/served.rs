//! A broker as its own process: the `airlock` binary of the same build, set up and started the
//! way an operator does it (`init`, `secret put` on stdin, `agent add`, `serve`), plus the
//! child-process chores around it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `url` answers at all (any status), for at most `within`.
pub async fn wait_http(url: &str, within: Duration) -> Result<()> {
    let c = reqwest::Client::new();
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if c.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not come up within {} s", within.as_secs())
}

/// The program `name` on PATH, if any.
pub fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file())
}

/// Runs `cmd` to its end; its stdout, or an error with its stderr when it failed.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout).context("the output is not UTF-8")
}

/// A SQLite file at `path` with one empty table, for `query_db SELECT 1`; its URL.
pub async fn select1_db(path: &Path) -> Result<String> {
    use sqlx::Connection;
    let url = format!("sqlite://{}", path.display());
    let mut c = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc")).await.with_context(|| format!("creating {url}"))?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)").execute(&mut c).await?;
    Ok(url)
}

/// The `VmRSS` line of process `pid`, as the kernel writes it (`"44600 kB"`).
pub fn vm_rss(pid: u32) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.trim_start_matches("VmRSS:").trim().to_owned())
}

/// The resident memory of process `pid` (`VmRSS`), in KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    let v = vm_rss(pid)?;
    v.trim_end_matches("kB").trim().parse().with_context(|| format!("VmRSS {v:?}"))
}

/// What the resident memory of process `pid` is made of (`RssAnon` and `RssFile` of
/// `/proc/PID/status`): the process's own memory, and the pages of mapped files (the binary's
/// code and read-only data, shared with the page cache), as text.
pub fn rss_parts(pid: u32) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<String> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name}"))?;
        Ok(line.trim_start_matches(name).trim().to_owned())
    };
    Ok(format!("anonymous {}, file-backed {}", field("RssAnon:")?, field("RssFile:")?))
}

/// The CPU time process `pid` has used so far, user and system, all its threads (fields 14 and
/// 15 of `/proc/PID/stat`, in the kernel's `USER_HZ` ticks: 100 a second on Linux).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let rest = stat.rsplit_once(')').context("no command name in /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> { fields.get(i).context("a short /proc/PID/stat")?.parse().context("a tick count") };
    // `rest` starts at field 3, so fields 14 and 15 are its 12th and 13th.
    Ok(Duration::from_millis((tick(11)? + tick(12)?) * 10))
}

/// The CPU that processes use while something runs: [`CpuMeter::start`] before, then
/// [`CpuMeter::cpus`] after, for each process the CPUs it kept busy on average (1.0 = one core
/// all the time).
pub struct CpuMeter {
    pids: Vec<u32>,
    before: Vec<Duration>,
    at: Instant,
}

impl CpuMeter {
    /// Starts measuring `pids`.
    pub fn start(pids: &[u32]) -> Result<CpuMeter> {
        let before = pids.iter().map(|&p| cpu_time(p)).collect::<Result<_>>()?;
        Ok(CpuMeter { pids: pids.to_vec(), before, at: Instant::now() })
    }

    /// The CPUs each process kept busy since the start, in the order given.
    pub fn cpus(&self) -> Result<Vec<f64>> {
        let wall = self.at.elapsed().as_secs_f64();
        self.pids.iter().zip(&self.before).map(|(&p, b)| Ok((cpu_time(p)? - *b).as_secs_f64() / wall)).collect()
    }
}

/// How many file descriptors process `pid` has open (the entries of `/proc/PID/fd`).
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Runs `sql` (one or more statements) on a new connection to the PostgreSQL server at `url`.
pub async fn pg_exec(url: &str, sql: &str) -> Result<()> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.with_context(|| format!("connecting to PostgreSQL at {}", url.split('@').next_back().unwrap_or("")))?;
    sqlx::raw_sql(sql).execute(&mut c).await?;
    Ok(())
}

/// How long a started `airlock serve` may take to answer `/healthz`.
const SERVE_WITHIN: Duration = Duration::from_secs(15);

/// The `airlock` binary next to the running benchmark: the build being measured.
pub struct Airlock(PathBuf);

impl Airlock {
    /// `airlock` in the directory of this executable (cargo puts both packages' binaries in
    /// one target directory).
    pub fn next_to_this() -> Result<Airlock> {
        let p = std::env::current_exe()?.with_file_name("airlock");
        if !p.exists() {
            bail!(
                "{} not found: build it first with `cargo build -p airlock` in the same profile (--release for a release run)",
                p.display()
            );
        }
        Ok(Airlock(p))
    }

    /// A given `airlock` binary (another build, to compare against).
    pub fn at(path: PathBuf) -> Result<Airlock> {
        if !path.exists() {
            bail!("{} not found", path.display());
        }
        Ok(Airlock(path))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `airlock --config CONFIG`, arguments to follow.
    pub fn command(&self, config: &Path) -> Command {
        let mut c = Command::new(&self.0);
        c.arg("--config").arg(config);
        c
    }

    /// Fresh keys and an empty store in `dir/airlock-data`. `init` refuses to overwrite a
    /// config, so it runs in a side directory and its data directory is moved in.
    pub fn init_data(&self, dir: &Path) -> Result<()> {
        let side = tempfile::tempdir()?;
        output(self.command(&side.path().join("airlock.toml")).arg("init"))?;
        std::fs::rename(side.path().join("airlock-data"), dir.join("airlock-data")).context("moving the new data directory")?;
        Ok(())
    }

    /// `airlock secret put NAME` with `value` on stdin.
    pub fn secret_put(&self, config: &Path, name: &str, value: &str) -> Result<()> {
        use std::io::Write;
        let mut c = self.command(config).args(["secret", "put", name]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
        c.stdin.take().context("stdin")?.write_all(value.as_bytes())?;
        if !c.wait()?.success() {
            bail!("secret put {name} failed");
        }
        Ok(())
    }

    /// `airlock agent add NAME`; the agent's token.
    pub fn agent_add(&self, config: &Path, name: &str) -> Result<String> {
        Ok(output(self.command(config).args(["agent", "add", name]).stderr(Stdio::null()))?.trim().to_owned())
    }

    /// `airlock serve` on `config`, quiet (its errors still reach stderr), once
    /// `{base}/healthz` answers; an error as soon as it exits instead.
    pub async fn serve(&self, config: &Path, base: &str) -> Result<Proc> {
        let mut cmd = self.command(config);
        cmd.arg("serve").env("RUST_LOG", "error").stdout(Stdio::null());
        self.start_serve(cmd, config, base).await
    }

    /// [`Airlock::serve`] with its whole log (stdout and stderr, `RUST_LOG=level`) written to
    /// the file `log`, for reading afterwards.
    pub async fn serve_logged(&self, config: &Path, base: &str, log: &Path, level: &str) -> Result<Proc> {
        let f = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self.command(config);
        cmd.arg("serve").env("RUST_LOG", level).stdout(f.try_clone()?).stderr(f);
        self.start_serve(cmd, config, base).await
    }

    /// [`Airlock::serve`] run by another program (`wrapper`, its arguments, then `airlock
    /// --config CONFIG serve`), e.g. under valgrind. Its output is dropped.
    pub async fn serve_under(&self, wrapper: &[&str], config: &Path, base: &str) -> Result<Proc> {
        let (program, args) = wrapper.split_first().context("no wrapper program")?;
        let mut cmd = Command::new(program);
        cmd.args(args).arg(&self.0).arg("--config").arg(config).arg("serve");
        cmd.env("RUST_LOG", "error").stdout(Stdio::null()).stderr(Stdio::null());
        self.start_serve(cmd, config, base).await
    }

    async fn start_serve(&self, mut cmd: Command, config: &Path, base: &str) -> Result<Proc> {
        let mut proc = Proc(cmd.spawn()?);
        let (c, url, t0) = (reqwest::Client::new(), format!("{base}/healthz"), Instant::now());
        while t0.elapsed() < SERVE_WITHIN {
            if let Some(status) = proc.0.try_wait()? {
                bail!("airlock serve --config {} exited ({status}) before answering", config.display());
            }
            if c.get(&url).send().await.is_ok() {
                return Ok(proc);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{url} did not come up within {} s", SERVE_WITHIN.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parse reads this process's user and system ticks: they grow while it computes, and a
    /// process that does not exist is an error, not zero.
    #[test]
    fn cpu_time_counts_this_process_and_refuses_a_missing_one() {
        let me = std::process::id();
        let before = cpu_time(me).unwrap();
        let meter = CpuMeter::start(&[me]).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while cpu_time(me).unwrap() < before + Duration::from_millis(50) {
            assert!(Instant::now() < until, "50 ms of CPU not counted within 10 s");
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        let cpus = meter.cpus().unwrap();
        assert!(cpus[0] > 0.0 && cpus[0] <= 2.0 * num_cpus(), "{cpus:?}");
        assert!(cpu_time(u32::MAX).is_err());
    }

    fn num_cpus() -> f64 {
        std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
    }
}
