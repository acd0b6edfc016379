//! `mercator cert`: client certificates for mTLS callers, and extra CAs for trying what the
//! gateway refuses.
//!
//! A client certificate carries the identity the gateway maps to a user: a URI SAN (a
//! SPIFFE id such as `spiffe://example.org/ns/prod/sa/billing`), or only its subject. The
//! gateway's Envoy verifies the chain and validity during the handshake; the filter maps
//! the verified identity through `identity.clients` in the gateway configuration.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::dev_init::{
    ca_params, certificate_error, distinguished_name, new_key_pair, set_validity,
};
use super::files::{create_private_dir, read_text, write_new, PUBLIC, SECRET};
use super::ToolError;

/// What a client certificate should say and how long it lives.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    /// File stem of the certificate and key, and the subject's common name.
    pub name: String,
    /// The URI SAN; none makes a certificate identified by its subject alone.
    pub spiffe_id: Option<String>,
    /// Days of validity from now; a negative number makes a certificate that has already
    /// expired (for testing that the gateway refuses it).
    pub days: i64,
}

/// The files a command wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The certificate.
    pub certificate: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
    /// The subject, as the gateway sees it (RFC 2253).
    pub subject: String,
}

/// Issues a client certificate from the CA in `ca_dir` (`ca.pem`, `ca-key.pem`) into
/// `out_dir` as `<name>.pem` and `<name>-key.pem`. Existing files are never overwritten.
pub fn client_certificate(
    ca_dir: &Path,
    out_dir: &Path,
    request: &ClientRequest,
) -> Result<Written, ToolError> {
    let issuer = load_issuer(ca_dir)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&request.name);
    if let Some(uri) = &request.spiffe_id {
        let uri = uri
            .clone()
            .try_into()
            .map_err(certificate_error("the client certificate's URI SAN"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    if request.days >= 0 {
        set_validity(&mut params, Duration::days(request.days))?;
    } else {
        set_validity(&mut params, Duration::days(1))?;
        let now = OffsetDateTime::now_utc();
        params.not_before = now + Duration::days(request.days) - Duration::days(1);
        params.not_after = now + Duration::days(request.days);
    }

    let key = new_key_pair("the client key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(certificate_error("the client certificate"))?;

    create_private_dir(out_dir)?;
    let written = Written {
        certificate: out_dir.join(format!("{}.pem", request.name)),
        key: out_dir.join(format!("{}-key.pem", request.name)),
        subject: format!("CN={},O=Mercator Jupiter (development)", request.name),
    };
    write_new(&written.certificate, cert.pem().as_bytes(), PUBLIC)?;
    write_new(&written.key, key.serialize_pem().as_bytes(), SECRET)?;
    Ok(written)
}

/// Makes a separate CA in `out_dir` (`ca.pem`, `ca-key.pem`): one the gateway does not
/// trust, for checking that its certificates are refused.
pub fn certificate_authority(out_dir: &Path, common_name: &str) -> Result<Written, ToolError> {
    let key = new_key_pair("the CA's key")?;
    let mut params = ca_params()?;
    params.distinguished_name = distinguished_name(common_name);
    let cert = params
        .self_signed(&key)
        .map_err(certificate_error("the CA certificate"))?;

    create_private_dir(out_dir)?;
    let written = Written {
        certificate: out_dir.join("ca.pem"),
        key: out_dir.join("ca-key.pem"),
        subject: format!("CN={common_name},O=Mercator Jupiter (development)"),
    };
    write_new(&written.certificate, cert.pem().as_bytes(), PUBLIC)?;
    write_new(&written.key, key.serialize_pem().as_bytes(), SECRET)?;
    Ok(written)
}

fn load_issuer(ca_dir: &Path) -> Result<Issuer<'static, KeyPair>, ToolError> {
    let cert_path = ca_dir.join("ca.pem");
    let key_path = ca_dir.join("ca-key.pem");
    let key = KeyPair::from_pem(&read_text(&key_path)?).map_err(certificate_error(&format!(
        "{} is not a usable private key",
        key_path.display()
    )))?;
    Issuer::from_ca_cert_pem(&read_text(&cert_path)?, key).map_err(certificate_error(&format!(
        "{} is not a usable CA certificate",
        cert_path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn der(path: &Path) -> Vec<u8> {
        let text = std::fs::read_to_string(path).unwrap();
        let (_, pem) = parse_x509_pem(text.as_bytes()).unwrap();
        pem.contents
    }

    fn dev_ca(dir: &Path) {
        certificate_authority(dir, "test CA").unwrap();
    }

    #[test]
    fn a_client_certificate_carries_its_spiffe_id_and_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        dev_ca(dir.path());
        let request = ClientRequest {
            name: "billing".to_owned(),
            spiffe_id: Some("spiffe://example.org/ns/prod/sa/billing".to_owned()),
            days: 30,
        };

        let written =
            client_certificate(dir.path(), &dir.path().join("clients"), &request).unwrap();

        let ca_der = der(&dir.path().join("ca.pem"));
        let cert_der = der(&written.certificate);
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
        assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(san.value.general_names.iter().any(|name| matches!(
            name, GeneralName::URI(uri) if *uri == "spiffe://example.org/ns/prod/sa/billing"
        )));
        assert!(cert.validity().is_valid());
    }

    #[test]
    fn a_negative_lifetime_makes_an_expired_certificate() {
        let dir = tempfile::tempdir().unwrap();
        dev_ca(dir.path());
        let request = ClientRequest {
            name: "old".to_owned(),
            spiffe_id: None,
            days: -1,
        };

        let written = client_certificate(dir.path(), dir.path(), &request).unwrap();

        let cert_der = der(&written.certificate);
        let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
        assert!(!cert.validity().is_valid());
        assert!(cert.subject_alternative_name().unwrap().is_none());
    }

    #[test]
    fn an_existing_certificate_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        dev_ca(dir.path());
        let request = ClientRequest {
            name: "twice".to_owned(),
            spiffe_id: None,
            days: 1,
        };
        client_certificate(dir.path(), dir.path(), &request).unwrap();

        let again = client_certificate(dir.path(), dir.path(), &request);

        assert!(matches!(again, Err(ToolError::Exists { .. })));
    }
}
