//! The relay as a child process: started with the environment Lambda gives a function, its
//! stdout (the function's log stream) drained through a pipe, and its resource usage read when
//! the harness reaps it.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::records::EVENTS;

/// What the log stream held.
#[derive(Debug, Default)]
pub struct Logs {
    pub lines: usize,
    /// The first few lines at WARN or ERROR level.
    pub problems: Vec<String>,
}

/// Resource usage of the reaped child: CPU from `wait4`, peak RSS from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    pub max_rss_kib: u64,
}

impl Usage {
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

pub struct Relay {
    child: Child,
    logs: Option<JoinHandle<Logs>>,
}

impl Relay {
    /// Starts `bootstrap` as Lambda would: the runtime API address, the function's identity,
    /// credentials and region, the relay's configuration as the operator sets it, and nothing
    /// else of the harness's.
    pub fn start(
        bootstrap: &Path,
        runtime_api: SocketAddr,
        eventbridge: SocketAddr,
        rust_log: Option<&str>,
    ) -> anyhow::Result<Relay> {
        let mut command = Command::new(bootstrap);
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "relay")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/relay")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]bench")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_SESSION_TOKEN", "testing")
            .env("AWS_ENDPOINT_URL", format!("http://{eventbridge}"))
            .env("LANG", "en_US.UTF-8")
            .env("TZ", ":UTC")
            .env("OUTBOX_BUS_NAME", "users")
            .env("OUTBOX_EVENTS", EVENTS)
            // As the operator deploys it: the relay then also writes its EMF metrics line.
            .env("OUTBOX_PIPELINE", "bench/users")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bootstrap.display()))?;
        let stdout = child.stdout.take().context("the child has no stdout")?;
        let logs = std::thread::spawn(move || {
            let mut logs = Logs::default();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                logs.lines += 1;
                let problem =
                    line.contains(r#""level":"ERROR""#) || line.contains(r#""level":"WARN""#);
                if problem && logs.problems.len() < 5 {
                    logs.problems.push(line);
                }
            }
            logs
        });
        Ok(Relay {
            child,
            logs: Some(logs),
        })
    }

    /// True while the process runs. (It is not reaped here, so [`Relay::stop`] still gets its
    /// resource usage.)
    pub fn running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        // The state follows the command name in parentheses: `pid (comm) S ...`.
        stat.ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_owned())
            })
            .is_some_and(|rest| !rest.starts_with(['Z', 'X']))
    }

    /// Kills the process (it waits for its next event and uses no CPU meanwhile), reaps it and
    /// returns its resource usage and its log stream.
    pub fn stop(mut self) -> anyhow::Result<(Usage, Logs)> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        let peak_rss = peak_rss_kib(pid);
        // An error here means it exited already; it is reaped below either way.
        let _ = self.child.kill();
        let mut usage = reap(pid)?;
        usage.max_rss_kib = peak_rss.unwrap_or(usage.max_rss_kib);
        let logs = self
            .logs
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        Ok((usage, logs))
    }
}

/// The process's peak RSS (`VmHWM`): that of its own address space only. (`ru_maxrss` of a
/// child that was spawned and exec'd also counts the harness's memory at spawn time.)
fn peak_rss_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `wait4` on the child: its status and its `rusage` (CPU of all its threads, peak RSS).
fn reap(pid: libc::pid_t) -> anyhow::Result<Usage> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; an all-zero value is valid and wait4 overwrites it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unreaped child; both pointers are valid for the call.
    let reaped = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    if reaped != pid {
        bail!("wait4({pid}) failed: {}", std::io::Error::last_os_error());
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok(Usage {
        user: time(usage.ru_utime),
        system: time(usage.ru_stime),
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })
}
