//! `mercator dev-init`: the development material of a local gateway, made once.
//!
//! | file | what | mode |
//! |---|---|---|
//! | `ca.pem`, `ca-key.pem` | a development CA (ECDSA P-256, 2 years) | 0644, 0600 |
//! | `server.pem`, `server-key.pem` | the gateway's certificate for `localhost`, `127.0.0.1`, `::1`, signed by that CA (1 year) | 0644, 0600 |
//! | `signing.key` | the Ed25519 seed that signs evidence, base64, one line | 0600 |
//! | `sink-keys.json` | the sink's keys file with that key's public half | 0644 |
//! | `api-keys.yaml` | two demo users' API key entries (hashes only) | 0644 |
//! | `demo.env` | those users' plain keys, `MERCATOR_DEMO_FINANCE_KEY=…` | 0600 |
//! | `provider.env` | the provider keys the stand-in expects, `OPENAI_API_KEY=…` | 0600 |
//! | `sink-tree.key` | the Ed25519 seed with which the sink signs its tree heads, base64, one line | 0600 |
//! | `operator.token` | the sink's development operator token, `mjop_…`, one line | 0600 |
//! | `operator-token.sha256` | its SHA-256 as 64 hex digits, what the sink is configured with | 0644 |
//!
//! A file that exists is kept as it is, so running the command again changes nothing.
//! Files that only make sense together are made together: a certificate and its key, the
//! key entries and the plain keys they hash. When one of a pair is missing, both are made
//! again; when the CA is made anew, the server certificate is issued again by it, and when
//! the signing key is made anew, the sink keys file is written again for it. Each such
//! replacement is reported.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mercator_evidence::SigningKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use super::api_key::{api_key_sha256, entries_yaml, ApiKey, ApiKeyEntry};
use super::files::{create_private_dir, read_text, write_new, write_replacing, PUBLIC, SECRET};
use super::signing_key::{
    generate_signing_key, key_entry, keys_file, read_signing_key, signing_key_file,
};
use super::{random_bytes, ToolError};
use crate::keys::KeysDocument;

/// The CA's common name.
pub const CA_COMMON_NAME: &str = "Mercator Jupiter development CA";

/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The two demo users: user id, key name, department, variable in `demo.env`.
const DEMO_USERS: [(&str, &str, &str, &str); 2] = [
    (
        "demo-finance",
        "demo-finance-key",
        "finance",
        "MERCATOR_DEMO_FINANCE_KEY",
    ),
    (
        "demo-engineering",
        "demo-engineering-key",
        "engineering",
        "MERCATOR_DEMO_ENGINEERING_KEY",
    ),
];

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// It was missing and has been made.
    Created,
    /// It was there and has been left as it was.
    Kept,
    /// It was there, but what it belongs with had to be made anew, so it was too.
    Replaced {
        /// Why it could not be kept.
        why: &'static str,
    },
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// What happened to it.
    pub outcome: FileOutcome,
}

impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.outcome {
            FileOutcome::Created => write!(f, "created  {path}"),
            FileOutcome::Kept => write!(f, "kept     {path}"),
            FileOutcome::Replaced { why } => write!(f, "replaced {path} ({why})"),
        }
    }
}

/// What `dev-init` did, file by file, and what it noticed but left alone.
#[derive(Debug, Clone, Default)]
pub struct DevInitReport {
    /// Every file, in the order of the table in the module docs.
    pub files: Vec<FileReport>,
    /// Problems with kept files that the operator should look at.
    pub warnings: Vec<String>,
}

impl DevInitReport {
    fn record(&mut self, path: PathBuf, outcome: FileOutcome) {
        self.files.push(FileReport { path, outcome });
    }
}

/// Makes whatever development material is missing in `dir` (created when missing).
pub fn dev_init(dir: &Path) -> Result<DevInitReport, ToolError> {
    create_private_dir(dir)?;
    let mut report = DevInitReport::default();

    let ca_made = certificate_authority(dir, &mut report)?;
    server_certificate(dir, ca_made, &mut report)?;
    signing_material(dir, &mut report)?;
    demo_api_keys(dir, &mut report)?;
    provider_keys(dir, &mut report)?;
    sink_tree_key(dir, &mut report)?;
    operator_token(dir, &mut report)?;

    Ok(report)
}

/// A group of files made together: all kept when all exist, all (re)made otherwise.
struct Group<'a> {
    dir: &'a Path,
    names: &'a [&'a str],
}

impl Group<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn all_exist(&self) -> bool {
        self.names.iter().all(|name| self.path(name).exists())
    }

    /// Writes each file, reporting it as created or, if it was there, replaced for `why`.
    fn write(
        &self,
        contents: &[(&str, &[u8], u32)],
        why: &'static str,
        report: &mut DevInitReport,
    ) -> Result<(), ToolError> {
        for (name, bytes, mode) in contents {
            let path = self.path(name);
            if path.exists() {
                write_replacing(&path, bytes, *mode)?;
                report.record(path, FileOutcome::Replaced { why });
            } else {
                write_new(&path, bytes, *mode)?;
                report.record(path, FileOutcome::Created);
            }
        }
        Ok(())
    }

    fn keep(&self, report: &mut DevInitReport) {
        for name in self.names {
            report.record(self.path(name), FileOutcome::Kept);
        }
    }
}

/// `ca.pem` and `ca-key.pem`. Returns whether the CA was made in this run.
fn certificate_authority(dir: &Path, report: &mut DevInitReport) -> Result<bool, ToolError> {
    let group = Group {
        dir,
        names: &["ca.pem", "ca-key.pem"],
    };
    if group.all_exist() {
        group.keep(report);
        return Ok(false);
    }

    let key = new_key_pair("the development CA's key")?;
    let cert = ca_params()?
        .self_signed(&key)
        .map_err(certificate_error("the development CA certificate"))?;
    group.write(
        &[
            ("ca.pem", cert.pem().as_bytes(), PUBLIC),
            ("ca-key.pem", key.serialize_pem().as_bytes(), SECRET),
        ],
        "the other half of the CA was missing",
        report,
    )?;
    Ok(true)
}

/// `server.pem` and `server-key.pem`, issued by the CA in `dir`.
fn server_certificate(
    dir: &Path,
    ca_made: bool,
    report: &mut DevInitReport,
) -> Result<(), ToolError> {
    let group = Group {
        dir,
        names: &["server.pem", "server-key.pem"],
    };
    if group.all_exist() && !ca_made {
        group.keep(report);
        return Ok(());
    }

    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let ca_key = KeyPair::from_pem(&read_text(&ca_key_path)?).map_err(certificate_error(
        &format!("{} is not a usable private key", ca_key_path.display()),
    ))?;
    let issuer =
        Issuer::from_ca_cert_pem(&read_text(&ca_cert_path)?, ca_key).map_err(certificate_error(
            &format!("{} is not a usable CA certificate", ca_cert_path.display()),
        ))?;

    let key = new_key_pair("the server key")?;
    let cert = server_params()?
        .signed_by(&key, &issuer)
        .map_err(certificate_error("the server certificate"))?;
    let why = if ca_made {
        "the CA is new, so its server certificate is too"
    } else {
        "the other half of the server certificate was missing"
    };
    group.write(
        &[
            ("server.pem", cert.pem().as_bytes(), PUBLIC),
            ("server-key.pem", key.serialize_pem().as_bytes(), SECRET),
        ],
        why,
        report,
    )
}

/// `signing.key` and the `sink-keys.json` derived from it.
fn signing_material(dir: &Path, report: &mut DevInitReport) -> Result<(), ToolError> {
    let key_path = dir.join("signing.key");
    let keys_path = dir.join("sink-keys.json");

    let (key, key_made) = if key_path.exists() {
        report.record(key_path.clone(), FileOutcome::Kept);
        (read_signing_key(&key_path)?, false)
    } else {
        let key = generate_signing_key()?;
        let seed_line = signing_key_file(&key);
        write_new(&key_path, seed_line.as_bytes(), SECRET)?;
        report.record(key_path.clone(), FileOutcome::Created);
        (key, true)
    };

    if keys_path.exists() && !key_made {
        report.record(keys_path.clone(), FileOutcome::Kept);
        if let Some(warning) = stale_keys_file(&keys_path, &key) {
            report.warnings.push(warning);
        }
        return Ok(());
    }

    let document = KeysDocument {
        keys: vec![key_entry(&key)],
    };
    let group = Group {
        dir,
        names: &["sink-keys.json"],
    };
    group.write(
        &[("sink-keys.json", keys_file(&document)?.as_bytes(), PUBLIC)],
        "the signing key is new, so the sink must trust it",
        report,
    )
}

/// A warning when a kept keys file does not list the kept signing key.
fn stale_keys_file(path: &Path, key: &SigningKey) -> Option<String> {
    let listed = read_text(path)
        .ok()
        .and_then(|text| serde_json::from_str::<KeysDocument>(&text).ok())
        .is_some_and(|document| {
            document
                .keys
                .iter()
                .any(|entry| entry.key_id == key.key_id().as_str())
        });
    (!listed).then(|| {
        format!(
            "{} does not list the key of signing.key ({}); the sink would refuse its records. \
             Delete the keys file and run dev-init again to rewrite it.",
            path.display(),
            key.key_id()
        )
    })
}

/// `api-keys.yaml` and `demo.env`, always made together.
fn demo_api_keys(dir: &Path, report: &mut DevInitReport) -> Result<(), ToolError> {
    let group = Group {
        dir,
        names: &["api-keys.yaml", "demo.env"],
    };
    if group.all_exist() {
        group.keep(report);
        return Ok(());
    }

    let mut entries = Vec::new();
    let mut env = String::from(
        "# Demo API keys for local development, made by `mercator dev-init`.\n\
         # Their SHA-256 hashes are in api-keys.yaml; the gateway never sees these in its config.\n",
    );
    for (user_id, name, department, variable) in DEMO_USERS {
        let key = ApiKey::generate()?;
        let mut entry = ApiKeyEntry::for_key(&key, user_id, name);
        entry
            .attributes
            .insert("department".to_owned(), department.to_owned());
        entries.push(entry);
        env.push_str(&format!("{variable}={}\n", key.expose()));
    }
    let yaml = format!(
        "# Demo API keys for local development, made by `mercator dev-init`; the plain keys\n\
         # are in demo.env. Add real keys with `mercator api-key new`.\n{}",
        entries_yaml(&entries)?
    );

    group.write(
        &[
            ("api-keys.yaml", yaml.as_bytes(), PUBLIC),
            ("demo.env", env.as_bytes(), SECRET),
        ],
        "its keys and their hashes are made together",
        report,
    )
}

/// `provider.env`: the keys the provider stand-in expects.
fn provider_keys(dir: &Path, report: &mut DevInitReport) -> Result<(), ToolError> {
    let path = dir.join("provider.env");
    if path.exists() {
        report.record(path, FileOutcome::Kept);
        return Ok(());
    }

    let openai = URL_SAFE_NO_PAD.encode(random_bytes::<24>()?);
    let anthropic = URL_SAFE_NO_PAD.encode(random_bytes::<24>()?);
    let env = format!(
        "# Keys of the local provider stand-in (not real provider keys), made by\n\
         # `mercator dev-init`. The stand-in accepts only these, so a call that reaches it\n\
         # shows that the gateway replaced the caller's key with the provider's.\n\
         OPENAI_API_KEY=sk-standin-{openai}\n\
         ANTHROPIC_API_KEY=sk-ant-standin-{anthropic}\n"
    );
    write_new(&path, env.as_bytes(), SECRET)?;
    report.record(path, FileOutcome::Created);
    Ok(())
}

/// `sink-tree.key`: the sink's own key, apart from the gateway's signing key.
fn sink_tree_key(dir: &Path, report: &mut DevInitReport) -> Result<(), ToolError> {
    let path = dir.join("sink-tree.key");
    if path.exists() {
        report.record(path, FileOutcome::Kept);
        return Ok(());
    }
    let key = generate_signing_key()?;
    write_new(&path, signing_key_file(&key).as_bytes(), SECRET)?;
    report.record(path, FileOutcome::Created);
    Ok(())
}

/// `operator.token` and `operator-token.sha256`, always made together.
fn operator_token(dir: &Path, report: &mut DevInitReport) -> Result<(), ToolError> {
    let group = Group {
        dir,
        names: &["operator.token", "operator-token.sha256"],
    };
    if group.all_exist() {
        group.keep(report);
        return Ok(());
    }
    let token = new_operator_token()?;
    group.write(
        &[
            ("operator.token", format!("{token}\n").as_bytes(), SECRET),
            (
                "operator-token.sha256",
                format!("{}\n", api_key_sha256(&token)).as_bytes(),
                PUBLIC,
            ),
        ],
        "the token and its hash are made together",
        report,
    )
}

/// A new operator token: `mjop_` and 43 base64url characters (32 random bytes).
pub fn new_operator_token() -> Result<String, ToolError> {
    Ok(format!(
        "mjop_{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
    ))
}

pub(crate) fn ca_params() -> Result<CertificateParams, ToolError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, Duration::days(2 * 365))?;
    Ok(params)
}

fn server_params() -> Result<CertificateParams, ToolError> {
    let names: Vec<String> = SERVER_NAMES.iter().map(|name| name.to_string()).collect();
    let mut params =
        CertificateParams::new(names).map_err(certificate_error("the server certificate names"))?;
    params.distinguished_name = distinguished_name("localhost");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, Duration::days(365))?;
    Ok(params)
}

pub(crate) fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Mercator Jupiter (development)");
    name.push(DnType::CommonName, common_name);
    name
}

/// Valid from a few minutes ago (clocks of containers drift) for `lifetime`, with a random
/// serial number.
pub(crate) fn set_validity(
    params: &mut CertificateParams,
    lifetime: Duration,
) -> Result<(), ToolError> {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + lifetime;

    let mut serial = random_bytes::<16>()?;
    // A positive serial number of at most 20 octets (RFC 5280, 4.1.2.2).
    if let Some(first) = serial.first_mut() {
        *first &= 0x7f;
    }
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

pub(crate) fn new_key_pair(what: &str) -> Result<KeyPair, ToolError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(certificate_error(what))
}

pub(crate) fn certificate_error(what: &str) -> impl Fn(rcgen::Error) -> ToolError + '_ {
    move |source| ToolError::Certificate {
        what: what.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_keys;
    use mercator_filter::config::ApiKeyConfig;
    use std::collections::BTreeMap;

    const ALL_FILES: [&str; 12] = [
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "signing.key",
        "sink-keys.json",
        "api-keys.yaml",
        "demo.env",
        "provider.env",
        "sink-tree.key",
        "operator.token",
        "operator-token.sha256",
    ];

    fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        ALL_FILES
            .iter()
            .map(|name| (name.to_string(), std::fs::read(dir.join(name)).unwrap()))
            .collect()
    }

    fn outcomes(report: &DevInitReport) -> Vec<FileOutcome> {
        report.files.iter().map(|file| file.outcome).collect()
    }

    fn env_value(env: &str, variable: &str) -> String {
        env.lines()
            .find_map(|line| line.strip_prefix(&format!("{variable}=")))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_second_run_keeps_every_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join(".dev");

        let first = dev_init(&dev).unwrap();
        let before = contents(&dev);
        let second = dev_init(&dev).unwrap();

        assert_eq!(first.files.len(), 12);
        assert!(outcomes(&first).iter().all(|o| *o == FileOutcome::Created));
        assert!(outcomes(&second).iter().all(|o| *o == FileOutcome::Kept));
        assert!(second.warnings.is_empty(), "{:?}", second.warnings);
        assert_eq!(contents(&dev), before);
    }

    #[test]
    fn the_demo_keys_hash_to_their_entries() {
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();

        let env = std::fs::read_to_string(dir.path().join("demo.env")).unwrap();
        let yaml = std::fs::read_to_string(dir.path().join("api-keys.yaml")).unwrap();
        let entries: Vec<ApiKeyConfig> = serde_norway::from_str(&yaml).unwrap();

        let finance = env_value(&env, "MERCATOR_DEMO_FINANCE_KEY");
        assert!(finance.starts_with("mj_"));
        let entry = entries
            .iter()
            .find(|e| e.user_id == "demo-finance")
            .unwrap();
        assert_eq!(entry.sha256, api_key_sha256(&finance));
        assert_eq!(entry.name, "demo-finance-key");
        assert_eq!(entry.attributes["department"], "finance");

        let engineering = env_value(&env, "MERCATOR_DEMO_ENGINEERING_KEY");
        let entry = entries
            .iter()
            .find(|e| e.user_id == "demo-engineering")
            .unwrap();
        assert_eq!(entry.sha256, api_key_sha256(&engineering));
        assert_eq!(entry.attributes["department"], "engineering");
        assert!(!yaml.contains(&finance));
    }

    #[test]
    fn the_sink_trusts_the_signing_key_and_the_provider_keys_are_stand_ins() {
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();

        let key = read_signing_key(&dir.path().join("signing.key")).unwrap();
        let ring = load_keys(&dir.path().join("sink-keys.json")).unwrap();
        assert!(ring.get(key.key_id().as_str()).is_some());

        let env = std::fs::read_to_string(dir.path().join("provider.env")).unwrap();
        assert!(env_value(&env, "OPENAI_API_KEY").starts_with("sk-standin-"));
        assert!(env_value(&env, "ANTHROPIC_API_KEY").starts_with("sk-ant-standin-"));
    }

    #[test]
    fn the_sink_gets_its_own_tree_key_and_an_operator_token_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();

        let tree = crate::load_tree_key(&dir.path().join("sink-tree.key")).unwrap();
        let gateway = read_signing_key(&dir.path().join("signing.key")).unwrap();
        assert_ne!(tree.key_id(), gateway.key_id());

        let token = std::fs::read_to_string(dir.path().join("operator.token")).unwrap();
        let hash = std::fs::read_to_string(dir.path().join("operator-token.sha256")).unwrap();
        assert!(token.starts_with("mjop_"));
        assert_eq!(hash.trim(), api_key_sha256(token.trim()));
        assert!(crate::OperatorToken::from_sha256_hex(&hash).is_some());
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();

        for name in [
            "ca-key.pem",
            "server-key.pem",
            "signing.key",
            "demo.env",
            "provider.env",
            "sink-tree.key",
            "operator.token",
        ] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name}");
        }
    }

    /// The DER of the first PEM block of a file.
    fn der_of(path: &Path) -> Vec<u8> {
        let text = read_text(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).unwrap();
        pem.contents
    }

    #[test]
    fn the_server_certificate_is_signed_by_the_ca_for_the_local_names() {
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();

        let ca_der = der_of(&dir.path().join("ca.pem"));
        let server_der = der_of(&dir.path().join("server.pem"));
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, server) = x509_parser::parse_x509_certificate(&server_der).unwrap();

        assert!(ca.is_ca());
        assert!(ca.subject().to_string().contains(CA_COMMON_NAME));
        server.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(server.issuer(), ca.subject());
        let names = server.subject_alternative_name().unwrap().unwrap();
        let shown: Vec<String> = names
            .value
            .general_names
            .iter()
            .map(|name| name.to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "DNSName(localhost)",
                "IPAddress(7f:00:00:01)",
                "IPAddress(00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01)",
            ]
        );
        let lifetime = server.validity().time_to_expiration().unwrap();
        assert!(lifetime.whole_days() >= 364, "{lifetime}");
    }

    #[test]
    fn a_missing_server_certificate_is_issued_by_the_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        std::fs::remove_file(dir.path().join("server.pem")).unwrap();

        let report = dev_init(dir.path()).unwrap();

        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        let server: Vec<_> = report
            .files
            .iter()
            .filter(|f| f.path.to_string_lossy().contains("server"))
            .map(|f| f.outcome)
            .collect();
        assert_eq!(server[0], FileOutcome::Created);
        assert!(matches!(server[1], FileOutcome::Replaced { .. }));

        let ca_der = der_of(&dir.path().join("ca.pem"));
        let server_der = der_of(&dir.path().join("server.pem"));
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, server) = x509_parser::parse_x509_certificate(&server_der).unwrap();
        server.verify_signature(Some(ca.public_key())).unwrap();
    }

    #[test]
    fn a_new_ca_reissues_the_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("ca-key.pem")).unwrap();

        let report = dev_init(dir.path()).unwrap();

        let replaced = report
            .files
            .iter()
            .filter(|f| matches!(f.outcome, FileOutcome::Replaced { .. }))
            .count();
        assert_eq!(replaced, 3, "{:?}", report.files);
    }

    #[test]
    fn a_half_of_the_demo_keys_brings_both_back_consistent() {
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("demo.env")).unwrap();

        dev_init(dir.path()).unwrap();

        let env = std::fs::read_to_string(dir.path().join("demo.env")).unwrap();
        let yaml = std::fs::read_to_string(dir.path().join("api-keys.yaml")).unwrap();
        let finance = env_value(&env, "MERCATOR_DEMO_FINANCE_KEY");
        assert!(yaml.contains(&api_key_sha256(&finance)));
    }

    #[test]
    fn a_keys_file_without_the_signing_key_is_kept_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        dev_init(dir.path()).unwrap();
        let other = key_entry(&SigningKey::from_seed(&[1; 32]));
        let document = KeysDocument { keys: vec![other] };
        std::fs::write(
            dir.path().join("sink-keys.json"),
            keys_file(&document).unwrap(),
        )
        .unwrap();

        let report = dev_init(dir.path()).unwrap();

        assert_eq!(report.warnings.len(), 1);
        assert!(report.warnings[0].contains("sink-keys.json"));
    }
}
