//! Bootstrap etcd exactly once per cluster.
//!
//! Talos guards Bootstrap per node only: sent to a second control plane whose
//! etcd has not joined yet, it starts a second etcd cluster. So kiln decides on
//! one node, writes that decision to the store *before* the first call, and
//! from then on only ever calls that node, across restarts and crashes.
//! FailedPrecondition (not available yet / time not in sync) and transport
//! errors are retried with backoff; AlreadyExists from the recorded node means
//! a previous call succeeded.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;

use super::error::BrainError;
use super::{now, Provisioner, Record, State};
use crate::model::inventory::Role;
use crate::model::mac::Mac;
use crate::store::clusters::{ClusterRecord, Node};
use crate::talos::client::{self, Credentials};
use crate::talos::proto::machine::BootstrapRequest;

/// The cluster's record. An unreadable one is an error, never "not
/// bootstrapped yet" (that would mean a second Bootstrap).
pub(crate) fn cluster_record(
    p: &Provisioner,
    name: &str,
) -> Result<ClusterRecord, crate::store::StoreError> {
    p.store.clusters().get(name)
}

pub(crate) fn cluster_views(p: &Provisioner) -> Vec<ClusterRecord> {
    p.cfg
        .clusters
        .keys()
        .filter_map(|n| match cluster_record(p, n) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(cluster = %n, "{e}");
                None
            }
        })
        .collect()
}

fn update(
    p: &Provisioner,
    name: &str,
    f: impl FnMut(&mut ClusterRecord),
) -> Result<ClusterRecord, BrainError> {
    Ok(p.store.clusters().update(name, f)?)
}

/// [`update`] off the async workers (a durable write).
async fn update_async(
    p: &Arc<Provisioner>,
    name: &str,
    f: impl FnMut(&mut ClusterRecord) + Send + 'static,
) -> Result<ClusterRecord, BrainError> {
    let (p, name) = (p.clone(), name.to_string());
    crate::store::blocking(move || update(&p, &name, f)).await
}

/// Drives bootstrap for every cluster; one driver task per cluster at a time.
pub(crate) struct Bootstrapper {
    p: Arc<Provisioner>,
    running: Mutex<HashMap<String, ()>>,
}

impl Bootstrapper {
    pub(crate) fn new(p: Arc<Provisioner>) -> Arc<Bootstrapper> {
        Arc::new(Bootstrapper {
            p,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// The cluster of a control-plane machine, if it is one.
    fn cp_cluster(&self, mac: &Mac) -> Option<String> {
        let inv = self.p.inventory();
        let m = inv.machine(mac)?;
        let prof = inv.profile(&m.profile)?;
        (prof.role == Role::Controlplane)
            .then(|| prof.cluster.clone())
            .flatten()
    }

    /// A machine's lifecycle moved: a control plane whose Talos runs may be the
    /// one to bootstrap its cluster.
    pub(crate) fn on_change(self: &Arc<Self>, rec: Record) {
        if rec.state < State::Running {
            return;
        }
        let (Some(cluster), Some(ip)) = (self.cp_cluster(&rec.mac), rec.ip) else {
            return;
        };
        if !self
            .p
            .cfg
            .clusters
            .get(&cluster)
            .is_some_and(|c| c.auto_bootstrap)
        {
            return;
        }
        let candidate = Node {
            mac: rec.mac,
            hostname: rec.hostname.clone(),
            ip,
        };
        self.start(cluster, Some(candidate));
    }

    /// Resume clusters whose bootstrap was decided but not confirmed (after a restart).
    pub(crate) fn resume(self: &Arc<Self>) {
        for name in self.p.cfg.clusters.keys() {
            let r = match cluster_record(&self.p, name) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(cluster = %name, "bootstrap: not resumed: {e}");
                    continue;
                }
            };
            let running = self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(name);
            if r.bootstrap_node.is_some() && r.bootstrapped_at.is_none() && !running {
                tracing::info!(cluster = %name, "bootstrap: resuming with the recorded node");
                self.start(name.clone(), None);
            }
        }
    }

    /// With peers on a shared store: look again every few seconds, so a
    /// bootstrap a dead peer decided is taken over even when no control
    /// plane's events reach this daemon (they go to the dead one's sink).
    pub(crate) fn keep_resuming(self: &Arc<Self>) {
        if self.p.store.peers().is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if me.p.store.fenced().is_some() {
                    continue;
                }
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.resume()).await;
            }
        });
    }

    /// Start (or join) the driver for `cluster`. `candidate` is only used when no
    /// node has been decided yet.
    pub(crate) fn start(self: &Arc<Self>, cluster: String, candidate: Option<Node>) {
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.contains_key(&cluster) {
                return;
            }
            running.insert(cluster.clone(), ());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let r = me.drive(&cluster, candidate).await;
            if let Err(e) = r {
                tracing::error!(cluster = %cluster, "bootstrap: {e}");
            }
            me.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&cluster);
        });
    }

    /// Decide (durably) and call, until the recorded node confirms. No node is
    /// recorded, and none is called, before it proves it is the cluster's
    /// machine kiln thinks it is (talos::proof).
    pub(crate) async fn drive(
        &self,
        cluster: &str,
        candidate: Option<Node>,
    ) -> Result<(), BrainError> {
        let bundle = self
            .p
            .secrets
            .get(cluster)
            .ok_or_else(|| format!("no secrets for cluster {cluster}"))?;
        let creds =
            Credentials::admin(bundle).map_err(|e| BrainError::Credentials(e.to_string()))?;
        let port = self.p.cfg.ports.talos_api;
        let cur = cluster_record(&self.p, cluster)?;
        if cur.bootstrapped_at.is_some() {
            return Ok(());
        }
        if cur.bootstrap_node.is_none() {
            let Some(c) = candidate.clone() else {
                return Ok(());
            };
            // Proven before it is recorded: an impostor never becomes the target.
            if let Err(e) = prove_until(&c, port, &creds, 5, "", || true).await {
                return Err(
                    format!("{} was not recorded as the bootstrap node: {e}", c.hostname).into(),
                );
            }
        }
        let cand = candidate.clone();
        let me = self.p.store.peers().map(|(_, me)| me);
        let by = me.clone();
        let rec = update_async(&self.p, cluster, move |r| {
            if r.bootstrap_node.is_none() && r.bootstrapped_at.is_none() {
                if let Some(c) = cand.clone() {
                    r.bootstrap_node = Some(c);
                    r.decided_at = Some(now());
                    r.proved_at = Some(now());
                    r.bootstrap_by = by.clone();
                }
            }
        })
        .await?;
        if rec.bootstrapped_at.is_some() {
            return Ok(());
        }
        let Some(node) = rec.bootstrap_node.clone() else {
            return Ok(());
        };
        if let Some(me) = me {
            if !self.mine_to_call(cluster, &node, &me).await? {
                return Ok(());
            }
        }
        if candidate.as_ref().is_some_and(|c| c.mac == node.mac) && rec.attempts == 0 {
            tracing::info!(cluster, hostname = %node.hostname, ip = %node.ip, "bootstrap: decided on this node (proved and recorded before the first call)");
            self.p.timeline.note(
                node.mac,
                "bootstrap",
                format!("chosen as cluster {cluster}'s bootstrap node (its Talos API proved it)"),
            );
        }
        // A node recorded earlier (before a restart) proves itself again; a
        // reset (`kiln bootstrap --reset`) ends the wait.
        let hint = format!(" (`kiln bootstrap --reset {cluster}` clears it)");
        let still_recorded =
            // Unreadable: keep waiting for the node (never a new decision).
            || cluster_record(&self.p, cluster)
                .map(|r| r.bootstrap_node.as_ref() == Some(&node))
                .unwrap_or(true);
        if let Err(e) = prove_until(&node, port, &creds, u32::MAX, &hint, still_recorded).await {
            return Err(format!("{}: no longer the recorded node ({e})", node.hostname).into());
        }
        if rec.proved_at.is_none() {
            update_async(&self.p, cluster, |r| r.proved_at = Some(now())).await?;
        }
        self.call_until_done(cluster, &node, port, &creds).await
    }

    /// Several daemons on one store: only the one the record names calls
    /// Bootstrap. Another waits while that one is alive, and takes the call
    /// over (compare-and-swap on the record) once it is not. False: nothing
    /// left for this daemon to do (bootstrapped, or reset, meanwhile).
    async fn mine_to_call(&self, cluster: &str, node: &Node, me: &str) -> Result<bool, BrainError> {
        let mut waiting = false;
        loop {
            let rec = cluster_record(&self.p, cluster)?;
            if rec.bootstrapped_at.is_some() || rec.bootstrap_node.as_ref() != Some(node) {
                return Ok(false);
            }
            let prev = rec.bootstrap_by.clone();
            // Any segment: a daemon in another rack may be the caller.
            let alive = |d: &str| {
                self.p
                    .store
                    .alive_daemons()
                    .is_some_and(|live| live.iter().any(|l| l == d))
            };
            match prev.as_deref() {
                Some(by) if by == me => return Ok(true),
                Some(by) if alive(by) => {
                    if !waiting {
                        tracing::info!(
                            cluster,
                            daemon = by,
                            "bootstrap: {by} calls it; standing by while it is alive"
                        );
                        waiting = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => {
                    let mine = me.to_string();
                    let from = prev.clone();
                    let r = update_async(&self.p, cluster, move |r| {
                        if r.bootstrap_by == from && r.bootstrapped_at.is_none() {
                            r.bootstrap_by = Some(mine.clone());
                        }
                    })
                    .await?;
                    if r.bootstrap_by.as_deref() == Some(me) {
                        tracing::info!(
                            cluster,
                            "bootstrap: taking the call over from {} (not alive)",
                            prev.as_deref().unwrap_or("no daemon")
                        );
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Call Bootstrap on the recorded node until it confirms, recording each
    /// attempt; stops when the record no longer names this node (a reset).
    async fn call_until_done(
        &self,
        cluster: &str,
        node: &Node,
        port: u16,
        creds: &Credentials,
    ) -> Result<(), BrainError> {
        let mut delay = Duration::from_millis(500);
        loop {
            let outcome = call(node.ip, port, creds).await;
            let (done, err) = match &outcome {
                Ok(()) => (true, None),
                Err((Code::AlreadyExists, _)) => (true, None),
                Err((code, msg)) => (false, Some(format!("{code:?}: {msg}"))),
            };
            let rec = update_async(&self.p, cluster, move |r| {
                r.attempts += 1;
                r.last_error = err.clone();
                if done {
                    r.bootstrapped_at = Some(now());
                }
            })
            .await?;
            match outcome {
                Ok(()) => {
                    tracing::info!(cluster, hostname = %node.hostname, "bootstrap: etcd bootstrapped");
                    self.p.timeline.note(
                        node.mac,
                        "bootstrap",
                        format!("etcd bootstrapped (cluster {cluster})"),
                    );
                    return Ok(());
                }
                Err((Code::AlreadyExists, m)) => {
                    tracing::info!(cluster, hostname = %node.hostname, "bootstrap: already done ({m})");
                    self.p.timeline.note(
                        node.mac,
                        "bootstrap",
                        format!("already bootstrapped ({m})"),
                    );
                    return Ok(());
                }
                Err((
                    Code::PermissionDenied
                    | Code::Unimplemented
                    | Code::InvalidArgument
                    | Code::Unauthenticated,
                    m,
                )) => {
                    return Err(format!(
                        "{} refused Bootstrap: {m}; fix and run `kiln bootstrap {cluster}`",
                        node.hostname
                    )
                    .into());
                }
                Err((code, m)) => {
                    if rec.bootstrap_node.as_ref() != Some(node) {
                        return Err(format!(
                            "{}: the recorded node changed; stopping",
                            node.hostname
                        )
                        .into());
                    }
                    tracing::info!(cluster, hostname = %node.hostname, "bootstrap: not yet ({code:?}: {m}), retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(15));
                }
            }
        }
    }
}

/// `kiln bootstrap --reset CLUSTER`: clear a recorded bootstrap node that never
/// proved itself (so was never sent Bootstrap). Refused once the cluster is
/// bootstrapped, once the node proved itself, or when any control plane that
/// proves itself reports etcd members.
pub(crate) async fn reset(p: &Arc<Provisioner>, cluster: &str) -> Result<String, BrainError> {
    let rec = cluster_record(p, cluster)?;
    if let Some(t) = rec.bootstrapped_at {
        return Err(format!("{cluster} was bootstrapped at {t}; nothing to reset").into());
    }
    let Some(node) = rec.bootstrap_node.clone() else {
        return Ok(format!(
            "{cluster}: no bootstrap node recorded; nothing to reset\n"
        ));
    };
    if rec.proved_at.is_some() {
        return Err(format!(
            "{cluster}: {} proved itself and may have been sent Bootstrap; kiln will not pick another node",
            node.hostname
        ).into());
    }
    let bundle = p.secrets.get(cluster).ok_or("no secrets for the cluster")?;
    let creds = Credentials::admin(bundle).map_err(|e| BrainError::Credentials(e.to_string()))?;
    let port = p.cfg.ports.talos_api;
    let inv = p.inventory();
    for cp in super::replace::cps_of(p, &inv, cluster, "")? {
        if crate::talos::proof::prove(cp.ip, port, &cp.hostname, &creds)
            .await
            .is_err()
        {
            continue;
        }
        match super::replace::members(cp.ip, port, &creds).await {
            Ok(m) if !m.is_empty() => {
                let names: Vec<String> = m.into_iter().map(|(_, n)| n).collect();
                return Err(format!(
                    "{cluster}: {} reports etcd members {names:?}; etcd exists, so the bootstrap node stays",
                    cp.hostname
                ).into());
            }
            _ => {}
        }
    }
    update_async(p, cluster, |r| {
        r.bootstrap_node = None;
        r.bootstrap_by = None;
        r.decided_at = None;
        r.attempts = 0;
        r.last_error = None;
    })
    .await?;
    tracing::warn!(cluster, hostname = %node.hostname, "bootstrap: recorded node cleared by the operator (it never proved itself)");
    Ok(format!(
        "{cluster}: cleared {} ({}), which never proved itself; the next control plane that does is bootstrapped\n",
        node.hostname, node.ip
    ))
}

/// Prove `node` (talos::proof), retrying with backoff (a node whose Talos API
/// is still starting answers late) up to `tries` times and while `wanted()`
/// holds; the last error when it gives up.
async fn prove_until(
    node: &Node,
    port: u16,
    creds: &Credentials,
    tries: u32,
    hint: &str,
    wanted: impl Fn() -> bool,
) -> Result<(), crate::talos::proof::ProofError> {
    let mut delay = Duration::from_millis(500);
    let mut n = 0;
    loop {
        n += 1;
        match crate::talos::proof::prove(node.ip, port, &node.hostname, creds).await {
            Ok(()) => return Ok(()),
            Err(e) if n >= tries || !wanted() => return Err(e),
            Err(e) => {
                crate::refusal!(
                    BOOTSTRAP_REFUSALS,
                    hostname = %node.hostname,
                    "bootstrap: not calling {}: it has not proved itself ({e}); retrying in {delay:?}{hint}",
                    node.hostname
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

static BOOTSTRAP_REFUSALS: crate::brain::ratelog::RateLog = crate::brain::ratelog::RateLog::new(5);

async fn call(ip: Ipv4Addr, port: u16, creds: &Credentials) -> Result<(), (Code, String)> {
    let mut c = client::connect(ip, port, creds)
        .await
        .map_err(|e| (Code::Unavailable, e.to_string()))?;
    c.bootstrap(BootstrapRequest {
        recover_etcd: false,
        recover_skip_hash_check: false,
    })
    .await
    .map(|_| ())
    .map_err(|s| (s.code(), s.message().to_string()))
}
