//! Who is calling, from every credential the request carries: API keys (see [`crate::auth`])
//! and the mTLS client certificate that Envoy verified during the handshake.
//!
//! Envoy does the cryptography: with a `validation_context`, a connection only exists if
//! the client's certificate chains to the configured CA and is within its validity. The
//! filter maps the verified certificate's URI SAN (a SPIFFE id) or subject to a user from
//! the configuration, with the same shape as an API-key user, and combines it with the
//! API key as the configured [`IdentityMode`] says.

use std::collections::BTreeMap;

use mercator_evidence::{AuthMethod, AuthResult};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::auth::{AuthOutcome, Identity, KeyRing};

/// Which credentials a request must carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// An API key; a client certificate, if any, is only recorded.
    #[default]
    ApiKey,
    /// A mapped client certificate; API key headers are removed and ignored.
    Mtls,
    /// An API key if one is presented, else a mapped client certificate.
    Either,
    /// Both, naming the same user.
    Both,
}

/// The verified client certificate of the connection, as Envoy reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The first URI SAN, such as `spiffe://example.org/ns/prod/sa/billing`.
    pub uri_san: Option<String>,
    /// The subject in RFC 2253 form, such as `CN=billing,O=Example`.
    pub subject: Option<String>,
}

impl PeerCertificate {
    /// A certificate when Envoy reported either field, else none.
    pub fn from_parts(uri_san: Option<String>, subject: Option<String>) -> Option<Self> {
        let present = |field: Option<String>| field.filter(|value| !value.is_empty());
        let (uri_san, subject) = (present(uri_san), present(subject));
        (uri_san.is_some() || subject.is_some()).then_some(Self { uri_san, subject })
    }
}

/// A certificate identity mapped to a user.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    /// Matches the certificate's first URI SAN exactly.
    pub spiffe_id: Option<String>,
    /// Matches the certificate's subject exactly.
    pub subject: Option<String>,
    /// The user.
    pub user_id: String,
    /// A name for this client identity, shown like an API key's name.
    pub name: String,
    /// Attributes for policies.
    pub attributes: BTreeMap<String, String>,
}

impl ClientRecord {
    fn matches(&self, peer: &PeerCertificate) -> bool {
        let by_uri = self.spiffe_id.is_some() && self.spiffe_id == peer.uri_san;
        let by_subject = self.subject.is_some() && self.subject == peer.subject;
        by_uri || by_subject
    }
}

/// Every credential the gateway knows, and how they combine.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    mode: IdentityMode,
    keys: KeyRing,
    clients: Vec<ClientRecord>,
}

impl Authenticator {
    /// Wraps validated keys and clients.
    pub fn new(mode: IdentityMode, keys: KeyRing, clients: Vec<ClientRecord>) -> Self {
        Self {
            mode,
            keys,
            clients,
        }
    }

    /// Authenticates a request from its headers and the connection's certificate.
    pub fn authenticate(
        &self,
        headers: &[(String, Vec<u8>)],
        peer: Option<&PeerCertificate>,
        now: OffsetDateTime,
    ) -> AuthOutcome {
        match self.mode {
            IdentityMode::ApiKey => self.keys.authenticate(headers, now),
            IdentityMode::Mtls => self.by_certificate(peer),
            IdentityMode::Either => {
                let by_key = self.keys.authenticate(headers, now);
                if by_key.presented || peer.is_none() {
                    by_key
                } else {
                    self.by_certificate(peer)
                }
            }
            IdentityMode::Both => {
                let by_key = self.keys.authenticate(headers, now);
                let by_certificate = self.by_certificate(peer);
                both(by_key, by_certificate)
            }
        }
    }

    fn by_certificate(&self, peer: Option<&PeerCertificate>) -> AuthOutcome {
        let Some(peer) = peer else {
            return AuthOutcome::refused(AuthResult::CertificateMissing, false);
        };
        let mut outcome = AuthOutcome::refused(AuthResult::UnknownCertificate, true);
        outcome.method = AuthMethod::Certificate;

        if let Some(client) = self.clients.iter().find(|client| client.matches(peer)) {
            outcome.result = AuthResult::Authenticated;
            outcome.key_name = Some(client.name.clone());
            outcome.identity = Some(Identity {
                user_id: client.user_id.clone(),
                key_name: client.name.clone(),
                attributes: client.attributes.clone(),
            });
        }
        outcome
    }
}

/// Key and certificate must both authenticate, as the same user.
fn both(by_key: AuthOutcome, by_certificate: AuthOutcome) -> AuthOutcome {
    let mut outcome = if by_key.result != AuthResult::Authenticated {
        by_key
    } else if by_certificate.result != AuthResult::Authenticated {
        AuthOutcome {
            fingerprint: by_key.fingerprint,
            redacted: by_key.redacted,
            ..by_certificate
        }
    } else {
        let same_user = by_key.identity.as_ref().map(|identity| &identity.user_id)
            == by_certificate
                .identity
                .as_ref()
                .map(|identity| &identity.user_id);
        let mut combined = by_key;
        if !same_user {
            combined.result = AuthResult::IdentityMismatch;
            combined.identity = None;
        }
        combined
    };
    outcome.method = AuthMethod::ApiKeyAndCertificate;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{tests::hash_hex, ApiKeyHash, ApiKeyRecord};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);
    const BILLING: &str = "spiffe://example.org/ns/prod/sa/billing";

    fn authenticator(mode: IdentityMode) -> Authenticator {
        let key = ApiKeyRecord {
            hash: ApiKeyHash::from_hex(&hash_hex("mj-billing-key-00000001")).unwrap(),
            user_id: "billing".to_owned(),
            name: "billing-key".to_owned(),
            enabled: true,
            expires_at: None,
            attributes: BTreeMap::new(),
        };
        let other = ApiKeyRecord {
            hash: ApiKeyHash::from_hex(&hash_hex("mj-other-key-0000000002")).unwrap(),
            user_id: "other".to_owned(),
            name: "other-key".to_owned(),
            ..key.clone()
        };
        let clients = vec![
            ClientRecord {
                spiffe_id: Some(BILLING.to_owned()),
                subject: None,
                user_id: "billing".to_owned(),
                name: "billing-workload".to_owned(),
                attributes: BTreeMap::from([("department".to_owned(), "finance".to_owned())]),
            },
            ClientRecord {
                spiffe_id: None,
                subject: Some("CN=reports,O=Example".to_owned()),
                user_id: "reports".to_owned(),
                name: "reports-cert".to_owned(),
                attributes: BTreeMap::new(),
            },
        ];
        Authenticator::new(mode, KeyRing::new(vec![key, other]), clients)
    }

    fn key(value: &[u8]) -> Vec<(String, Vec<u8>)> {
        vec![("x-api-key".to_owned(), value.to_vec())]
    }

    fn spiffe(uri: &str) -> PeerCertificate {
        PeerCertificate {
            uri_san: Some(uri.to_owned()),
            subject: Some("CN=x".to_owned()),
        }
    }

    #[test]
    fn a_mapped_spiffe_id_authenticates_its_user_with_attributes() {
        let outcome =
            authenticator(IdentityMode::Mtls).authenticate(&[], Some(&spiffe(BILLING)), NOW);

        assert_eq!(outcome.result, AuthResult::Authenticated);
        assert_eq!(outcome.method, AuthMethod::Certificate);
        let identity = outcome.identity.unwrap();
        assert_eq!(identity.user_id, "billing");
        assert_eq!(identity.attributes["department"], "finance");
    }

    #[test]
    fn a_certificate_without_a_uri_san_can_be_mapped_by_subject() {
        let peer = PeerCertificate {
            uri_san: None,
            subject: Some("CN=reports,O=Example".to_owned()),
        };

        let outcome = authenticator(IdentityMode::Mtls).authenticate(&[], Some(&peer), NOW);

        assert_eq!(outcome.identity.unwrap().user_id, "reports");
    }

    #[test]
    fn mtls_mode_refuses_a_missing_or_unmapped_certificate() {
        let auth = authenticator(IdentityMode::Mtls);

        let missing = auth.authenticate(&key(b"mj-billing-key-00000001"), None, NOW);
        let unmapped = auth.authenticate(&[], Some(&spiffe("spiffe://example.org/evil")), NOW);

        assert_eq!(missing.result, AuthResult::CertificateMissing);
        assert_eq!(unmapped.result, AuthResult::UnknownCertificate);
    }

    #[test]
    fn either_mode_takes_a_presented_key_first_and_falls_back_to_the_certificate() {
        let auth = authenticator(IdentityMode::Either);

        let by_key = auth.authenticate(
            &key(b"mj-other-key-0000000002"),
            Some(&spiffe(BILLING)),
            NOW,
        );
        let by_cert = auth.authenticate(&[], Some(&spiffe(BILLING)), NOW);
        let bad_key = auth.authenticate(&key(b"mj-wrong"), Some(&spiffe(BILLING)), NOW);

        assert_eq!(by_key.identity.unwrap().user_id, "other");
        assert_eq!(by_cert.identity.unwrap().user_id, "billing");
        assert_eq!(bad_key.result, AuthResult::UnknownKey);
    }

    #[test]
    fn both_mode_needs_both_for_the_same_user() {
        let auth = authenticator(IdentityMode::Both);

        let good = auth.authenticate(
            &key(b"mj-billing-key-00000001"),
            Some(&spiffe(BILLING)),
            NOW,
        );
        let no_cert = auth.authenticate(&key(b"mj-billing-key-00000001"), None, NOW);
        let no_key = auth.authenticate(&[], Some(&spiffe(BILLING)), NOW);
        let mismatch = auth.authenticate(
            &key(b"mj-other-key-0000000002"),
            Some(&spiffe(BILLING)),
            NOW,
        );

        assert_eq!(good.result, AuthResult::Authenticated);
        assert_eq!(good.method, AuthMethod::ApiKeyAndCertificate);
        assert_eq!(no_cert.result, AuthResult::CertificateMissing);
        assert_eq!(no_key.result, AuthResult::Missing);
        assert_eq!(mismatch.result, AuthResult::IdentityMismatch);
        assert!(mismatch.identity.is_none());
    }

    #[test]
    fn api_key_mode_ignores_the_certificate() {
        let outcome =
            authenticator(IdentityMode::ApiKey).authenticate(&[], Some(&spiffe(BILLING)), NOW);

        assert_eq!(outcome.result, AuthResult::Missing);
    }

    #[test]
    fn empty_certificate_fields_mean_no_certificate() {
        assert_eq!(PeerCertificate::from_parts(Some(String::new()), None), None);
        assert!(PeerCertificate::from_parts(None, Some("CN=a".to_owned())).is_some());
    }
}
