//! The etcd backend: kiln's state under one key prefix of an etcd cluster,
//! shared by every daemon that names the same endpoints and prefix.
//!
//! Each daemon keeps a replica of the prefix in memory, loaded at open and
//! kept current by a watch, so reads never wait on the network. Every write
//! is an etcd transaction that compares the mod revision of each key it read
//! with the revision the replica holds: a key another daemon changed since
//! makes the transaction fail, the replica is refreshed from etcd and the
//! write is retried on the fresh value (read-modify-write) or refused (lease
//! binds: an address or a MAC another daemon just bound is its). An answer
//! from etcd means a quorum has the write: that is what durable means here.
//!
//! Keys: `<prefix>/<table>/<key>`, values are the same JSON records the redb
//! backend keeps. May import: model.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::StoreError;
use crate::model::store::EtcdSettings;

/// How long one etcd call may take before kiln calls etcd unreachable.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A daemon that has not reached an etcd quorum for this long is fenced: its
/// store refuses reads and writes, DHCP goes unanswered, configs are
/// refused, `/readyz` says why. A quorum read every HEARTBEAT keeps it open.
pub(super) const FENCE: Duration = Duration::from_secs(5);
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);

/// Read-modify-write attempts before a write is given up as contended.
const TRIES: usize = 32;

/// One key as the replica holds it.
#[derive(Debug, Clone)]
pub(super) struct Held {
    value: Vec<u8>,
    /// etcd's mod revision of this value.
    pub(super) rev: i64,
}

impl Held {
    pub(super) fn of(kv: &etcd_client::KeyValue) -> Held {
        Held {
            value: kv.value().to_vec(),
            rev: kv.mod_revision(),
        }
    }
}

/// The replica: every key under the prefix (without it), as last seen.
pub(super) type Replica = RwLock<BTreeMap<String, Held>>;

/// A write to make: the key (without the prefix) and its new value (None deletes).
pub(super) type Put = (String, Option<Vec<u8>>);

/// Told of every key a watch event puts (key without the prefix, value):
/// other daemons' writes, and this daemon's own as they come back.
pub(super) type Listener = Box<dyn Fn(&str, &[u8]) + Send + Sync>;

/// A lookup in one view of the replica: a key's value and mod revision (0: absent).
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> (Option<Vec<u8>>, i64);

pub(super) struct Etcd {
    pub(super) prefix: String,
    /// One client per endpoint: a call that fails on one goes to the next.
    pub(super) clients: Vec<Client>,
    pub(super) current: Arc<std::sync::atomic::AtomicUsize>,
    /// The runtime etcd's client and watch run on (kiln's callers are sync).
    pub(super) handle: tokio::runtime::Handle,
    pub(super) replica: Arc<Replica>,
    /// Stops the runtime thread when the store goes.
    _stop: tokio::sync::oneshot::Sender<()>,
    /// Names the store in errors: the endpoints and prefix.
    pub(super) name: String,
    /// When a quorum last answered (ms on a monotonic clock since `epoch`).
    pub(super) last_ok: Arc<std::sync::atomic::AtomicU64>,
    pub(super) epoch: std::time::Instant,
    /// This daemon's name, and the etcd lease its liveness key is under.
    pub(super) daemon: String,
    /// The segment it answers DHCP on (its liveness key's value).
    pub(super) segment: String,
    pub(super) lease: Arc<std::sync::atomic::AtomicI64>,
    /// When expired boot tokens were last swept (unix seconds).
    pub(super) last_sweep: std::sync::atomic::AtomicU64,
    /// Who hears of watch events (the DHCP pool, of leases), set once.
    pub(super) listener: Arc<std::sync::OnceLock<Listener>>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Etcd {
    /// Give up the liveness key at once (the peers take over this daemon's
    /// clients now, not when the lease runs out).
    pub(super) fn leave(&self) {
        // -1: left; the keep-alive task stops and grants no new lease.
        let id = self.lease.swap(-1, std::sync::atomic::Ordering::Relaxed);
        if id > 0 {
            let mut c = self.clients
                [self.current.load(std::sync::atomic::Ordering::Relaxed) % self.clients.len()]
            .clone();
            let _ = call(
                &self.handle,
                &self.name,
                async move { c.lease_revoke(id).await },
            );
        }
    }
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Etcd({})", self.name)
    }
}

impl Etcd {
    /// Connect, load the prefix and start following it.
    pub(super) fn open(s: &EtcdSettings) -> Result<Etcd, StoreError> {
        let name = format!("etcd {} {}", s.endpoints.join(","), s.prefix);
        let err = |m: String| StoreError::Etcd {
            store: name.clone(),
            message: m,
        };
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("store-etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| err(format!("cannot start its thread: {e}")))?;
        let handle = handle_rx
            .recv()
            .map_err(|e| err(e.to_string()))?
            .map_err(err)?;
        let prefix = format!("{}/", s.prefix.trim_end_matches('/'));
        let mut clients = Vec::new();
        for ep in &s.endpoints {
            let (settings, ep) = (s.clone(), ep.clone());
            clients.push(call(&handle, &name, async move {
                super::etcd_follow::connect(&settings, &ep).await
            })?);
        }
        if clients.is_empty() {
            return Err(err("no endpoints".into()));
        }
        let replica = Arc::new(RwLock::new(BTreeMap::new()));
        let e = Etcd {
            prefix,
            clients,
            current: Default::default(),
            handle,
            replica,
            _stop: stop,
            name,
            last_ok: Default::default(),
            epoch: std::time::Instant::now(),
            daemon: s.daemon.clone(),
            segment: s.segment.clone(),
            lease: Default::default(),
            listener: Default::default(),
            last_sweep: Default::default(),
        };
        let rev = e.load()?;
        e.follow(rev);
        e.heartbeat();
        e.stay_alive();
        Ok(e)
    }

    fn err(&self, m: impl ToString) -> StoreError {
        StoreError::Etcd {
            store: self.name.clone(),
            message: m.to_string(),
        }
    }

    /// Run `f` against the current endpoint; on a failure, against the next
    /// ones in turn (a dead member, or one cut off from the quorum).
    fn run<T, Fut>(&self, mut f: impl FnMut(Client) -> Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        let n = self.clients.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let at = (first + i) % n;
            match call(&self.handle, &self.name, f(self.clients[at].clone())) {
                Ok(v) => {
                    self.current.store(at, Ordering::Relaxed);
                    self.quorum_answered();
                    return Ok(v);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| self.err("no endpoints")))
    }

    /// Load every key under the prefix; returns the revision it was read at.
    fn load(&self) -> Result<i64, StoreError> {
        let p = self.prefix.clone();
        let resp = self.run(|mut c| {
            let p = p.clone();
            async move {
                c.get(p.as_bytes(), Some(GetOptions::new().with_prefix()))
                    .await
            }
        })?;
        Ok(super::etcd_follow::fill(&self.replica, &self.prefix, &resp))
    }

    fn quorum_answered(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ok
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hear of every put a watch event brings from now on (once: a second
    /// listener is refused with false).
    pub(super) fn listen(&self, l: Listener) -> bool {
        self.listener.set(l).is_ok()
    }

    /// How long since a quorum last answered.
    pub(super) fn quorum_age(&self) -> Duration {
        let last = self.last_ok.load(std::sync::atomic::Ordering::Relaxed);
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    /// Hold `key` for this daemon under its liveness lease, unless another
    /// daemon holds it: Some(holder) (this daemon's name when it is this
    /// one), None while this daemon has no liveness lease yet. The key goes
    /// with the lease: a dead holder loses it within the lease's TTL.
    pub(super) fn claim(&self, key: &str) -> Result<Option<String>, StoreError> {
        let lease = self.lease.load(std::sync::atomic::Ordering::Relaxed);
        if lease <= 0 {
            return Ok(None);
        }
        let full = self.full(key);
        let me = self.daemon.clone();
        let resp = self.run(|mut c| {
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    full.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(
                    full.clone(),
                    me.clone(),
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )])
                .or_else(vec![TxnOp::get(full.clone(), None)]);
            async move { c.txn(txn).await }
        })?;
        if resp.succeeded() {
            return Ok(Some(me));
        }
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(g) = op {
                if let Some(kv) = g.kvs().first() {
                    return Ok(Some(String::from_utf8_lossy(kv.value()).into_owned()));
                }
            }
        }
        Ok(None)
    }

    /// Why this daemon is fenced, if it is: no etcd quorum answered for FENCE.
    pub(super) fn fenced(&self) -> Option<String> {
        let since = self.quorum_age();
        (since > FENCE).then(|| {
            format!(
                "no etcd quorum for {}s (fenced after {}s): not acting on a view other daemons may have changed",
                since.as_secs(),
                FENCE.as_secs()
            )
        })
    }

    /// The daemons alive on this one's segment (their liveness keys' value),
    /// this one included, sorted.
    pub(super) fn peers(&self) -> Vec<String> {
        self.live(Some(&self.segment))
    }

    /// Every daemon alive on the prefix, whatever its segment (sorted).
    pub(super) fn alive(&self) -> Vec<String> {
        self.live(None)
    }

    /// The names of the liveness keys (on `segment`, if given) and this
    /// daemon's, sorted.
    fn live(&self, segment: Option<&str>) -> Vec<String> {
        let mut v: Vec<String> = self
            .list("daemons")
            .into_iter()
            .filter(|(_, seg)| segment.is_none_or(|s| seg.as_slice() == s.as_bytes()))
            .map(|(k, _)| k)
            .collect();
        v.push(self.daemon.clone());
        v.sort();
        v.dedup();
        v
    }

    /// The replica's value of `key` (without the prefix).
    pub(super) fn get(&self, key: &str) -> Option<Vec<u8>> {
        let r = self.replica.read().unwrap_or_else(|e| e.into_inner());
        r.get(key).map(|h| h.value.clone())
    }

    /// Every key under `table/`, with its value.
    pub(super) fn list(&self, table: &str) -> Vec<(String, Vec<u8>)> {
        let from = format!("{table}/");
        let r = self.replica.read().unwrap_or_else(|e| e.into_inner());
        r.range(from.clone()..)
            .take_while(|(k, _)| k.starts_with(&from))
            .map(|(k, h)| (k[from.len()..].to_string(), h.value.clone()))
            .collect()
    }

    /// A key's value and mod revision (0: absent), read together.
    pub(super) fn held(&self, key: &str) -> (Option<Vec<u8>>, i64) {
        self.view(|get| get(key))
    }

    /// Run `f` on one consistent view of the replica: `f` gets a lookup of
    /// (value, mod revision) by key. What `f` decides on, with the revisions
    /// it saw, goes to [`Etcd::swap`].
    pub(super) fn view<R>(
        &self,
        f: impl FnOnce(&dyn Fn(&str) -> (Option<Vec<u8>>, i64)) -> R,
    ) -> R {
        let r = self.replica.read().unwrap_or_else(|e| e.into_inner());
        let get = |k: &str| {
            r.get(k)
                .map_or((None, 0), |h| (Some(h.value.clone()), h.rev))
        };
        f(&get)
    }

    /// Write `puts` if every key in `expect` (without the prefix) still has
    /// the mod revision given (0: absent), the one the caller decided on:
    /// Ok(true) written, Ok(false) another writer was first (the replica
    /// now holds its values).
    pub(super) fn swap(&self, expect: &[(String, i64)], puts: &[Put]) -> Result<bool, StoreError> {
        let cmp: Vec<Compare> = expect
            .iter()
            .map(|(k, rev)| Compare::mod_revision(self.full(k), CompareOp::Equal, *rev))
            .collect();
        let read: Vec<&String> = expect.iter().map(|(k, _)| k).collect();
        let ops: Vec<TxnOp> = puts
            .iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(self.full(k), v.clone(), None),
                None => TxnOp::delete(self.full(k), None),
            })
            .collect();
        // On a failed compare the same transaction reads the keys back.
        let reads: Vec<TxnOp> = read
            .iter()
            .map(|k| TxnOp::get(self.full(k), None))
            .collect();
        let resp = self.run(|mut c| {
            let txn = Txn::new()
                .when(cmp.clone())
                .and_then(ops.clone())
                .or_else(reads.clone());
            async move { c.txn(txn).await }
        })?;
        let mut r = self.replica.write().unwrap_or_else(|e| e.into_inner());
        if !resp.succeeded() {
            read_back(&mut r, read.iter().copied(), &resp);
            return Ok(false);
        }
        let rev = resp.header().map_or(0, |h| h.revision());
        for (k, v) in puts {
            match v {
                Some(v) => {
                    let newer = r.get(k).is_some_and(|h| h.rev > rev);
                    if !newer {
                        r.insert(
                            k.clone(),
                            Held {
                                value: v.clone(),
                                rev,
                            },
                        );
                    }
                }
                None => {
                    r.remove(k);
                }
            }
        }
        Ok(true)
    }

    /// Read `keys` from etcd (one quorum read) into the replica: a decision
    /// the replica refuses is checked against etcd itself before it stands.
    pub(super) fn fresh(&self, keys: &[String]) -> Result<(), StoreError> {
        let gets: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::get(self.full(k), None))
            .collect();
        let resp = self.run(|mut c| {
            let txn = Txn::new().and_then(gets.clone());
            async move { c.txn(txn).await }
        })?;
        let mut r = self.replica.write().unwrap_or_else(|e| e.into_inner());
        read_back(&mut r, keys.iter(), &resp);
        Ok(())
    }

    /// Read-modify-write one key: `f` gets the current value and returns the
    /// new one (None deletes) and the caller's result; retried on the fresh
    /// value while other writers get there first.
    pub(super) fn modify<R>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&[u8]>) -> Result<(Option<Vec<u8>>, R), StoreError>,
    ) -> Result<R, StoreError> {
        for attempt in 0..TRIES {
            // The value and the revision it is compared at, read together.
            let (cur, rev) = self.held(key);
            let (new, r) = f(cur.as_deref())?;
            if self.swap(&[(key.to_string(), rev)], &[(key.to_string(), new)])? {
                return Ok(r);
            }
            backoff(attempt);
        }
        Err(self.err(format!(
            "{key}: still changed by other writers after {TRIES} tries"
        )))
    }

    /// A quorum read and write of one key (the watchdog's check).
    pub(super) fn health_check(&self) -> Result<(), StoreError> {
        let now = crate::store::unix_now().to_string();
        let k = self.full("health/checked");
        self.run(|mut c| {
            let (k, now) = (k.clone(), now.clone());
            async move { c.put(k, now, None).await }
        })?;
        Ok(())
    }

    pub(super) fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// The replica takes what a transaction's reads (one get per key, in order)
/// found: the value, or the key's absence.
fn read_back<'k>(
    r: &mut BTreeMap<String, Held>,
    keys: impl Iterator<Item = &'k String>,
    resp: &etcd_client::TxnResponse,
) {
    for (k, op) in keys.zip(resp.op_responses()) {
        let etcd_client::TxnOpResponse::Get(g) = op else {
            continue;
        };
        match g.kvs().first() {
            Some(kv) => r.insert(k.clone(), Held::of(kv)),
            None => r.remove(k),
        };
    }
}

/// After a lost compare: a short random wait, longer each time, so two
/// writers of one key do not keep colliding.
pub(super) fn backoff(attempt: usize) {
    use rand_core::RngCore;
    let cap = 1u64 << attempt.min(6);
    let ms = rand_core::OsRng.next_u64() % (cap + 1);
    std::thread::sleep(Duration::from_millis(ms));
}

/// Run `f` on the etcd runtime and wait for it (at most CALL_TIMEOUT).
fn call<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    name: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
) -> Result<T, StoreError> {
    let err = |m: String| StoreError::Etcd {
        store: name.to_string(),
        message: m,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let r = tokio::time::timeout(CALL_TIMEOUT, f).await;
        let _ = tx.send(r);
    });
    match rx.recv() {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(err(e.to_string())),
        Ok(Err(_)) => Err(err(format!("no answer within {CALL_TIMEOUT:?}"))),
        Err(_) => Err(err("its runtime stopped".into())),
    }
}
