//! A stand-in for a Talos node's API (apid on :50000), for tests only: Talos
//! cannot run here. It enforces what the real one does, from the Talos source
//! (FACTS.md sections 5-7): mTLS with a client certificate from the cluster's OS
//! CA, roles from the certificate's Organization (Bootstrap needs os:admin), the
//! client leaf's extended key usage must be exactly clientAuth, and Bootstrap's
//! codes and messages: FailedPrecondition "bootstrap is not available yet" /
//! "time is not in sync yet", AlreadyExists "etcd data directory is not empty"
//! once its etcd has data. A Bootstrap on a node whose etcd is empty starts a
//! new etcd cluster, which `Shared::clusters` records so a test can detect a
//! split brain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln::talos::proto::machine::machine_service_server::{MachineService, MachineServiceServer};
use kiln::talos::proto::machine::*;
use kiln::talos::secrets::{pem_of, signing_key, Bundle};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

#[derive(Default)]
pub struct Shared {
    /// Nodes on which Bootstrap created an etcd cluster, in order.
    pub clusters: Mutex<Vec<String>>,
}

pub struct Node {
    pub name: String,
    pub shared: Arc<Shared>,
    /// Every Bootstrap call that passed authentication, with its outcome.
    pub calls: Mutex<Vec<String>>,
    pub etcd_has_data: AtomicBool,
    /// Answer this many calls with "bootstrap is not available yet".
    pub not_ready: AtomicU32,
    /// Then this many with "time is not in sync yet".
    pub time_unsynced: AtomicU32,
    /// Hold a successful Bootstrap's reply this long (to crash the caller mid-call).
    pub reply_delay_ms: AtomicU32,
    /// The real etcd member this node fronts (client URL), for the etcd calls.
    pub etcd: Mutex<Option<String>>,
    /// EtcdRemoveMemberByID calls that reached etcd.
    pub removals: Mutex<Vec<u64>>,
    /// Hold EtcdRemoveMemberByID's reply this long after etcd removed the member.
    pub remove_delay_ms: AtomicU32,
}

/// `etcdctl` against `endpoint` (v3 API), each command bounded by `timeout`
/// (e.g. "5s"). Outer error: it did not run; inner: its stderr when it failed.
/// An endpoint `unix:///dir/name` is etcd's `unix://name` socket in `dir`
/// (etcd takes a socket's path from the URL's host, so only relative to its
/// working directory): etcdctl runs there.
pub fn etcdctl_with(
    endpoint: &str,
    timeout: &str,
    args: &[&str],
) -> std::io::Result<Result<String, String>> {
    let mut c = std::process::Command::new("etcdctl");
    let endpoint = match endpoint.strip_prefix("unix://").map(std::path::Path::new) {
        Some(path) if path.is_absolute() => {
            c.current_dir(path.parent().unwrap_or(path));
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            format!("unix://{name}")
        }
        _ => endpoint.to_string(),
    };
    let o = c
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--command-timeout={timeout}"))
        .args(args)
        .output()?;
    Ok(if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    })
}

/// [`etcdctl_with`] for the Talos API: an etcd that fails is Unavailable.
fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, Status> {
    etcdctl_with(endpoint, "5s", args)
        .map_err(|e| Status::internal(format!("etcdctl: {e}")))?
        .map_err(Status::unavailable)
}

impl Node {
    pub fn bootstrap_calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn roles_and_eku(req: &Request<impl Sized>) -> Result<(Vec<String>, bool), Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| Status::unauthenticated("bad certificate"))?;
    let roles: Vec<String> = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    let eku_ok = match cert.extended_key_usage() {
        Ok(Some(e)) => {
            e.value.client_auth && !e.value.server_auth && !e.value.any && e.value.other.is_empty()
        }
        _ => false,
    };
    Ok((roles, eku_ok))
}

fn require(req: &Request<impl Sized>, allowed: &[&str]) -> Result<(), Status> {
    let (roles, eku_ok) = roles_and_eku(req)?;
    if !eku_ok {
        return Err(Status::permission_denied(
            "client certificate extended key usage must be clientAuth",
        ));
    }
    if !roles.iter().any(|r| allowed.contains(&r.as_str())) {
        return Err(Status::permission_denied(format!(
            "not authorized: roles {roles:?}"
        )));
    }
    Ok(())
}

pub struct Svc(pub Arc<Node>);

#[tonic::async_trait]
impl MachineService for Svc {
    async fn bootstrap(
        &self,
        req: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        require(&req, &["os:admin"])?;
        let n = &self.0;
        let out = if n.not_ready.load(Ordering::SeqCst) > 0 {
            n.not_ready.fetch_sub(1, Ordering::SeqCst);
            Err(Status::failed_precondition(
                "bootstrap is not available yet",
            ))
        } else if n.time_unsynced.load(Ordering::SeqCst) > 0 {
            n.time_unsynced.fetch_sub(1, Ordering::SeqCst);
            Err(Status::failed_precondition("time is not in sync yet"))
        } else if n.etcd_has_data.swap(true, Ordering::SeqCst) {
            Err(Status::already_exists("etcd data directory is not empty"))
        } else {
            n.shared.clusters.lock().unwrap().push(n.name.clone());
            Ok(Response::new(BootstrapResponse {
                messages: vec![Bootstrap { metadata: None }],
            }))
        };
        n.calls.lock().unwrap().push(match &out {
            Ok(_) => "ok".to_string(),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        });
        let delay = n.reply_delay_ms.load(Ordering::SeqCst);
        if out.is_ok() && delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        out
    }

    async fn etcd_member_list(
        &self,
        req: Request<EtcdMemberListRequest>,
    ) -> Result<Response<EtcdMemberListResponse>, Status> {
        require(&req, &["os:admin", "os:operator", "os:reader"])?;
        let ep = self
            .0
            .etcd
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Status::failed_precondition("etcd is not running"))?;
        let out =
            tokio::task::spawn_blocking(move || etcdctl(&ep, &["member", "list", "-w", "json"]))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| Status::internal(e.to_string()))?;
        let urls = |m: &serde_json::Value, k: &str| -> Vec<String> {
            m[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str().map(String::from))
                .collect()
        };
        let members = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| EtcdMember {
                id: m["ID"].as_u64().unwrap_or_default(),
                hostname: m["name"].as_str().unwrap_or_default().to_string(),
                peer_urls: urls(m, "peerURLs"),
                client_urls: urls(m, "clientURLs"),
                is_learner: m["isLearner"].as_bool().unwrap_or(false),
            })
            .collect();
        Ok(Response::new(EtcdMemberListResponse {
            messages: vec![EtcdMembers {
                metadata: None,
                legacy_members: vec![],
                members,
            }],
        }))
    }

    async fn etcd_remove_member_by_id(
        &self,
        req: Request<EtcdRemoveMemberByIdRequest>,
    ) -> Result<Response<EtcdRemoveMemberByIdResponse>, Status> {
        require(&req, &["os:admin"])?;
        let id = req.get_ref().member_id;
        let ep = self
            .0
            .etcd
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Status::failed_precondition("etcd is not running"))?;
        let hex = format!("{id:x}");
        tokio::task::spawn_blocking(move || etcdctl(&ep, &["member", "remove", &hex]))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        self.0.removals.lock().unwrap().push(id);
        let delay = self.0.remove_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        Ok(Response::new(EtcdRemoveMemberByIdResponse {
            messages: vec![EtcdRemoveMemberById { metadata: None }],
        }))
    }

    async fn version(&self, req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        require(&req, &["os:admin", "os:operator", "os:reader"])?;
        Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: None,
                version: Some(VersionInfo {
                    tag: "v1.13.9".into(),
                    ..Default::default()
                }),
                platform: Some(PlatformInfo {
                    name: "metal".into(),
                    mode: "metal".into(),
                }),
                features: Some(FeaturesInfo { rbac: true }),
            }],
        }))
    }
}

/// A server certificate as machined issues it: signed by the OS CA, the node's
/// address and 127.0.0.1 as IP SANs, its hostname and FQDN as DNS SANs,
/// serverAuth (controllers/secrets/api.go, api_cert_sans.go).
pub fn server_identity(bundle: &Bundle, ip: std::net::IpAddr, hostname: &str) -> Identity {
    let ca_pem = pem_of(&bundle.os().crt).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, signing_key(&bundle.os().key).unwrap()).unwrap();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![
        rcgen::SanType::IpAddress(ip),
        rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        rcgen::SanType::DnsName(hostname.try_into().unwrap()),
        rcgen::SanType::DnsName(format!("{hostname}.lab.local").try_into().unwrap()),
    ];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&kp, &issuer).unwrap();
    Identity::from_pem(cert.pem(), kp.serialize_pem())
}

pub struct Running {
    pub node: Arc<Node>,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Start a stand-in node on `addr` (on the given runtime).
pub fn start(
    rt: &tokio::runtime::Runtime,
    name: &str,
    addr: SocketAddr,
    bundle: &Bundle,
    shared: Arc<Shared>,
) -> Running {
    start_with(rt, name, addr, bundle, bundle, shared)
}

/// A stand-in whose server certificate comes from `server`'s OS CA while it
/// accepts clients of `clients`' OS CA: with `server` another cluster's
/// bundle, an impostor that would take kiln's Bootstrap if kiln let it.
pub fn start_with(
    rt: &tokio::runtime::Runtime,
    name: &str,
    addr: SocketAddr,
    server: &Bundle,
    clients: &Bundle,
    shared: Arc<Shared>,
) -> Running {
    let node = Arc::new(Node {
        name: name.into(),
        shared,
        calls: Mutex::new(Vec::new()),
        etcd_has_data: AtomicBool::new(false),
        not_ready: AtomicU32::new(0),
        time_unsynced: AtomicU32::new(0),
        reply_delay_ms: AtomicU32::new(0),
        etcd: Mutex::new(None),
        removals: Mutex::new(Vec::new()),
        remove_delay_ms: AtomicU32::new(0),
    });
    let tls = ServerTlsConfig::new()
        .identity(server_identity(server, addr.ip(), name))
        .client_ca_root(Certificate::from_pem(pem_of(&clients.os().crt).unwrap()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let svc = MachineServiceServer::new(Svc(node.clone()));
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    rt.spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
    });
    Running {
        node,
        addr,
        stop: Some(tx),
    }
}

// The events client, shared with bench/storm.
#[path = "sink.rs"]
mod sink;
#[allow(unused_imports)] // not every test binary publishes events
pub use sink::{ev, publish};
