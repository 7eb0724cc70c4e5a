//! Assembling a web server from its command-line choices: metadata store,
//! content store (a local directory, or a cluster of storage nodes with the
//! admin service and migration engine), ingest, and the HTTP site.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cluster::{
    ClusterManager, HealConfig, HealthConfig, HealthTracker, ManagerConfig, run_healer,
};
use crate::cluster::{NetworkContentStore, Placement};
use crate::error::{Error, Result};
use crate::id::NodeAddr;
use crate::ingest::{Ingest, IngestConfig};
use crate::metadata::{self, MetadataStore, NodeEntry};
use crate::node::NodeClientConfig;
use crate::store::{ContentStore, LocalContentStore};
use crate::web::{self, App};

/// Everything `tritontube-web` can be told.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Host to listen on.
    pub host: String,
    /// HTTP port.
    pub port: u16,
    /// `("sqlite", path)` or `("etcd", endpoints)`; `None` = SQLite under
    /// `data_dir`.
    pub metadata: Option<(String, String)>,
    /// `("fs", dir)` or `("nw", "adminAddr,node,node...")`; `None` = a
    /// directory under `data_dir`.
    pub content: Option<(String, String)>,
    /// Where the embedded default keeps its files.
    pub data_dir: PathBuf,
    /// Copies of every file (network content).
    pub replicas: u32,
    /// Virtual nodes per storage node (1 = the course project's placement).
    pub vnodes: u32,
    /// Largest upload, bytes.
    pub max_upload_bytes: u64,
    /// Transcodes at once.
    pub workers: usize,
    /// Shared secret for the admin services and destructive HTTP actions;
    /// `None` = the one kept in `data_dir/admin-token` (made on first start).
    pub admin_token: Option<String>,
    /// dash.js and the favicon (`tritontube-web` builds dash.js in; see
    /// [`web::Assets`]).
    pub assets: web::Assets,
    /// Failure detection of storage nodes (network content).
    pub health: HealthConfig,
    /// Hand-back and automatic re-replication (network content).
    pub heal: HealConfig,
    /// The in-memory cache of small content files.
    pub cache: web::cache::CacheConfig,
    /// Timeouts and caps on connections and uploads.
    pub limits: web::ServeLimits,
    /// How long an upload job's lease lasts: how soon another web server
    /// (or this one, restarted) takes over the work of one that stopped.
    pub job_lease: std::time::Duration,
}

/// Runs the web server (and, with network content, the admin service) until
/// `shutdown` is cancelled.
pub async fn run(opts: WebOptions, shutdown: CancellationToken) -> Result<()> {
    let meta: Arc<dyn MetadataStore> = match &opts.metadata {
        Some((kind, option)) => metadata::open(kind, option).await?,
        None => {
            std::fs::create_dir_all(&opts.data_dir).map_err(|e| Error::io(&opts.data_dir, e))?;
            metadata::open(
                "sqlite",
                &opts.data_dir.join("metadata.db").display().to_string(),
            )
            .await?
        }
    };
    // The secret for the admin services and destructive HTTP actions: as
    // given (flag, environment or file), else kept in the data directory,
    // made on first start.
    let admin_token: Arc<str> = match &opts.admin_token {
        Some(t) => Arc::from(t.as_str()),
        None => {
            let path = opts.data_dir.join("admin-token");
            let t = crate::admin::load_or_create_token(&path)?;
            tracing::info!(path = %path.display(), "admin token (give it to tritontube-admin with --token-file)");
            Arc::from(t)
        }
    };
    // This server's id: its name in job leases and in acknowledgements of
    // the cluster state. Kept in the data directory, so a restarted server
    // is the same server and takes its own unfinished work over at once.
    let server_id = crate::admin::load_or_create_token(&opts.data_dir.join("server-id"))?;
    let server_id = format!("web-{}", &server_id[..server_id.len().min(16)]);
    let mut tasks = Vec::new();
    let mut health = None;
    let mut cluster = None;
    let content: Arc<dyn ContentStore> = match &opts.content {
        None => Arc::new(LocalContentStore::new(opts.data_dir.join("content"))?),
        Some((kind, option)) if kind == "fs" => Arc::new(LocalContentStore::new(option)?),
        Some((kind, option)) if kind == "nw" => {
            let mut parts = option.split(',').map(str::trim).filter(|s| !s.is_empty());
            let admin_addr = parts
                .next()
                .ok_or_else(|| {
                    Error::invalid("nw option", option, "expected \"adminAddr,node,node...\"")
                })?
                .to_string();
            let nodes: Vec<NodeEntry> = parts
                .map(|a| {
                    NodeAddr::new(a).map(|addr| NodeEntry {
                        addr,
                        weight: 1.0,
                        id: String::new(),
                        reach: None,
                    })
                })
                .collect::<Result<_>>()?;
            let tracker = Arc::new(HealthTracker::new(opts.health.clone()));
            let network = Arc::new(NetworkContentStore::new(
                Placement {
                    current: crate::ring::TokenRing::new(opts.vnodes),
                    pending: None,
                    replicas: opts.replicas as usize,
                    epoch: 0,
                    reach: Default::default(),
                },
                NodeClientConfig::default(),
                tracker.clone(),
            ));
            let manager = ClusterManager::new(
                meta.clone(),
                network.clone(),
                ManagerConfig {
                    holder: server_id.clone(),
                    ..ManagerConfig::default()
                },
            )
            .with_health_tracker(tracker.clone());
            let state = manager
                .bootstrap(&nodes, opts.replicas, opts.vnodes)
                .await?;
            tracing::info!(
                nodes = state.nodes.len(),
                replicas = state.replicas,
                vnodes = state.vnodes,
                epoch = state.epoch,
                "cluster state"
            );
            // Finish or roll back a ring change a crash interrupted.
            {
                let m = manager.clone();
                tasks.push(tokio::spawn(async move {
                    match m.recover().await {
                        Ok(true) => tracing::info!("interrupted ring change recovered"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "recovering an interrupted ring change failed"),
                    }
                    // Files stored before checksums were recorded get theirs
                    // now, once, wherever all their copies agree.
                    match m.record_unrecorded().await {
                        Ok(Some(n)) => tracing::info!(files = n, "checksums recorded for files stored before records existed"),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "recording older files' checksums failed; the next start retries"),
                    }
                }));
            }
            // Follow ring changes made through other web servers.
            {
                let m = manager.clone();
                let s = shutdown.clone();
                tasks.push(tokio::spawn(
                    async move { m.follow(s.cancelled_owned()).await },
                ));
            }
            // Health checks of every member.
            {
                let n = network.clone();
                let s = shutdown.clone();
                let t = tracker.clone();
                tasks.push(tokio::spawn(async move {
                    let members = n.clone();
                    t.run(
                        n,
                        move || members.placement().all_nodes(),
                        s.cancelled_owned(),
                    )
                    .await
                }));
            }
            // Hand copies back when nodes return; re-replicate around nodes
            // down too long.
            {
                let (m, t, c, s) = (
                    manager.clone(),
                    tracker.clone(),
                    opts.heal.clone(),
                    shutdown.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    run_healer(m, t, c, s.cancelled_owned()).await
                }));
            }
            let listener = tokio::net::TcpListener::bind(&admin_addr)
                .await
                .map_err(|e| Error::io(format!("admin address {admin_addr}"), e))?;
            tracing::info!(addr = %admin_addr, "admin service listening");
            let access = crate::admin::AdminAccess::for_listener(
                admin_token.to_string(),
                listener
                    .local_addr()
                    .map_err(|e| Error::io(format!("admin address {admin_addr}"), e))?,
            );
            if !access.course_open {
                tracing::info!(
                    "the admin service is not on loopback: both admin protocols need the token"
                );
            }
            let s = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    crate::admin::serve(listener, manager, access, s.cancelled_owned()).await
                {
                    tracing::error!(error = %e, "admin service failed");
                }
            }));
            health = Some(tracker);
            cluster = Some(network.clone());
            network
        }
        Some((kind, _)) => {
            return Err(Error::invalid(
                "content kind",
                kind.clone(),
                "expected `fs <dir>` or `nw \"adminAddr,node,...\"`",
            ));
        }
    };
    let ingest = Ingest::start(
        meta.clone(),
        content.clone(),
        IngestConfig {
            max_upload_bytes: opts.max_upload_bytes,
            workers: opts.workers.max(1),
            data_dir: Some(opts.data_dir.join("ingest")),
            server_id: Some(server_id.clone()),
            lease: opts.job_lease,
            ..IngestConfig::default()
        },
    )?;
    let app = App {
        meta,
        content,
        ingest,
        metrics: Default::default(),
        assets: Arc::new(opts.assets.clone()),
        health,
        network: cluster,
        cache: Arc::new(web::cache::ContentCache::new(opts.cache.clone())),
        admin_token: Some(admin_token),
        uploads: Default::default(),
    };
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::io(format!("HTTP address {addr}"), e))?;
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?local, "web server listening");
    web::serve(
        listener,
        app,
        opts.limits.clone(),
        shutdown.clone().cancelled_owned(),
    )
    .await;
    shutdown.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    Ok(())
}
