//! Assembling a web server from its options: metadata store, content store
//! (a local directory, or a cluster of storage nodes with the admin service
//! and migration engine), ingest, and the HTTP site.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    ClusterManager, HealConfig, HealthConfig, HealthTracker, ManagerConfig, run_healer,
};
use crate::cluster::{NetworkContentStore, Placement};
use crate::config::{ContentConfig, MetadataConfig, WebArgs};
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
    /// The metadata store ([`MetadataConfig::embedded`]: SQLite in
    /// `data_dir`).
    pub metadata: MetadataConfig,
    /// The content store ([`ContentConfig::embedded`]: a directory in
    /// `data_dir`).
    pub content: ContentConfig,
    /// Where this server keeps its admin token (unless given), its server
    /// id and its upload spool; the embedded default stores live here too.
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
    pub job_lease: Duration,
    /// How long a resumable (tus) upload is kept unfinished after its
    /// creation or its last PATCH.
    pub tus_expiry: Duration,
    /// Whether anyone may upload without signing in.
    pub public_uploads: bool,
}

impl WebOptions {
    /// The options a `tritontube-web` command line (merged with its config
    /// file) asks for. `embedded` is the dash.js built into the binary,
    /// served unless `--assets` names a directory.
    pub fn from_args(args: WebArgs, embedded: web::Assets) -> Result<WebOptions> {
        let (metadata, content) = args.stores()?;
        let admin_token = args.admin_token()?;
        let assets = args.assets.unwrap_or(embedded);
        Ok(WebOptions {
            host: args.host,
            port: args.port,
            metadata,
            content,
            data_dir: args.data_dir,
            replicas: args.replicas,
            vnodes: args.vnodes,
            max_upload_bytes: args.max_upload_mb.saturating_mul(1024 * 1024),
            workers: args.workers as usize,
            admin_token,
            assets,
            health: HealthConfig {
                interval: args.health_interval,
                timeout: args.health_timeout,
                ..HealthConfig::default()
            },
            cache: web::cache::CacheConfig {
                capacity_bytes: args.cache_mb.saturating_mul(1024 * 1024),
                ..web::cache::CacheConfig::default()
            },
            heal: HealConfig {
                rereplicate_after: (!args.no_rereplicate).then_some(args.rereplicate_after),
                ..HealConfig::default()
            },
            limits: web::ServeLimits {
                header_timeout: args.header_timeout_secs,
                idle_timeout: args.idle_timeout_secs,
                max_connections: args.max_connections as usize,
                max_uploads: args.max_uploads as usize,
                max_uploads_per_client: args.max_uploads_per_client as usize,
            },
            job_lease: args.job_lease_secs,
            tus_expiry: args.tus_expiry_hours,
            public_uploads: args.public_uploads,
        })
    }
}

/// Background work of the server, awaited (briefly) on shutdown.
type Tasks = Vec<JoinHandle<()>>;

/// Runs the web server (and, with network content, the admin service) until
/// `shutdown` is cancelled.
pub async fn run(opts: WebOptions, shutdown: CancellationToken) -> Result<()> {
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| Error::io(&opts.data_dir, e))?;
    let meta = metadata::open(opts.metadata.kind(), &opts.metadata.option()).await?;
    let admin_token = admin_token(&opts)?;
    first_start_owner(&*meta).await?;
    let server_id = server_id(&opts)?;
    let mut tasks = Tasks::new();
    let (content, health, network): (Arc<dyn ContentStore>, _, _) = match &opts.content {
        ContentConfig::Local { dir } => (Arc::new(LocalContentStore::new(dir)?), None, None),
        ContentConfig::Network { admin, nodes } => {
            let cluster = Cluster {
                opts: &opts,
                meta: meta.clone(),
                server_id: &server_id,
                shutdown: &shutdown,
            };
            let (network, tracker, manager) = cluster.open(nodes).await?;
            tasks.extend(cluster.background(&manager, &network, &tracker));
            tasks.push(serve_admin(admin, manager, &admin_token, &shutdown).await?);
            (network.clone(), Some(tracker), Some(network))
        }
    };
    let ingest = Ingest::start(
        meta.clone(),
        content.clone(),
        IngestConfig {
            max_upload_bytes: opts.max_upload_bytes,
            workers: opts.workers.max(1),
            data_dir: Some(opts.data_dir.join("ingest")),
            server_id: Some(server_id),
            lease: opts.job_lease,
            shutdown: shutdown.clone(),
            ..IngestConfig::default()
        },
    )?;
    let tus = Arc::new(web::tus::TusStore::open(
        &opts.data_dir.join("tus"),
        opts.tus_expiry,
    )?);
    tasks.push(tokio::spawn(web::tus::sweep(
        tus.clone(),
        shutdown.clone().cancelled_owned(),
    )));
    let app = App {
        meta,
        content,
        ingest,
        metrics: Default::default(),
        assets: Arc::new(opts.assets.clone()),
        health,
        network,
        cache: Arc::new(web::cache::ContentCache::new(opts.cache.clone())),
        admin_token: Some(admin_token),
        uploads: Default::default(),
        tus: Some(tus),
        accounts: Arc::new(web::auth::Accounts::new(opts.public_uploads)),
    };
    let ingest = app.ingest.clone();
    serve_http(&opts, app, &shutdown).await?;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), ingest.stopped()).await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

/// On a store with no accounts yet, makes the owner's account and prints
/// its one-time password, once, to stderr (not to the structured log,
/// which may be shipped elsewhere).
async fn first_start_owner(meta: &dyn MetadataStore) -> Result<()> {
    if let Some(password) = web::auth::ensure_owner(meta).await? {
        eprintln!(
            "tritontube-web: created the account \"{}\" with the one-time password: {password}\n\
             tritontube-web: sign in at /signin, then change it with `tritontube-web user passwd {}`",
            web::auth::OWNER_NAME,
            web::auth::OWNER_NAME,
        );
        tracing::warn!(
            user = web::auth::OWNER_NAME,
            "first start: created the owner account; its password was printed to stderr once"
        );
    }
    Ok(())
}

/// The secret for the admin services and destructive HTTP actions: as
/// given (flag, environment or file), else kept in the data directory,
/// made on first start.
fn admin_token(opts: &WebOptions) -> Result<Arc<str>> {
    if let Some(t) = &opts.admin_token {
        return Ok(Arc::from(t.as_str()));
    }
    let path = opts.data_dir.join("admin-token");
    let t = crate::admin::load_or_create_token(&path)?;
    tracing::info!(path = %path.display(), "admin token (give it to tritontube-admin with --token-file)");
    Ok(Arc::from(t))
}

/// This server's id: its name in job leases and in acknowledgements of
/// the cluster state. Kept in the data directory, so a restarted server
/// is the same server and takes its own unfinished work over at once.
fn server_id(opts: &WebOptions) -> Result<String> {
    let id = crate::admin::load_or_create_token(&opts.data_dir.join("server-id"))?;
    Ok(format!("web-{}", &id[..id.len().min(16)]))
}

/// What starting network content needs.
struct Cluster<'a> {
    opts: &'a WebOptions,
    meta: Arc<dyn MetadataStore>,
    server_id: &'a str,
    shutdown: &'a CancellationToken,
}

impl Cluster<'_> {
    /// The network store over the cluster state in the metadata store
    /// (created from `nodes` if there is none yet), its failure detector,
    /// and the manager of ring changes.
    async fn open(
        &self,
        nodes: &[NodeAddr],
    ) -> Result<(Arc<NetworkContentStore>, Arc<HealthTracker>, ClusterManager)> {
        let opts = self.opts;
        let nodes: Vec<NodeEntry> = nodes
            .iter()
            .map(|addr| NodeEntry {
                addr: addr.clone(),
                weight: 1.0,
                id: String::new(),
                reach: None,
            })
            .collect();
        let tracker = Arc::new(HealthTracker::new(opts.health.clone()));
        let network = Arc::new(NetworkContentStore::new(
            Placement {
                current: crate::layout::Ring::empty(opts.vnodes),
                pending: None,
                replicas: opts.replicas as usize,
                epoch: 0,
                reach: Default::default(),
            },
            NodeClientConfig::default(),
            tracker.clone(),
        ));
        let manager = ClusterManager::new(
            self.meta.clone(),
            network.clone(),
            ManagerConfig {
                holder: self.server_id.to_string(),
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
        Ok((network, tracker, manager))
    }

    /// The cluster's background work: recovery of an interrupted ring
    /// change, following changes made elsewhere, health checks, healing.
    fn background(
        &self,
        manager: &ClusterManager,
        network: &Arc<NetworkContentStore>,
        tracker: &Arc<HealthTracker>,
    ) -> Tasks {
        let stop = || self.shutdown.clone().cancelled_owned();
        let m = manager.clone();
        let recover = tokio::spawn(async move {
            // Finish or roll back a ring change a crash interrupted.
            match m.recover().await {
                Ok(true) => tracing::info!("interrupted ring change recovered"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "recovering an interrupted ring change failed")
                }
            }
            // Files stored before checksums were recorded get theirs now,
            // once, wherever all their copies agree.
            match m.record_unrecorded().await {
                Ok(Some(n)) => tracing::info!(
                    files = n,
                    "checksums recorded for files stored before records existed"
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "recording older files' checksums failed; the next start retries")
                }
            }
        });
        // Follow ring changes made through other web servers.
        let (m, s) = (manager.clone(), stop());
        let follow = tokio::spawn(async move { m.follow(s).await });
        // Health checks of every member.
        let (n, members) = (network.clone(), network.clone());
        let health = tokio::spawn(tracker.clone().run(
            n,
            move || members.placement().all_nodes(),
            stop(),
        ));
        // Hand copies back when nodes return; re-replicate around nodes
        // down too long.
        let heal = tokio::spawn(run_healer(
            manager.clone(),
            tracker.clone(),
            self.opts.heal.clone(),
            stop(),
        ));
        vec![recover, follow, health, heal]
    }
}

/// Binds the admin service's address and serves it in the background.
async fn serve_admin(
    addr: &NodeAddr,
    manager: ClusterManager,
    admin_token: &str,
    shutdown: &CancellationToken,
) -> Result<JoinHandle<()>> {
    let context = || format!("admin address {addr}");
    let listener = tokio::net::TcpListener::bind(addr.as_str())
        .await
        .map_err(|e| Error::io(context(), e))?;
    tracing::info!(addr = %addr, "admin service listening");
    let local = listener.local_addr().map_err(|e| Error::io(context(), e))?;
    let access = crate::admin::AdminAccess::for_listener(admin_token.to_string(), local);
    if !access.course_open {
        tracing::info!("the admin service is not on loopback: both admin protocols need the token");
    }
    let stop = shutdown.clone().cancelled_owned();
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::admin::serve(listener, manager, access, stop).await {
            tracing::error!(error = %e, "admin service failed");
        }
    }))
}

/// Binds the HTTP address and serves the site until `shutdown`.
async fn serve_http(opts: &WebOptions, app: App, shutdown: &CancellationToken) -> Result<()> {
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
    Ok(())
}

/// Runs a `tritontube-web user ...` command against its metadata store and
/// returns what to print. `password` is asked for each password needed,
/// with a prompt naming whose; it reads it from stdin or the terminal.
pub async fn user_command(
    args: crate::config::UserArgs,
    password: impl FnOnce(&str) -> Result<String>,
) -> Result<String> {
    use crate::config::UserCommand;
    use crate::metadata::Role;
    let config = args.metadata()?;
    let meta = metadata::open(config.kind(), &config.option()).await?;
    match args.command {
        UserCommand::Add { name, admin } => {
            crate::metadata::validate_user_name(&name)?;
            if meta.user(&name).await?.is_some() {
                return Err(Error::AlreadyExists {
                    key: format!("user {name}"),
                });
            }
            let role = if admin { Role::Admin } else { Role::User };
            let pw = password(&format!("Password for the new account {name}: "))?;
            let user = web::auth::new_user(&name, role, &pw).await?;
            meta.create_user(&user).await?;
            Ok(format!("Created the account {name} ({})", role.name()))
        }
        UserCommand::Passwd { name } => {
            if meta.user(&name).await?.is_none() {
                return Err(Error::not_found(format!("user {name}")));
            }
            let pw = password(&format!("New password for {name}: "))?;
            let hash = web::auth::hash_password(&pw).await?;
            meta.set_user_password(&name, &hash).await?;
            Ok(format!("Changed the password of {name}"))
        }
        UserCommand::List => {
            let users = meta.list_users().await?;
            let mut out = format!("{:<24} {:<6} created", "name", "role");
            for u in users {
                let created =
                    std::time::UNIX_EPOCH + Duration::from_millis(u.created_ms.max(0) as u64);
                out.push_str(&format!(
                    "\n{:<24} {:<6} {}",
                    u.name,
                    u.role.name(),
                    humantime::format_rfc3339_seconds(created)
                ));
            }
            Ok(out)
        }
    }
}
