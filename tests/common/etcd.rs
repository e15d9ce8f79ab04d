//! A real etcd cluster on loopback (Debian's etcd-server), one member per
//! stand-in control plane, for the replacement tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, have, skip_unless};

pub fn skip() -> bool {
    skip_unless(
        have("etcd") && have("etcdctl"),
        "etcd and etcdctl (Debian etcd-server, etcd-client)",
    )
}

pub struct Member {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
}

impl Cluster {
    pub fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    fn spawn(&self, m: &Member, initial: &str, state: &str) -> Child {
        let data = self.dir.join(&m.name).join(format!("{}", m.peer));
        Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(format!("http://127.0.0.1:{}", m.client))
            .arg("--advertise-client-urls")
            .arg(format!("http://127.0.0.1:{}", m.client))
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer))
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
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
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
        let o = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client_url(via)))
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
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
            client: free_port(),
            peer: free_port(),
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
                &format!("--peer-urls=http://127.0.0.1:{}", m.peer),
            ],
        ) {
            assert!(t0.elapsed() < Duration::from_secs(30), "member add: {e}");
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut initial: Vec<String> = self
            .members
            .iter()
            .filter(|x| x.child.is_some())
            .map(|x| format!("{}=http://127.0.0.1:{}", x.name, x.peer))
            .collect();
        initial.push(format!("{name}=http://127.0.0.1:{}", m.peer));
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
