//! Helpers for tests that need real components: an etcd server or cluster
//! started on free loopback ports with a temporary data directory, and
//! stopped when dropped (needs the `etcd` binary, Debian package
//! `etcd-server`); and a small real disk to fill ([`on_small_disk`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A command that runs `program` with a fresh tmpfs of `size_bytes` mounted
/// at `dir`, in a private user and mount namespace (`unshare -rm`, from
/// util-linux): a test can fill a real disk to the last byte without
/// touching the machine's disks or needing root. The mount is seen only by
/// that process (and its children) and disappears with it. Add `program`'s
/// arguments to the returned command.
///
/// `None` when this machine does not allow it (no `unshare`, or user
/// namespaces turned off); the test should then say so and stop.
pub fn on_small_disk(
    dir: &std::path::Path,
    size_bytes: u64,
    program: impl AsRef<std::ffi::OsStr>,
) -> Option<Command> {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let allowed = *ALLOWED.get_or_init(|| {
        let Ok(probe) = tempfile::tempdir() else {
            return false;
        };
        Command::new("unshare")
            .args(["-rm", "sh", "-c", MOUNT_THEN_EXEC, "sh", "64k"])
            .arg(probe.path())
            .arg("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !allowed {
        return None;
    }
    let mut c = Command::new("unshare");
    c.args(["-rm", "sh", "-c", MOUNT_THEN_EXEC, "sh"])
        .arg(size_bytes.to_string())
        .arg(dir)
        .arg(program);
    Some(c)
}

/// `sh -c` script of [`on_small_disk`]: `$1` size, `$2` mount point, then
/// the command to run in place of the shell (so its pid is the child's).
const MOUNT_THEN_EXEC: &str = r#"mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@""#;

/// One running etcd member.
#[derive(Debug)]
pub struct EtcdMember {
    child: Option<Child>,
    /// Its client address, `127.0.0.1:port`.
    pub client_addr: String,
    _dir: tempfile::TempDir,
}

impl EtcdMember {
    /// Stops it (kill -9).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running etcd cluster of one or more members.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members.
    pub members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts a single-member etcd.
    pub async fn start() -> Self {
        Self::start_members(1).await
    }

    /// Starts an `n`-member cluster and waits until it answers.
    pub async fn start_members(n: usize) -> Self {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let dir = tempfile::tempdir().expect("temp dir");
            let data: PathBuf = dir.path().join("data");
            let child = Command::new("etcd")
                .arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--listen-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg(format!("tritontube-test-{}", std::process::id()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd (is the etcd-server package installed?)");
            members.push(EtcdMember {
                child: Some(child),
                client_addr: format!("127.0.0.1:{client}"),
                _dir: dir,
            });
        }
        let cluster = EtcdCluster { members };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect(
                [format!("http://{}", cluster.members[0].client_addr)],
                None,
            )
            .await
                && c.put("/health-probe", "1", None).await.is_ok()
            {
                return cluster;
            }
            assert!(Instant::now() < deadline, "etcd did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The client endpoints, comma separated (the `etcd` option's form).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}
