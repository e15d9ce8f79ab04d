//! `kiln bootstrap CLUSTER [--node HOST]`: the same guarded path as automatic
//! bootstrap. With a node already recorded, only that node is ever called;
//! otherwise the named node, else the first control plane whose Talos runs.

use std::fmt;
use std::sync::Arc;

use super::bootstrap::{cluster_record, Bootstrapper};
use super::{Provisioner, State};
use crate::model::inventory::Role;
use crate::store::clusters::Node;

/// What a bootstrap request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requested {
    NoCluster(String),
    AlreadyDone(String),
    /// Bootstrap was decided for another node than the one named.
    OtherNode {
        cluster: String,
        node: Node,
    },
    Started {
        cluster: String,
        node: Node,
    },
    NoCandidate(String),
    /// The cluster's record cannot be read: nothing is decided over it.
    Unreadable(String),
}

impl fmt::Display for Requested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requested::NoCluster(c) => write!(f, "no cluster {c:?}"),
            Requested::Unreadable(e) => write!(f, "{e}"),
            Requested::AlreadyDone(c) => write!(f, "{c}: already bootstrapped"),
            Requested::OtherNode { cluster, node } => write!(
                f,
                "{cluster}: bootstrap was decided for {} ({}); kiln never sends it to another node",
                node.hostname, node.ip
            ),
            Requested::Started { cluster, node } => {
                write!(
                    f,
                    "{cluster}: bootstrapping {} ({})",
                    node.hostname, node.ip
                )
            }
            Requested::NoCandidate(c) => write!(
                f,
                "{c}: no running control plane with a known address; name one with --node"
            ),
        }
    }
}

/// Start bootstrap of `cluster` as the operator asked.
pub(crate) fn request(
    p: &Arc<Provisioner>,
    b: &Arc<Bootstrapper>,
    cluster: &str,
    node: Option<&str>,
) -> Requested {
    let name = cluster.to_string();
    if !p.cfg.clusters.contains_key(cluster) {
        return Requested::NoCluster(name);
    }
    let rec = match cluster_record(p, cluster) {
        Ok(r) => r,
        Err(e) => return Requested::Unreadable(e.to_string()),
    };
    if rec.bootstrapped_at.is_some() {
        return Requested::AlreadyDone(name);
    }
    if let Some(n) = rec.bootstrap_node {
        if node.is_some_and(|h| h != n.hostname) {
            return Requested::OtherNode {
                cluster: name,
                node: n,
            };
        }
        b.start(name.clone(), None);
        return Requested::Started {
            cluster: name,
            node: n,
        };
    }
    match candidates(p, cluster, node).into_iter().next() {
        Some(n) => {
            b.start(name.clone(), Some(n.clone()));
            Requested::Started {
                cluster: name,
                node: n,
            }
        }
        None => Requested::NoCandidate(name),
    }
}

/// The named control plane, or (none named) those whose Talos runs, with an address.
fn candidates(p: &Provisioner, cluster: &str, node: Option<&str>) -> Vec<Node> {
    let inv = p.inventory();
    let records = p.records();
    inv.machines()
        .iter()
        .filter(|m| {
            inv.profile(&m.profile).is_some_and(|pr| {
                pr.role == Role::Controlplane && pr.cluster.as_deref() == Some(cluster)
            })
        })
        .filter_map(|m| {
            let r = records.iter().find(|r| r.mac == m.mac);
            let ip = r.and_then(|r| r.ip).or(m.ip)?;
            let running = r.is_some_and(|r| r.state >= State::Running);
            (node == Some(m.hostname.as_str()) || (node.is_none() && running)).then(|| Node {
                mac: m.mac,
                hostname: m.hostname.clone(),
                ip,
            })
        })
        .collect()
}
