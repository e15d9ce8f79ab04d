//! Replace a failed machine with a new box, safely (`kiln replace`).
//!
//! Order matters for etcd: remove the failed member first, then let the new one
//! join. Adding first would raise the quorum while a member is down; if the new
//! one then failed to join, the cluster could not recover by itself. So the
//! identity (and with it the config) moves to the new MAC only after the old
//! member is gone, and kiln refuses when the remaining members would not keep a
//! quorum. Each step is written to the store before it is acted on, so a crash
//! resumes where it stopped and never repeats or skips the removal.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::BrainError;
use super::{now, Provisioner};
use crate::model::inventory::{Inventory, Machine, Replaced, Role};
use crate::model::mac::Mac;
use crate::store::replacements::{ReplaceRecord, Step};
use crate::talos::client::{self, Credentials};
use crate::talos::proto::machine::{EtcdMemberListRequest, EtcdRemoveMemberByIdRequest};

/// etcd quorum: a strict majority of the members.
pub(crate) fn quorum(members: usize) -> usize {
    members / 2 + 1
}

/// Removing one member of `members` while `healthy_others` other members run:
/// the arithmetic, and whether it is safe.
pub(crate) fn quorum_check(
    members: usize,
    healthy_others: usize,
    host: &str,
) -> Result<String, String> {
    let q_now = quorum(members);
    let after = members.saturating_sub(1);
    let q_after = quorum(after);
    let text = format!(
        "etcd has {members} members; {healthy_others} healthy besides {host}. Quorum now: {q_now} of {members}. After removing {host}: {after} members, quorum {q_after}, {healthy_others} healthy. When the replacement joins: {members} members, quorum {q_now}."
    );
    if healthy_others < q_now {
        return Err(format!(
            "{text} Refused: with {healthy_others} of {members} members healthy the cluster has already lost quorum (needs {q_now}); etcd cannot agree to remove a member. Recover etcd first (etcd snapshot, then bootstrap --recover-from)."
        ));
    }
    if healthy_others < q_after {
        return Err(format!(
            "{text} Refused: the remaining members would not keep a quorum."
        ));
    }
    Ok(text)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    pub plan: Vec<String>,
    pub done: bool,
}

pub(crate) struct Cp {
    pub(crate) hostname: String,
    pub(crate) ip: Ipv4Addr,
}

/// The cluster's control planes (but `except`) with an address. An
/// unreadable record is an error: an empty list would pass quorum checks
/// and the etcd-members check of `kiln bootstrap --reset`.
pub(crate) fn cps_of(
    p: &Provisioner,
    inv: &Inventory,
    cluster: &str,
    except: &str,
) -> Result<Vec<Cp>, crate::store::StoreError> {
    let records = p.try_records()?;
    Ok(inv
        .machines()
        .iter()
        .filter(|m| m.hostname != except)
        .filter(|m| {
            inv.profile(&m.profile).is_some_and(|pr| {
                pr.role == Role::Controlplane && pr.cluster.as_deref() == Some(cluster)
            })
        })
        .filter_map(|m| {
            let ip = records
                .iter()
                .find(|r| r.mac == m.mac)
                .and_then(|r| r.ip)
                .or(m.ip)?;
            Some(Cp {
                hostname: m.hostname.clone(),
                ip,
            })
        })
        .collect())
}

async fn reachable(ip: Ipv4Addr, port: u16, creds: &Credentials) -> bool {
    let fut = async {
        let mut c = client::connect(ip, port, creds).await.ok()?;
        c.version(()).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(8), fut).await,
        Ok(Some(_))
    )
}

/// (member id, all member names) from a healthy control plane.
pub(crate) async fn members(
    ip: Ipv4Addr,
    port: u16,
    creds: &Credentials,
) -> Result<Vec<(u64, String)>, BrainError> {
    let mut c = client::connect(ip, port, creds)
        .await
        .map_err(BrainError::remote)?;
    let r = c
        .etcd_member_list(EtcdMemberListRequest { query_local: false })
        .await
        .map_err(|s| BrainError::Remote(format!("EtcdMemberList: {}", s.message())))?;
    Ok(r.into_inner()
        .messages
        .into_iter()
        .flat_map(|m| m.members)
        .map(|m| (m.id, m.hostname))
        .collect())
}

fn save(p: &Provisioner, r: &ReplaceRecord) -> Result<(), BrainError> {
    Ok(p.store.replacements().put(r)?)
}

pub(crate) fn record(
    p: &Provisioner,
    hostname: &str,
) -> Result<Option<ReplaceRecord>, crate::store::StoreError> {
    p.store.replacements().get(hostname)
}

/// The machine `target` (hostname or MAC) names, and its hostname; a machine
/// already replaced is found by its old MAC too.
fn resolve(inv: &Inventory, target: &str) -> Result<(Option<Machine>, String), BrainError> {
    let machine = match target.parse::<Mac>() {
        Ok(m) => inv.machine(&m).cloned(),
        Err(_) => inv.machine_by_name(target).cloned(),
    };
    let hostname = match (&machine, target.parse::<Mac>()) {
        (Some(m), _) => m.hostname.clone(),
        (None, _) => inv
            .replaced
            .iter()
            .find(|r| r.hostname == target || r.old_mac.to_string() == target)
            .map(|r| r.hostname.clone())
            .ok_or_else(|| format!("{target} is not in the inventory"))?,
    };
    Ok((machine, hostname))
}

/// A replacement already under way resumes; a finished one is reported.
async fn resume_one(
    p: Arc<Provisioner>,
    r: ReplaceRecord,
    hostname: &str,
    new_mac: Mac,
    dry_run: bool,
) -> Result<Report, BrainError> {
    if r.new_mac != new_mac {
        return Err(format!("{hostname} is being (or was) replaced by {}; a second replacement needs that one's MAC as the old MAC", r.new_mac).into());
    }
    if r.step == Step::IdentityMoved {
        return Ok(Report {
            plan: vec![format!("{hostname} already moved to {new_mac}")],
            done: true,
        });
    }
    if dry_run {
        return Ok(Report {
            plan: vec![format!(
                "{hostname}: replacement by {new_mac} under way at step {:?}",
                r.step
            )],
            done: false,
        });
    }
    carry_out(p, r).await
}

/// Plan (and unless `dry_run`, carry out) replacing `target` (hostname or old MAC) by `new_mac`.
pub(crate) async fn replace(
    p: Arc<Provisioner>,
    target: &str,
    new_mac: Mac,
    dry_run: bool,
) -> Result<Report, BrainError> {
    let inv = p.inventory();
    let (machine, hostname) = resolve(&inv, target)?;
    // A replacement already under way resumes; a finished one is reported.
    if let Some(r) = record(&p, &hostname)? {
        return resume_one(p, r, &hostname, new_mac, dry_run).await;
    }
    let machine = machine.ok_or_else(|| format!("{target} is not in the inventory"))?;
    if inv.machine(&new_mac).is_some() {
        return Err(
            format!("new MAC {new_mac} already belongs to a machine in the inventory").into(),
        );
    }
    if inv.retired(&new_mac).is_some() {
        return Err(format!("new MAC {new_mac} was retired by an earlier replacement").into());
    }
    let profile = inv.profile(&machine.profile).ok_or("profile missing")?;
    let mut plan = Vec::new();
    if let Some(cluster) = &profile.cluster {
        let crec = super::bootstrap::cluster_record(&p, cluster)?;
        if crec.bootstrapped_at.is_none() {
            return Err(format!("cluster {cluster} is not bootstrapped yet: nothing to replace into; boot the machine again instead (`kiln machines reinstall`)").into());
        }
        if profile.role == Role::Controlplane {
            plan_etcd_removal(&p, &inv, cluster, &machine, &hostname, &mut plan).await?;
        }
        plan.push(format!("2. delete the Kubernetes Node {hostname}"));
    }
    plan.push(format!(
        "3. move {hostname} ({} profile, {}) from {} to {new_mac}; {} is refused from then on",
        machine.profile,
        machine
            .ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "DHCP".into()),
        machine.mac,
        machine.mac
    ));
    plan.push(format!("4. {new_mac} PXE boots as {hostname}, installs and joins (no Bootstrap: the cluster has one)"));
    if dry_run {
        return Ok(Report { plan, done: false });
    }
    let rec = ReplaceRecord {
        hostname: hostname.clone(),
        old_mac: machine.mac,
        new_mac,
        role: profile.role,
        cluster: profile.cluster.clone(),
        step: Step::Planned,
        started: now(),
        updated: now(),
        log: plan.clone(),
    };
    let p2 = p.clone();
    let r2 = rec.clone();
    crate::store::blocking(move || save(&p2, &r2)).await?;
    let mut report = carry_out(p, rec).await?;
    report.plan = plan.into_iter().chain(report.plan).collect();
    Ok(report)
}

/// A control plane's replacement: it must be dead (not prove itself), and
/// removing its etcd member must keep a quorum. Adds those steps to `plan`.
async fn plan_etcd_removal(
    p: &Arc<Provisioner>,
    inv: &Inventory,
    cluster: &str,
    machine: &Machine,
    hostname: &str,
    plan: &mut Vec<String>,
) -> Result<(), BrainError> {
    let hostname = hostname.to_string();
    let p = p.clone();
    let bundle = p.secrets.get(cluster).ok_or("no secrets")?;
    let creds = Credentials::admin(bundle).map_err(|e| BrainError::Credentials(e.to_string()))?;
    let port = p.cfg.ports.talos_api;
    let old_ip = p.record(&machine.mac)?.and_then(|r| r.ip).or(machine.ip);
    // Alive means: proves it is this cluster's {hostname} (talos::proof),
    // not merely that something answers at its last address.
    if let Some(ip) = old_ip {
        match crate::talos::proof::prove(ip, port, &hostname, &creds).await {
            Ok(()) => {
                return Err(format!(
                    "{hostname} ({ip}) still answers its Talos API: it has not failed. Reset it (`talosctl -n {ip} reset`) or power it off first; kiln replaces only dead machines"
                ).into())
            }
            Err(e) if !e.unreachable() => {
                tracing::warn!(%hostname, "replace: something answers at {hostname}'s address but is not it: {e}");
            }
            Err(_) => {}
        }
    }
    let mut healthy = Vec::new();
    for cp in cps_of(&p, inv, cluster, &hostname)? {
        if reachable(cp.ip, port, &creds).await {
            healthy.push(cp);
        }
    }
    let total = cps_of(&p, inv, cluster, "")?.len();
    let Some(via) = healthy.first() else {
        return Err(quorum_check(total, 0, &hostname)
            .err()
            .unwrap_or_else(|| format!("no other control plane of {cluster} answers its Talos API"))
            .into());
    };
    let ms = match members(via.ip, port, &creds).await {
        Ok(ms) => ms,
        // Without a quorum etcd cannot even list its members: say why.
        Err(e) => {
            return Err(quorum_check(total, healthy.len(), &hostname)
                .err()
                .map(BrainError::Refused)
                .unwrap_or(e))
        }
    };
    let names: Vec<&str> = ms.iter().map(|(_, n)| n.as_str()).collect();
    if !names.contains(&hostname.as_str()) {
        plan.push(format!(
            "etcd member {hostname} is already gone ({} members: {})",
            ms.len(),
            names.join(", ")
        ));
    } else {
        let healthy_members = healthy
            .iter()
            .filter(|h| names.contains(&h.hostname.as_str()))
            .count();
        plan.push(quorum_check(ms.len(), healthy_members, &hostname)?);
        plan.push(format!(
            "1. remove etcd member {hostname} through {} ({})",
            via.hostname, via.ip
        ));
    }
    Ok(())
}

async fn step_to(
    p: &Arc<Provisioner>,
    r: &mut ReplaceRecord,
    step: Step,
    note: String,
) -> Result<(), BrainError> {
    tracing::info!(hostname = %r.hostname, step = ?step, "replace: {note}");
    for mac in [r.old_mac, r.new_mac] {
        p.timeline
            .note(mac, "replace", format!("{}: {note}", r.hostname));
    }
    r.step = step;
    r.updated = now();
    r.log.push(note);
    let (p2, r2) = (p.clone(), r.clone());
    crate::store::blocking(move || save(&p2, &r2)).await
}

/// Remove `hostname`'s etcd member through a healthy control plane. etcd may
/// be electing a new leader right after a failure: retry, and re-list first
/// each time, so a removal that did happen is never repeated.
async fn remove_member(
    p: &Provisioner,
    cluster: &str,
    hostname: &str,
) -> Result<String, BrainError> {
    let bundle = p.secrets.get(cluster).ok_or("no secrets")?;
    let creds = Credentials::admin(bundle).map_err(|e| BrainError::Credentials(e.to_string()))?;
    let port = p.cfg.ports.talos_api;
    let inv = p.inventory();
    let mut via = None;
    for cp in cps_of(p, &inv, cluster, hostname)? {
        if reachable(cp.ip, port, &creds).await {
            via = Some(cp);
            break;
        }
    }
    let via = via.ok_or("no healthy control plane to remove the member through")?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ms = members(via.ip, port, &creds).await?;
        let Some((id, _)) = ms.iter().find(|(_, n)| *n == hostname).cloned() else {
            return Ok(format!("etcd member {hostname} already gone"));
        };
        let mut c = client::connect(via.ip, port, &creds)
            .await
            .map_err(BrainError::remote)?;
        match c
            .etcd_remove_member_by_id(EtcdRemoveMemberByIdRequest { member_id: id })
            .await
        {
            Ok(_) => {
                let after = members(via.ip, port, &creds).await?;
                if after.iter().any(|(i, _)| *i == id) {
                    return Err(BrainError::Remote(format!(
                        "etcd member {hostname} ({id:016x}) is still listed after removal"
                    )));
                }
                return Ok(format!(
                    "removed etcd member {hostname} ({id:016x}) through {}; {} members left",
                    via.hostname,
                    after.len()
                ));
            }
            Err(s)
                if attempt < 6
                    && matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                    ) =>
            {
                tracing::warn!(hostname = %hostname, "replace: removal not accepted yet ({}), retrying", s.message().lines().last().unwrap_or_default());
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(s) => {
                return Err(BrainError::Remote(format!(
                    "EtcdRemoveMemberByID {id:016x} on {}: {}",
                    via.hostname,
                    s.message()
                )))
            }
        }
    }
}

/// Continue a recorded replacement from its step.
pub(crate) async fn carry_out(
    p: Arc<Provisioner>,
    mut r: ReplaceRecord,
) -> Result<Report, BrainError> {
    let mut out = Vec::new();
    if r.step == Step::Planned {
        if let (Role::Controlplane, Some(cluster)) = (r.role, r.cluster.clone()) {
            out.push(remove_member(&p, &cluster, &r.hostname).await?);
        }
        let note = out
            .last()
            .cloned()
            .unwrap_or_else(|| "no etcd member (worker)".into());
        step_to(&p, &mut r, Step::EtcdRemoved, note).await?;
    }
    if r.step == Step::EtcdRemoved {
        let note = match &r.cluster {
            Some(c) => delete_node(&p, c, &r.hostname).await,
            None => "no cluster: no Node object".into(),
        };
        out.push(note.clone());
        step_to(&p, &mut r, Step::NodeDeleted, note).await?;
    }
    if r.step == Step::NodeDeleted {
        let (p2, r2) = (p.clone(), r.clone());
        crate::store::blocking(move || move_identity(&p2, &r2)).await?;
        let note = format!(
            "{} now belongs to {}; {} is refused",
            r.hostname, r.new_mac, r.old_mac
        );
        out.push(note.clone());
        step_to(&p, &mut r, Step::IdentityMoved, note).await?;
    }
    Ok(Report {
        plan: out,
        done: true,
    })
}

fn move_identity(p: &Provisioner, r: &ReplaceRecord) -> Result<(), BrainError> {
    let mut o = crate::model::inventory::load_overrides(&p.cfg)?;
    if !o
        .replaced
        .iter()
        .any(|x| x.hostname == r.hostname && x.new_mac == r.new_mac)
    {
        o.replaced.push(Replaced {
            hostname: r.hostname.clone(),
            old_mac: r.old_mac,
            new_mac: r.new_mac,
            at: now(),
        });
        crate::model::inventory::save_overrides(&p.cfg, &o)?;
    }
    let inv = Inventory::load(&p.cfg).map_err(|e| BrainError::Refused(e.to_string()))?;
    p.replace_inventory(inv);
    Ok(())
}

/// DELETE the Node object through the cluster endpoint with the admin
/// kubeconfig's certificate. 404 is fine; other failures are reported, not
/// fatal (the Node can be deleted by hand), so the replacement goes on.
async fn delete_node(p: &Arc<Provisioner>, cluster: &str, hostname: &str) -> String {
    let p2 = p.clone();
    let (c, h) = (cluster.to_string(), hostname.to_string());
    match tokio::task::spawn_blocking(move || crate::talos::kubeconfig::delete_node(&p2.cfg, &c, &h)).await {
        Ok(Ok(200..=299)) => format!("deleted Kubernetes Node {hostname}"),
        Ok(Ok(404)) => format!("Kubernetes Node {hostname} was already gone (404)"),
        Ok(Ok(code)) => format!("could not delete Kubernetes Node {hostname} (HTTP {code}): run `kubectl delete node {hostname}`"),
        Ok(Err(e)) => format!("could not delete Kubernetes Node {hostname} ({e}): run `kubectl delete node {hostname}`"),
        Err(e) => format!("could not delete Kubernetes Node {hostname} ({e})"),
    }
}

/// Continue any replacement a crash interrupted.
pub(crate) fn resume(p: Arc<Provisioner>) {
    let pending: Vec<ReplaceRecord> = p
        .store
        .replacements()
        .all()
        .unwrap_or_default()
        .into_iter()
        .filter(|r: &ReplaceRecord| r.step < Step::IdentityMoved)
        .collect();
    for r in pending {
        let p = p.clone();
        tokio::spawn(async move {
            tracing::info!(hostname = %r.hostname, step = ?r.step, "replace: resuming");
            if let Err(e) = carry_out(p, r.clone()).await {
                tracing::error!(hostname = %r.hostname, "replace: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_arithmetic() {
        assert_eq!(
            (quorum(1), quorum(2), quorum(3), quorum(4), quorum(5)),
            (1, 2, 2, 3, 3)
        );
        let ok = quorum_check(3, 2, "cp-2").unwrap();
        assert!(
            ok.contains("Quorum now: 2 of 3")
                && ok.contains("After removing cp-2: 2 members, quorum 2"),
            "{ok}"
        );
        let e = quorum_check(3, 1, "cp-2").unwrap_err();
        assert!(e.contains("already lost quorum (needs 2)"), "{e}");
        assert!(quorum_check(5, 3, "cp-5").is_ok());
        assert!(quorum_check(5, 2, "cp-5").is_err());
    }
}
