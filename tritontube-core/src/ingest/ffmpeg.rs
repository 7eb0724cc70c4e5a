//! Running ffmpeg and ffprobe so that they never outlive their job or
//! their server: each runs in a process group of its own (a cancelled job
//! kills the whole group), is killed when its handle is dropped, and on
//! Linux gets `SIGKILL` from the kernel when the server process dies, even
//! by `kill -9` (`PR_SET_PDEATHSIG`, set by util-linux's `setpriv`, which
//! then runs the program in its place).

use std::sync::OnceLock;

use tokio::process::{Child, Command};

/// Whether `setpriv --pdeathsig` can be used here.
pub(super) fn has_setpriv() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        cfg!(target_os = "linux")
            && std::process::Command::new("setpriv")
                .args(["--pdeathsig", "KILL", "--", "true"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// A command for `program` (ffmpeg or ffprobe) set up as described in the
/// module docs. Without `setpriv` the program still runs, in its own group
/// and killed with its handle, but a `kill -9` of the server leaves it to
/// finish on its own.
pub fn command(program: &str) -> Command {
    let mut cmd = if has_setpriv() {
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--", program]);
        c
    } else {
        Command::new(program)
    };
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    #[cfg(unix)]
    cmd.process_group(0);
    cmd
}

/// Kills `child`'s whole process group (ffmpeg and anything it started).
pub fn kill_group(child: &Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id()
        && let Ok(pid) = i32::try_from(pid)
    {
        // A group that is already gone is fine.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
