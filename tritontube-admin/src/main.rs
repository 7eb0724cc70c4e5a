//! `tritontube-admin`: manage a TritonTube storage cluster through a web
//! server's admin service.
//!
//! The course project's verbs and output lines are kept exactly
//! (`list`, `add`, `remove`), so scripts written for it keep working.

mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{HumanBytes, HumanCount};
use progress::Reporter;
use serde_json::json;
use tritontube_core::admin::{AdminClient, ChangeOutcome, RepairOutcome, StatusReport};
use tritontube_core::proto::cluster::{NodeLiveness, NodeStatus};
use tritontube_core::shutdown::LogFormat;

#[derive(Parser)]
#[command(name = "tritontube-admin", version, about)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The server's admin token. Prefer the environment variable or
    /// --token-file (a value given here is visible in `ps`). Without any,
    /// ./data/admin-token is used when it exists (the single-machine
    /// deployment's).
    #[arg(
        long,
        global = true,
        env = "TRITONTUBE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A file holding the admin token (the web server's
    /// DATA_DIR/admin-token).
    #[arg(long, global = true, conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Log lines (warnings and errors unless RUST_LOG says otherwise) as
    /// human-readable `text` or `json` (one object per line).
    #[arg(long, global = true, value_name = "text|json", env = "TRITONTUBE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// A TOML file setting the flags above by long name (`token-file`,
    /// `json`, `log-format`, `token`); flags given here win over it.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TRITONTUBE_ADMIN_CONFIG"
    )]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the storage nodes, in ring order.
    List {
        /// Admin address of a web server, e.g. localhost:8081.
        server: String,
    },
    /// Add a storage node and migrate the files it now owns.
    Add {
        /// Admin address of a web server.
        server: String,
        /// The new node's address, host:port.
        node: String,
        /// Its weight (share of the ring relative to a node of weight 1).
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
    },
    /// Remove a storage node after moving its files to their new owners.
    Remove {
        /// Admin address of a web server.
        server: String,
        /// The node's address, host:port.
        node: String,
    },
    /// Show every node's health, files, bytes and share of the ring.
    Status {
        /// Admin address of a web server.
        server: String,
    },
    /// Check that every stored file belongs to a video, is on exactly its
    /// owners, and that every copy matches the size and SHA-256 recorded
    /// when it was stored; reports missing, corrupt, surplus, lost,
    /// conflict, orphan and unchecked files separately, with counts, and
    /// exits non-zero if any.
    Verify {
        /// Admin address of a web server.
        server: String,
    },
    /// Fix what verify finds: copy missing files, delete surplus copies,
    /// and remove orphans (files of no video, and their file records) that
    /// are still orphans after a grace period.
    Repair {
        /// Admin address of a web server.
        server: String,
        /// Seconds to wait between finding orphans and re-checking them
        /// before removal, so an upload's write in flight is never taken
        /// for one (0 removes at once).
        #[arg(long, default_value_t = 60, value_name = "N")]
        orphan_grace_secs: u64,
    },
    /// Change a node's weight and migrate accordingly.
    Weight {
        /// Admin address of a web server.
        server: String,
        /// The node's address, host:port.
        node: String,
        /// The new weight.
        weight: f64,
    },
    /// Follow a ring change to its end: the one running now, or one by its
    /// job id (as `status` shows it), whichever web server runs it.
    Watch {
        /// Admin address of a web server.
        server: String,
        /// The change's job id; none: whatever change runs through this
        /// server now.
        job_id: Option<String>,
    },
    /// Cancel a ring change by its job id (as `status` shows it): it stops
    /// copying and rolls back (the copies it made are deleted, the ring
    /// stays as it was). Refused once the change has committed.
    Cancel {
        /// Admin address of a web server (any one of the cluster).
        server: String,
        /// The change's job id.
        job_id: String,
    },
    /// Reach a member at a new address (same node, same directory, same node
    /// id): its place on the ring and its files stay as they are, nothing is
    /// copied. Refused if the node there is not that member.
    Move {
        /// Admin address of a web server.
        server: String,
        /// The member, by the address it joined with (its ring name).
        node: String,
        /// Where it answers now, host:port.
        new_address: String,
    },
}

impl Command {
    /// The web server's admin address every subcommand takes.
    fn server(&self) -> &str {
        match self {
            Command::List { server }
            | Command::Add { server, .. }
            | Command::Remove { server, .. }
            | Command::Status { server }
            | Command::Verify { server }
            | Command::Repair { server, .. }
            | Command::Weight { server, .. }
            | Command::Move { server, .. }
            | Command::Watch { server, .. }
            | Command::Cancel { server, .. } => server,
        }
    }
}

/// The token: given, from its file, or the local deployment's default file.
fn token(cli: &Cli) -> tritontube_core::Result<Option<String>> {
    if let Some(t) = &cli.token {
        return Ok(Some(t.clone()));
    }
    let (path, required) = match &cli.token_file {
        Some(p) => (p.clone(), true),
        None => (std::path::PathBuf::from("data/admin-token"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(tritontube_core::Error::io(&path, e)),
    }
}

async fn run(cli: Cli) -> tritontube_core::Result<()> {
    let client = AdminClient::connect(cli.command.server(), token(&cli)?).await?;
    let json = cli.json;
    let mut reporter = Reporter::new(json);
    match cli.command {
        Command::List { .. } => list(&client, json).await,
        Command::Add { node, weight, .. } => {
            let out = client.add(&node, weight, |p| reporter.update(p)).await;
            reporter.finish();
            print_change(json, "added", &node, out?);
            Ok(())
        }
        Command::Remove { node, .. } => {
            let out = client.remove(&node, |p| reporter.update(p)).await;
            reporter.finish();
            print_change(json, "removed", &node, out?);
            Ok(())
        }
        Command::Move {
            node, new_address, ..
        } => move_node(&client, json, &node, &new_address).await,
        Command::Weight { node, weight, .. } => {
            let out = client
                .set_weight(&node, weight, |p| reporter.update(p))
                .await;
            reporter.finish();
            print_weight(json, &node, weight, out?);
            Ok(())
        }
        Command::Repair {
            orphan_grace_secs, ..
        } => {
            let grace = std::time::Duration::from_secs(orphan_grace_secs);
            let out = client.repair(Some(grace), |p| reporter.update(p)).await;
            reporter.finish();
            print_repair(json, &out?);
            Ok(())
        }
        Command::Status { .. } => {
            let s = client.status().await?;
            if json {
                print_status_json(&s);
            } else {
                print_status_text(&s);
            }
            Ok(())
        }
        Command::Verify { .. } => verify(&client, json).await,
        Command::Watch { job_id, .. } => {
            let out = client
                .watch(job_id.as_deref(), |p| reporter.update(p))
                .await;
            reporter.finish();
            let last = out?;
            match json {
                true => println!(
                    "{}",
                    json!({ "job_id": last.job_id, "message": last.message })
                ),
                false => println!("{}", last.message),
            }
            Ok(())
        }
        Command::Cancel { job_id, .. } => cancel(&client, json, &job_id).await,
    }
}

/// `cancel`: asks a ring change to stop and roll back.
async fn cancel(client: &AdminClient, json: bool, id: &str) -> tritontube_core::Result<()> {
    let job = client.cancel(id).await?;
    if json {
        println!(
            "{}",
            json!({ "job_id": job.job_id, "what": job.what, "cancel_requested": true })
        );
    } else {
        println!(
            "Cancelling ring change {} ({}): it stops and rolls back.",
            job.job_id, job.what
        );
        println!(
            "Follow it with: tritontube-admin watch SERVER {}",
            job.job_id
        );
    }
    Ok(())
}

/// `list`: the nodes in ring order (the course project's lines).
async fn list(client: &AdminClient, json: bool) -> tritontube_core::Result<()> {
    let nodes = client.list().await?;
    if json {
        println!("{}", json!({ "nodes": nodes }));
    } else {
        println!("Storage cluster nodes:");
        for n in nodes {
            println!("  - {n}");
        }
    }
    Ok(())
}

/// What `add` or `remove` did (`verb`: "added" or "removed"), in the
/// course project's lines.
fn print_change(json: bool, verb: &str, node: &str, out: ChangeOutcome) {
    if json {
        println!(
            "{}",
            json!({ verb: node, "migrated_file_count": out.migrated })
        );
    } else {
        println!("Successfully {verb} node: {node}");
        println!("Number of files migrated: {}", out.migrated);
    }
}

/// `weight`'s result.
fn print_weight(json: bool, node: &str, weight: f64, out: ChangeOutcome) {
    if json {
        println!(
            "{}",
            json!({ "node": node, "weight": weight, "migrated_file_count": out.migrated })
        );
    } else {
        println!("Successfully set weight of {node} to {weight}");
        println!("Number of files migrated: {}", out.migrated);
    }
}

/// `move`: a member reached at a new address; nothing is copied.
async fn move_node(
    client: &AdminClient,
    json: bool,
    node: &str,
    new_address: &str,
) -> tritontube_core::Result<()> {
    client.move_node(node, new_address).await?;
    if json {
        println!("{}", json!({ "node": node, "reached_at": new_address }));
    } else {
        println!("Successfully moved node: {node} is now reached at {new_address}");
        println!("Number of files migrated: 0");
    }
    Ok(())
}

/// `repair`'s result.
fn print_repair(json: bool, out: &RepairOutcome) {
    if json {
        println!(
            "{}",
            json!({
                "copies_made": out.copies_made,
                "orphans_removed": out.orphans_removed,
                "orphans_kept": out.orphans_kept,
                "orphans_skipped": out.orphans_skipped,
            })
        );
        return;
    }
    println!("Repair finished; file copies made: {}", out.copies_made);
    println!("Orphans removed: {}", out.orphans_removed);
    if out.orphans_kept > 0 {
        println!(
            "Orphans kept (their video was recorded during the grace period): {}",
            out.orphans_kept
        );
    }
    if out.orphans_skipped > 0 {
        println!(
            "Files skipped (video record unreadable, or a copy not deleted; see the web server's log): {}",
            out.orphans_skipped
        );
    }
}

/// `status --json`: raw numbers.
fn print_status_json(s: &StatusReport) {
    let nodes: Vec<_> = s
        .nodes
        .iter()
        .map(|n| {
            json!({
                "address": n.address, "weight": n.weight, "health": n.health().label(),
                "last_error": n.last_error, "health_since_ms": n.health_since_ms,
                "file_count": n.file_count,
                "total_bytes": n.total_bytes, "ring_share": n.ring_share, "pending": n.pending,
                "node_id": n.node_id, "reached_at": n.reached_at,
                "quarantined": n.quarantined, "indexed_percent": n.indexed_percent,
            })
        })
        .collect();
    println!(
        "{}",
        json!({ "epoch": s.epoch, "replicas": s.replicas, "vnodes": s.vnodes,
                "change_in_progress": s.change_in_progress, "nodes": nodes })
    );
}

/// `status`: a table of the nodes, with notes under each.
fn print_status_text(s: &StatusReport) {
    println!(
        "Epoch {}, {} replicas, {} virtual nodes{}",
        s.epoch,
        s.replicas,
        s.vnodes,
        if s.change_in_progress {
            ", change in progress"
        } else {
            ""
        }
    );
    if let Some(c) = &s.change {
        let how = match c.outcome.as_str() {
            "" if c.cancel_requested => "cancelling".to_string(),
            "" => format!("running on {}", c.holder),
            outcome => outcome.to_string(),
        };
        println!("Ring change {} ({}): {how}", c.job_id, c.what);
    }
    println!(
        "{:<24} {:>6} {:>7} {:>11} {:>11} {:>7}",
        "NODE", "WEIGHT", "HEALTH", "FILES", "SIZE", "SHARE"
    );
    for n in &s.nodes {
        println!(
            "{:<24} {:>6.2} {:>7} {:>11} {:>11} {:>6.1}%{}",
            n.address,
            n.weight,
            n.health().label(),
            HumanCount(n.file_count).to_string(),
            HumanBytes(n.total_bytes).to_string(),
            n.ring_share * 100.0,
            if n.pending { " (pending)" } else { "" }
        );
        print_node_notes(n);
    }
}

/// The lines under a node in `status`: where it is reached, quarantined
/// copies, indexing, how long it has been down, its last error.
fn print_node_notes(n: &NodeStatus) {
    if !n.reached_at.is_empty() {
        println!("    reached at {}", n.reached_at);
    }
    if n.quarantined > 0 {
        println!(
            "    {} bad copies quarantined (repair restores them from good ones)",
            n.quarantined
        );
    }
    if n.indexed_percent < 100.0 {
        println!("    indexing {:.0}%", n.indexed_percent);
    }
    if n.health() != NodeLiveness::Up && n.health_since_ms > 0 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        println!(
            "    {} for {:.1} s",
            n.health().label(),
            (now_ms - n.health_since_ms).max(0) as f64 / 1000.0
        );
    }
    if !n.last_error.is_empty() {
        println!("    last error: {}", n.last_error);
    }
}

/// `verify`: problems counted by kind (missing, corrupt, surplus, lost,
/// conflict, orphan, unchecked) and listed; an error if there are any.
async fn verify(client: &AdminClient, json: bool) -> tritontube_core::Result<()> {
    let v = client.verify().await?;
    let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
    for p in &v.problems {
        *by_kind.entry(p.kind().label()).or_default() += 1;
    }
    if json {
        let problems: Vec<_> = v
            .problems
            .iter()
            .map(|p| json!({ "key": p.key, "kind": p.kind().label(), "node": p.node, "detail": p.detail }))
            .collect();
        println!(
            "{}",
            json!({ "files_checked": v.files_checked, "counts": by_kind, "problems": problems })
        );
    } else {
        println!("Files checked: {}", v.files_checked);
        if v.problems.is_empty() {
            println!("Every file belongs to its video and is on exactly its owners.");
        } else {
            let counts: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
            println!("Problems: {} ({})", v.problems.len(), counts.join(", "));
            for p in &v.problems {
                println!(
                    "  {:<8} {} on {} {}",
                    p.kind().label(),
                    p.key,
                    p.node,
                    p.detail
                );
            }
        }
    }
    if v.problems.is_empty() {
        return Ok(());
    }
    Err(tritontube_core::Error::Refused {
        reason: format!("verify found {} problems (run repair)", v.problems.len()),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let loaded = tritontube_core::config::load_or_exit::<Cli>();
    tritontube_core::shutdown::init_logging_at(loaded.args.log_format, "warn");
    loaded.log_warnings();
    match run(loaded.args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
