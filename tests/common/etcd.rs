//! A real etcd cluster (Debian's etcd-server), one member per stand-in
//! control plane, for the replacement tests. Members talk over Unix sockets
//! in the cluster's directory (etcd's `unix://` URLs), so no TCP port is
//! picked and handed to etcd: nothing else can take one first.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{have, skip_unless};

pub fn skip() -> bool {
    skip_unless(
        have("etcd") && have("etcdctl"),
        "etcd and etcdctl (Debian etcd-server, etcd-client)",
    )
}

pub struct Member {
    pub name: String,
    /// This member's sockets are `<name>.<generation>.{client,peer}` (a
    /// member that rejoins after a kill gets fresh ones and a fresh data dir).
    pub generation: usize,
    pub child: Option<Child>,
}

impl Member {
    /// The URL etcd is given (relative to the cluster's directory, its cwd).
    fn url(&self, what: &str) -> String {
        format!("unix://{}.{}.{what}:0", self.name, self.generation)
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
}

impl Cluster {
    /// Member `i`'s client endpoint, as [`super::talos::etcdctl_with`] takes it.
    pub fn client_url(&self, i: usize) -> String {
        let m = &self.members[i];
        format!(
            "unix://{}",
            self.dir
                .join(format!("{}.{}.client:0", m.name, m.generation))
                .display()
        )
    }

    fn spawn(&self, m: &Member, initial: &str, state: &str) -> Child {
        let data = self.dir.join(&m.name).join(format!("{}", m.generation));
        Command::new("etcd")
            .current_dir(&self.dir)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(m.url("client"))
            .arg("--advertise-client-urls")
            .arg(m.url("client"))
            .arg("--listen-peer-urls")
            .arg(m.url("peer"))
            .arg("--initial-advertise-peer-urls")
            .arg(m.url("peer"))
            .arg("--initial-cluster")
            .arg(initial)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg("kiln-test")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd")
    }

    /// Start `names` as a new cluster and wait until it answers.
    pub fn start(dir: PathBuf, names: &[&str]) -> Cluster {
        let members: Vec<Member> = names
            .iter()
            .map(|n| Member {
                name: n.to_string(),
                generation: 0,
                child: None,
            })
            .collect();
        std::fs::create_dir_all(&dir).unwrap();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.url("peer")))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            members: Vec::new(),
        };
        for mut m in members {
            m.child = Some(c.spawn(&m, &initial, "new"));
            c.members.push(m);
        }
        c.wait_healthy(0);
        c
    }

    pub fn ctl(&self, via: usize, args: &[&str]) -> Result<String, String> {
        super::talos::etcdctl_with(&self.client_url(via), "5s", args).map_err(|e| e.to_string())?
    }

    pub fn wait_healthy(&self, via: usize) {
        let t0 = Instant::now();
        while self.ctl(via, &["put", "health", "ok"]).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "etcd never became writable"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Names of the members etcd lists (asked through member `via`).
    /// Wait until `n` kiln daemons hold liveness keys under `/kiln`.
    pub fn wait_daemons(&self, n: usize, within: Duration) {
        let t0 = Instant::now();
        while self
            .ctl(0, &["get", "--prefix", "--keys-only", "/kiln/daemons/"])
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .count()
            < n
        {
            assert!(t0.elapsed() < within, "{n} kiln daemons never went live");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn member_names(&self, via: usize) -> Vec<String> {
        let out = self.ctl(via, &["member", "list", "-w", "json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut n: Vec<String> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap_or("").to_string())
            .collect();
        n.sort();
        n
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What a joining control plane does: add itself, start with `existing`.
    pub fn join(&mut self, name: &str, via: usize) -> usize {
        let m = Member {
            name: name.into(),
            generation: self.members.iter().filter(|x| x.name == name).count(),
            child: None,
        };
        // etcd refuses to add a member until every member has been connected for a
        // few seconds ("unhealthy cluster"), as right after a removal.
        let t0 = Instant::now();
        while let Err(e) = self.ctl(
            via,
            &[
                "member",
                "add",
                name,
                &format!("--peer-urls={}", m.url("peer")),
            ],
        ) {
            assert!(t0.elapsed() < Duration::from_secs(30), "member add: {e}");
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut initial: Vec<String> = self
            .members
            .iter()
            .filter(|x| x.child.is_some())
            .map(|x| format!("{}={}", x.name, x.url("peer")))
            .collect();
        initial.push(format!("{name}={}", m.url("peer")));
        let child = self.spawn(&m, &initial.join(","), "existing");
        self.members.push(Member {
            child: Some(child),
            ..m
        });
        let i = self.members.len() - 1;
        self.wait_healthy(i);
        i
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A unix-socket relay in front of one etcd member's client socket, that a
/// test can cut (as a network partition between one kiln and etcd) and
/// mend. etcd itself is real; only the path to it is in the test's hands.
pub struct Relay {
    pub path: PathBuf,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

impl Relay {
    /// Relay `path` (created) to the unix socket `to`.
    pub fn start(path: PathBuf, to: PathBuf) -> Relay {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let l = UnixListener::bind(&path).expect("relay socket");
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open: std::sync::Arc<std::sync::Mutex<Vec<UnixStream>>> = Default::default();
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(down) = conn else { break };
                // While cut, a new connection is closed at once.
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(up) = UnixStream::connect(&to) else {
                    continue;
                };
                let mut list = o.lock().unwrap();
                for s in [&down, &up] {
                    list.push(s.try_clone().unwrap());
                }
                drop(list);
                for (mut from, mut into) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { path, cut, open }
    }

    /// Cut: every open connection is shut and new ones are refused.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Mend: new connections go through again.
    pub fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}
