//! A stand-in for the Kubernetes API's Node deletion, for tests: HTTPS with a
//! server certificate from the cluster's Kubernetes CA, client certificates
//! required from that CA with O=system:masters (as kube-apiserver authorizes
//! the admin kubeconfig), `DELETE /api/v1/nodes/<name>` → 200 or 404.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln::talos::secrets::{parse_pem, pem_of, signing_key, Bundle};

pub struct Kube {
    pub addr: SocketAddr,
    pub nodes: Arc<Mutex<HashSet<String>>>,
    /// (path, status) of every authorized request.
    pub calls: Arc<Mutex<Vec<(String, u16)>>>,
    pub delay_ms: Arc<AtomicU32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Kube {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn start(
    rt: &tokio::runtime::Runtime,
    bundle: &Bundle,
    addr: SocketAddr,
    nodes: &[&str],
) -> Kube {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let k8s = bundle.certs.k8s.clone().unwrap();
    let ca_pem = pem_of(&k8s.crt).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, signing_key(&k8s.key).unwrap()).unwrap();
    let kp = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::IpAddress(addr.ip())];
    let cert = p.signed_by(&kp, &issuer).unwrap();
    let ca_der = CertificateDer::from(parse_pem(&ca_pem).unwrap().1);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kp.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    let nodes = Arc::new(Mutex::new(
        nodes.iter().map(|s| s.to_string()).collect::<HashSet<_>>(),
    ));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let delay_ms = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let (n2, c2, d2) = (nodes.clone(), calls.clone(), delay_ms.clone());
    rt.spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                _ = &mut rx => break,
            };
            let (acceptor, nodes, calls, delay) =
                (acceptor.clone(), n2.clone(), c2.clone(), d2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let masters = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first().cloned())
                    .and_then(|c| {
                        x509_parser::parse_x509_certificate(c.as_ref())
                            .ok()
                            .map(|(_, x)| {
                                x.subject()
                                    .iter_organization()
                                    .any(|o| o.as_str() == Ok("system:masters"))
                            })
                    })
                    .unwrap_or(false);
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (nodes, calls, delay) = (nodes.clone(), calls.clone(), delay.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let status = if !masters {
                                403
                            } else if req.method() == hyper::Method::DELETE {
                                match path.strip_prefix("/api/v1/nodes/") {
                                    Some(n) if nodes.lock().unwrap().remove(n) => 200,
                                    _ => 404,
                                }
                            } else {
                                404
                            };
                            if masters {
                                calls.lock().unwrap().push((path, status));
                            }
                            let d = delay.load(Ordering::SeqCst);
                            if d > 0 {
                                tokio::time::sleep(Duration::from_millis(d as u64)).await;
                            }
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(hyper::body::Bytes::from("{}")))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Kube {
        addr,
        nodes,
        calls,
        delay_ms,
        stop: Some(tx),
    }
}
