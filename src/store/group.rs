//! Group commit: every durable write in kiln joins one open redb transaction,
//! and a committer thread makes each batch durable with one fsync.
//!
//! A writer (any thread) locks the open batch, starts it if there is none
//! (redb allows one write transaction at a time, so that waits for the batch
//! being committed), runs its closure on it, and waits until its batch is
//! committed. Writers queue behind each other on the lock, so writes apply in
//! the order they were made. A closure that fails with anything but a storage
//! error must have written nothing (every repository reads, decodes and
//! encodes before it writes): its caller gets the error and the batch goes
//! on. A storage error, or a panic, poisons the batch: it is rolled back and
//! every writer in it gets the error.
//!
//! Before, each write was its own fsynced transaction: under a 10,000-machine
//! storm 176 of 189 threads waited in `begin_write` (docs/benchmarks.md).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LockResult, Mutex, MutexGuard};
use std::time::Instant;

use redb::{Database, WriteTransaction};

use super::StoreError;

/// Most writes committed in one transaction.
const MAX_JOBS: usize = 1024;

pub(super) struct Group {
    db: Arc<Database>,
    open: Mutex<Open>,
    /// The committer waits here for a batch with writes in it.
    joined: Condvar,
    /// Writers wait here for their batch's outcome.
    committed: Condvar,
    /// Writers waiting for the lock: the committer lets them join first.
    wanting: AtomicUsize,
    stop: AtomicBool,
    /// Batches committed (for tests and the store's own checks).
    commits: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Open {
    tx: Option<WriteTransaction>,
    /// The number of the batch `tx` belongs to.
    batch: u64,
    jobs: usize,
    /// Why the open batch must be rolled back, if it must.
    poisoned: Option<String>,
    /// The newest batch whose outcome is known, and its failure if it failed
    /// (a writer looks only at its own batch, which is the newest or the one before
    /// it, since the next batch cannot begin before the last one commits).
    done: u64,
    failures: std::collections::VecDeque<(u64, String)>,
}

/// What a failed commit is reported as, to the latch and to writers.
pub(super) type Latch = Box<dyn Fn(redb::Error) -> String + Send + Sync>;

impl Group {
    pub(super) fn new(db: Arc<Database>) -> Arc<Group> {
        Arc::new(Group {
            db,
            open: Mutex::new(Open {
                batch: 1,
                ..Open::default()
            }),
            joined: Condvar::new(),
            committed: Condvar::new(),
            wanting: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            commits: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The open batch. A writer that panicked in it may have left half a
    /// write behind: that batch is rolled back.
    fn lock(&self) -> MutexGuard<'_, Open> {
        self.recover(self.open.lock())
    }

    fn recover<'a>(&self, r: LockResult<MutexGuard<'a, Open>>) -> MutexGuard<'a, Open> {
        match r {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                self.open.clear_poison();
                if g.tx.is_some() {
                    g.poisoned = Some("a writer panicked in this batch".into());
                    g.jobs += 1;
                    self.joined.notify_one();
                }
                g
            }
        }
    }

    /// Run `f` in the open batch and wait until that batch is durable.
    /// `wrap` turns redb's errors into the store's (and latches failures).
    pub(super) fn write<R>(
        &self,
        wrap: &dyn Fn(redb::Error) -> StoreError,
        f: impl FnOnce(&WriteTransaction) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.wanting.fetch_add(1, Ordering::AcqRel);
        let mut g = self.lock();
        self.wanting.fetch_sub(1, Ordering::AcqRel);
        if g.tx.is_none() {
            let begun = self.db.begin_write().map_err(|e| wrap(e.into()));
            let mut tx = begun?;
            tx.set_durability(redb::Durability::Immediate)
                .map_err(|e| wrap(redb::Error::from(e)))?;
            g.tx = Some(tx);
        }
        let batch = g.batch;
        let r = {
            let Some(tx) = g.tx.as_ref() else {
                return Err(StoreError::Interrupted("no open transaction".into()));
            };
            f(tx)
        };
        match &r {
            Ok(_) => g.jobs += 1,
            // A storage error may have left half a write behind: roll it all back.
            Err(e @ StoreError::Db { .. }) => {
                g.poisoned.get_or_insert_with(|| e.to_string());
                g.jobs += 1;
                self.joined.notify_one();
                return r;
            }
            // It wrote nothing: the batch goes on without it.
            Err(_) => return r,
        }
        self.joined.notify_one();
        while g.done < batch {
            g = self.recover(self.committed.wait(g));
        }
        match g.failures.iter().find(|(b, _)| *b == batch) {
            Some((_, why)) => Err(StoreError::Commit(why.clone())),
            None => r,
        }
    }

    /// The committer: commit each batch once the writers queued for it have joined.
    pub(super) fn run(&self, latch: Latch) {
        loop {
            let mut g = self.lock();
            while g.jobs == 0 {
                if self.stop.load(Ordering::Acquire) {
                    // An empty open transaction (a writer's closure failed) is dropped.
                    g.tx = None;
                    return;
                }
                g = self.recover(self.joined.wait(g));
            }
            // Let writers already waiting for the lock into this batch.
            let mut rounds = 0;
            while self.wanting.load(Ordering::Acquire) > 0 && g.jobs < MAX_JOBS && rounds < 256 {
                drop(g);
                std::thread::yield_now();
                g = self.lock();
                rounds += 1;
            }
            let tx = g.tx.take();
            let (batch, jobs, poisoned) = (g.batch, g.jobs, g.poisoned.take());
            g.batch += 1;
            g.jobs = 0;
            drop(g);
            let t0 = Instant::now();
            let outcome = match (tx, poisoned) {
                (Some(tx), None) => tx.commit().map_err(|e| latch(e.into())),
                (Some(tx), Some(why)) => {
                    let _ = tx.abort();
                    Err(format!("rolled back: {why}"))
                }
                (None, _) => Err("no open transaction".to_string()),
            };
            crate::metrics::store_commit(t0.elapsed().as_secs_f64());
            if outcome.is_ok() {
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            crate::metrics::store_batch(jobs);
            let mut g = self.lock();
            g.done = batch;
            if let Err(why) = outcome {
                g.failures.push_back((batch, why));
                while g.failures.len() > 4 {
                    g.failures.pop_front();
                }
            }
            drop(g);
            self.committed.notify_all();
        }
    }

    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _g = self.lock();
        self.joined.notify_all();
    }
}

/// The committer thread; stopped and joined when the last store handle goes.
pub(super) struct Committer {
    group: Arc<Group>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    pub(super) fn start(group: Arc<Group>, latch: Latch) -> std::io::Result<Committer> {
        let g = group.clone();
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || g.run(latch))?;
        Ok(Committer {
            group,
            thread: Some(thread),
        })
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.group.stop();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::mac::Mac;
    use crate::store::machines::Record;
    use crate::store::{Store, StoreError};

    /// Writers at the same time share commits; every write is there after a
    /// reopen; a write that fails (an unreadable record) fails alone.
    #[test]
    fn concurrent_writes_share_commits_and_fail_alone() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let bad: Mac = "52:54:00:ff:ff:ff".parse().unwrap();
        s.write(|tx| {
            let mut t = tx
                .open_table(crate::store::machines::TABLE)
                .map_err(|e| s.db_err(e))?;
            t.insert(bad.to_string().as_str(), b"{not json".as_slice())
                .map_err(|e| s.db_err(e))?;
            Ok(())
        })
        .unwrap();
        let before = s.group.as_ref().unwrap().commits();
        let (threads, each) = (32u8, 25u8);
        std::thread::scope(|sc| {
            for t in 0..threads {
                let s = &s;
                sc.spawn(move || {
                    for i in 0..each {
                        let mac = Mac([2, 0, 0, 0, t, i]);
                        s.machines()
                            .modify(&mac, |r| *r = Some(Record::new(mac, "m", 1)))
                            .unwrap();
                        if i % 5 == 0 {
                            let e = s.machines().modify(&bad, |_| ()).unwrap_err();
                            assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
                        }
                    }
                });
            }
        });
        let writes = u64::from(threads) * u64::from(each);
        let commits = s.group.as_ref().unwrap().commits() - before;
        assert!(commits < writes, "{commits} commits for {writes} writes");
        drop(s);
        let s = Store::open(d.path());
        // The bad record stops a reopen (it was never overwritten); read the rest raw.
        assert!(s.is_err());
        let db = redb::Database::open(d.path().join("kiln.redb")).unwrap();
        let tx = redb::ReadableDatabase::begin_read(&db).unwrap();
        let t = tx.open_table(crate::store::machines::TABLE).unwrap();
        let n = redb::ReadableTableMetadata::len(&t).unwrap();
        assert_eq!(n, writes + 1, "every write is durable");
    }
}
