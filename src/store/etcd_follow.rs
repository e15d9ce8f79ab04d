//! What runs on the etcd backend's own runtime: connecting to an endpoint,
//! the watch that keeps the replica current, and the heartbeat that fences
//! a daemon cut off from the quorum.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};

use super::etcd::{Etcd, Held, Replica, CALL_TIMEOUT, FENCE, HEARTBEAT};
use crate::model::store::EtcdSettings;

/// A daemon's liveness key lives this long without a keep-alive: a daemon
/// killed outright is taken over by its peers within it.
pub(super) const LIVENESS_TTL: i64 = 3;

impl Etcd {
    /// Hold `daemons/<name>` (its value: the daemon's segment) under an etcd lease kept alive from here; a
    /// lost lease is granted again and the key written again.
    pub(super) fn stay_alive(&self) {
        let (clients, current, key, lease, name, segment) = (
            self.clients.clone(),
            self.current.clone(),
            self.full(&format!("daemons/{}", self.daemon)),
            self.lease.clone(),
            self.name.clone(),
            self.segment.clone(),
        );
        self.handle.spawn(async move {
            use std::sync::atomic::Ordering;
            while lease.load(Ordering::Relaxed) >= 0 {
                let at = current.load(Ordering::Relaxed) % clients.len();
                let mut c = clients[at].clone();
                let r: Result<(), etcd_client::Error> = async {
                    let id = c.lease_grant(LIVENESS_TTL, None).await?.id();
                    let opts = etcd_client::PutOptions::new().with_lease(id);
                    c.put(key.as_bytes(), segment.as_bytes(), Some(opts))
                        .await?;
                    // Not if the daemon left meanwhile: give the new lease up.
                    if lease
                        .compare_exchange(
                            lease.load(Ordering::Relaxed).max(0),
                            id,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_err()
                    {
                        let _ = c.lease_revoke(id).await;
                        return Ok(());
                    }
                    let (mut keeper, mut answers) = c.lease_keep_alive(id).await?;
                    loop {
                        keeper.keep_alive().await?;
                        match answers.message().await? {
                            Some(a) if a.ttl() > 0 => {}
                            // Expired (a long pause): grant a new one.
                            _ => return Ok(()),
                        }
                        tokio::time::sleep(Duration::from_millis(LIVENESS_TTL as u64 * 1000 / 3))
                            .await;
                    }
                }
                .await;
                if let Err(e) = r {
                    if lease.load(Ordering::Relaxed) >= 0 {
                        tracing::warn!(store = %name, "liveness key: {e}");
                    }
                    current.store(at + 1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
    }

    /// Follow the prefix from `rev` on: other daemons' writes reach the
    /// replica. A watch that breaks is opened again from where it stopped.
    pub(super) fn follow(&self, rev: i64) {
        let (clients, current, prefix, replica, name, listener) = (
            self.clients.clone(),
            self.current.clone(),
            self.prefix.clone(),
            self.replica.clone(),
            self.name.clone(),
            self.listener.clone(),
        );
        self.handle.spawn(async move {
            let mut next = rev + 1;
            loop {
                // The endpoint calls last succeeded on (a dead one is left by them).
                let at = current.load(std::sync::atomic::Ordering::Relaxed) % clients.len();
                let client = clients[at].clone();
                let mut c = client.clone();
                let opts = WatchOptions::new().with_prefix().with_start_revision(next);
                match c.watch(prefix.as_bytes(), Some(opts)).await {
                    Ok(mut stream) => loop {
                        match stream.message().await {
                            Ok(Some(m)) => {
                                if m.canceled() || m.compact_revision() > 0 {
                                    tracing::warn!(store = %name, "etcd watch cancelled ({}); reloading", m.cancel_reason());
                                    if let Some(r) = reload(&client, &prefix, &replica).await {
                                        next = r + 1;
                                    }
                                    break;
                                }
                                for ev in m.events() {
                                    if let Some(kv) = ev.kv() {
                                        next = next.max(kv.mod_revision() + 1);
                                        // Told only when it is the newest value
                                        // known (not an own write come back late).
                                        if apply_event(&replica, &prefix, ev.event_type(), kv) {
                                            tell(listener.get(), &prefix, ev.event_type(), kv);
                                        }
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(store = %name, "etcd watch: {e}");
                                break;
                            }
                        }
                    },
                    Err(e) => {
                        tracing::warn!(store = %name, "etcd watch: {e}");
                        current.store(at + 1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// A quorum read every HEARTBEAT, on a thread of its own (it blocks on
    /// etcd's answer); logs and counts each change between fenced and not.
    pub(super) fn heartbeat(&self) {
        let key = self.full("health/checked");
        let (clients, current, last_ok, epoch, name) = (
            self.clients.clone(),
            self.current.clone(),
            self.last_ok.clone(),
            self.epoch,
            self.name.clone(),
        );
        self.handle.spawn(async move {
            let mut fenced = false;
            crate::metrics::store_available("etcd", true);
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let n = clients.len();
                let first = current.load(std::sync::atomic::Ordering::Relaxed);
                for i in 0..n {
                    let mut c = clients[(first + i) % n].clone();
                    // A linearizable read: only a member in a quorum answers it.
                    let r = tokio::time::timeout(HEARTBEAT, c.get(key.as_bytes(), None)).await;
                    if matches!(r, Ok(Ok(_))) {
                        current.store((first + i) % n, std::sync::atomic::Ordering::Relaxed);
                        let ms = epoch.elapsed().as_millis() as u64;
                        last_ok.fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                }
                let last = Duration::from_millis(last_ok.load(std::sync::atomic::Ordering::Relaxed));
                let now_fenced = epoch.elapsed().saturating_sub(last) > FENCE;
                if now_fenced != fenced {
                    fenced = now_fenced;
                    crate::metrics::store_available("etcd", !fenced);
                    if fenced {
                        tracing::error!(store = %name, "fenced: no etcd quorum for {}s; not answering DHCP or serving configs until one answers", FENCE.as_secs());
                    } else {
                        tracing::warn!(store = %name, "an etcd quorum answers again: serving");
                    }
                }
            }
        });
    }
}

/// A client for one endpoint (connected lazily: a dead member is no error yet).
pub(super) async fn connect(
    s: &EtcdSettings,
    endpoint: &str,
) -> Result<Client, etcd_client::Error> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(CALL_TIMEOUT)
        .with_timeout(CALL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some(t) = &s.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| etcd_client::Error::InvalidArgs(format!("{}: {e}", p.display())))
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca)?));
        if let (Some(c), Some(k)) = (&t.cert, &t.key) {
            tls = tls.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?));
        }
        opts = opts.with_tls(tls);
    }
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return unix(path, opts).await;
    }
    Client::connect([endpoint], Some(opts)).await
}

/// A client over a Unix socket (`unix:///path`), for an etcd on this host.
async fn unix(path: &str, opts: ConnectOptions) -> Result<Client, etcd_client::Error> {
    let path = path.to_string();
    let channel = tonic::transport::Endpoint::try_from("http://etcd.unix")?
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }));
    Client::from_channel(etcd_client::Channel::Tonic(channel), Some(opts)).await
}

/// Load the whole prefix again (after a watch was cancelled or compacted).
async fn reload(client: &Client, prefix: &str, replica: &Replica) -> Option<i64> {
    let mut c = client.clone();
    let resp = c
        .get(prefix.as_bytes(), Some(GetOptions::new().with_prefix()))
        .await
        .ok()?;
    Some(fill(replica, prefix, &resp))
}

/// Replace the replica with what `resp` (a prefix read) holds; returns the
/// revision it was read at.
pub(super) fn fill(replica: &Replica, prefix: &str, resp: &etcd_client::GetResponse) -> i64 {
    let mut r = replica.write().unwrap_or_else(|e| e.into_inner());
    r.clear();
    for kv in resp.kvs() {
        if let Some(k) = kv.key().strip_prefix(prefix.as_bytes()) {
            r.insert(String::from_utf8_lossy(k).into_owned(), Held::of(kv));
        }
    }
    resp.header().map_or(0, |h| h.revision())
}

/// A put, to the listener (outside the replica's lock).
fn tell(l: Option<&super::etcd::Listener>, prefix: &str, t: EventType, kv: &etcd_client::KeyValue) {
    let (Some(l), EventType::Put) = (l, t) else {
        return;
    };
    if let Some(k) = kv.key().strip_prefix(prefix.as_bytes()) {
        l(&String::from_utf8_lossy(k), kv.value());
    }
}

/// One watch event into the replica (never over a newer value); true when
/// the replica holds it now (it was not older than what was there).
fn apply_event(replica: &Replica, prefix: &str, t: EventType, kv: &etcd_client::KeyValue) -> bool {
    let Some(k) = kv.key().strip_prefix(prefix.as_bytes()) else {
        return false;
    };
    let k = String::from_utf8_lossy(k).into_owned();
    let mut r = replica.write().unwrap_or_else(|e| e.into_inner());
    match t {
        EventType::Put => {
            let current = r.get(&k).is_none_or(|h| h.rev <= kv.mod_revision());
            if current {
                r.insert(k, Held::of(kv));
            }
            current
        }
        EventType::Delete => {
            let current = r.get(&k).is_none_or(|h| h.rev < kv.mod_revision());
            if current {
                r.remove(&k);
            }
            current
        }
    }
}
