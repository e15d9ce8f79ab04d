//! Proof that a Talos node is the cluster's machine kiln thinks it is, before
//! kiln trusts it with Bootstrap or calls it alive: over mTLS with the
//! cluster's admin certificate, the node's apid must present a server
//! certificate that chains to the cluster's OS CA (only a node that received
//! the cluster's config can get one: machined issues it from `machine.ca`),
//! carries the node's address, and names the inventory hostname (apid's
//! certificate has the hostname and FQDN as SANs; FACTS.md section 6).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use x509_parser::extensions::GeneralName;

use super::client::Credentials;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProofError {
    /// Nothing answered (or it hung): the node may be down or booting.
    #[error("{addr}: not reachable: {why}")]
    Unreachable { addr: String, why: String },
    /// Something answered, but not with a certificate from the cluster's OS CA
    /// for this address (a stranger, or a node in maintenance mode).
    #[error("{addr}: no certificate from the cluster's OS CA for this address: {why}")]
    Untrusted { addr: String, why: String },
    /// A node of this cluster, but another machine than the inventory says.
    #[error("{addr}: its certificate names {found:?}, not {want}")]
    WrongMachine {
        addr: String,
        want: String,
        found: Vec<String>,
    },
    #[error("credentials: {0}")]
    Credentials(String),
}

impl ProofError {
    /// The node did not answer at all (as opposed to answering wrongly).
    pub(crate) fn unreachable(&self) -> bool {
        matches!(self, ProofError::Unreachable { .. })
    }
}

fn tls_config(creds: &Credentials) -> Result<rustls::ClientConfig, ProofError> {
    let bad = |e: String| ProofError::Credentials(e);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(creds.ca.as_bytes()) {
        roots
            .add(c.map_err(|e| bad(format!("OS CA: {e}")))?)
            .map_err(|e| bad(format!("OS CA: {e}")))?;
    }
    let chain = CertificateDer::pem_slice_iter(creds.crt.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("client certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(creds.key.as_bytes())
        .map_err(|e| bad(format!("client key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// The DNS names in a DER certificate's subjectAltName.
fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Whether `names` name `hostname` (itself, or an FQDN under it).
fn names_host(names: &[String], hostname: &str) -> bool {
    let h = hostname.to_ascii_lowercase();
    names.iter().any(|n| {
        *n == h
            || n.strip_prefix(h.as_str())
                .is_some_and(|r| r.starts_with('.'))
    })
}

/// `fut` within `secs` seconds; its error becomes `err`, a timeout Unreachable.
async fn within<T, E: std::fmt::Display>(
    addr: &str,
    secs: u64,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
    err: impl Fn(String, String) -> ProofError,
) -> Result<T, ProofError> {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err(addr.to_string(), e.to_string())),
        Err(_) => Err(ProofError::Unreachable {
            addr: addr.to_string(),
            why: format!("{what} timed out"),
        }),
    }
}

/// Prove that `ip:port` is the cluster node `hostname` (see the module doc).
pub(crate) async fn prove(
    ip: Ipv4Addr,
    port: u16,
    hostname: &str,
    creds: &Credentials,
) -> Result<(), ProofError> {
    let addr = format!("{ip}:{port}");
    let cfg = tls_config(creds)?;
    let unreachable = |addr: String, why: String| ProofError::Unreachable { addr, why };
    let untrusted = |addr: String, why: String| ProofError::Untrusted { addr, why };
    let tcp = within(
        &addr,
        5,
        "connect",
        tokio::net::TcpStream::connect((ip, port)),
        unreachable,
    )
    .await?;
    let name = ServerName::IpAddress(IpAddr::V4(ip).into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let stream = within(
        &addr,
        10,
        "TLS handshake",
        tls.connect(name, tcp),
        untrusted,
    )
    .await?;
    let (_, conn) = stream.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| ProofError::Untrusted {
            addr: addr.clone(),
            why: "no server certificate".into(),
        })?;
    let found = dns_names(leaf);
    if names_host(&found, hostname) {
        Ok(())
    } else {
        Err(ProofError::WrongMachine {
            addr,
            want: hostname.to_string(),
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hostname_or_its_fqdn_names_the_machine() {
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(names_host(&n(&["cp-1"]), "cp-1"));
        assert!(names_host(&n(&["localhost", "cp-1.lab.example"]), "CP-1"));
        assert!(!names_host(&n(&["cp-10", "cp-1x.lab"]), "cp-1"));
        assert!(!names_host(&n(&[]), "cp-1"));
    }
}
