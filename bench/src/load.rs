//! A closed-loop load generator (each task sends its next request when the previous one is
//! answered) and the latency figures every benchmark reports from it.

use anyhow::{bail, Result};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a run warms up (nothing recorded), then measures.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// Calls made before anything is recorded: connections, pools and caches fill here.
    pub warmup: Duration,
    /// Calls started in this window are recorded.
    pub measure: Duration,
}

/// Latencies in seconds, sorted.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<f64>);

impl Latencies {
    /// From samples in seconds, in any order.
    pub fn from_secs(mut secs: Vec<f64>) -> Latencies {
        secs.sort_by(f64::total_cmp);
        Latencies(secs)
    }

    /// From durations, in any order.
    pub fn from_durations(v: impl IntoIterator<Item = Duration>) -> Latencies {
        Latencies::from_secs(v.into_iter().map(|d| d.as_secs_f64()).collect())
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No samples at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p` quantile (0 to 1), nearest rank, in seconds; NaN without samples.
    pub fn quantile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0[((self.0.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
    }

    /// The median, in seconds.
    pub fn p50(&self) -> f64 {
        self.quantile(0.5)
    }

    /// The 99th percentile, in seconds.
    pub fn p99(&self) -> f64 {
        self.quantile(0.99)
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Stats {
    /// The latencies of the calls that succeeded.
    pub latencies: Latencies,
    /// Calls that failed (an error, or an answer that is not a success).
    pub errors: usize,
    /// The measured window, in seconds.
    pub secs: f64,
}

impl Stats {
    /// Successful calls per second.
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    /// The median latency, in seconds.
    pub fn p50(&self) -> f64 {
        self.latencies.p50()
    }

    /// The 99th percentile latency, in seconds.
    pub fn p99(&self) -> f64 {
        self.latencies.p99()
    }
}

/// Calls `op` in a loop on `concurrency` tasks, for the warm-up and then the measured window of
/// `phases`. `op` gets its task's index (to spread tasks over several endpoints) and fails for a
/// call that should count as an error.
pub async fn closed_loop<F, Fut>(concurrency: usize, phases: Phases, op: F) -> Result<Stats>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let warm_until = Instant::now() + phases.warmup;
    let end = warm_until + phases.measure;
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < warm_until {
                let _ = op(worker).await;
            }
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                match op(worker).await {
                    Ok(()) => lat.push(t0.elapsed().as_secs_f64()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    Ok(Stats { latencies: Latencies::from_secs(all), errors, secs: phases.measure.as_secs_f64() })
}

/// One HTTP request, sent again and again.
#[derive(Clone, Debug)]
pub struct Target {
    /// The whole URL.
    pub url: String,
    /// The method.
    pub method: reqwest::Method,
    /// Headers, as sent.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<String>,
}

impl Target {
    /// `POST {base}/v1/invoke` of `tool` with `arguments`, as the agent holding `token`.
    pub fn invoke(base: &str, token: &str, tool: &str, arguments: serde_json::Value) -> Target {
        Target {
            url: format!("{base}/v1/invoke"),
            method: reqwest::Method::POST,
            headers: vec![("authorization".into(), format!("Bearer {token}")), ("content-type".into(), "application/json".into())],
            body: Some(serde_json::json!({"tool": tool, "arguments": arguments}).to_string()),
        }
    }

    /// Sends it once and reads the whole answer; fails unless the status is a success.
    pub async fn send(&self, client: &reqwest::Client) -> Result<()> {
        let mut rq = client.request(self.method.clone(), &self.url);
        for (k, v) in &self.headers {
            rq = rq.header(k, v);
        }
        if let Some(b) = &self.body {
            rq = rq.body(b.clone());
        }
        let r = rq.send().await?;
        let status = r.status();
        r.bytes().await?;
        if !status.is_success() {
            bail!("{} answered {status}", self.url);
        }
        Ok(())
    }
}

/// [`closed_loop`] over HTTP: task `i` sends `targets[i % targets.len()]`, on one client with
/// enough idle connections for every task.
pub async fn http_load(targets: &[Target], concurrency: usize, phases: Phases) -> Result<Stats> {
    if targets.is_empty() {
        bail!("no target to load");
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency * 2).build()?;
    let targets: Arc<[Target]> = targets.into();
    closed_loop(concurrency, phases, move |worker| {
        let (client, targets) = (client.clone(), targets.clone());
        async move { targets[worker % targets.len()].send(&client).await }
    })
    .await
}

/// The median of `v` with its minimum and maximum, for "median (min to max)" over runs.
pub fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(&lo), Some(&hi)) => (v[v.len() / 2], lo, hi),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

/// `targets` (named) loaded in turn, `rounds` times, at `concurrency`: each name's p50s and
/// calls/s, one per round. Fails on any failed call.
pub async fn alternate<'a>(
    targets: &[(&'a str, Target)],
    concurrency: usize,
    rounds: usize,
    phases: Phases,
) -> Result<std::collections::HashMap<&'a str, (Vec<f64>, Vec<f64>)>> {
    let mut res: std::collections::HashMap<&str, (Vec<f64>, Vec<f64>)> = std::collections::HashMap::new();
    for _ in 0..rounds {
        for (name, t) in targets {
            let st = http_load(std::slice::from_ref(t), concurrency, phases).await?;
            if st.errors > 0 {
                bail!("{name} at concurrency {concurrency}: {} errors", st.errors);
            }
            let e = res.entry(name).or_default();
            e.0.push(st.p50());
            e.1.push(st.rps());
        }
    }
    Ok(res)
}

/// Seconds as whole microseconds, for tables: `"586 µs"`.
pub fn us(secs: f64) -> String {
    format!("{:.0} µs", secs * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_nan_when_empty() {
        let l = Latencies::from_secs(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(l.quantile(0.0), 1.0);
        assert_eq!(l.p50(), 3.0);
        assert_eq!(l.quantile(1.0), 5.0);
        assert_eq!(l.p99(), 5.0);
        assert!(Latencies::default().p50().is_nan());
    }

    #[tokio::test]
    async fn closed_loop_counts_successes_and_errors_in_the_window() {
        let phases = Phases { warmup: Duration::from_millis(10), measure: Duration::from_millis(50) };
        let s = closed_loop(2, phases, |worker| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if worker == 0 {
                Ok(())
            } else {
                bail!("refused")
            }
        })
        .await
        .unwrap();
        assert!(s.latencies.len() > 5 && s.errors > 5, "{s:?}");
        assert!(s.p50() >= 0.001);
    }
}
