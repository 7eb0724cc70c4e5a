//! A ring change's progress as the admin service streams it: a spinner while
//! the change is planned (no totals yet), then a bar of bytes copied with
//! the transfer rate and the files done; plain lines, one per phase, when
//! standard error is not a terminal. Messages from the server are printed
//! once each.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressStyle};
use tritontube_core::proto::cluster::{ChangePhase, ChangeProgress};

/// What one progress message calls for.
#[derive(Debug, Clone, PartialEq)]
enum View {
    /// Nothing to measure yet (planning, or a phase with no files to copy):
    /// a spinner and a sentence.
    Waiting(String),
    /// Copies planned: `done` of `total`, in bytes (or in files when the
    /// server reports no byte counts), and the files.
    Bar {
        bytes: bool,
        done: u64,
        total: u64,
        files: String,
    },
}

impl View {
    fn of(p: &ChangeProgress) -> View {
        let copied = || {
            if p.files_done == 0 {
                String::new()
            } else {
                format!(
                    "{} files ({}) copied; ",
                    HumanCount(p.files_done),
                    HumanBytes(p.bytes_done)
                )
            }
        };
        match p.phase() {
            ChangePhase::Planning if p.files_total == 0 => {
                return View::Waiting("finding the files that move…".into());
            }
            ChangePhase::Copying if p.files_total == 0 => {
                return View::Waiting("no files to copy so far; still planning…".into());
            }
            ChangePhase::Planning | ChangePhase::Copying => {}
            ChangePhase::Committing => {
                return View::Waiting(format!("{}writing the new membership…", copied()));
            }
            ChangePhase::Cleaning => {
                return View::Waiting(format!("{}deleting copies no longer owned…", copied()));
            }
            ChangePhase::Done => return View::Waiting(format!("{}done", copied())),
            other => return View::Waiting(format!("{}…", other.label())),
        }
        let files = format!(
            "{}/{} files",
            HumanCount(p.files_done),
            HumanCount(p.files_total)
        );
        if p.bytes_total > 0 {
            View::Bar {
                bytes: true,
                done: p.bytes_done.min(p.bytes_total),
                total: p.bytes_total,
                files,
            }
        } else {
            View::Bar {
                bytes: false,
                done: p.files_done.min(p.files_total),
                total: p.files_total,
                files,
            }
        }
    }
}

/// One line for a log: the phase and, once known, files and bytes.
fn line(p: &ChangeProgress) -> String {
    match View::of(p) {
        View::Waiting(what) => format!("{}: {what}", p.phase().label()),
        View::Bar { files, .. } => format!(
            "{}: {files}, {} of {}",
            p.phase().label(),
            HumanBytes(p.bytes_done),
            HumanBytes(p.bytes_total)
        ),
    }
}

/// Shows a change's progress on standard error.
pub struct Reporter {
    bar: Option<ProgressBar>,
    quiet: bool,
    last_phase: ChangePhase,
    last_message: String,
    showing_bar: bool,
}

impl Reporter {
    /// A reporter; `quiet` shows nothing (JSON output).
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(waiting_style());
            b.set_prefix("starting");
            b.set_message("asking the admin service…");
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Reporter {
            bar,
            quiet,
            last_phase: ChangePhase::Unspecified,
            last_message: String::new(),
            showing_bar: false,
        }
    }

    /// Shows one progress message.
    pub fn update(&mut self, p: &ChangeProgress) {
        if let Some(b) = &self.bar {
            b.set_prefix(p.phase().label());
            match View::of(p) {
                View::Waiting(what) => {
                    b.set_message(what);
                    if self.showing_bar {
                        b.set_style(waiting_style());
                        self.showing_bar = false;
                    }
                }
                View::Bar {
                    bytes,
                    done,
                    total,
                    files,
                } => {
                    b.set_message(files);
                    b.set_length(total);
                    b.set_position(done);
                    if !self.showing_bar {
                        b.set_style(bar_style(bytes));
                        self.showing_bar = true;
                    }
                }
            }
        } else if !self.quiet && p.phase() != self.last_phase && p.phase() != ChangePhase::Done {
            eprintln!("{}", line(p));
        }
        // What the server says along the way (orphans found, say), once,
        // above the bar.
        if !self.quiet && !p.message.is_empty() && p.message != self.last_message {
            match &self.bar {
                Some(b) => b.println(&p.message),
                None => eprintln!("{}", p.message),
            }
        }
        self.last_phase = p.phase();
        self.last_message.clone_from(&p.message);
    }

    /// Takes the bar off the screen.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// While nothing can be measured.
const WAITING: &str = "{spinner:.cyan} {prefix:>10} {msg} [{elapsed}]";
/// Copying, measured in bytes (binary units: KiB, MiB, GiB, and per second);
/// the bar takes what the terminal's width leaves.
const BYTES_BAR: &str = "{spinner:.cyan} {prefix:>10} [{wide_bar:.cyan/blue}] \
    {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} · {msg} · {eta} left";
/// Copying, measured in files (a server that reports no byte counts).
const FILES_BAR: &str = "{spinner:.cyan} {prefix:>10} [{wide_bar:.cyan/blue}] {msg} · {eta} left";

fn waiting_style() -> ProgressStyle {
    ProgressStyle::with_template(WAITING).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style(bytes: bool) -> ProgressStyle {
    ProgressStyle::with_template(if bytes { BYTES_BAR } else { FILES_BAR })
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(phase: &str, files: (u64, u64), bytes: (u64, u64)) -> ChangeProgress {
        let phase = ChangePhase::from_str_name(&format!("CHANGE_PHASE_{}", phase.to_uppercase()))
            .expect("a phase");
        ChangeProgress {
            phase: phase.into(),
            files_done: files.0,
            files_total: files.1,
            bytes_done: bytes.0,
            bytes_total: bytes.1,
            ..Default::default()
        }
    }

    #[test]
    fn planning_without_totals_is_a_spinner_not_a_full_bar() {
        let p = progress("planning", (0, 0), (0, 0));
        assert!(matches!(View::of(&p), View::Waiting(_)));
        let l = line(&p);
        assert!(!l.contains("0/0"), "{l}");
        assert!(l.starts_with("planning: "), "{l}");
    }

    #[test]
    fn copying_is_measured_in_bytes_with_the_files_beside() {
        let p = progress("copying", (3, 40), (5 * 1024 * 1024, 40 * 1024 * 1024));
        assert_eq!(
            View::of(&p),
            View::Bar {
                bytes: true,
                done: 5 * 1024 * 1024,
                total: 40 * 1024 * 1024,
                files: "3/40 files".into()
            }
        );
        assert_eq!(line(&p), "copying: 3/40 files, 5.00 MiB of 40.00 MiB");
    }

    #[test]
    fn after_copying_the_phase_says_what_was_copied() {
        let p = progress("cleaning", (40, 40), (3 << 30, 3 << 30));
        assert_eq!(
            line(&p),
            "cleaning: 40 files (3.00 GiB) copied; deleting copies no longer owned…"
        );
        let p = progress("committing", (0, 0), (0, 0));
        assert_eq!(line(&p), "committing: writing the new membership…");
    }

    #[test]
    fn without_byte_counts_the_bar_counts_files() {
        let p = progress("copying", (1_500, 2_000), (0, 0));
        assert_eq!(
            View::of(&p),
            View::Bar {
                bytes: false,
                done: 1_500,
                total: 2_000,
                files: "1,500/2,000 files".into()
            }
        );
    }

    #[test]
    fn every_template_parses() {
        // A typo would silently fall back to indicatif's bare default.
        for t in [WAITING, BYTES_BAR, FILES_BAR] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
        assert!(BYTES_BAR.contains("{binary_bytes_per_sec}"));
    }
}
