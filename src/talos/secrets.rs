//! The cluster secrets bundle, in the exact format of `talosctl gen secrets`
//! (pkg/machinery/config/generate/secrets): lower-case go-yaml keys, certificates
//! and keys as standard base64 of their PEM text, Talos's own PEM labels
//! (`ED25519 PRIVATE KEY` for the OS CA, SEC1 `EC PRIVATE KEY`, PKCS#1
//! `RSA PRIVATE KEY`). Files holding it are written 0600.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde::{Deserialize, Serialize};

use crate::model::problems::Problems;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Invalid(Problems),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("generating {what}: {message}")]
    Crypto { what: &'static str, message: String },
    #[error(transparent)]
    File(#[from] crate::model::files::FileError),
}

/// A certificate and key pair, each the base64 of its PEM text (as in the file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertAndKey {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crt: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub secret: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    #[serde(default)]
    pub bootstraptoken: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretboxencryptionsecret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbcencryptionsecret: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustdInfo {
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<CertAndKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<CertAndKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8saggregator: Option<CertAndKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8sserviceaccount: Option<CertAndKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<CertAndKey>,
}

/// `secrets.yaml`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    #[serde(default)]
    pub cluster: ClusterIdentity,
    #[serde(default)]
    pub secrets: Secrets,
    #[serde(default)]
    pub trustdinfo: TrustdInfo,
    #[serde(default)]
    pub certs: Certs,
}

impl std::fmt::Debug for Bundle {
    // Never print secrets, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bundle(<redacted>)")
    }
}

/// Decode a base64(PEM) field to its PEM text.
pub fn pem_of(b64: &str) -> Option<String> {
    let raw = STANDARD.decode(b64.trim()).ok()?;
    String::from_utf8(raw).ok()
}

pub fn b64(pem: &str) -> String {
    STANDARD.encode(pem.as_bytes())
}

fn token_ok(t: &str) -> bool {
    let Some((a, b)) = t.split_once('.') else {
        return false;
    };
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    };
    ok(a, 6) && ok(b, 16)
}

/// A bootstrap/trustd token: `[0-9a-z]{6}.[0-9a-z]{16}`.
pub fn new_token() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| {
                // Rejection sampling keeps the distribution uniform.
                loop {
                    let b = (OsRng.next_u32() & 0xff) as u8;
                    if (b as usize) < 252 {
                        return ALPHABET[b as usize % 36] as char;
                    }
                }
            })
            .collect()
    };
    format!("{}.{}", pick(6), pick(16))
}

fn random_b64(url_safe: bool) -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    if url_safe {
        URL_SAFE.encode(b)
    } else {
        STANDARD.encode(b)
    }
}

fn crypto(what: &'static str) -> impl Fn(rcgen::Error) -> SecretsError {
    move |e| SecretsError::Crypto {
        what,
        message: e.to_string(),
    }
}

const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 key as Talos writes it: PKCS#8 v1 under `ED25519 PRIVATE KEY`.
fn ed25519_key() -> Result<(KeyPair, String), SecretsError> {
    let kp = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(crypto("Ed25519 key"))?;
    let der = kp.serialize_der();
    // ring emits PKCS#8 v2 (with the public key); Go's parser wants v1: same
    // 16-byte header shape with version 0, then the 32-byte seed.
    let seed = der.get(16..48).ok_or(SecretsError::Crypto {
        what: "Ed25519 key",
        message: "unexpected PKCS#8 layout".into(),
    })?;
    let mut v1 = ED25519_PKCS8_V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    let pem = pem_block("ED25519 PRIVATE KEY", &v1);
    let kp = KeyPair::try_from(v1.as_slice()).map_err(crypto("Ed25519 key"))?;
    Ok((kp, pem))
}

/// A P-256 key as Talos writes it: SEC1 under `EC PRIVATE KEY`.
fn p256_key() -> Result<(KeyPair, String), SecretsError> {
    use p256::pkcs8::EncodePrivateKey;
    let sk = p256::SecretKey::random(&mut OsRng);
    // SEC1 with the named-curve parameters, as Go's x509.MarshalECPrivateKey
    // writes it (p256's own encoder leaves them out, and Go then cannot tell the curve).
    let private = sk.to_bytes();
    let public =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&sk.public_key(), false);
    let ec = sec1::EcPrivateKey {
        private_key: &private,
        parameters: Some(sec1::EcParameters::NamedCurve(
            sec1::der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
        )),
        public_key: Some(public.as_bytes()),
    };
    let sec1 = sec1::der::Encode::to_der(&ec).map_err(|e| SecretsError::Crypto {
        what: "P-256 key",
        message: e.to_string(),
    })?;
    let pkcs8 = sk.to_pkcs8_der().map_err(|e| SecretsError::Crypto {
        what: "P-256 key",
        message: e.to_string(),
    })?;
    let kp = KeyPair::try_from(pkcs8.as_bytes()).map_err(crypto("P-256 key"))?;
    Ok((kp, pem_block("EC PRIVATE KEY", &sec1)))
}

pub fn pem_block(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// A self-signed CA as siderolabs/crypto makes them: 10 years, CA:TRUE critical,
/// KU DigitalSignature+CertSign critical, EKU serverAuth+clientAuth.
fn ca(org: Option<&str>, key: &KeyPair) -> Result<String, SecretsError> {
    let mut p = CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now;
    p.not_after = now + time::Duration::hours(87600);
    p.serial_number = Some(serial());
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(p.self_signed(key).map_err(crypto("CA certificate"))?.pem())
}

fn ca_pair(org: Option<&str>, ed25519: bool) -> Result<CertAndKey, SecretsError> {
    let (kp, key_pem) = if ed25519 { ed25519_key()? } else { p256_key()? };
    let crt = ca(org, &kp)?;
    Ok(CertAndKey {
        crt: b64(&crt),
        key: b64(&key_pem),
    })
}

fn rsa_4096() -> Result<String, SecretsError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut OsRng, 4096).map_err(|e| SecretsError::Crypto {
        what: "RSA key",
        message: e.to_string(),
    })?;
    let pem = key
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| SecretsError::Crypto {
            what: "RSA key",
            message: e.to_string(),
        })?;
    Ok(pem.to_string())
}

impl Bundle {
    /// A new bundle for Talos `minor` (1.x): URL-safe cluster id through v1.13,
    /// RSA service-account key from v1.7, secretbox from v1.3.
    pub fn generate(minor: u32) -> Result<Bundle, SecretsError> {
        let sa_key = if minor >= 7 {
            rsa_4096()?
        } else {
            let (_, pem) = p256_key()?;
            pem
        };
        Ok(Bundle {
            cluster: ClusterIdentity {
                id: random_b64(minor <= 13),
                secret: random_b64(false),
            },
            secrets: Secrets {
                bootstraptoken: new_token(),
                secretboxencryptionsecret: (minor >= 3).then(|| random_b64(false)),
                aescbcencryptionsecret: (minor < 3).then(|| random_b64(false)),
            },
            trustdinfo: TrustdInfo { token: new_token() },
            certs: Certs {
                etcd: Some(ca_pair(Some("etcd"), false)?),
                k8s: Some(ca_pair(Some("kubernetes"), false)?),
                k8saggregator: Some(ca_pair(None, false)?),
                k8sserviceaccount: Some(CertAndKey {
                    crt: String::new(),
                    key: b64(&sa_key),
                }),
                os: Some(ca_pair(Some("talos"), true)?),
            },
        })
    }

    /// Parse and validate a secrets.yaml text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Bundle, SecretsError> {
        let b: Bundle = crate::model::problems::parse_yaml(text).map_err(|e| {
            let mut p = Problems::default();
            p.push(file, "", e.to_string());
            SecretsError::Invalid(p)
        })?;
        b.validate(file).map_err(SecretsError::Invalid)?;
        Ok(b)
    }

    pub fn load(path: &Path) -> Result<Bundle, SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Bundle::parse(&text, path)
    }

    /// Talos's own checks (bundle.go Validate), plus that every PEM decodes with the
    /// label Talos expects.
    pub fn validate(&self, file: &Path) -> Result<(), Problems> {
        let mut p = Problems::default();
        if self.cluster.id.is_empty() {
            p.push(file, "cluster.id", "is required");
        }
        if self.cluster.secret.is_empty() {
            p.push(file, "cluster.secret", "is required");
        }
        if !token_ok(&self.secrets.bootstraptoken) {
            p.push(
                file,
                "secrets.bootstraptoken",
                "must look like abcdef.0123456789abcdef",
            );
        }
        if !token_ok(&self.trustdinfo.token) {
            p.push(
                file,
                "trustdinfo.token",
                "must look like abcdef.0123456789abcdef",
            );
        }
        match (&self.secrets.secretboxencryptionsecret, &self.secrets.aescbcencryptionsecret) {
            (Some(_), Some(_)) | (None, None) => p.push(
                file,
                "secrets",
                "exactly one of [secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret] is required",
            ),
            _ => {}
        }
        let labels_key: &[&str] = &[
            "EC PRIVATE KEY",
            "ED25519 PRIVATE KEY",
            "RSA PRIVATE KEY",
            "PRIVATE KEY",
        ];
        for (name, ck, needs_crt) in [
            ("etcd", &self.certs.etcd, true),
            ("k8s", &self.certs.k8s, true),
            ("k8saggregator", &self.certs.k8saggregator, true),
            ("k8sserviceaccount", &self.certs.k8sserviceaccount, false),
            ("os", &self.certs.os, true),
        ] {
            let Some(ck) = ck else {
                p.push(file, &format!("certs.{name}"), "is required");
                continue;
            };
            if needs_crt
                && !pem_of(&ck.crt).is_some_and(|s| s.contains("-----BEGIN CERTIFICATE-----"))
            {
                p.push(
                    file,
                    &format!("certs.{name}.crt"),
                    "must be base64 of a PEM certificate",
                );
            }
            if !pem_of(&ck.key).is_some_and(|s| {
                labels_key
                    .iter()
                    .any(|l| s.contains(&format!("-----BEGIN {l}-----")))
            }) {
                p.push(
                    file,
                    &format!("certs.{name}.key"),
                    "must be base64 of a PEM private key",
                );
            }
        }
        p.into_result(())
    }

    /// talosctl's layout: go-yaml, 4-space indentation.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string_with_options(self, crate::model::yaml::yaml_options())
            .unwrap_or_default()
    }

    /// Write to `path` with mode 0600 (refusing to overwrite unless `force`).
    pub fn save(&self, path: &Path, force: bool) -> Result<(), SecretsError> {
        Ok(crate::model::files::write_private(
            path,
            self.to_yaml().as_bytes(),
            force,
        )?)
    }

    /// SHA-256 of each CA certificate (DER), by name (`os`, `k8s`, `etcd`,
    /// ...): what the store pins so a swapped secrets file is noticed.
    pub fn ca_fingerprints(&self) -> std::collections::BTreeMap<String, String> {
        use sha2::Digest;
        let c = &self.certs;
        [
            ("os", &c.os),
            ("k8s", &c.k8s),
            ("etcd", &c.etcd),
            ("k8saggregator", &c.k8saggregator),
        ]
        .into_iter()
        .filter_map(|(name, ck)| {
            let der = parse_pem(&pem_of(&ck.as_ref()?.crt)?)?.1;
            let hex = crate::model::hex::encode(&sha2::Sha256::digest(&der));
            Some((name.to_string(), hex))
        })
        .collect()
    }

    pub fn os(&self) -> &CertAndKey {
        static EMPTY: CertAndKey = CertAndKey {
            crt: String::new(),
            key: String::new(),
        };
        self.certs.os.as_ref().unwrap_or(&EMPTY)
    }
}

/// Load a CA private key (any label Talos writes) for signing with rcgen.
pub fn signing_key(key_b64: &str) -> Result<KeyPair, SecretsError> {
    let bad = |message: String| SecretsError::Crypto {
        what: "a CA signing key",
        message,
    };
    let pem = pem_of(key_b64).ok_or_else(|| bad("key is not base64 of PEM".into()))?;
    let (label, der) = parse_pem(&pem).ok_or_else(|| bad("key is not PEM".into()))?;
    match label.as_str() {
        "ED25519 PRIVATE KEY" | "PRIVATE KEY" => {
            KeyPair::try_from(der.as_slice()).map_err(|e| bad(e.to_string()))
        }
        "EC PRIVATE KEY" => {
            use p256::pkcs8::EncodePrivateKey;
            let sk = p256::SecretKey::from_sec1_der(&der).map_err(|e| bad(e.to_string()))?;
            let pkcs8 = sk.to_pkcs8_der().map_err(|e| bad(e.to_string()))?;
            KeyPair::try_from(pkcs8.as_bytes()).map_err(|e| bad(e.to_string()))
        }
        other => Err(bad(format!("unsupported CA key type {other}"))),
    }
}

/// First PEM block: (label, DER).
pub fn parse_pem(pem: &str) -> Option<(String, Vec<u8>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest[body_start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some((label, STANDARD.decode(body).ok()?))
}

/// A client certificate signed by the cluster's OS CA (talosctl's admin cert:
/// key type follows the CA, O=os:admin, KU DigitalSignature, EKU clientAuth, 1 year).
pub fn issue_client_cert(
    bundle: &Bundle,
    roles: &[&str],
) -> Result<(String, String), SecretsError> {
    issue_client_cert_from(bundle.os(), None, roles)
}

/// A client certificate signed by `ca`, with the CA's key type, 1 year:
/// (certificate PEM, key PEM in Talos's labels).
pub fn issue_client_cert_from(
    ca: &CertAndKey,
    cn: Option<&str>,
    orgs: &[&str],
) -> Result<(String, String), SecretsError> {
    let bad = |message: String| SecretsError::Crypto {
        what: "client certificate",
        message,
    };
    let ca_pem = pem_of(&ca.crt).ok_or_else(|| bad("CA is not PEM".into()))?;
    let ca_key = signing_key(&ca.key)?;
    let ed =
        pem_of(&ca.key).is_some_and(|k| k.contains("ED25519") || k.contains("BEGIN PRIVATE KEY"));
    let (kp, key_pem) = if ed { ed25519_key()? } else { p256_key()? };
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(crypto("client certificate"))?;
    let mut p = CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(365);
    p.serial_number = Some(serial());
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p
        .signed_by(&kp, &issuer)
        .map_err(crypto("client certificate"))?;
    Ok((cert.pem(), key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_talos_shape() {
        for _ in 0..50 {
            assert!(token_ok(&new_token()));
        }
        assert!(!token_ok("ABCDEF.0123456789abcdef"));
    }

    #[test]
    fn generated_bundle_validates_and_round_trips() {
        let b = Bundle::generate(13).unwrap();
        b.validate(Path::new("x")).unwrap();
        assert!(pem_of(&b.os().key)
            .unwrap()
            .starts_with("-----BEGIN ED25519 PRIVATE KEY-----"));
        assert!(pem_of(&b.certs.etcd.as_ref().unwrap().key)
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----"));
        assert!(pem_of(&b.certs.k8sserviceaccount.as_ref().unwrap().key)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        // Through v1.13 the cluster id is URL-safe base64; v1.14 changed it to
        // the standard alphabet (release-1.14 hack/release.toml).
        assert_eq!(URL_SAFE.decode(&b.cluster.id).unwrap().len(), 32);
        let b14 = Bundle::generate(14).unwrap();
        assert_eq!(STANDARD.decode(&b14.cluster.id).unwrap().len(), 32);
        let alphabet = |url: bool| -> String { (0..64).map(|_| random_b64(url)).collect() };
        let (old, new) = (alphabet(true), alphabet(false));
        assert!(
            !old.contains(['+', '/']) && old.contains(['-', '_']),
            "{old}"
        );
        assert!(
            !new.contains(['-', '_']) && new.contains(['+', '/']),
            "{new}"
        );
        let again = Bundle::parse(&b.to_yaml(), Path::new("x")).unwrap();
        assert_eq!(again, b);
        assert_eq!(format!("{b:?}"), "Bundle(<redacted>)");
    }

    #[test]
    fn validation_names_keys() {
        let e = match Bundle::parse(
            "cluster:\n    id: x\nsecrets:\n    bootstraptoken: nope\n",
            Path::new("s.yaml"),
        ) {
            Err(SecretsError::Invalid(p)) => p.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(e.contains("s.yaml: cluster.secret: is required"), "{e}");
        assert!(
            e.contains("s.yaml: secrets.bootstraptoken: must look like"),
            "{e}"
        );
        assert!(e.contains("exactly one of [secrets.secretboxencryptionsecret, secrets.aescbcencryptionsecret] is required"), "{e}");
        assert!(e.contains("s.yaml: certs.os: is required"), "{e}");
    }
}
