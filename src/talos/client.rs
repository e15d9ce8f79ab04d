//! A Talos API (apid, :50000) client over mTLS: the cluster's OS CA as the only
//! trusted root, a client certificate with the `os:admin` role signed by it.

use std::net::Ipv4Addr;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::secrets::{issue_client_cert, pem_of, Bundle};
use crate::talos::proto::machine::machine_service_client::MachineServiceClient;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client certificate: {0}")]
    Cert(String),
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
}

/// Credentials for one cluster, made once and reused for every call.
#[derive(Clone)]
pub struct Credentials {
    pub(crate) ca: String,
    pub(crate) crt: String,
    pub(crate) key: String,
}

impl Credentials {
    pub fn admin(bundle: &Bundle) -> Result<Credentials, ClientError> {
        Credentials::with_roles(bundle, &["os:admin"])
    }

    pub fn with_roles(bundle: &Bundle, roles: &[&str]) -> Result<Credentials, ClientError> {
        let (crt, key) =
            issue_client_cert(bundle, roles).map_err(|e| ClientError::Cert(e.to_string()))?;
        let ca =
            pem_of(&bundle.os().crt).ok_or_else(|| ClientError::Cert("OS CA is not PEM".into()))?;
        // rustls reads the PKCS#8 body, not Talos's label.
        let key = key.replace("ED25519 PRIVATE KEY", "PRIVATE KEY");
        Ok(Credentials { ca, crt, key })
    }
}

/// Connect to the node's apid; the server certificate must carry `ip`.
pub async fn connect(
    ip: Ipv4Addr,
    port: u16,
    creds: &Credentials,
) -> Result<MachineServiceClient<Channel>, ClientError> {
    let addr = format!("https://{ip}:{port}");
    let err = |message: String| ClientError::Connect {
        addr: addr.clone(),
        message,
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&creds.ca))
        .identity(Identity::from_pem(&creds.crt, &creds.key))
        .domain_name(ip.to_string());
    let ch = Endpoint::from_shared(addr.clone())
        .map_err(|e| err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .map_err(|e| {
            err(format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ))
        })?;
    Ok(MachineServiceClient::new(ch))
}
