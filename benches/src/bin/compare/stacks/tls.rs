//! The certificates of the TLS stacks: a CA and a certificate for `localhost` made by the
//! harness at startup (rcgen), handed to each TLS server process in its environment.

use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The server's name in its certificate, which the clients check.
pub(crate) const SERVER_NAME: &str = "localhost";

const CA_VAR: &str = "COMPARE_TLS_CA";
const CERT_VAR: &str = "COMPARE_TLS_CERT";
const KEY_VAR: &str = "COMPARE_TLS_KEY";

/// A CA, and a server certificate it signed with the certificate's key, in PEM.
pub(crate) struct Material {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Material {
    /// Fresh material: an ECDSA P-256 CA and server key, rcgen's default (what a service
    /// mesh issues too).
    fn generate() -> Material {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .expect("server parameters")
            .signed_by(&key, &ca)
            .expect("server certificate");
        Material { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// The material the harness put in this process's environment, if it did.
    fn from_env() -> Option<Material> {
        let var = |name| std::env::var(name).ok();
        Some(Material { ca_pem: var(CA_VAR)?, cert_pem: var(CERT_VAR)?, key_pem: var(KEY_VAR)? })
    }

    /// The environment that hands this material to a server process.
    pub(crate) fn env(&self) -> [(&'static str, &str); 3] {
        [(CA_VAR, &self.ca_pem), (CERT_VAR, &self.cert_pem), (KEY_VAR, &self.key_pem)]
    }
}

/// The run's material: in a server process, what the harness gave it; in the harness, made
/// on first use.
pub(crate) fn material() -> &'static Material {
    static MATERIAL: OnceLock<Material> = OnceLock::new();
    MATERIAL.get_or_init(|| Material::from_env().unwrap_or_else(Material::generate))
}
