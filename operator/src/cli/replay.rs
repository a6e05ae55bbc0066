//! `outbox-operator replay`: republishes the batches parked in each pipeline's failure
//! destination (see [`crate::engine::replay`]), printing progress and a summary.
//! Exit 0 when every selected batch is replayed (or none is parked), 1 on an error, 2 when some
//! batches are left parked (after a dry run: when any would be replayed).

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::Args;

use super::{EXIT_CHANGES_PENDING, EXIT_FAILED, EXIT_OK, Files, LogArgs, key, prepare};
use crate::config::EngineArgs;
use crate::engine::Engine;
use crate::engine::replay::{self, Batch, BatchOutcome, Options, Report};
use crate::manifest::Document;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub files: Files,
    /// Print what would be published (batches, records per change type, time range) and
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only batches parked at or after this time: RFC 3339 (2026-11-29T05:00:00Z) or a
    /// duration ago (90m, 2h, 1d).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only batches parked before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many batches (the oldest).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batches: Option<u64>,
    /// Publish again the records an earlier, interrupted replay recorded as published.
    #[arg(long)]
    pub republish: bool,
    /// A Lambda invocation record (JSON, as Lambda sent it to the failure destination, e.g.
    /// saved by a subscriber of an SNS destination) to replay from the stream instead of listing
    /// the destination. Repeatable.
    #[arg(long = "invocation-record", value_name = "FILE")]
    pub invocation_records: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// A time as `--since`/`--until` take it: RFC 3339, or a duration before now.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(s.trim()).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2026-11-29T05:00:00Z) nor a duration (2h)")
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(Utc::now() - ago)
}

impl ReplayArgs {
    fn options(&self) -> anyhow::Result<Options> {
        let mut records = Vec::with_capacity(self.invocation_records.len());
        for path in &self.invocation_records {
            let body = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--invocation-record {}: {e}", path.display()))?;
            records.push((path.display().to_string(), body));
        }
        Ok(Options {
            dry_run: self.dry_run,
            since: self.since,
            until: self.until,
            max_batches: self
                .max_batches
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            republish: self.republish,
            invocation_records: records,
            ..Options::default()
        })
    }
}

/// Runs the command on every pipeline of the manifests.
pub async fn run(args: &ReplayArgs) -> anyhow::Result<i32> {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_FAILED);
        }
    };
    let Some((engine, docs)) = prepare(&args.files, &args.engine, &args.log, &[]).await else {
        return Ok(EXIT_FAILED);
    };
    replay_all(&engine, &docs, &opts, &mut std::io::stdout()).await
}

/// Replays each pipeline in turn; the worst exit code wins (1 over 2 over 0).
pub async fn replay_all(
    engine: &Engine,
    docs: &[Document],
    opts: &Options,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let mut code = EXIT_OK;
    for doc in docs {
        let name = key(&doc.pipeline);
        let mut printed = 0;
        let mut progress = |r: &Report| {
            for b in &r.batches[printed..] {
                printed += 1;
                let _ = print_batch(&mut *out, &name, printed, r, b);
            }
        };
        let result = replay::replay(engine, &doc.pipeline, opts, &mut progress).await;
        let one = match result {
            Ok(report) => summary(out, &name, &report)?,
            Err(e) => {
                writeln!(out, "{name}: error: {e}")?;
                EXIT_FAILED
            }
        };
        code = worse(code, one);
    }
    Ok(code)
}

fn worse(a: i32, b: i32) -> i32 {
    if a == EXIT_FAILED || b == EXIT_FAILED {
        EXIT_FAILED
    } else {
        a.max(b)
    }
}

fn print_batch(
    out: &mut dyn Write,
    name: &str,
    n: usize,
    r: &Report,
    b: &Batch,
) -> std::io::Result<()> {
    writeln!(out, "{name}: [{n}/{}] {}", r.total, b.key)?;
    let parked = b
        .parked_at
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "?".to_owned());
    let why = b.condition.as_deref().unwrap_or("-");
    writeln!(
        out,
        "    shard {} sequence {}..{}, parked {parked} ({why})",
        b.shard_id, b.first_sequence, b.last_sequence
    )?;
    if let (Some(first), Some(last)) = (&b.first_arrival, &b.last_arrival) {
        writeln!(out, "    records arrived {first} .. {last}")?;
    }
    let changes: Vec<String> = b.changes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    writeln!(
        out,
        "    records: {}; unmapped (skipped): {}; published earlier: {}",
        changes.join(", "),
        b.skipped,
        b.already_published
    )?;
    if let Some(p) = &b.problem {
        writeln!(out, "    cannot publish: {p}")?;
    }
    match &b.outcome {
        BatchOutcome::WouldReplay => writeln!(out, "    would publish {} event(s)", b.events),
        BatchOutcome::Replayed => writeln!(
            out,
            "    replayed: {} event(s) published; marked replayed (run total {} events, {:.1} events/s)",
            b.events,
            r.events,
            r.rate()
        ),
        BatchOutcome::Left(why) => writeln!(
            out,
            "    left parked after {} event(s) published: {why}",
            b.events
        ),
    }
}

/// The summary line; the exit code of the pipeline.
fn summary(out: &mut dyn Write, name: &str, r: &Report) -> std::io::Result<i32> {
    let secs = r.elapsed.as_secs_f64();
    if r.total == 0 {
        writeln!(out, "{name}: no parked batch in {}", r.destination)?;
        if let Some(e) = &r.error {
            writeln!(out, "{name}: error: {e}")?;
            return Ok(EXIT_FAILED);
        }
        return Ok(EXIT_OK);
    }
    if r.dry_run {
        writeln!(
            out,
            "{name}: dry run: {} parked batch(es) in {}; the first {} would publish {} event(s); nothing changed",
            r.total,
            r.destination,
            r.batches.len(),
            r.events
        )?;
    } else {
        writeln!(
            out,
            "{name}: {} of {} batch(es) replayed, {} event(s) published in {secs:.1} s ({:.1} events/s); {} left parked",
            r.replayed(),
            r.total,
            r.events,
            r.rate(),
            r.left()
        )?;
    }
    if let Some(e) = &r.error {
        writeln!(out, "{name}: error: {e}")?;
        return Ok(EXIT_FAILED);
    }
    Ok(if r.left() > 0 {
        EXIT_CHANGES_PENDING
    } else {
        EXIT_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        assert_eq!(
            parse_time("2026-11-29T05:00:00Z").unwrap().to_rfc3339(),
            "2026-11-29T05:00:00+00:00"
        );
        let two_hours_ago = parse_time("2h").unwrap();
        let delta = Utc::now() - two_hours_ago;
        assert!((delta.num_seconds() - 7200).abs() < 5, "{delta}");
        assert!(parse_time("yesterday-ish").is_err());
    }

    #[test]
    fn invocation_records_are_read_from_their_files() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ReplayArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saved.json");
        std::fs::write(&path, b"{}").unwrap();
        let file = path.to_str().unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "-f",
            "p.yaml",
            "--cluster-id",
            "c",
            "--invocation-record",
            file,
        ])
        .unwrap();
        let opts = cli.args.options().unwrap();
        assert_eq!(opts.invocation_records, [(file.to_owned(), b"{}".to_vec())]);
        let gone = dir.path().join("gone.json");
        let gone = gone.to_str().unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "-f",
            "p.yaml",
            "--cluster-id",
            "c",
            "--invocation-record",
            gone,
        ])
        .unwrap();
        let err = cli.args.options().unwrap_err().to_string();
        assert!(
            err.contains(&format!("--invocation-record {gone}")),
            "{err}"
        );
    }

    #[test]
    fn an_error_wins_over_batches_left() {
        assert_eq!(worse(EXIT_OK, EXIT_CHANGES_PENDING), EXIT_CHANGES_PENDING);
        assert_eq!(worse(EXIT_FAILED, EXIT_CHANGES_PENDING), EXIT_FAILED);
        assert_eq!(worse(EXIT_CHANGES_PENDING, EXIT_OK), EXIT_CHANGES_PENDING);
    }
}
